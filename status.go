package failover

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// statusRefresh is how often the page of [Transport.StatusHandler]
// refreshes itself with its script; with the script off, it reloads every
// statusReload.
const (
	statusRefresh = 2 * time.Second
	statusReload  = 5 * time.Second
)

// StatusHandler returns an http.Handler serving a status page for people:
// one self-contained HTML page, without external assets, that shows each
// endpoint of [Transport.Health] as a row (name, URL, priority, weight,
// state and since when, attempts in flight, requests and failures, the
// last error, latency, time to first token, cooldown left, rate tokens,
// recovery probes, slow start and the balancer's latency estimate, and
// the models it serves with the requests that skipped it for another),
// its state coloured, and is readable on a phone.
//
// The page is complete as served. A small script then refreshes it every
// 2 seconds from the same URL with the query format=json, which
// serves the [HealthReport] of [Transport.HealthHandler] with the server's
// time added as "now" (so that durations do not depend on the browser's
// clock); with the script off, the page reloads every 5 seconds. The
// HTML answers 200 whatever the endpoints' states; the JSON, like
// HealthHandler, 503 when no endpoint is eligible. The handler answers GET
// and HEAD, and 405 to other methods. It never shows a key: it is built on
// Health alone. Mount it anywhere: the script fetches the path the browser
// loaded.
func (t *Transport) StatusHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		doc := newStatusDocument(t.Health(), t.clock.now())
		doc.Shared = t.fleet.state()
		var (
			body  []byte
			code  = http.StatusOK
			ctype string
		)
		if r.URL.Query().Get("format") == "json" {
			ctype = "application/json"
			if doc.Eligible == 0 {
				code = http.StatusServiceUnavailable
			}
			var err error
			if body, err = json.MarshalIndent(doc, "", "  "); err != nil {
				http.Error(w, "encoding status: "+err.Error(), http.StatusInternalServerError)
				return
			}
			body = append(body, '\n')
		} else {
			ctype = "text/html; charset=utf-8"
			var b bytes.Buffer
			if err := statusPage.Execute(&b, doc.view()); err != nil {
				http.Error(w, "rendering status: "+err.Error(), http.StatusInternalServerError)
				return
			}
			body = b.Bytes()
			w.Header().Set("Content-Security-Policy", statusCSP)
			w.Header().Set("X-Frame-Options", "DENY")
			w.Header().Set("Referrer-Policy", "no-referrer")
		}
		h := w.Header()
		h.Set("Content-Type", ctype)
		h.Set("Content-Length", strconv.Itoa(len(body)))
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(code)
		if r.Method == http.MethodGet {
			_, _ = w.Write(body)
		}
	})
}

// statusDocument is what the status page's script reads: the health
// report and the server's time.
type statusDocument struct {
	HealthReport
	Now time.Time `json:"now"`
}

func newStatusDocument(hs []EndpointHealth, now time.Time) statusDocument {
	doc := statusDocument{HealthReport: HealthReport{Status: "ok", Endpoints: hs}, Now: now}
	for _, h := range hs {
		if h.Eligible() {
			doc.Eligible++
		}
	}
	if doc.Eligible == 0 {
		doc.Status = "unavailable"
	}
	return doc
}

// statusView is the page's data, formatted as the script formats it.
type statusView struct {
	Status    string
	Shared    string // the shared state's, "" without
	Eligible  int
	Total     int
	Updated   string
	Rows      []statusRow
	Script    template.JS
	Style     template.CSS
	RefreshMS int64
	ReloadS   int64
}

// statusRow is one endpoint's row; each field is a cell's text.
type statusRow struct {
	Name, URL, Priority, Weight  string
	State, Since, StateSince     string
	InFlight, Requests, Failures string
	LastError, Latency, Cooldown string
	FirstToken, Tokens           string
	Probe, SlowStart, LatencyEst string
	Models                       string
	Limits                       string // budgetText
}

func (d statusDocument) view() statusView {
	v := statusView{
		Status:    d.Status,
		Shared:    d.Shared,
		Eligible:  d.Eligible,
		Total:     len(d.Endpoints),
		Updated:   d.Now.UTC().Format(time.TimeOnly) + " UTC",
		Script:    template.JS(pageScript),
		Style:     template.CSS(pageStyle),
		RefreshMS: statusRefresh.Milliseconds(),
		ReloadS:   int64(statusReload / time.Second),
	}
	for _, h := range d.Endpoints {
		v.Rows = append(v.Rows, newStatusRow(h, d.Now))
	}
	return v
}

// newStatusRow formats h at now. The page's script formats the JSON the
// same way (see pageScript); keep them in step.
func newStatusRow(h EndpointHealth, now time.Time) statusRow {
	r := statusRow{
		Name:       h.Name,
		URL:        h.BaseURL,
		Priority:   strconv.Itoa(h.Priority),
		Weight:     strconv.Itoa(h.Weight),
		State:      h.State.String(),
		Since:      "for " + humanDuration(now.Sub(h.StateSince)),
		StateSince: h.StateSince.UTC().Format(time.RFC3339),
		InFlight:   strconv.FormatInt(h.InFlight, 10),
		Requests:   strconv.FormatUint(h.Requests, 10),
		Failures:   strconv.FormatUint(h.Failures, 10),
		LastError:  "-",
		Latency:    "-",
		FirstToken: "-",
		Cooldown:   "-",
		Tokens:     "no limit",
	}
	if h.ConsecutiveFailures > 0 {
		r.Failures += fmt.Sprintf(" (%d in a row)", h.ConsecutiveFailures)
	}
	if h.LastError != "" {
		r.LastError = h.LastError + ", " + humanDuration(now.Sub(h.LastErrorAt)) + " ago"
	}
	if h.Latency > 0 {
		r.Latency = humanLatency(h.Latency)
	}
	if h.FirstToken > 0 {
		r.FirstToken = humanLatency(h.FirstToken)
	}
	if left := h.CooldownUntil.Sub(now); !h.CooldownUntil.IsZero() && left > 0 {
		r.Cooldown = humanDuration(left)
	}
	if h.Tokens >= 0 {
		r.Tokens = strconv.FormatFloat(h.Tokens, 'f', 1, 64)
	}
	r.Probe, r.SlowStart, r.LatencyEst = healCells(h, now)
	r.Models = modelsCell(h.Models, h.ModelSkips)
	r.Limits = budgetText(h, now)
	return r
}

// humanDuration formats d coarsely: "850ms", "12s", "3m 5s", "2h 1m",
// "4d 2h". A negative d (clocks disagree) counts as 0.
func humanDuration(d time.Duration) string {
	if d < time.Second {
		return strconv.FormatInt(max(0, d.Round(time.Millisecond).Milliseconds()), 10) + "ms"
	}
	s := int64(d / time.Second)
	pair := func(big int64, bigUnit string, small int64, smallUnit string) string {
		out := strconv.FormatInt(big, 10) + bigUnit
		if small > 0 {
			out += " " + strconv.FormatInt(small, 10) + smallUnit
		}
		return out
	}
	switch {
	case s < 60:
		return strconv.FormatInt(s, 10) + "s"
	case s < 3600:
		return pair(s/60, "m", s%60, "s")
	case s < 86400:
		return pair(s/3600, "h", s/60%60, "m")
	}
	return pair(s/86400, "d", s/3600%24, "h")
}

// humanLatency formats a latency in whole milliseconds, "<1ms" below one.
func humanLatency(d time.Duration) string {
	if ms := d.Round(time.Millisecond).Milliseconds(); ms > 0 {
		return strconv.FormatInt(ms, 10) + "ms"
	}
	return "<1ms"
}

// modelsCell formats the Models cell: "all" for an endpoint without
// Models, else each model and, where it differs, the name sent
// ("gpt-4o-mini → prod-4o-mini"), sorted; and the skips, if any.
func modelsCell(models map[string]string, skips uint64) string {
	text := "all"
	if models != nil {
		parts := make([]string, 0, len(models))
		for _, name := range slices.Sorted(maps.Keys(models)) {
			if up := models[name]; up != name {
				name += " \u2192 " + up
			}
			parts = append(parts, name)
		}
		text = strings.Join(parts, ", ")
	}
	if skips > 0 {
		text += " (" + strconv.FormatUint(skips, 10) + " skipped)"
	}
	return text
}

// statusCSP allows the page its own inline style and script (by hash), and
// its script to fetch from the page's origin: nothing else.
var statusCSP = "default-src 'none'; " +
	"style-src '" + cspHash(pageStyle) + "'; " +
	"script-src '" + cspHash(pageScript) + "'; " +
	"connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func cspHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "sha256-" + base64.StdEncoding.EncodeToString(sum[:])
}

var statusPage = template.Must(template.New("status").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>failover status</title>
<link rel="icon" href="data:,">
<noscript><meta http-equiv="refresh" content="{{.ReloadS}}"></noscript>
<style>{{.Style}}</style>
</head>
<body>
<main id="status" data-status="{{.Status}}" data-refreshes="0" data-refresh-ms="{{.RefreshMS}}">
<header>
<h1>failover</h1>
<p><span id="overall" class="badge status-{{.Status}}">{{.Status}}</span>
<span id="eligible">{{.Eligible}} of {{.Total}} endpoints eligible</span>
<span id="shared"{{if not .Shared}} hidden{{end}}>fleet state: <strong data-shared="{{.Shared}}">{{.Shared}}</strong></span>
<span class="updated">updated <time id="updated">{{.Updated}}</time></span>
<span id="stale" hidden>(not refreshing: the last refresh failed)</span></p>
</header>
<table>
<thead><tr><th>Endpoint</th><th>URL</th><th>Priority</th><th>Weight</th><th>State</th><th>In flight</th><th>Requests</th><th>Failures</th><th>Last error</th><th>Latency</th><th>First token</th><th>Cooldown left</th><th>Rate tokens</th><th>Rate limits</th><th>Probe</th><th>Slow start</th><th>Latency estimate</th><th>Models</th></tr></thead>
<tbody id="endpoints">
{{- range .Rows}}
<tr data-endpoint="{{.Name}}" data-state="{{.State}}" class="state-{{.State}}">
<td data-label="Endpoint" data-field="name" class="name">{{.Name}}</td>
<td data-label="URL" data-field="url" class="url">{{.URL}}</td>
<td data-label="Priority" data-field="priority">{{.Priority}}</td>
<td data-label="Weight" data-field="weight">{{.Weight}}</td>
<td data-label="State"><span class="badge" data-field="state">{{.State}}</span> <small data-field="since" title="{{.StateSince}}">{{.Since}}</small></td>
<td data-label="In flight" data-field="in_flight">{{.InFlight}}</td>
<td data-label="Requests" data-field="requests">{{.Requests}}</td>
<td data-label="Failures" data-field="failures">{{.Failures}}</td>
<td data-label="Last error" data-field="last_error" class="error">{{.LastError}}</td>
<td data-label="Latency" data-field="latency">{{.Latency}}</td>
<td data-label="First token" data-field="first_token">{{.FirstToken}}</td>
<td data-label="Cooldown left" data-field="cooldown">{{.Cooldown}}</td>
<td data-label="Rate tokens" data-field="tokens">{{.Tokens}}</td>
<td data-label="Rate limits" data-field="limits">{{.Limits}}</td>
<td data-label="Probe" data-field="probe">{{.Probe}}</td>
<td data-label="Slow start" data-field="slow_start">{{.SlowStart}}</td>
<td data-label="Latency estimate" data-field="latency_estimate">{{.LatencyEst}}</td>
<td data-label="Models" data-field="models" class="models">{{.Models}}</td>
</tr>
{{- end}}
</tbody>
</table>
<footer><p>States: <span class="badge state-closed">closed</span> takes traffic,
<span class="badge state-half-open">half-open</span> lets a trial through,
<span class="badge state-open">open</span> is out until its trial,
<span class="badge state-cooling-down">cooling-down</span> rests after a 429,
<span class="badge state-disabled">disabled</span> is never chosen,
<span class="badge state-paced">paced</span> waits for its provider's rate limit to reset.
Requests and failures count attempts. Rate limits: what the provider's headers say is left, and the MaxTPM budget.
Probe: the recovery probes of an endpoint that is out.
Slow start: the share of its weight a recovered endpoint takes. Latency estimate: the least-latency balancer's.
<span id="mode">Reloads every {{.ReloadS}}s.</span></p></footer>
</main>
<script>{{.Script}}</script>
</body>
</html>
`))

const pageStyle = `
:root { color-scheme: light dark; --fg: #1f2328; --bg: #fff; --muted: #59636e; --line: #d1d9e0;
  --closed: #1a7f37; --half-open: #9a6700; --open: #cf222e; --cooling-down: #bc4c00; --disabled: #6e7781; --paced: #8250df; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --bg: #0d1117; --muted: #9198a1; --line: #3d444d; } }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
main { padding: 1rem; max-width: 100rem; margin: 0 auto; }
h1 { font-size: 1.3rem; margin: 0 0 .3rem; }
header p { margin: 0 0 1rem; display: flex; flex-wrap: wrap; gap: .3rem 1rem; align-items: center; }
.updated, footer, small { color: var(--muted); }
#stale { color: var(--open); font-weight: 600; }
#shared strong[data-shared="degraded"] { color: var(--open); }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .4rem .4rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: .8rem; text-transform: uppercase; letter-spacing: .03em; color: var(--muted); }
td.url, td.error, td.models { overflow-wrap: anywhere; }
td.url { min-width: 6.5rem; }
td.name { font-weight: 600; }
tbody tr { border-left: .35rem solid var(--line); }
.badge { display: inline-block; padding: 0 .45rem; border-radius: 1rem; color: #fff; background: var(--disabled); font-weight: 600; white-space: nowrap; }
.state-closed, .status-ok { --state: var(--closed); }
.state-half-open { --state: var(--half-open); }
.state-open, .status-unavailable { --state: var(--open); }
.state-cooling-down { --state: var(--cooling-down); }
.state-disabled { --state: var(--disabled); }
.state-paced { --state: var(--paced); }
.badge[class*="state-"], .badge[class*="status-"], tr[class*="state-"] .badge { background: var(--state); }
tbody tr[class*="state-"] { border-left-color: var(--state); }
tr.state-open td, tr.state-cooling-down td, tr.state-paced td { background: color-mix(in srgb, var(--state) 8%, transparent); }
footer { margin-top: 1rem; font-size: .85rem; }
@media (max-width: 760px) {
  main { padding: .6rem; }
  thead { display: none; }
  table, tbody, tr, td { display: block; width: 100%; }
  tbody tr { margin: 0 0 .8rem; border: 1px solid var(--line); border-left-width: .5rem; border-radius: .4rem; }
  td { display: flex; gap: 1rem; justify-content: space-between; border-bottom: 1px solid var(--line); padding: .3rem .6rem; }
  td:last-child { border-bottom: 0; }
  td::before { content: attr(data-label); color: var(--muted); font-size: .85rem; flex: none; }
  td > *:first-child { margin-left: auto; }
  td.url, td.error, td.models { text-align: right; }
}
`

// pageScript refreshes the page from its JSON; its formatting mirrors
// newStatusRow, humanDuration and humanLatency.
const pageScript = `
(function () {
  "use strict";
  var root = document.getElementById("status");
  var every = Number(root.dataset.refreshMs) || 2000;
  var url = location.pathname + "?format=json";
  function dur(ms) {
    if (ms < 1000) return Math.max(0, Math.round(ms)) + "ms";
    var s = Math.floor(ms / 1000);
    function pair(big, bu, small, su) { return big + bu + (small > 0 ? " " + small + su : ""); }
    if (s < 60) return s + "s";
    if (s < 3600) return pair(Math.floor(s / 60), "m", s % 60, "s");
    if (s < 86400) return pair(Math.floor(s / 3600), "h", Math.floor(s / 60) % 60, "m");
    return pair(Math.floor(s / 86400), "d", Math.floor(s / 3600) % 24, "h");
  }
  function models(e) {
    var text = "all";
    if (e.models) {
      text = Object.keys(e.models).sort().map(function (n) {
        return e.models[n] === n ? n : n + " \u2192 " + e.models[n];
      }).join(", ");
    }
    return e.model_skips > 0 ? text + " (" + e.model_skips + " skipped)" : text;
  }
  function limits(e, now) {
    var parts = [], p = e.provider, reset = 0;
    if (p) {
      var left = [];
      if (p.remaining_requests >= 0) left.push(p.remaining_requests + " req");
      if (p.remaining_tokens >= 0) left.push(p.remaining_tokens + " tok");
      [p.requests_reset, p.tokens_reset].forEach(function (r) {
        var at = r ? Date.parse(r) - now : 0;
        if (at > 0 && (reset === 0 || at < reset)) reset = at;
      });
      if (left.length) parts.push(left.join(", ") + " left" + (reset > 0 ? " (resets in " + dur(reset) + ")" : ""));
    }
    if (e.token_budget >= 0) parts.push("TPM budget " + Math.floor(e.token_budget));
    return parts.length ? parts.join("; ") : "-";
  }
  function set(row, field, text) {
    var el = row.querySelector('[data-field="' + field + '"]');
    if (el && el.textContent !== text) el.textContent = text;
    return el;
  }
  function render(doc) {
    var now = Date.parse(doc.now);
    var rows = document.querySelectorAll("#endpoints > tr");
    if (rows.length !== doc.endpoints.length) { location.reload(); return; }
    doc.endpoints.forEach(function (e, i) {
      var row = rows[i];
      row.dataset.endpoint = e.name;
      row.dataset.state = e.state;
      row.className = "state-" + e.state;
      set(row, "name", e.name);
      set(row, "url", e.base_url);
      set(row, "priority", String(e.priority));
      set(row, "weight", String(e.weight));
      set(row, "state", e.state);
      var since = set(row, "since", "for " + dur(now - Date.parse(e.state_since)));
      if (since) since.title = new Date(Date.parse(e.state_since)).toISOString().replace(/\.\d+Z$/, "Z");
      set(row, "in_flight", String(e.in_flight));
      set(row, "requests", String(e.requests));
      set(row, "failures", String(e.failures) + (e.consecutive_failures > 0 ? " (" + e.consecutive_failures + " in a row)" : ""));
      set(row, "last_error", e.last_error ? e.last_error + ", " + dur(now - Date.parse(e.last_error_at)) + " ago" : "-");
      var ms = Math.round(e.latency_ns / 1e6);
      set(row, "latency", e.latency_ns > 0 ? (ms > 0 ? ms + "ms" : "<1ms") : "-");
      var ft = Math.round((e.first_token_ns || 0) / 1e6);
      set(row, "first_token", e.first_token_ns > 0 ? (ft > 0 ? ft + "ms" : "<1ms") : "-");
      var left = e.cooldown_until ? Date.parse(e.cooldown_until) - now : 0;
      set(row, "cooldown", left > 0 ? dur(left) : "-");
      set(row, "tokens", e.tokens >= 0 ? e.tokens.toFixed(1) : "no limit");
      set(row, "limits", limits(e, now));
      var probe = [];
      if (e.probe_state === "probing") probe.push("probing");
      else if (e.probe_state === "scheduled") probe.push("next in " + dur(Date.parse(e.next_probe_at) - now));
      if (e.last_probe_result) probe.push("last " + e.last_probe_result + " " + dur(now - Date.parse(e.last_probe_at)) + " ago");
      set(row, "probe", probe.length ? probe.join("; ") : "-");
      set(row, "slow_start", e.slow_start > 0 ? Math.round(e.slow_start * 100) + "%" : "-");
      var le = Math.round((e.latency_estimate_ns || 0) / 1e6);
      set(row, "latency_estimate", e.latency_estimate_ns > 0 ? (le > 0 ? le + "ms" : "<1ms") : "-");
      set(row, "models", models(e));
    });
    var overall = document.getElementById("overall");
    overall.textContent = doc.status;
    overall.className = "badge status-" + doc.status;
    root.dataset.status = doc.status;
    document.getElementById("eligible").textContent = doc.eligible + " of " + doc.endpoints.length + " endpoints eligible";
    var shared = document.getElementById("shared");
    shared.hidden = !doc.shared;
    shared.querySelector("strong").textContent = doc.shared || "";
    shared.querySelector("strong").dataset.shared = doc.shared || "";
    document.getElementById("updated").textContent = new Date(now).toISOString().slice(11, 19) + " UTC";
    document.getElementById("stale").hidden = true;
    root.dataset.refreshes = String(Number(root.dataset.refreshes) + 1);
  }
  function refresh() {
    fetch(url, { cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (r) { return r.json(); })
      .then(render)
      .catch(function () { document.getElementById("stale").hidden = false; })
      .then(function () { setTimeout(refresh, every); });
  }
  document.getElementById("mode").textContent = "Refreshes every " + every / 1000 + "s.";
  setTimeout(refresh, every);
})();
`
