package proxy

import (
	"context"
	"log/slog"
	"os"

	"github.com/failover-go/failover"
)

// Reloader reads the proxy's configuration afresh and applies it each time
// it is told to: on every value from Changes (a file watcher's reports)
// and from Hangups (SIGHUP). A configuration that cannot be read or is
// refused is logged at Error, and the running one stays. The zero value
// needs Load and Apply; every other nil field means none.
type Reloader struct {
	// Load reads the configuration, as at start (for the command: the
	// -env-file over the environment, and its flags' settings).
	Load func() (failover.Config, error)
	// Apply checks cfg as at start and applies it: for the command,
	// CheckNoLoop against its listener, then Proxy.Update.
	Apply func(cfg failover.Config) error
	// Changes reports changes of the configuration's file.
	Changes <-chan struct{}
	// Hangups receives SIGHUP.
	Hangups <-chan os.Signal
	// Logger receives a line per reload and its outcome.
	Logger *slog.Logger
}

// Run reloads on each value from Changes or Hangups until ctx is done.
func (r *Reloader) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.Changes:
			r.Reload("file changed")
		case <-r.Hangups:
			r.Reload("SIGHUP")
		}
	}
}

// Reload reads and applies the configuration once, logging why (trigger)
// and, when it is refused, the error, which names the problem (the
// variable, or the file's line) and never a value. It returns that error,
// or nil when the configuration was applied.
func (r *Reloader) Reload(trigger string) error {
	logger := r.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger.Info("reloading the configuration", "trigger", trigger)
	cfg, err := r.Load()
	if err == nil {
		err = r.Apply(cfg)
	}
	if err != nil {
		logger.Error("configuration refused; the running one stays", "error", err)
	}
	return err
}
