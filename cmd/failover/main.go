// Command failover shows the failover transport at work and serves it to
// clients written in any language.
//
//	failover demo  [-duration 15s]
//	failover proxy [-listen 127.0.0.1:8080] [-base-path /v1] [-admin-listen addr]
//	               [-allow-remote] [-allow-origin origins] [-read-timeout 60s]
//	               [-max-body 32MiB] [-shutdown-timeout 30s] [-log-level info]
//	               [-endpoint-header Failover-Endpoint] [-env-file file]
//
// The demo starts three fake OpenAI-compatible upstreams on loopback that
// fail in turn (one dies, one throws 5xx bursts, one throttles with 429),
// sends a steady stream of chat requests through one failover transport,
// and shows per-endpoint health as it goes. It needs no API key.
//
// The proxy is an OpenAI-compatible reverse proxy configured by the same
// environment variables as failover.ConfigFromEnv (OPENAI_BASE_URL_1,
// OPENAI_API_KEY_1, ...), or a dotenv file of them (-env-file) that it
// reloads on SIGHUP and when the file changes; point an SDK's base URL at
// http://<listen>/v1. FAILOVER_PROXY_KEY, when set, is the key clients must
// present.
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
