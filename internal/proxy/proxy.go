// Package proxy is the OpenAI-compatible reverse proxy of the failover
// command (cmd/failover): an [httputil.ReverseProxy] whose Transport is a
// [failover.Transport], so that a client in any language gets failover by
// pointing its SDK's base URL at the proxy.
//
// A [Proxy] maps each request under its base path (by default /v1) onto
// the transport's client-side base [InternalBaseURL], from where the
// transport rewrites it onto the chosen endpoint. Responses, streams
// included, are flushed to the client as they arrive. The client's
// Authorization header is never forwarded: each endpoint's own key replaces
// it; nor are the OpenAI-Organization and OpenAI-Project headers that
// qualify it. A path with a "." or ".." segment gets a 400 and goes
// nowhere. With a proxy key set, a client must present that key as its
// bearer token. /metrics (Prometheus), /healthz ([failover.Transport.HealthHandler])
// and /status ([failover.Transport.StatusHandler]) are served beside the
// API or on a listener of their own.
//
// The package lives under internal/ so that the command and the SDK tests
// of the nested integration module share one proxy.
package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/urlpath"
)

// InternalBaseURL is the client-side base URL of the proxy's transport:
// every request the proxy accepts is rewritten under it before the
// transport routes it to an endpoint. Its host never resolves; it is only
// a routing key inside the process.
const InternalBaseURL = "http://failover.internal/v1"

// Defaults for the zero fields of [Config].
const (
	// DefaultBasePath is the path prefix the proxy serves the API under.
	DefaultBasePath = "/v1"
	// DefaultShutdownTimeout bounds the graceful shutdown.
	DefaultShutdownTimeout = 30 * time.Second
)

// Paths of the administrative handlers.
const (
	MetricsPath = "/metrics"
	HealthPath  = "/healthz"
	StatusPath  = "/status"
)

// Config configures a [Proxy]. Only Failover.Endpoints is required; every
// other zero field means the documented default.
type Config struct {
	// Failover configures the transport, as [failover.ConfigFromEnv]
	// returns it. New replaces its ClientBaseURLs with {InternalBaseURL}
	// and its Registerer with the proxy's own registry; a nil Base means a
	// transport of the proxy's own, released by [Proxy.Close]; a nil
	// Logger means Config.Logger. To log each request's attempts, New
	// wraps Base and Classifier (nil: [failover.DefaultClassifier]) and
	// gives each endpoint a header that the wrapped Base removes before
	// the attempt leaves the process.
	Failover failover.Config

	// BasePath is the path under which clients send API requests: a client
	// whose base URL is http://<listen>/v1 sends /v1/chat/completions,
	// which goes to <endpoint BaseURL>/chat/completions. Requests outside
	// it get a 404, and a path with a "." or ".." segment a 400. Empty
	// means [DefaultBasePath]; "/" proxies every path but the
	// administrative ones.
	BasePath string

	// ProxyKey, when not empty, is the bearer token every API request must
	// present in its Authorization header; others get a 401. Empty means
	// no access control (the command then listens on loopback only unless
	// told otherwise). /metrics and /healthz never require it.
	ProxyKey string

	// ShutdownTimeout bounds how long [Proxy.Serve] waits for requests in
	// flight, streams and upgraded connections included, once its context
	// is done; then it closes the remaining connections. Zero means
	// [DefaultShutdownTimeout].
	ShutdownTimeout time.Duration

	// Logger receives the proxy's logs: one line per request at Info
	// (method, path, status, bytes, duration, the endpoint that answered,
	// the number of attempts, and aborted=true for a response cut short;
	// never a header, a query or a body), one line per failed attempt at
	// Debug (its endpoint and outcome), shutdown progress, and the
	// transport's own logs. Nil means silent.
	Logger *slog.Logger
}

// Proxy is an OpenAI-compatible reverse proxy with failover. Create one
// with [New]; the zero value is not usable. A Proxy is safe for concurrent
// use, and its handlers may serve any number of listeners.
type Proxy struct {
	basePath        string // "" for the root, else "/x" without trailing slash
	internal        *url.URL
	requireKey      bool
	keySum          [32]byte // sha256 of ProxyKey
	shutdownTimeout time.Duration
	transport       *failover.Transport
	base            *http.Transport // ours to close; nil when Failover.Base was set
	registry        *prometheus.Registry
	rp              *httputil.ReverseProxy
	metrics         http.Handler
	health          http.Handler
	status          http.Handler
	endpoints       []EndpointInfo
	logger          *slog.Logger
}

// New validates cfg and returns a Proxy for it. Its error is that of
// [failover.New] or names the Config field that is wrong; it never quotes a
// key.
func New(cfg Config) (*Proxy, error) {
	basePath, err := cleanBasePath(cfg.BasePath)
	if err != nil {
		return nil, fmt.Errorf("proxy: base path: %w", err)
	}
	if cfg.ShutdownTimeout < 0 {
		return nil, fmt.Errorf("proxy: shutdown timeout %v is negative", cfg.ShutdownTimeout)
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if strings.ContainsAny(cfg.ProxyKey, "\r\n") {
		return nil, errors.New("proxy: the proxy key contains a line break")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{
		basePath:        basePath,
		requireKey:      cfg.ProxyKey != "",
		keySum:          keyHash(cfg.ProxyKey),
		shutdownTimeout: cfg.ShutdownTimeout,
		registry:        prometheus.NewRegistry(),
		logger:          logger,
	}
	p.internal, _ = url.Parse(InternalBaseURL)

	fc := cfg.Failover
	fc.ClientBaseURLs = []string{InternalBaseURL}
	fc.Registerer = p.registry
	if fc.Logger == nil {
		fc.Logger = cfg.Logger
	}
	if fc.Base == nil {
		p.base = http.DefaultTransport.(*http.Transport).Clone()
		// A proxy keeps many connections to few hosts.
		p.base.MaxIdleConnsPerHost = 64
		fc.Base = p.base
	}
	// The base transport and the classifier record each attempt for the
	// access log.
	fc.Base = attemptCounter{next: fc.Base}
	fc.Endpoints = markEndpoints(fc.Endpoints)
	fc.Classifier = recordVerdicts(fc.Classifier)
	if p.transport, err = failover.New(fc); err != nil {
		p.Close()
		return nil, err
	}
	p.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	p.metrics = promhttp.HandlerFor(p.registry, promhttp.HandlerOpts{})
	p.health = p.transport.HealthHandler()
	p.status = p.transport.StatusHandler()
	p.endpoints = describeEndpoints(p.transport.Health(), fc.Endpoints)
	p.rp = &httputil.ReverseProxy{
		Rewrite:       p.rewrite,
		Transport:     p.transport,
		FlushInterval: -1, // every write reaches the client at once: SSE
		ErrorHandler:  p.proxyError,
		ErrorLog:      slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	return p, nil
}

// cleanBasePath normalises a base path to "" (the root) or "/a/b", and
// rejects what cannot be a plain path prefix.
func cleanBasePath(p string) (string, error) {
	if p == "" {
		p = DefaultBasePath
	}
	if strings.ContainsAny(p, "?#%") {
		return "", fmt.Errorf("%q must be a plain path, without query, fragment or escapes", p)
	}
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	if p != "/" {
		p = strings.TrimSuffix(p, "/")
	}
	if path.Clean(p) != p {
		return "", fmt.Errorf("%q is not a clean path (want, for example, /v1)", p)
	}
	if p == "/" {
		return "", nil
	}
	return p, nil
}

// Transport returns the failover transport the proxy sends through, for
// its health and tests.
func (p *Proxy) Transport() *failover.Transport { return p.transport }

// Registry returns the Prometheus registry served on /metrics: the
// transport's metrics and the Go and process collectors.
func (p *Proxy) Registry() *prometheus.Registry { return p.registry }

// BasePath returns the cleaned base path, "/" for the root.
func (p *Proxy) BasePath() string {
	if p.basePath == "" {
		return "/"
	}
	return p.basePath
}

// Handler returns the proxy's handler for a single listener: the API under
// the base path, and /metrics, /healthz and /status. Use [Proxy.APIHandler] and
// [Proxy.AdminHandler] to serve them on separate listeners.
func (p *Proxy) Handler() http.Handler { return p.handler(true, true) }

// APIHandler returns the handler of the API alone; every path outside the
// base path, /metrics, /healthz and /status included, gets a 404, except a path with
// a "." or ".." segment, which gets a 400.
func (p *Proxy) APIHandler() http.Handler { return p.handler(true, false) }

// AdminHandler returns the handler of /metrics, /healthz and /status
// alone; every other path gets a 404.
func (p *Proxy) AdminHandler() http.Handler { return p.handler(false, true) }

func (p *Proxy) handler(api, admin bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case admin && r.URL.Path == MetricsPath:
			p.metrics.ServeHTTP(w, r)
		case admin && r.URL.Path == HealthPath:
			p.health.ServeHTTP(w, r)
		case admin && r.URL.Path == StatusPath:
			p.status.ServeHTTP(w, r)
		case api && (urlpath.Under(r.URL.Path, p.basePath) || urlpath.HasDotSegment(r.URL.Path)):
			// A path with dot segments gets its 400 from serveAPI, in or
			// out of the base path.
			p.serveAPI(w, r)
		default:
			writeError(w, http.StatusNotFound, "invalid_request_error", "unknown_url",
				fmt.Sprintf("Unknown request URL: %s %s. The proxy serves the API under %s.", r.Method, r.URL.Path, p.BasePath()))
		}
	})
}

// serveAPI checks the request's path and the client's access and proxies
// the request, logging it.
func (p *Proxy) serveAPI(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	r, attempts := withAttemptLog(r)
	rec := &recorder{ResponseWriter: w}
	completed := false
	// Deferred, so that a request whose handler panics gets its line too:
	// the ReverseProxy aborts a response whose body it cannot copy (the
	// upstream cut the stream, or the client went away) by panicking with
	// http.ErrAbortHandler. Nothing recovers: the panic goes on to
	// net/http, which closes the connection.
	defer func() {
		attrs := []slog.Attr{
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.Int("status", rec.status()),
			slog.Int64("bytes", rec.written),
			slog.Duration("duration", time.Since(start)),
		}
		if !completed {
			attrs = append(attrs, slog.Bool("aborted", true))
		}
		attrs = append(attrs, p.logAttempts(r, attempts)...)
		p.logger.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
	}()
	switch {
	case urlpath.HasDotSegment(r.URL.Path):
		// An upstream (or anything in front of it) that resolves dot
		// segments would serve the request from outside the endpoint's
		// base path, with the endpoint's key. No API path has one.
		writeError(rec, http.StatusBadRequest, "invalid_request_error", "invalid_path",
			`The request path has a "." or ".." segment; the proxy does not forward such paths.`)
	case p.requireKey && !p.authorized(r):
		w.Header().Set("WWW-Authenticate", `Bearer realm="failover"`)
		writeError(rec, http.StatusUnauthorized, "invalid_request_error", "invalid_api_key",
			"Missing or incorrect proxy key: send the proxy's key (FAILOVER_PROXY_KEY) as Authorization: Bearer <key>.")
	default:
		p.rp.ServeHTTP(rec, r)
	}
	completed = true
}

// Close releases the idle upstream connections of the proxy's own base
// transport. Call it once the proxy no longer serves.
func (p *Proxy) Close() {
	if p.base != nil {
		p.base.CloseIdleConnections()
	}
}

// recorder remembers a response's status and size for the access log. It
// unwraps to the underlying writer, so http.ResponseController (which the
// ReverseProxy uses to flush) reaches the connection.
type recorder struct {
	http.ResponseWriter
	code    int
	written int64
}

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 && code >= 200 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.written += int64(n)
	return n, err
}

// Hijack hijacks the underlying connection, as the ReverseProxy does to
// relay an upgraded (WebSocket) connection once the upstream answered 101;
// the access log then shows 101, which the proxy writes on the hijacked
// connection.
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(r.ResponseWriter).Hijack()
	if err == nil && r.code == 0 {
		r.code = http.StatusSwitchingProtocols
	}
	return conn, brw, err
}

// Flush flushes the underlying writer, for callers that test for
// http.Flusher.
func (r *recorder) Flush() { _ = http.NewResponseController(r.ResponseWriter).Flush() }

// Unwrap returns the underlying writer, for http.ResponseController.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *recorder) status() int {
	if r.code == 0 {
		return http.StatusOK
	}
	return r.code
}
