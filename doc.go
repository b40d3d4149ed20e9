// Package failover gives any HTTP client of an OpenAI-compatible API
// transparent failover across several endpoints: base URLs and API keys,
// each with a priority, a weight, a rate limit, a per-attempt timeout and a
// circuit breaker.
//
// A [Transport] is an [http.RoundTripper]. Set it as an [http.Client]'s
// Transport (or wrap an existing client with [WrapClient]) and hand that
// client to an SDK such as github.com/sashabaranov/go-openai or
// github.com/openai/openai-go. Each request under a routed base URL (by
// default https://api.openai.com/v1) is rewritten onto the chosen endpoint:
// host, path prefix and Authorization. When an attempt fails (connection
// error, timeout, 5xx, 429, 401, ...) the request goes at once to the next
// eligible endpoint; the calling code does not change.
package failover
