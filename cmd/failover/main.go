// Command failover shows the failover transport at work and serves it to
// clients written in any language.
//
//	failover demo  [-duration 15s]
//	failover proxy [-listen 127.0.0.1:8080] [-base-path /v1] [-admin-listen addr]
//	               [-allow-remote] [-allow-origin origins] [-read-timeout 60s]
//	               [-max-body 32MiB] [-shutdown-timeout 30s] [-log-level info]
//	               [-endpoint-header Failover-Endpoint] [-env-file file]
//	               [-redis URL]
//	failover check [-timeout 10s] [-model NAME] [-json] [-env-file file]
//	failover version
//
// The demo starts three fake OpenAI-compatible upstreams on loopback, a
// primary, a backup and a third of priorities 1, 2 and 3, that fail in
// turn (the primary dies, then throws 500s; the backup throws 503s, then
// throttles with 429), sends a steady stream of chat requests through one
// failover transport, and shows per-endpoint health as it goes. It needs
// no API key.
//
// The proxy is an OpenAI-compatible reverse proxy configured by the same
// environment variables as failover.ConfigFromEnv (OPENAI_BASE_URL_1,
// OPENAI_API_KEY_1, ...), or a dotenv file of them (-env-file) that it
// reloads on SIGHUP and when the file changes; point an SDK's base URL at
// http://<listen>/v1. FAILOVER_PROXY_KEY, when set, is the key clients must
// present.
//
// Check probes each endpoint of the same environment variables (and of
// -env-file) (DNS and connection, TLS, GET /models with its key, and with
// -model a one-token chat completion), prints a row per endpoint and the
// variables that look like failover's but are not read, and exits 0 when
// every enabled endpoint passed, 1 when any failed, 2 for a bad
// configuration.
//
// Version prints the module version and VCS revision of the build.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal ends the process at once
	}()
	code := runWith(ctx, os.Args[1:], os.Environ(), notifyHangup, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
