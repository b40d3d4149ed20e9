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
// bearer token. Only GET, POST and DELETE (WebSocket upgrades included)
// reach an endpoint. Web browsers are kept in check (see
// [Config.AllowOrigins] and [Config.AnyHost]), a request that comes back
// to the proxy that sent it is refused ([HopHeader]), and a request body
// must arrive within [Config.ReadTimeout]. A request for a model no
// endpoint serves ([failover.Endpoint].Models) gets OpenAI's 404
// model_not_found. /metrics (Prometheus), /healthz
// ([failover.Transport.HealthHandler]) and /status
// ([failover.Transport.StatusHandler]) are served beside the API or on a
// listener of their own.
//
// The package lives under internal/ so that the command and the SDK tests
// of the nested integration module share one proxy.
package proxy

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

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
	// DefaultReadTimeout bounds the read of a request body.
	DefaultReadTimeout = 60 * time.Second
	// DefaultMaxBody is the largest request body the proxy buffers so that
	// it can fail over (OpenAI's audio uploads go to 25 MB).
	DefaultMaxBody = 32 << 20
)

// maxLoggedPath is the longest path an access-log line shows in full.
const maxLoggedPath = 256

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
	// Logger means Config.Logger; its OnAttempt is the proxy's, which
	// records each attempt for the access log; a zero MaxBodyBuffer means
	// [DefaultMaxBody] (negative: no body is buffered, and a request with
	// one goes to one endpoint only; an error with endpoints that route by
	// model, which read every body). Its Shared, like its Base, is kept
	// for every Update.
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

	// AllowOrigins lists the web origins whose pages may call the API from
	// a browser, each exactly as a browser sends it in its Origin header:
	// scheme://host[:port], lowercase, without the scheme's default port
	// or a trailing slash (https://app.example.com, http://localhost:3000).
	// A request whose Origin is not in the list gets a 403, with a proxy
	// key or without; a request without an Origin (an SDK, curl) is not
	// concerned. The proxy answers every CORS preflight itself and never
	// forwards one: 204 with the Access-Control-* headers for an allowed
	// origin and method, else 403. The responses to an allowed origin carry
	// Access-Control-Allow-Origin with that origin; an endpoint's own
	// Access-Control-* headers never pass. "*" allows every origin, and
	// only with a ProxyKey (each request must then present the key):
	// without one, any page the user opens could spend the endpoints'
	// keys. Nil means none: web pages get a 403.
	AllowOrigins []string

	// AnyHost, when true, accepts requests whatever their Host header. When
	// false (the default), a request must name a loopback host (localhost
	// in any case, 127.0.0.0/8 or [::1], with or without a port), as a
	// client of a proxy on loopback does, or it gets a 403: a web page that
	// reaches the proxy through DNS rebinding names its own host. With a
	// ProxyKey the API accepts any Host (such a page does not know the
	// key), but /metrics and /healthz, which never ask for the key, still
	// need a loopback Host unless AnyHost.
	AnyHost bool

	// ReadTimeout bounds how long a client may take to send a request's
	// body, from the end of its headers (whose read has its own timeout).
	// A slower client gets a 408, and no endpoint is charged with the
	// failure, even when an attempt was already sending the body on. Zero
	// means [DefaultReadTimeout]; negative is an error.
	ReadTimeout time.Duration

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
	origins         originPolicy
	anyHost         bool
	hopID           string // this proxy's ID in HopHeader
	readTimeout     time.Duration
	shutdownTimeout time.Duration
	own             ownedSettings // applied to every transport Config
	transport       *failover.Transport
	updater         updater         // the transport, if it can be reconfigured
	base            *http.Transport // ours to close; nil when Failover.Base was set
	registry        *prometheus.Registry
	rp              *httputil.ReverseProxy
	metrics         http.Handler
	health          http.Handler
	status          http.Handler
	logger          *slog.Logger

	mu        sync.Mutex      // serialises Update; guards the fields below
	cfg       failover.Config // the transport's configuration, as prepared
	endpoints []EndpointInfo
}

// New validates cfg and returns a Proxy for it. Its error is that of
// [failover.New] or names the Config field that is wrong; it never quotes a
// key.
func New(cfg Config) (*Proxy, error) {
	cfg, basePath, origins, err := cfg.checked()
	if err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{
		basePath:        basePath,
		requireKey:      cfg.ProxyKey != "",
		keySum:          keyHash(cfg.ProxyKey),
		origins:         origins,
		anyHost:         cfg.AnyHost,
		hopID:           newHopID(),
		readTimeout:     cfg.ReadTimeout,
		shutdownTimeout: cfg.ShutdownTimeout,
		registry:        prometheus.NewRegistry(),
		logger:          logger,
	}
	p.internal, _ = url.Parse(InternalBaseURL)
	p.own = p.ownSettings(cfg)
	fc := p.prepare(cfg.Failover)
	if p.transport, err = failover.New(fc); err != nil {
		p.Close()
		return nil, err
	}
	p.updater = p.transport
	p.cfg = fc
	p.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	p.metrics = promhttp.HandlerFor(p.registry, promhttp.HandlerOpts{})
	p.health = p.transport.HealthHandler()
	p.status = p.transport.StatusHandler()
	p.endpoints = describeEndpoints(p.transport.Health(), fc.Endpoints)
	p.rp = &httputil.ReverseProxy{
		Rewrite:        p.rewrite,
		ModifyResponse: modifyResponse,
		Transport:      p.transport,
		FlushInterval:  -1, // every write reaches the client at once: SSE
		ErrorHandler:   p.proxyError,
		ErrorLog:       slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	return p, nil
}

// checked validates cfg's own fields and returns it with their defaults,
// its base path cleaned and its origin policy.
func (cfg Config) checked() (Config, string, originPolicy, error) {
	basePath, err := cleanBasePath(cfg.BasePath)
	if err != nil {
		return cfg, "", originPolicy{}, fmt.Errorf("proxy: base path: %w", err)
	}
	switch {
	case cfg.ShutdownTimeout < 0:
		return cfg, "", originPolicy{}, fmt.Errorf("proxy: shutdown timeout %v is negative", cfg.ShutdownTimeout)
	case cfg.ShutdownTimeout == 0:
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if strings.ContainsAny(cfg.ProxyKey, "\r\n") {
		return cfg, "", originPolicy{}, errors.New("proxy: the proxy key contains a line break")
	}
	origins, err := newOriginPolicy(cfg.AllowOrigins, cfg.ProxyKey != "")
	if err != nil {
		return cfg, "", originPolicy{}, fmt.Errorf("proxy: %w", err)
	}
	switch {
	case cfg.ReadTimeout < 0:
		return cfg, "", originPolicy{}, fmt.Errorf("proxy: read timeout %v is negative", cfg.ReadTimeout)
	case cfg.ReadTimeout == 0:
		cfg.ReadTimeout = DefaultReadTimeout
	}
	return cfg, basePath, origins, nil
}

// ownSettings returns the transport settings the proxy owns from cfg, with
// their defaults: a base transport of the proxy's own (p.base, closed by
// Close) when cfg has none.
func (p *Proxy) ownSettings(cfg Config) ownedSettings {
	own := ownedSettings{
		base:           cfg.Failover.Base,
		logger:         cmp.Or(cfg.Failover.Logger, cfg.Logger),
		endpointHeader: cfg.Failover.EndpointHeader,
		maxBody:        cmp.Or(cfg.Failover.MaxBodyBuffer, DefaultMaxBody),
		shared:         cfg.Failover.Shared,
	}
	if own.base == nil {
		p.base = http.DefaultTransport.(*http.Transport).Clone()
		// A proxy keeps many connections to few hosts.
		p.base.MaxIdleConnsPerHost = 64
		own.base = p.base
	}
	return own
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

// handler serves the API (api), the admin paths (admin) or both. Outside
// the API, where nothing is logged, it checks the method (the admin paths
// take GET and HEAD; any other path gets a 405 for a method the API never
// takes, such as TRACE or CONNECT, else a 404) and the Host, as for a
// request without a proxy key.
func (p *Proxy) handler(api, admin bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if api && (urlpath.Under(r.URL.Path, p.basePath) || urlpath.Unsafe(r.URL.Path) != "") {
			// An unsafe path gets its 400 from serveAPI, in or out of the
			// base path.
			p.serveAPI(w, r)
			return
		}
		isAdmin := admin && (r.URL.Path == MetricsPath || r.URL.Path == HealthPath || r.URL.Path == StatusPath)
		switch {
		case isAdmin && r.Method != http.MethodGet && r.Method != http.MethodHead:
			refuseMethod(w, "GET, HEAD")
		case !isAdmin && !isAPIMethod(r.Method) && r.Method != http.MethodHead:
			refuseMethod(w, apiMethods)
		case !p.hostAllowed(r, false):
			p.refuseHost(w)
		case r.URL.Path == MetricsPath && isAdmin:
			p.metrics.ServeHTTP(w, r)
		case r.URL.Path == HealthPath && isAdmin:
			p.health.ServeHTTP(w, r)
		case r.URL.Path == StatusPath && isAdmin:
			p.status.ServeHTTP(w, r)
		default:
			writeError(w, http.StatusNotFound, "invalid_request_error", "unknown_url",
				fmt.Sprintf("Unknown request URL: %s %s. The proxy serves the API under %s.", r.Method, cutPath(r.URL.Path), p.BasePath()))
		}
	})
}

// refuseMethod answers a request whose method the path does not take.
func refuseMethod(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeError(w, http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed",
		fmt.Sprintf("The proxy takes only %s requests here.", allow))
}

// serveAPI answers a CORS preflight, or checks the request (its method,
// Host, origin, hops, path and the client's access) and proxies it; it
// logs either.
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
		attrs := p.accessAttrs(r, rec, start, completed)
		attrs = append(attrs, p.logAttempts(r, attempts)...)
		p.logger.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
	}()
	origin := r.Header.Get("Origin")
	switch {
	case isPreflight(r):
		p.preflight(rec, r)
	case !isAPIMethod(r.Method):
		refuseMethod(rec, apiMethods)
	case !p.hostAllowed(r, true):
		p.refuseHost(rec)
	case origin != "" && !p.origins.allows(origin):
		p.refuseOrigin(rec)
	case looped(r, p.hopID):
		refuseLoop(rec)
	case urlpath.Unsafe(r.URL.Path) != "":
		// An upstream (or anything in front of it) that resolves dot
		// segments, decodes twice or reads "\" or ";" as a separator
		// would serve the request from outside the endpoint's base path,
		// with the endpoint's key. No API path has any of these.
		writeError(rec, http.StatusBadRequest, "invalid_request_error", "invalid_path",
			"The request path has "+urlpath.Unsafe(r.URL.Path)+"; the proxy does not forward such paths.")
	default:
		if origin != "" {
			allowOrigin(rec.Header(), origin)
		}
		if p.requireKey && !p.authorized(r) {
			rec.Header().Set("WWW-Authenticate", `Bearer realm="failover"`)
			writeError(rec, http.StatusUnauthorized, "invalid_request_error", "invalid_api_key",
				"Missing or incorrect proxy key: send the proxy's key (FAILOVER_PROXY_KEY) as Authorization: Bearer <key>.")
			break
		}
		out, body := timeBody(w, r, p.readTimeout)
		rec.body = body
		defer body.done()
		p.rp.ServeHTTP(rec, out)
	}
	completed = true
}

// accessAttrs returns the access-log attributes of r: method, path (cut
// at maxLoggedPath bytes, with path_bytes giving its length), status,
// bytes, duration, and aborted=true for a response cut short.
func (p *Proxy) accessAttrs(r *http.Request, rec *recorder, start time.Time, completed bool) []slog.Attr {
	attrs := make([]slog.Attr, 0, 7)
	attrs = append(attrs, slog.String("method", r.Method), slog.String("path", cutPath(r.URL.Path)))
	if len(r.URL.Path) > maxLoggedPath {
		attrs = append(attrs, slog.Int("path_bytes", len(r.URL.Path)))
	}
	attrs = append(attrs,
		slog.Int("status", rec.status()),
		slog.Int64("bytes", rec.written),
		slog.Duration("duration", time.Since(start)),
	)
	if !completed {
		attrs = append(attrs, slog.Bool("aborted", true))
	}
	return attrs
}

// cutPath returns p whole if it has at most maxLoggedPath bytes, else its
// first maxLoggedPath bytes (never splitting a UTF-8 sequence) and "…".
func cutPath(p string) string {
	if len(p) <= maxLoggedPath {
		return p
	}
	cut := maxLoggedPath
	for cut > 0 && !utf8.RuneStart(p[cut]) {
		cut--
	}
	return p[:cut] + "…"
}

// Close stops the failover transport's background work (its recovery
// probes; [failover.Transport.Close]) and releases the idle upstream
// connections of the proxy's own base transport. Call it once the proxy
// no longer serves.
func (p *Proxy) Close() {
	if p.transport != nil {
		_ = p.transport.Close()
	}
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
	body    *clientBody // the request body under the read timeout, if any
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
	if r.body != nil {
		r.body.release() // the read timeout is the body's, not the relay's
	}
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
