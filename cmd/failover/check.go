package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/envfile"
	"github.com/failover-go/failover/internal/errdesc"
)

// checkFlags are the check command's flags.
type checkFlags struct {
	timeout time.Duration
	model   string
	json    bool
	envFile string
}

const checkUsage = `Usage: failover check [-timeout 10s] [-model NAME] [-json] [-env-file FILE]

Probes each endpoint described by the environment (OPENAI_BASE_URL_N,
OPENAI_API_KEY_N, ...; see the README), and by -env-file, a dotenv file
whose variables override the environment's (as the proxy reads it), all in
parallel, as the failover
transport would reach it: DNS and connection, TLS, and GET /models with the
endpoint's key (accepted, refused with the provider's reason, or absent on
servers without that route). With -model, it also sends each endpoint one
chat completion to that model with max_tokens 1: a real request, billed by
the provider (a token or two), under the name the endpoint's
OPENAI_MODELS_N maps it to (an endpoint whose list lacks it fails).

It prints one row per endpoint (name, URL without query, priority, result,
latency, models listed, and what went wrong in a few words; never a key),
the variables that look like failover's but are not read (such as
OPENAI_BASEURL_2), and a verdict. Disabled endpoints are listed, not probed.

Exit status: 0 when every enabled endpoint passed, 1 when any failed, 2
for bad flags or a bad configuration (which includes one whose endpoints
are all disabled: OPENAI_ENABLED_N=false on each).

Flags:
`

// parseCheckFlags parses the check command's arguments, reporting any
// error to stderr.
func parseCheckFlags(args []string, stderr io.Writer) (checkFlags, error) {
	var f checkFlags
	fs := commandFlags("failover check", checkUsage, stderr)
	fs.DurationVar(&f.timeout, "timeout", 10*time.Second, "bound each probe request, connection included, to this `duration`")
	fs.StringVar(&f.model, "model", "", "also send a max_tokens 1 chat completion to this `model` (billed)")
	fs.BoolVar(&f.json, "json", false, "print the result as JSON, for scripts and CI")
	fs.StringVar(&f.envFile, "env-file", "", "dotenv `file` of the same variables as the environment, which it overrides")
	if err := fs.Parse(args); err != nil {
		return f, err // reported by fs
	}
	var err error
	switch {
	case fs.NArg() > 0:
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case f.timeout <= 0:
		err = fmt.Errorf("-timeout %v: want a positive duration", f.timeout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "failover check: %v\n", err)
	}
	return f, err
}

// checkReport is what check found, as -json prints it.
type checkReport struct {
	// Verdict is "ok", "failed" or "bad-configuration".
	Verdict   string        `json:"verdict"`
	Passed    int           `json:"passed"`
	Failed    int           `json:"failed"`
	Disabled  int           `json:"disabled"`
	Endpoints []probeResult `json:"endpoints"`
	Warnings  []lookAlike   `json:"warnings"`
	// Errors are the configuration's problems, one a line of the error.
	Errors []string `json:"errors,omitempty"`
}

// probeResult is one endpoint's row.
type probeResult struct {
	Name     string `json:"name"`
	URL      string `json:"url"` // without query or user information
	Priority int    `json:"priority"`
	Weight   int    `json:"weight"`
	// Result is "ok", "failed" or "disabled" (not probed).
	Result string `json:"result"`
	// LatencyMS is the time to the /models response headers, connection
	// included; nil when no response came.
	LatencyMS *float64 `json:"latency_ms"`
	// Models counts the models /models listed; nil when it listed none
	// (refused, absent, or no response).
	Models *int `json:"models"`
	// ModelsRoute is "listed", "absent" (404 or 405), "refused" (the
	// key), "error" (another status), or "" when no response came.
	ModelsRoute string `json:"models_route,omitempty"`
	// Chat is the -model probe's result, when asked for and reached.
	Chat *chatProbe `json:"chat,omitempty"`
	// Error says what went wrong, in a few words; Note what is worth
	// knowing about an endpoint that passed.
	Error string `json:"error,omitempty"`
	Note  string `json:"note,omitempty"`
}

// chatProbe is the result of the -model chat completion.
type chatProbe struct {
	Model     string   `json:"model"`
	Passed    bool     `json:"passed"`
	LatencyMS *float64 `json:"latency_ms"`
	Error     string   `json:"error,omitempty"`
}

// runCheckCommand runs "failover check".
func runCheckCommand(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	f, err := parseCheckFlags(args, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case err != nil:
		return exitUsage
	}
	if f.envFile != "" {
		if environ, err = envfile.LoadOver(environ, f.envFile); err != nil {
			environ = nil // reported below as the configuration's error
		}
	}
	rep := checkReport{Warnings: lookAlikes(environ), Endpoints: []probeResult{}}
	var cfg failover.Config
	if err == nil {
		cfg, err = failover.ConfigFromEnviron(environ)
	}
	var t *failover.Transport
	if err == nil {
		// New checks what ConfigFromEnviron does not (duplicate names,
		// ...) and defaults the names, as the proxy would.
		t, err = failover.New(cfg)
	}
	if err != nil {
		reportBadConfiguration(stdout, stderr, f, rep, err)
		return exitUsage
	}
	defer t.Close() // the configuration's probes, if any, never start: nothing is out yet
	rep.Endpoints = probeAll(ctx, f, cfg, t.Health())
	code := rep.tally()
	if f.json {
		writeJSON(stdout, rep)
	} else {
		writeCheckTable(stdout, rep, f)
	}
	return code
}

// reportBadConfiguration prints err, the configuration's problems, and the
// look-alike variables.
func reportBadConfiguration(stdout, stderr io.Writer, f checkFlags, rep checkReport, err error) {
	rep.Verdict = "bad-configuration"
	rep.Errors = strings.Split(err.Error(), "\n")
	if f.json {
		writeJSON(stdout, rep)
		return
	}
	fmt.Fprintln(stderr, "failover check: bad configuration:")
	for _, line := range rep.Errors {
		fmt.Fprintf(stderr, "  %s\n", line)
	}
	writeWarnings(stderr, rep.Warnings)
}

// probeAll probes every enabled endpoint of cfg (health names them, in
// order) in parallel, and lists the disabled ones.
func probeAll(ctx context.Context, f checkFlags, cfg failover.Config, health []failover.EndpointHealth) []probeResult {
	out := make([]probeResult, len(health))
	keys := endpointKeys(cfg.Endpoints)
	var wg sync.WaitGroup
	for i, h := range health {
		r := probeResult{Name: h.Name, URL: h.BaseURL, Priority: h.Priority, Weight: h.Weight, Result: "disabled"}
		if h.State == failover.StateDisabled {
			out[i] = r
			continue
		}
		e := cfg.Endpoints[i]
		e.Name = h.Name
		wg.Go(func() {
			p := prober{endpoint: e, timeout: f.timeout, model: f.model, keys: keys}
			out[i] = p.run(ctx, r)
		})
	}
	wg.Wait()
	return out
}

// tally counts rep's results, sets its verdict and returns the exit code:
// 0 when every enabled endpoint passed, 1 when any failed. A configuration
// with no endpoint enabled never gets here: ConfigFromEnviron refuses it,
// and the check exits 2 (bad configuration); were one to, its verdict
// would be failed, not ok.
func (rep *checkReport) tally() int {
	for _, r := range rep.Endpoints {
		switch r.Result {
		case "ok":
			rep.Passed++
		case "failed":
			rep.Failed++
		default:
			rep.Disabled++
		}
	}
	if rep.Failed > 0 || rep.Passed == 0 {
		rep.Verdict = "failed"
		return exitFailure
	}
	rep.Verdict = "ok"
	return exitOK
}

// endpointKeys returns the endpoints' keys, for scrubbing them from
// whatever an upstream says.
func endpointKeys(eps []failover.Endpoint) []string {
	var keys []string
	for _, e := range eps {
		if e.APIKey != "" {
			keys = append(keys, e.APIKey)
		}
	}
	return keys
}

// prober probes one endpoint.
type prober struct {
	endpoint failover.Endpoint
	timeout  time.Duration
	model    string
	keys     []string // every endpoint's key, never to be shown
}

// run probes the endpoint and fills in r.
func (p prober) run(ctx context.Context, r probeResult) probeResult {
	base := http.DefaultTransport.(*http.Transport).Clone()
	defer base.CloseIdleConnections()
	e := p.endpoint
	// One attempt, at once: the check is not traffic to limit.
	e.Disabled, e.MaxRPS, e.Burst = false, 0, 0
	// GET /models asks the endpoint itself: with its Models, the
	// transport would answer from the configuration.
	listing := e
	listing.Models = nil
	t, err := p.transport(listing, base)
	if err != nil { // cannot happen: the whole configuration passed New
		r.Result, r.Error = "failed", "configuration: "+p.scrub(err.Error())
		return r
	}

	resp, body, latency, err := p.send(ctx, t, http.MethodGet, "/models", nil)
	if err != nil {
		r.Result, r.Error = "failed", err.Error()
		return r
	}
	r.LatencyMS = &latency
	r = p.judgeListing(r, resp.StatusCode, body)
	if p.model != "" && r.Result == "ok" {
		if e.Models != nil {
			// The chat probe sends the model as the endpoint's Models
			// map it, as the proxy would.
			if t, err = p.transport(e, base); err != nil {
				r.Result, r.Error = "failed", "configuration: "+p.scrub(err.Error())
				return r
			}
		}
		r.Chat = p.chat(ctx, t)
		if !r.Chat.Passed {
			r.Result, r.Error = "failed", "chat "+p.model+": "+r.Chat.Error
		}
	}
	return r
}

// judgeListing fills in r from the answer to GET /models: its status code
// and body.
func (p prober) judgeListing(r probeResult, code int, body []byte) probeResult {
	r.Result = "ok"
	switch {
	case code == http.StatusOK:
		var list struct {
			Data []json.RawMessage `json:"data"`
		}
		if json.Unmarshal(body, &list) != nil || list.Data == nil {
			r.ModelsRoute, r.Result = "error", "failed"
			r.Error = "GET /models answered 200 but not with a model list: is the base URL that of an OpenAI-compatible API?"
			return r
		}
		n := len(list.Data)
		r.ModelsRoute, r.Models = "listed", &n
	case code == http.StatusNotFound || code == http.StatusMethodNotAllowed:
		r.ModelsRoute = "absent"
		r.Note = fmt.Sprintf("no /models route (%d)", code)
		if p.model == "" {
			r.Note += "; -model would check a chat request"
		}
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		r.ModelsRoute, r.Result = "refused", "failed"
		r.Error = "key refused: " + p.reason(code, body)
	default:
		r.ModelsRoute, r.Result = "error", "failed"
		r.Error = "GET /models: " + p.reason(code, body)
	}
	return r
}

// transport returns a transport of e alone, one attempt per request, over
// base.
func (p prober) transport(e failover.Endpoint, base http.RoundTripper) (*failover.Transport, error) {
	return failover.New(failover.Config{Endpoints: []failover.Endpoint{e}, MaxRetries: -1, Base: base})
}

// chat sends the -model chat completion.
func (p prober) chat(ctx context.Context, t *failover.Transport) *chatProbe {
	c := &chatProbe{Model: p.model}
	body, _ := json.Marshal(map[string]any{
		"model":      p.model,
		"messages":   []map[string]string{{"role": "user", "content": "Say OK."}},
		"max_tokens": 1,
	})
	resp, respBody, latency, err := p.send(ctx, t, http.MethodPost, "/chat/completions", body)
	switch {
	case err != nil:
		c.Error = err.Error()
	case resp.StatusCode == http.StatusOK:
		c.Passed, c.LatencyMS = true, &latency
	default:
		c.LatencyMS = &latency
		c.Error = p.reason(resp.StatusCode, respBody)
	}
	return c
}

// maxProbeBody bounds what is read of a probe's response.
const maxProbeBody = 4 << 20

// send sends one probe request through t, bounded by p.timeout, and returns
// the response with its body (read, and closed), the time to its headers
// in milliseconds, or an error in a few words: where it failed and why.
func (p prober) send(ctx context.Context, t *failover.Transport, method, path string, body []byte) (*http.Response, []byte, float64, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	var stage atomic.Value // what the request was doing, for a timeout
	stage.Store("connecting")
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		DNSStart:          func(httptrace.DNSStartInfo) { stage.Store("resolving the host") },
		ConnectStart:      func(string, string) { stage.Store("connecting") },
		TLSHandshakeStart: func() { stage.Store("in the TLS handshake") },
		GotConn:           func(httptrace.GotConnInfo) { stage.Store("waiting for the response") },
	})
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, failover.DefaultClientBaseURL+path, rd)
	if err != nil {
		return nil, nil, 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	start := time.Now()
	resp, err := t.RoundTrip(req)
	latency := float64(time.Since(start).Microseconds()) / 1000
	if err != nil {
		desc := errdesc.Describe(err)
		if desc == "timed out" {
			desc = fmt.Sprintf("timed out after %v %s", p.timeout, stage.Load())
		}
		return nil, nil, 0, errors.New(p.scrub(desc))
	}
	defer resp.Body.Close()
	respBody, err := io.ReadAll(io.LimitReader(resp.Body, maxProbeBody))
	if err != nil {
		return nil, nil, 0, errors.New(p.scrub("reading the response: " + errdesc.Describe(err)))
	}
	return resp, respBody, latency, nil
}

// reason describes an error response in a few words: its status, and the
// provider's error code and message, scrubbed of keys and cut short.
func (p prober) reason(code int, body []byte) string {
	var e struct {
		Error struct {
			Message string `json:"message"`
			Code    any    `json:"code"`
		} `json:"error"`
	}
	out := strconv.Itoa(code)
	if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
		if c, ok := e.Error.Code.(string); ok && c != "" {
			out += " " + c
		}
		// Scrub first: a cut could leave part of a key unrecognisable.
		return cutText(p.scrub(out+": "+e.Error.Message), 120)
	}
	return out + " " + http.StatusText(code)
}

// maskedKeyRE matches what an upstream's error may show of a key: a word
// with a run of stars (OpenAI's "sk-ab*****wxyz"), or one in a key's shape.
var maskedKeyRE = regexp.MustCompile(`[A-Za-z0-9_\-]*\*{3,}[A-Za-z0-9_\-]*|\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{6,}`)

// scrub removes from s every endpoint's key and anything that looks like
// a key, masked or not.
func (p prober) scrub(s string) string {
	for _, k := range p.keys {
		s = strings.ReplaceAll(s, k, "[key]")
	}
	return maskedKeyRE.ReplaceAllString(s, "[key]")
}

// cutText shortens s to at most n runes, marking the cut.
func cutText(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func writeJSON(w io.Writer, v any) {
	b, _ := json.MarshalIndent(v, "", "  ")
	_, _ = w.Write(append(b, '\n'))
}

// writeWarnings prints the look-alike variables, if any.
func writeWarnings(w io.Writer, ws []lookAlike) {
	if len(ws) == 0 {
		return
	}
	fmt.Fprintln(w)
	for _, l := range ws {
		fmt.Fprintf(w, "warning: %s\n", l.Message)
	}
}

// writeCheckTable prints the report for people.
func writeCheckTable(w io.Writer, rep checkReport, f checkFlags) {
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	header := "ENDPOINT\tURL\tPRIORITY\tRESULT\tLATENCY\tMODELS"
	if f.model != "" {
		header += "\tCHAT"
	}
	fmt.Fprintln(tw, header+"\tERROR")
	for _, r := range rep.Endpoints {
		result := r.Result
		if result == "failed" {
			result = "FAILED"
		}
		latency, models := "-", "-"
		if r.LatencyMS != nil {
			latency = formatMS(*r.LatencyMS)
		}
		if r.Models != nil {
			models = strconv.Itoa(*r.Models)
		}
		row := fmt.Sprintf("%s\t%s\t%d\t%s\t%s\t%s", r.Name, r.URL, r.Priority, result, latency, models)
		if f.model != "" {
			chat := "-"
			if r.Chat != nil && r.Chat.Passed {
				chat = "ok " + formatMS(*r.Chat.LatencyMS)
			} else if r.Chat != nil {
				chat = "FAILED"
			}
			row += "\t" + chat
		}
		detail := r.Error
		if detail == "" {
			detail = r.Note
		}
		fmt.Fprintln(tw, row+"\t"+detail)
	}
	_ = tw.Flush()
	for _, line := range strings.Split(strings.TrimRight(b.String(), "\n"), "\n") {
		fmt.Fprintln(w, strings.TrimRight(line, " "))
	}
	writeWarnings(w, rep.Warnings)
	fmt.Fprintln(w)
	enabled := rep.Passed + rep.Failed
	switch {
	case enabled == 0:
		fmt.Fprintln(w, "FAILED: no endpoint is enabled.")
	case rep.Failed == 0:
		fmt.Fprintf(w, "OK: %s passed.\n", plural(enabled, "enabled endpoint"))
	default:
		fmt.Fprintf(w, "FAILED: %d of %s failed.\n", rep.Failed, plural(enabled, "enabled endpoint"))
	}
}

// formatMS formats milliseconds for the table.
func formatMS(ms float64) string {
	if ms < 10 {
		return strconv.FormatFloat(ms, 'f', 1, 64) + "ms"
	}
	return strconv.FormatFloat(ms, 'f', 0, 64) + "ms"
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}
