package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/failover-go/failover"
)

// Timeouts of the proxy's HTTP servers. There is no write timeout: a
// stream lasts as long as the upstream sends.
const (
	readHeaderTimeout = 30 * time.Second
	idleTimeout       = 2 * time.Minute
)

// ErrShutdownTimeout is returned by [Proxy.Serve] when requests were still
// in flight at the end of the shutdown timeout and their connections were
// closed.
var ErrShutdownTimeout = errors.New("proxy: shutdown timed out; requests in flight were cut")

// Serve serves the proxy until ctx is done, then shuts down gracefully and
// returns. With admin nil it serves [Proxy.Handler] on ln; otherwise
// [Proxy.APIHandler] on ln and [Proxy.AdminHandler] on admin. Serve takes
// ownership of the listeners and closes them.
//
// Once ctx is done, the listeners close at once (new connections are
// refused) and requests in flight, streams and upgraded (WebSocket)
// connections included, run to their end within the shutdown timeout;
// then the remaining connections are closed, the requests' contexts
// canceled, and Serve returns [ErrShutdownTimeout]. It returns nil after a
// complete graceful shutdown, and a listener's error if one fails before
// ctx is done (after shutting down the other).
func (p *Proxy) Serve(ctx context.Context, ln, admin net.Listener) error {
	sv := p.newServing(ctx, ln, admin)
	defer sv.cancelBase()
	running, err := sv.run(ctx)
	timedOut := sv.shutdown()
	for ; running > 0; running-- {
		if e := <-sv.errc; err == nil && !errors.Is(e, http.ErrServerClosed) {
			err = e
		}
	}
	if err != nil {
		return fmt.Errorf("proxy: serving: %w", err)
	}
	if timedOut {
		return ErrShutdownTimeout
	}
	p.logger.Info("shut down")
	return nil
}

// serving is one run of Serve: its servers (the API's, and the admin
// handlers' on a listener of their own), the requests' base context, and
// the upgraded connections that http.Server.Shutdown forgets once they are
// hijacked, as the ReverseProxy does to relay them.
type serving struct {
	p          *Proxy
	servers    []server
	draining   sync.WaitGroup // until each server has closed its listener
	ups        *upgrades
	cancelBase context.CancelFunc // cuts every request still in flight
	errc       chan error         // each server's Serve result
}

type server struct {
	srv *http.Server
	ln  net.Listener
}

func (p *Proxy) newServing(ctx context.Context, ln, admin net.Listener) *serving {
	baseCtx, cancelBase := context.WithCancel(context.WithoutCancel(ctx))
	sv := &serving{p: p, ups: newUpgrades(), cancelBase: cancelBase}
	if admin == nil {
		sv.add(baseCtx, p.Handler(), ln)
	} else {
		sv.add(baseCtx, p.APIHandler(), ln)
		sv.add(baseCtx, p.AdminHandler(), admin)
	}
	sv.errc = make(chan error, len(sv.servers))
	return sv
}

// add serves h on l, its requests under baseCtx.
func (sv *serving) add(baseCtx context.Context, h http.Handler, l net.Listener) {
	p := sv.p
	srv := &http.Server{
		Handler:           sv.ups.wrap(h),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(p.logger.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
	}
	addr := l.Addr().String()
	sv.draining.Add(1)
	// Shutdown runs this once the listener is closed.
	srv.RegisterOnShutdown(func() {
		defer sv.draining.Done()
		p.logger.Info("stopped accepting connections; waiting for requests in flight",
			"listen", addr, "timeout", p.shutdownTimeout)
	})
	sv.servers = append(sv.servers, server{srv: srv, ln: l})
}

// run serves until ctx ends or a server fails; it returns how many servers
// still run, and the failure.
func (sv *serving) run(ctx context.Context) (running int, err error) {
	for _, s := range sv.servers {
		go func() { sv.errc <- s.srv.Serve(s.ln) }()
	}
	running = len(sv.servers)
	select {
	case <-ctx.Done():
		sv.p.logger.Info("shutting down")
	case err = <-sv.errc:
		running--
		sv.p.logger.Error("serving failed; shutting down", "error", err)
	}
	return running, err
}

// shutdown stops every server and waits, within the shutdown timeout, for
// the requests in flight and the upgraded connections; at the deadline it
// cuts the rest (timedOut).
func (sv *serving) shutdown() (timedOut bool) {
	p := sv.p
	sctx, cancel := context.WithTimeout(context.Background(), p.shutdownTimeout)
	defer cancel()
	var (
		wg      sync.WaitGroup
		cutOnce sync.Once
	)
	// cut ends what is still in flight at the deadline by canceling the
	// requests' contexts: that closes their upstream connections, and the
	// ReverseProxy then closes an upgraded connection's client side too.
	// Each server closes its own connections.
	cut := func() {
		cutOnce.Do(func() {
			p.logger.Warn("shutdown timed out; closing the connections still in use",
				"timeout", p.shutdownTimeout)
			timedOut = true
			sv.cancelBase()
		})
	}
	for _, s := range sv.servers {
		wg.Go(func() {
			if s.srv.Shutdown(sctx) != nil {
				cut()
				_ = s.srv.Close()
			}
		})
	}
	wg.Wait()
	// Every server is shut down, so no request starts any more: wait for
	// the upgraded connections still relayed.
	if n, idle := sv.ups.inFlight(); n > 0 && !timedOut {
		p.logger.Info("waiting for upgraded connections", "count", n)
		select {
		case <-idle:
		case <-sctx.Done():
			cut()
		}
	}
	sv.draining.Wait()
	return timedOut
}

// upgrades counts the upgrade requests being handled, which
// http.Server.Shutdown does not wait for once their connection is hijacked.
// A request counts from the start of its handler, while Shutdown still
// waits for its connection, to its end, when the ReverseProxy has stopped
// relaying it.
type upgrades struct {
	mu   sync.Mutex
	n    int           // upgrade requests in flight
	idle chan struct{} // closed while n is 0
}

func newUpgrades() *upgrades {
	idle := make(chan struct{})
	close(idle)
	return &upgrades{idle: idle}
}

// wrap returns h counting the requests that ask for an upgrade (any with
// an Upgrade header: counting one that is not switched costs nothing).
func (u *upgrades) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "" {
			h.ServeHTTP(w, r)
			return
		}
		u.begin()
		defer u.end()
		h.ServeHTTP(w, r)
	})
}

func (u *upgrades) begin() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.n == 0 {
		u.idle = make(chan struct{})
	}
	u.n++
}

func (u *upgrades) end() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.n--; u.n == 0 {
		close(u.idle)
	}
}

// inFlight returns the number of upgrade requests in flight and a channel
// closed once there are none.
func (u *upgrades) inFlight() (int, <-chan struct{}) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.n, u.idle
}

// EndpointInfo describes one configured endpoint for a start-up log. It
// carries the key only as a fingerprint. [Proxy.Endpoints] fills it; the
// zero value describes an unnamed enabled endpoint of priority and
// weight 0 with no key.
type EndpointInfo struct {
	// Name is the endpoint's name, defaulted as [failover.Endpoint] says.
	Name string
	// BaseURL is the endpoint's base URL without query or user information.
	BaseURL string
	// Priority and Weight are as configured (Weight defaulted to 1).
	Priority, Weight int
	// Disabled is true for an endpoint configured but never chosen.
	Disabled bool
	// Key is [KeyFingerprint] of the endpoint's APIKey.
	Key string
	// Models lists the models the endpoint serves, sorted, each as name
	// or name=upstream-name as OPENAI_MODELS_N writes them; nil when it
	// serves every model.
	Models []string
	// APIType is "azure" for an Azure OpenAI endpoint, else "".
	APIType string
	// APIVersion is an Azure endpoint's api-version, if any.
	APIVersion string
}

// Endpoints describes the configured endpoints, in configuration order, as
// of New or the last successful [Proxy.Update].
func (p *Proxy) Endpoints() []EndpointInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.endpoints)
}

// describeEndpoints pairs the transport's view of each endpoint (its name
// defaulted, its URL redacted) with its configuration, keeping of the key
// only its fingerprint.
func describeEndpoints(hs []failover.EndpointHealth, cfgs []failover.Endpoint) []EndpointInfo {
	out := make([]EndpointInfo, len(hs))
	for i, h := range hs {
		out[i] = EndpointInfo{
			Name:     h.Name,
			BaseURL:  h.BaseURL,
			Priority: h.Priority,
			Weight:   h.Weight,
			Disabled: cfgs[i].Disabled,
			Key:      KeyFingerprint(cfgs[i].APIKey),
			Models:   modelList(h.Models),
		}
		if strings.EqualFold(cfgs[i].APIType, failover.APITypeAzure) {
			out[i].APIType, out[i].APIVersion = failover.APITypeAzure, cfgs[i].APIVersion
		}
	}
	return out
}

// modelList writes an endpoint's models as OPENAI_MODELS_N does: name, or
// name=upstream-name where they differ; sorted.
func modelList(models map[string]string) []string {
	if models == nil {
		return nil
	}
	out := make([]string, 0, len(models))
	for _, name := range slices.Sorted(maps.Keys(models)) {
		if up := models[name]; up != name {
			name += "=" + up
		}
		out = append(out, name)
	}
	return out
}

// fingerprintMin is the shortest key shown by its last four characters;
// a shorter one would give away too much of itself.
const fingerprintMin = 12

// KeyFingerprint returns a short label that tells keys apart without
// revealing them: "…" and the key's last four characters, "(set)" for a key
// shorter than 12 characters, or "(none)" for an empty key.
func KeyFingerprint(key string) string {
	r := []rune(key)
	switch {
	case len(r) == 0:
		return "(none)"
	case len(r) < fingerprintMin:
		return "(set)"
	}
	return "…" + string(r[len(r)-4:])
}

// IsLoopback reports whether a listener bound to addr accepts connections
// from this machine only: a TCP address on a loopback IP, or a Unix
// socket. An unspecified address (0.0.0.0, ::) is not loopback.
func IsLoopback(addr net.Addr) bool {
	switch a := addr.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case *net.UnixAddr:
		return true
	}
	return false
}
