package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/proxy"
)

// envProxyKey names the variable holding the key clients must present.
const envProxyKey = "FAILOVER_PROXY_KEY"

// proxyFlags are the proxy command's flags.
type proxyFlags struct {
	listen          string
	basePath        string
	adminListen     string
	allowRemote     bool
	shutdownTimeout time.Duration
	logLevel        slog.Level
	endpointHeader  string
}

// parseProxyFlags parses the proxy command's arguments, reporting any error
// to stderr.
func parseProxyFlags(args []string, stderr io.Writer) (proxyFlags, error) {
	var f proxyFlags
	fs := flag.NewFlagSet("failover proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.listen, "listen", "127.0.0.1:8080", "`address` to serve the API on")
	fs.StringVar(&f.basePath, "base-path", proxy.DefaultBasePath,
		"`path` clients send the API under: their base URL is http://<listen><path>")
	fs.StringVar(&f.adminListen, "admin-listen", "",
		"`address` to serve /metrics, /healthz and /status on; empty: on -listen")
	fs.BoolVar(&f.allowRemote, "allow-remote", false,
		"listen on non-loopback addresses without "+envProxyKey+", and serve /metrics, /healthz and /status on one")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", proxy.DefaultShutdownTimeout,
		"how long requests in flight (streams and upgraded connections too) may run on after SIGINT or SIGTERM")
	fs.TextVar(&f.logLevel, "log-level", slog.LevelInfo, "log `level`: debug, info, warn or error")
	fs.StringVar(&f.endpointHeader, "endpoint-header", "Failover-Endpoint",
		"response `header` naming the endpoint that answered; empty: none")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: failover proxy [flags]

An OpenAI-compatible reverse proxy that fails over across the endpoints
described by the environment (OPENAI_BASE_URL_N, OPENAI_API_KEY_N, ...; see
the README). Point an SDK's base URL at http://<listen>/v1.

`+envProxyKey+`, when set, is the key clients must send as their API key
(Authorization: Bearer <key>). Without it the proxy listens on loopback only,
unless -allow-remote is given. /metrics, /healthz and /status never ask for the key:
they are served on -admin-listen, or on -listen without it, and that address
must be loopback unless -allow-remote is given. The client's own
Authorization header is never forwarded: each endpoint's key replaces it.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return f, err // reported by fs
	}
	var err error
	switch {
	case fs.NArg() > 0:
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case f.shutdownTimeout <= 0:
		err = fmt.Errorf("-shutdown-timeout %v: want a positive duration", f.shutdownTimeout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "failover proxy: %v\n", err)
	}
	return f, err
}

// runProxyCommand runs "failover proxy" until ctx is done.
func runProxyCommand(ctx context.Context, args, environ []string, stderr io.Writer) int {
	f, err := parseProxyFlags(args, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case err != nil:
		return exitUsage
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: f.logLevel}))

	cfg, err := failover.ConfigFromEnviron(environ)
	if err != nil {
		configError(stderr, err)
		return exitUsage
	}
	cfg.EndpointHeader = f.endpointHeader
	key := strings.TrimSpace(lookupEnv(environ, envProxyKey))
	p, err := proxy.New(proxy.Config{
		Failover:        cfg,
		BasePath:        f.basePath,
		ProxyKey:        key,
		ShutdownTimeout: f.shutdownTimeout,
		Logger:          logger,
	})
	if err != nil {
		configError(stderr, err)
		return exitUsage
	}
	defer p.Close()

	pol := remotePolicy{haveKey: key != "", allowRemote: f.allowRemote}
	// The admin handlers go on -listen unless -admin-listen is given.
	ln, err := listen(f.listen, "-listen", pol, true, f.adminListen == "")
	if err != nil {
		fmt.Fprintf(stderr, "failover proxy: %v\n", err)
		return exitCode(err)
	}
	var admin net.Listener
	if f.adminListen != "" {
		if admin, err = listen(f.adminListen, "-admin-listen", pol, false, true); err != nil {
			_ = ln.Close()
			fmt.Fprintf(stderr, "failover proxy: %v\n", err)
			return exitCode(err)
		}
	}

	if err := checkNoLoop(p.Endpoints(), ln.Addr()); err != nil {
		_ = ln.Close()
		if admin != nil {
			_ = admin.Close()
		}
		fmt.Fprintf(stderr, "failover proxy: %v\n", err)
		return exitUsage
	}

	logStartup(logger, p, ln, admin, key != "")
	if err := p.Serve(ctx, ln, admin); err != nil {
		logger.Error("proxy stopped", "error", err)
		return exitFailure
	}
	return exitOK
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

// exitCode is the exit code for an error of listen.
func exitCode(err error) int {
	if errors.Is(err, errRemote) {
		return exitUsage
	}
	return exitFailure
}

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

// checkNoLoop refuses an endpoint whose base URL is the proxy's own
// listener, where every request would come back to the proxy. It happens
// when OPENAI_BASE_URL, set for an SDK to reach the proxy, is also in the
// proxy's environment: it is the default base URL of every endpoint.
func checkNoLoop(eps []proxy.EndpointInfo, addr net.Addr) error {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return nil
	}
	for _, e := range eps {
		u, err := url.Parse(e.BaseURL)
		if err != nil || u.Scheme != "http" {
			continue // the proxy serves plain HTTP only
		}
		port := u.Port()
		if port == "" {
			port = "80"
		}
		if port != strconv.Itoa(tcp.Port) {
			continue
		}
		host := u.Hostname()
		ip := net.ParseIP(host)
		if host == "localhost" || (ip != nil && (ip.IsLoopback() || ip.Equal(tcp.IP) || tcp.IP.IsUnspecified())) {
			return fmt.Errorf("endpoint %q (%s) is this proxy itself, so its requests would loop; "+
				"is OPENAI_BASE_URL, meant for an SDK, set in the proxy's environment? "+
				"It is the default of every OPENAI_BASE_URL_N", e.Name, e.BaseURL)
		}
	}
	return nil
}

// logStartup logs the endpoints (keys only as fingerprints), the addresses
// served, and how access is controlled.
func logStartup(logger *slog.Logger, p *proxy.Proxy, ln, admin net.Listener, haveKey bool) {
	for _, e := range p.Endpoints() {
		attrs := []any{"name", e.Name, "url", e.BaseURL, "priority", e.Priority, "weight", e.Weight, "key", e.Key}
		if e.Disabled {
			attrs = append(attrs, "disabled", true)
		}
		logger.Info("endpoint", attrs...)
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
