package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// commandFlags returns the flag set of the command name ("failover
// proxy"), which reports to stderr and answers -h with usage and then the
// flags' defaults.
func commandFlags(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	return fs
}

// Exit codes of the command.
const (
	exitOK      = 0
	exitFailure = 1 // the demo saw failed requests, the proxy failed while serving, or an endpoint failed its check
	exitUsage   = 2 // bad flags, bad configuration, refused listen address
)

const usageText = `Usage:
  failover demo  [-duration 15s]
      Three fake upstreams on loopback (a primary, a backup, a third) fail
      in turn while chat requests fail over between them; no API key needed.
  failover proxy [-listen 127.0.0.1:8080] [-base-path /v1] [-admin-listen addr]
                 [-allow-remote] [-allow-origin origins] [-read-timeout 60s]
                 [-max-body 32MiB] [-shutdown-timeout 30s] [-log-level info]
                 [-endpoint-header Failover-Endpoint] [-env-file file]
                 [-redis URL]
      An OpenAI-compatible reverse proxy with failover, configured by the
      OPENAI_* environment variables (and -env-file, reloaded on SIGHUP and
      when it changes); FAILOVER_PROXY_KEY guards it; with -redis (or
      FAILOVER_REDIS_URL) a fleet of proxies shares budgets and health.
  failover check [-timeout 10s] [-model NAME] [-json] [-env-file file]
      Probes each endpoint of the environment (connection, TLS, key,
      GET /models) before a deploy; exits 1 when one fails.
  failover version
      The module version and VCS revision of this build (also -version).

Run "failover demo -h", "failover proxy -h" or "failover check -h" for each
command's flags.
`

// hangupFunc subscribes to SIGHUP: it returns a channel that receives the
// signal and a function that ends the subscription.
type hangupFunc func() (<-chan os.Signal, func())

// notifyHangup is the hangupFunc of the process: os/signal's SIGHUP.
func notifyHangup() (<-chan os.Signal, func()) {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGHUP)
	return c, func() { signal.Stop(c) }
}

// run is the whole command, without SIGHUP: see runWith.
func run(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	return runWith(ctx, args, environ, nil, stdout, stderr)
}

// runWith is the whole command: args are the arguments after the program
// name, environ the environment as os.Environ returns it. It returns the
// exit code. ctx ends on SIGINT or SIGTERM; hangup, when not nil,
// subscribes to SIGHUP, which reloads the proxy's -env-file.
func runWith(ctx context.Context, args, environ []string, hangup hangupFunc, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return exitUsage
	}
	switch args[0] {
	case "demo":
		return runDemoCommand(ctx, args[1:], environ, stdout, stderr)
	case "proxy":
		return runProxyCommand(ctx, args[1:], environ, hangup, stderr)
	case "check":
		return runCheckCommand(ctx, args[1:], environ, stdout, stderr)
	case "version", "-version", "--version":
		return runVersionCommand(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usageText)
		return exitOK
	}
	fmt.Fprintf(stderr, "failover: unknown command %q\n\n%s", args[0], usageText)
	return exitUsage
}

// lookupEnv returns the value of the first name=value entry of environ for
// name, as os.Getenv does, and "" when there is none.
func lookupEnv(environ []string, name string) string {
	for _, kv := range environ {
		if len(kv) > len(name) && kv[len(name)] == '=' && kv[:len(name)] == name {
			return kv[len(name)+1:]
		}
	}
	return ""
}
