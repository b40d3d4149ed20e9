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
//
//	transport, err := failover.New(failover.Config{
//		Endpoints: []failover.Endpoint{
//			// Timeout bounds each attempt until the response headers, so
//			// that a hanging endpoint fails over instead of holding the
//			// request until the caller's own deadline.
//			{Name: "primary", BaseURL: "https://api.openai.com/v1", APIKey: os.Getenv("OPENAI_API_KEY"), Priority: 1, Timeout: 20 * time.Second},
//			{Name: "backup", BaseURL: "https://proxy.example/openai/v1", APIKey: os.Getenv("BACKUP_KEY"), Priority: 2, Timeout: 20 * time.Second},
//		},
//	})
//	if err != nil {
//		log.Fatal(err)
//	}
//	client := &http.Client{Transport: transport} // for the SDK, or as is
//
// Providers differ in more than host and key. [Endpoint].Models lists the
// models an endpoint serves and the name it knows each by (an OpenRouter
// name, an Azure deployment): a request for another model skips it, and
// the body's "model" is renamed for that endpoint's attempts only.
// [Endpoint].APIType "azure" sends the key as api-key and the request to
// Azure OpenAI's deployments (with an APIVersion) or v1 path.
//
// [ConfigFromEnv] builds the same Config from numbered environment
// variables (OPENAI_BASE_URL_1, OPENAI_API_KEY_1, OPENAI_TIMEOUT_1,
// OPENAI_BASE_URL_2, ...), so that a deployment changes its endpoints
// without a rebuild.
//
// [Transport.Health], [Transport.HealthHandler] (JSON) and
// [Transport.StatusHandler] (a page for people) show each endpoint's
// state; [Config].Registerer adds Prometheus metrics.
//
// Services in other languages get the same failover from the command
// github.com/failover-go/failover/cmd/failover: "failover proxy" is an
// OpenAI-compatible reverse proxy configured by the same environment
// variables, "failover check" probes each configured endpoint before a
// deploy, and "failover demo" shows failover at work with no API key.
package failover
