package proxy

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/failover-go/failover"
	"github.com/failover-go/failover/internal/envfile"
)

// runReloader runs r until the test ends, and checks that Run returns
// once its context is done.
func runReloader(t *testing.T, r *Reloader) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(waitLimit):
			t.Error("Run did not return once its context was done")
		}
	})
}

// receive waits for the next value of c.
func receive[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("no %s within %v", what, waitLimit)
		panic("unreachable")
	}
}

// TestReloaderTriggers checks that each report of a change and each SIGHUP
// reloads once, that a configuration that cannot be read or is refused is
// logged and not applied, and that Run stops with its context.
func TestReloaderTriggers(t *testing.T) {
	changes := make(chan struct{})
	hangups := make(chan os.Signal)
	loads := make(chan error) // what the next Load returns
	applied := make(chan failover.Config)
	applyErrs := make(chan error) // what the next Apply returns
	logs := &logBuffer{}
	// Load and Apply run on Run's goroutine: they must not call t.Fatal.
	next := func(c <-chan error) error {
		select {
		case err := <-c:
			return err
		case <-time.After(waitLimit):
			return errors.New("the test sent nothing")
		}
	}
	runReloader(t, &Reloader{
		Load: func() (failover.Config, error) {
			return failover.Config{MaxRetries: 7}, next(loads)
		},
		Apply: func(cfg failover.Config) error {
			applied <- cfg
			return next(applyErrs)
		},
		Changes: changes,
		Hangups: hangups,
		Logger:  slog.New(slog.NewTextHandler(logs, nil)),
	})

	changes <- struct{}{}
	loads <- nil
	if cfg := receive(t, applied, "Apply after a change"); cfg.MaxRetries != 7 {
		t.Errorf("Apply got %+v, want what Load read", cfg)
	}
	applyErrs <- nil

	changes <- struct{}{}
	loads <- errors.New("envfile: proxy.env, line 3: not a KEY=VALUE assignment")

	hangups <- syscall.SIGHUP
	loads <- nil
	receive(t, applied, "Apply after SIGHUP")
	applyErrs <- errors.New("endpoint 1 is this proxy itself")

	// A last reload: once its Apply is called, the ones before have
	// logged everything.
	changes <- struct{}{}
	loads <- nil
	receive(t, applied, "Apply after the last change")
	out := logs.String()
	applyErrs <- nil
	for _, want := range []string{
		`msg="reloading the configuration" trigger="file changed"`,
		`msg="configuration refused; the running one stays" error="envfile: proxy.env, line 3: not a KEY=VALUE assignment"`,
		`msg="reloading the configuration" trigger=SIGHUP`,
		`msg="configuration refused; the running one stays" error="endpoint 1 is this proxy itself"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the logs lack %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, `msg="reloading the configuration"`); n != 4 {
		t.Errorf("%d reloads logged, want 4:\n%s", n, out)
	}
	if n := strings.Count(out, "configuration refused"); n != 2 {
		t.Errorf("%d refusals logged, want 2:\n%s", n, out)
	}
}

// writeEnv writes content to path by renaming a new file over it.
func writeEnv(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestReloadWatchedFile runs the whole reload path but the transport: a
// watched dotenv file, read over an environment and parsed as the command
// does, applied with Proxy.Update to a fake transport. Each change
// reloads once (the names applied come in order, none twice); a file with
// an error changes nothing, and the next good one applies.
func TestReloadWatchedFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "proxy.env")
	env := func(name string) string {
		return "OPENAI_BASE_URL_1=https://one.example/v1\nOPENAI_API_KEY_1=" + keyA + "\nOPENAI_NAME_1=" + name + "\n"
	}
	writeEnv(t, path, env("start"))
	environ := []string{"OPENAI_API_KEY_1=sk-from-the-environment-0000", "OPENAI_PRIORITY_1=3"}
	load := func() (failover.Config, error) {
		merged, err := envfile.LoadOver(environ, path)
		if err != nil {
			return failover.Config{}, err
		}
		return failover.ConfigFromEnviron(merged)
	}
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	p, f, logs := newUpdatable(t, Config{Failover: cfg})

	// A long debounce: an in-place write (a truncation, then a write) must
	// stay one burst even on a loaded machine.
	w, err := envfile.Watch(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	applied := make(chan string, 8)
	refused := make(chan error, 8)
	runReloader(t, &Reloader{
		Load: func() (failover.Config, error) {
			cfg, err := load()
			if err != nil {
				refused <- err
			}
			return cfg, err
		},
		Apply: func(cfg failover.Config) error {
			err := p.Update(cfg)
			if err == nil {
				applied <- cfg.Endpoints[0].Name
			}
			return err
		},
		Changes: w.C,
		Logger:  slog.New(slog.NewTextHandler(logs, nil)),
	})

	// A write in place.
	if err := os.WriteFile(path, []byte(env("one")), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, applied, "reload of a write"); got != "one" {
		t.Fatalf("applied %q, want one", got)
	}
	// A rename into place.
	writeEnv(t, path, env("two"))
	if got := receive(t, applied, "reload of a rename into place"); got != "two" {
		t.Fatalf("applied %q, want two (a reload came twice?)", got)
	}
	// A file with an error: refused, nothing applied.
	writeEnv(t, path, env("three")+"OPENAI_API_KEY_2 "+keyB+"\n")
	var e *envfile.Error
	if err := receive(t, refused, "refusal of a bad file"); !errors.As(err, &e) || e.Line != 4 {
		t.Errorf("refused with %v, want an envfile error on line 4", err)
	}
	if got := p.Endpoints(); got[0].Name != "two" {
		t.Errorf("after a bad file, Endpoints()[0] = %q, want two", got[0].Name)
	}
	// The next good file applies, and it comes next: the bad one applied
	// nothing.
	writeEnv(t, path, env("four"))
	if got := receive(t, applied, "reload of a good file after a bad one"); got != "four" {
		t.Fatalf("applied %q, want four", got)
	}

	var names []string
	for _, c := range f.calls() {
		names = append(names, c.Endpoints[0].Name)
		if c.Endpoints[0].APIKey != keyA || c.Endpoints[0].Priority != 3 {
			t.Errorf("endpoint %s: the file's key and the environment's priority were not both applied", c.Endpoints[0].Name)
		}
	}
	if !slices.Equal(names, []string{"one", "two", "four"}) {
		t.Errorf("the transport was given %q, want one, two, four", names)
	}
	if got := p.Endpoints(); got[0].Name != "four" {
		t.Errorf("Endpoints()[0] = %q, want four", got[0].Name)
	}
	out := logs.String()
	if strings.Contains(out, keyB) || strings.Contains(out, keyA) {
		t.Errorf("the logs show a key:\n%s", out)
	}
}
