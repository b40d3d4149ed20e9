package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/envfile"
	"github.com/failover-go/failover/internal/proxy"
	"github.com/failover-go/failover/redisshare"
)

// envProxyKey names the variable holding the key clients must present.
const envProxyKey = "FAILOVER_PROXY_KEY"

// proxyFlags are the proxy command's flags.
type proxyFlags struct {
	listen          string
	basePath        string
	adminListen     string
	allowRemote     bool
	allowOrigins    []string
	shutdownTimeout time.Duration
	readTimeout     time.Duration
	maxBody         int64 // failover.Config.MaxBodyBuffer: -1 for none
	logLevel        slog.Level
	endpointHeader  string
	envFile         string
	redis           string // -redis: the shared state's URL, over FAILOVER_REDIS_URL
}

// parseProxyFlags parses the proxy command's arguments, reporting any error
// to stderr.
func parseProxyFlags(args []string, stderr io.Writer) (proxyFlags, error) {
	var f proxyFlags
	fs := commandFlags("failover proxy", proxyUsage, stderr)
	f.define(fs)
	if err := fs.Parse(args); err != nil {
		return f, err // reported by fs
	}
	var err error
	switch {
	case fs.NArg() > 0:
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case f.shutdownTimeout <= 0:
		err = fmt.Errorf("-shutdown-timeout %v: want a positive duration", f.shutdownTimeout)
	case f.readTimeout <= 0:
		err = fmt.Errorf("-read-timeout %v: want a positive duration", f.readTimeout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "failover proxy: %v\n", err)
	}
	return f, err
}

// define declares f's flags in fs, with their defaults.
func (f *proxyFlags) define(fs *flag.FlagSet) {
	fs.StringVar(&f.listen, "listen", "127.0.0.1:8080", "`address` to serve the API on")
	fs.StringVar(&f.basePath, "base-path", proxy.DefaultBasePath,
		"`path` clients send the API under: their base URL is http://<listen><path>")
	fs.StringVar(&f.adminListen, "admin-listen", "",
		"`address` to serve /metrics, /healthz and /status on; empty: on -listen")
	fs.BoolVar(&f.allowRemote, "allow-remote", false,
		"listen on non-loopback addresses without "+envProxyKey+", serve /metrics, /healthz and /status on one, and accept any Host name")
	fs.Func("allow-origin", "comma-separated web `origins` (https://app.example.com) whose pages may call the API from a browser; * for any, with "+envProxyKey+" only; default: none",
		func(s string) error {
			for o := range strings.SplitSeq(s, ",") {
				if o = strings.TrimSpace(o); o != "" {
					f.allowOrigins = append(f.allowOrigins, o)
				}
			}
			return nil
		})
	fs.DurationVar(&f.readTimeout, "read-timeout", proxy.DefaultReadTimeout,
		"how long a client may take to send a request body, after its headers")
	f.maxBody = proxy.DefaultMaxBody
	fs.Func("max-body", "largest request body (`size`) buffered so that its request can fail over, such as 32MiB or 25MB; 0: none (default 32MiB)",
		func(s string) error {
			n, err := parseSize(s)
			f.maxBody = n
			return err
		})
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", proxy.DefaultShutdownTimeout,
		"how long requests in flight (streams and upgraded connections too) may run on after SIGINT or SIGTERM")
	fs.TextVar(&f.logLevel, "log-level", slog.LevelInfo, "log `level`: debug, info, warn or error")
	fs.StringVar(&f.endpointHeader, "endpoint-header", "Failover-Endpoint",
		"response `header` naming the endpoint that answered; empty: none")
	fs.StringVar(&f.envFile, "env-file", "",
		"dotenv `file` of the same variables as the environment, which it overrides; reloaded on SIGHUP and when it changes")
	fs.StringVar(&f.redis, "redis", "",
		"`URL` of a Redis (redis:// or rediss://) through which the proxies of a fleet share their rate budgets and endpoint health; default: "+redisshare.EnvURL+" (keys under "+redisshare.EnvPrefix+", default "+redisshare.DefaultPrefix+")")
}

// proxyUsage opens the proxy command's help, before its flags.
const proxyUsage = `Usage: failover proxy [flags]

An OpenAI-compatible reverse proxy that fails over across the endpoints
described by the environment (OPENAI_BASE_URL_N, OPENAI_API_KEY_N, ...; see
the README), and by -env-file, whose variables override the environment's.
Point an SDK's base URL at http://<listen>/v1. The -env-file is read again
on SIGHUP and when it changes: the endpoints change without a restart, or,
if the file has an error, the running ones stay.

` + envProxyKey + `, when set, is the key clients must send as their API key
(Authorization: Bearer <key>). Without it the proxy listens on loopback only,
unless -allow-remote is given, and answers only requests for a loopback host
name (localhost, 127.0.0.1, [::1]): another one may come from a web page
through DNS rebinding. /metrics, /healthz and /status never ask for the key:
they are served on -admin-listen, or on -listen without it, and that
address must be loopback unless -allow-remote is given. The client's own
Authorization header is never forwarded: each endpoint's key replaces it.

Web pages (requests with an Origin header) are refused unless -allow-origin
lists their origin; CORS preflights are answered here, never forwarded. Only
GET, POST and DELETE reach an endpoint.

Flags:
`

// maxBodyLimit caps -max-body: every request in flight may hold that much.
const maxBodyLimit = 1 << 30

// parseSize parses the value of -max-body (go-humanize's sizes: 1048576,
// 32MiB, 25MB, 512 KiB) into failover.Config.MaxBodyBuffer: 0 becomes -1,
// no buffering.
func parseSize(s string) (int64, error) {
	n, err := humanize.ParseBytes(strings.TrimSpace(s))
	switch {
	case err != nil:
		return 0, errors.New("want a size such as 32MiB, 25MB or 1048576 (bytes)")
	case n > maxBodyLimit:
		return 0, errors.New("at most 1GiB: every request in flight may hold this much memory")
	case n == 0:
		return -1, nil
	}
	return int64(n), nil
}

// runProxyCommand runs "failover proxy" until ctx is done. hangup, when
// not nil, subscribes to SIGHUP, for the -env-file's reloads.
func runProxyCommand(ctx context.Context, args, environ []string, hangup hangupFunc, stderr io.Writer) int {
	f, err := parseProxyFlags(args, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case err != nil:
		return exitUsage
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: f.logLevel}))
	src := configSource{environ: environ, envFile: f.envFile, endpointHeader: f.endpointHeader, maxBody: f.maxBody}
	var watcher *envfile.Watcher
	if f.envFile != "" {
		// Before the first read, so that no change goes unseen.
		if watcher, err = envfile.Watch(f.envFile, 0); err != nil {
			logger.Warn("not watching the -env-file for changes; send SIGHUP to reload it", "error", err)
		} else {
			defer watcher.Close()
		}
	}
	p, cfg, key, closeAll, err := newProxy(f, src, logger)
	if err != nil {
		configError(stderr, err)
		return exitUsage
	}
	defer closeAll()
	ln, admin, err := listenProxy(f, cfg, key)
	if err != nil {
		fmt.Fprintf(stderr, "failover proxy: %v\n", err)
		return exitUsage
	}
	if f.envFile != "" {
		var changes <-chan struct{}
		if watcher != nil {
			changes = watcher.C
		}
		stop := startReloader(ctx, reloadSetup{src: src, key: key, proxy: p, addr: ln.Addr(), changes: changes, hangup: hangup, logger: logger})
		defer stop()
	}
	logStartup(logger, p, ln, admin, key != "")
	if err := p.Serve(ctx, ln, admin); err != nil {
		logger.Error("proxy stopped", "error", err)
		return exitFailure
	}
	return exitOK
}

// newProxy reads the configuration from src and builds the proxy of the
// flags over it, with the fleet's shared state when one is configured. It
// returns the configuration, the proxy key, and a function that closes
// the proxy and the shared state.
func newProxy(f proxyFlags, src configSource, logger *slog.Logger) (*proxy.Proxy, failover.Config, string, func(), error) {
	cfg, key, err := src.load()
	if err != nil {
		return nil, cfg, "", nil, err
	}
	store, err := src.openShared(f.redis, logger)
	if err != nil {
		return nil, cfg, "", nil, err
	}
	if store != nil {
		cfg.Shared = store
	}
	p, err := proxy.New(proxy.Config{
		Failover:        cfg,
		BasePath:        f.basePath,
		ProxyKey:        key,
		AllowOrigins:    f.allowOrigins,
		AnyHost:         f.allowRemote,
		ReadTimeout:     f.readTimeout,
		ShutdownTimeout: f.shutdownTimeout,
		Logger:          logger,
	})
	if err != nil {
		if store != nil {
			_ = store.Close()
		}
		return nil, cfg, "", nil, err
	}
	return p, cfg, key, func() {
		p.Close()
		if store != nil {
			_ = store.Close()
		}
	}, nil
}

// listenProxy opens the API's listener and, with -admin-listen, the admin
// handlers' (else they go on -listen), as the access policy allows, and
// checks that no endpoint is the proxy itself. On error, nothing stays
// open.
func listenProxy(f proxyFlags, cfg failover.Config, key string) (ln, admin net.Listener, err error) {
	pol := remotePolicy{haveKey: key != "", allowRemote: f.allowRemote}
	if ln, err = listen(f.listen, "-listen", pol, true, f.adminListen == ""); err != nil {
		return nil, nil, err
	}
	if f.adminListen != "" {
		if admin, err = listen(f.adminListen, "-admin-listen", pol, false, true); err != nil {
			_ = ln.Close()
			return nil, nil, err
		}
	}
	if err := proxy.CheckNoLoop(cfg.Endpoints, ln.Addr()); err != nil {
		_ = ln.Close()
		if admin != nil {
			_ = admin.Close()
		}
		return nil, nil, err
	}
	return ln, admin, nil
}

// configSource reads the proxy's transport configuration, the same way at
// start and at each reload: the environment, with the -env-file's
// variables over it, and the settings of the flags.
type configSource struct {
	environ        []string
	envFile        string // "" for none
	endpointHeader string
	maxBody        int64
}

// merged returns the environment with the -env-file's variables over it.
func (s configSource) merged() ([]string, error) {
	if s.envFile == "" {
		return s.environ, nil
	}
	environ, err := envfile.LoadOver(s.environ, s.envFile)
	if err != nil {
		return nil, fmt.Errorf("-env-file: %w", err)
	}
	return environ, nil
}

// openShared returns the Store on the Redis of flagURL (-redis), else of
// FAILOVER_REDIS_URL, with the prefix FAILOVER_REDIS_PREFIX; nil when
// neither is set. Read at start only: the shared state cannot change
// while the proxy runs. Its error never shows the URL's password.
func (s configSource) openShared(flagURL string, logger *slog.Logger) (*redisshare.Store, error) {
	environ, err := s.merged()
	if err != nil {
		return nil, err
	}
	if flagURL != "" {
		environ = append([]string{redisshare.EnvURL + "=" + flagURL}, environ...)
	}
	redisshare.RouteClientLogs(logger) // the client's own lines, at Debug
	store, err := redisshare.FromEnviron(environ, redisshare.Options{Logger: logger})
	if err != nil {
		if flagURL != "" {
			return nil, fmt.Errorf("-redis: %w", errors.Unwrap(err))
		}
		return nil, err
	}
	if store != nil {
		logger.Info("shared state: rate budgets and endpoint health shared with the fleet on Redis", "store", store.String())
	}
	return store, nil
}

// load returns the configuration and FAILOVER_PROXY_KEY. Its error names
// the variable or the file's line, never a value.
func (s configSource) load() (failover.Config, string, error) {
	environ, err := s.merged()
	if err != nil {
		return failover.Config{}, "", err
	}
	cfg, err := failover.ConfigFromEnviron(environ)
	if err != nil {
		return failover.Config{}, "", err
	}
	cfg.EndpointHeader = s.endpointHeader
	cfg.MaxBodyBuffer = s.maxBody
	return cfg, strings.TrimSpace(lookupEnv(environ, envProxyKey)), nil
}

// reloadSetup is what the reloads of the -env-file need.
type reloadSetup struct {
	src     configSource
	key     string // FAILOVER_PROXY_KEY at start
	proxy   *proxy.Proxy
	addr    net.Addr // the API listener's, for the loop check
	changes <-chan struct{}
	hangup  hangupFunc // nil: no SIGHUP
	logger  *slog.Logger
}

// startReloader reloads the -env-file on each change and SIGHUP until ctx
// is done or the returned stop is called; stop waits for the reloads to
// end. A reloaded configuration is checked and prepared exactly as at
// start (the same load, CheckNoLoop on the same listener, and the proxy's
// own settings applied by Proxy.Update). FAILOVER_PROXY_KEY is read at
// start only: a change in the file is logged and waits for a restart.
func startReloader(ctx context.Context, s reloadSetup) (stop func()) {
	var (
		hups    <-chan os.Signal
		stopHup = func() {}
	)
	if s.hangup != nil {
		hups, stopHup = s.hangup()
	}
	r := &proxy.Reloader{
		Load: func() (failover.Config, error) {
			cfg, key, err := s.src.load()
			if err == nil && key != s.key {
				s.logger.Warn(envProxyKey + " differs in the -env-file: it applies at the next start; the running key stays")
			}
			return cfg, err
		},
		Apply: func(cfg failover.Config) error {
			if err := proxy.CheckNoLoop(cfg.Endpoints, s.addr); err != nil {
				return err
			}
			return s.proxy.Update(cfg)
		},
		Changes: s.changes,
		Hangups: hups,
		Logger:  s.logger,
	}
	s.logger.Info("the -env-file is reloaded on SIGHUP and when it changes", "path", s.src.envFile, "watching", s.changes != nil)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	return func() {
		cancel()
		<-done
		stopHup()
	}
}

// configError prints a configuration error, one problem a line. Neither
// failover.ConfigFromEnviron nor proxy.New quotes a key in its errors.
func configError(w io.Writer, err error) {
	fmt.Fprintln(w, "failover proxy: bad configuration:")
	for line := range strings.SplitSeq(err.Error(), "\n") {
		fmt.Fprintf(w, "  %s\n", line)
	}
}

// errRemote is a listen address refused for being reachable from other
// machines.
var errRemote = errors.New("not a loopback address")

// listen listens on addr, the value of flagName, for the API (api), the
// admin handlers (admin) or both, and refuses (closing it) a listener that
// pol does not allow to serve them on its bound address. Checking the
// bound address, not the text of addr, covers host names, "" and 0.0.0.0
// alike.
func listen(addr, flagName string, pol remotePolicy, api, admin bool) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flagName, err)
	}
	if err := pol.check(flagName, addr, ln.Addr(), api, admin); err != nil {
		_ = ln.Close()
		return nil, err
	}
	return ln, nil
}

// remotePolicy decides what the proxy may serve on an address reachable
// from other machines.
type remotePolicy struct {
	haveKey     bool // FAILOVER_PROXY_KEY is set: API requests must present it
	allowRemote bool // -allow-remote: anything may be served anywhere
}

// check returns an error wrapping errRemote when a listener for flagName
// (asked for as addr, bound to bound) would serve to other machines, without
// -allow-remote, the API with no proxy key (api) or /metrics, /healthz and /status
// (admin), which never ask for the key; otherwise nil.
func (pol remotePolicy) check(flagName, addr string, bound net.Addr, api, admin bool) error {
	if pol.allowRemote || proxy.IsLoopback(bound) {
		return nil
	}
	switch {
	case api && !pol.haveKey:
		err := fmt.Errorf("refusing %s %s (bound to %s): %w, and %s is not set, so anyone who reaches it could spend the endpoints' keys; set %s (clients then send it as their API key), or pass -allow-remote",
			flagName, addr, bound, errRemote, envProxyKey, envProxyKey)
		if admin {
			err = fmt.Errorf("%w (/metrics, /healthz and /status, served there too, need no key: with %s set, also pass -admin-listen on a loopback address such as 127.0.0.1:9090)",
				err, envProxyKey)
		}
		return err
	case admin && api:
		return fmt.Errorf("refusing %s %s (bound to %s): %w, and /metrics, /healthz and /status, served there too without -admin-listen, need no key; pass -admin-listen on a loopback address (such as 127.0.0.1:9090) to serve them apart, or -allow-remote to serve them to other machines",
			flagName, addr, bound, errRemote)
	case admin:
		return fmt.Errorf("refusing %s %s (bound to %s): %w; /metrics, /healthz and /status need no key, so pass -admin-listen on a loopback address, or -allow-remote to serve them to other machines",
			flagName, addr, bound, errRemote)
	}
	return nil
}

// logStartup logs the endpoints (keys only as fingerprints), the addresses
// served, and how access is controlled.
func logStartup(logger *slog.Logger, p *proxy.Proxy, ln, admin net.Listener, haveKey bool) {
	for _, e := range p.Endpoints() {
		logger.Info("endpoint", e.LogAttrs()...)
	}
	addr := ln.Addr().String()
	switch {
	case haveKey:
		logger.Info("access: clients must send " + envProxyKey + " as their API key (Authorization: Bearer)")
	case !proxy.IsLoopback(ln.Addr()):
		logger.Warn("access: open to anyone who can reach " + addr + " (-allow-remote without " + envProxyKey + ")")
	default:
		logger.Info("access: no " + envProxyKey + ", so loopback only: any local client may use the proxy")
	}
	adminAddr := addr
	if admin != nil {
		adminAddr = admin.Addr().String()
	}
	// Last: the line that says the proxy is ready.
	base := strings.TrimSuffix(p.BasePath(), "/")
	logger.Info("listening", "addr", addr, "base_url", "http://"+addr+base,
		"metrics", "http://"+adminAddr+proxy.MetricsPath, "healthz", "http://"+adminAddr+proxy.HealthPath,
		"status", "http://"+adminAddr+proxy.StatusPath)
}
