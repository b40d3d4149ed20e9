package failover

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"strings"
)

// redacted stands for a secret in anything the Transport prints.
const redacted = "[REDACTED]"

// minSecret is the shortest value the redactor replaces: shorter ones are
// no secret worth the name, and replacing them would garble messages.
const minSecret = 4

// redactor removes from text every secret of one configuration: the
// endpoints' keys, their extra header values and their BaseURL query
// values. A nil *redactor removes nothing.
type redactor struct {
	r *strings.Replacer
}

// newRedactor returns the redactor of eps; nil when they hold no secret.
func newRedactor(eps []Endpoint) *redactor {
	var secrets []string
	add := func(s string) {
		if len(s) >= minSecret {
			secrets = append(secrets, s)
			if esc := url.QueryEscape(s); esc != s {
				secrets = append(secrets, esc) // as a URL quotes it
			}
		}
	}
	for _, e := range eps {
		add(e.APIKey)
		for _, vs := range e.Header {
			for _, v := range vs {
				add(v)
			}
		}
		if u, err := url.Parse(e.BaseURL); err == nil {
			for _, vs := range u.Query() {
				for _, v := range vs {
					add(v)
				}
			}
		}
	}
	if len(secrets) == 0 {
		return nil
	}
	// Longest first: a secret that contains another is replaced whole.
	slices.SortFunc(secrets, func(a, b string) int { return len(b) - len(a) })
	secrets = slices.Compact(secrets)
	pairs := make([]string, 0, 2*len(secrets))
	for _, s := range secrets {
		pairs = append(pairs, s, redacted)
	}
	return &redactor{r: strings.NewReplacer(pairs...)}
}

// string returns s without secrets.
func (r *redactor) string(s string) string {
	if r == nil {
		return s
	}
	return r.r.Replace(s)
}

// error returns err unchanged when its text carries no secret, else an
// error whose text is err's without them and which unwraps to err, so
// that errors.Is and errors.As still see what the base returned.
func (r *redactor) error(err error) error {
	if r == nil || err == nil {
		return err
	}
	msg := err.Error()
	if clean := r.r.Replace(msg); clean != msg {
		return &redactedError{err: err, msg: clean}
	}
	return err
}

// redactedError is an error whose text had secrets removed.
type redactedError struct {
	err error
	msg string
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redactURL returns s without its query and user information, for messages.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(invalid URL)"
	}
	u.User = nil
	u.RawQuery = ""
	u.ForceQuery = false
	u.Fragment = ""
	return u.String()
}

// redactQueryValues returns s with each query value replaced, the names
// kept, for encodings that show the whole configuration.
func redactQueryValues(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(invalid URL)"
	}
	u.User = nil
	if u.RawQuery != "" {
		q := u.Query()
		for k := range q {
			q[k] = []string{redacted}
		}
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// redacted returns e with its key, header values and BaseURL query values
// replaced, for printing and encoding.
func (e Endpoint) redacted() Endpoint {
	if e.APIKey != "" {
		e.APIKey = redacted
	}
	if e.Header != nil {
		h := make(map[string][]string, len(e.Header))
		for k, vs := range e.Header {
			h[k] = slices.Repeat([]string{redacted}, len(vs))
		}
		e.Header = h
	}
	e.BaseURL = redactQueryValues(e.BaseURL)
	return e
}

// plainEndpoint is Endpoint without its methods, for printing a redacted
// copy with fmt's own rules.
type plainEndpoint Endpoint

// String returns the endpoint's name and base URL, never its key, so that
// printing an Endpoint or a Config with %v cannot leak a key.
func (e Endpoint) String() string {
	return fmt.Sprintf("%s (%s)", e.Name, redactURL(e.BaseURL))
}

// GoString is String for the %#v verb.
func (e Endpoint) GoString() string {
	return "failover.Endpoint{" + e.String() + "}"
}

// Format prints the endpoint under every fmt verb without a secret: %v,
// %s and %q print String, %#v GoString, and the other verbs (%+v, %d,
// %x, ...) the fields with the key, the header values and the BaseURL's
// query values replaced by [REDACTED].
func (e Endpoint) Format(f fmt.State, verb rune) {
	switch {
	case verb == 'v' && f.Flag('#'):
		fmt.Fprint(f, e.GoString())
	case verb == 'v' && f.Flag('+'):
		fmt.Fprintf(f, "%+v", plainEndpoint(e.redacted()))
	case verb == 'v' || verb == 's' || verb == 'q':
		fmt.Fprintf(f, fmt.FormatString(f, verb), e.String())
	default:
		fmt.Fprintf(f, fmt.FormatString(f, verb), plainEndpoint(e.redacted()))
	}
}

// MarshalJSON encodes the endpoint's fields with the key, the header
// values and the BaseURL's query values replaced by [REDACTED].
func (e Endpoint) MarshalJSON() ([]byte, error) {
	return json.Marshal(plainEndpoint(e.redacted()))
}

// MarshalXML encodes the endpoint as MarshalJSON does, its headers as
// Header elements and its models as Model elements, each with a name
// attribute.
func (e Endpoint) MarshalXML(enc *xml.Encoder, start xml.StartElement) error {
	r := e.redacted()
	type header struct {
		Name   string   `xml:"name,attr"`
		Values []string `xml:"Value"`
	}
	type model struct {
		Name     string `xml:"name,attr"`
		Upstream string `xml:",chardata"`
	}
	out := struct {
		plainEndpoint
		Header []header `xml:"Header"`
		Models []model  `xml:"Models>Model"`
	}{plainEndpoint: plainEndpoint(r)}
	out.plainEndpoint.Header = nil
	for _, k := range slices.Sorted(maps.Keys(r.Header)) {
		out.Header = append(out.Header, header{Name: k, Values: r.Header[k]})
	}
	out.plainEndpoint.Models = nil
	for _, k := range slices.Sorted(maps.Keys(r.Models)) {
		out.Models = append(out.Models, model{Name: k, Upstream: r.Models[k]})
	}
	return enc.EncodeElement(out, start)
}

// LogValue is the endpoint for log/slog: its name and redacted base URL.
func (e Endpoint) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", e.Name), slog.String("base_url", redactURL(e.BaseURL)))
}

// String returns the endpoints' names and base URLs, never a key or any
// other field's value.
func (c Config) String() string {
	var b strings.Builder
	b.WriteString("failover.Config{Endpoints: [")
	for i, e := range c.Endpoints {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(e.String())
	}
	b.WriteString("]}")
	return b.String()
}

// Format prints the configuration under every fmt verb as String does, so
// that no verb reaches a key.
func (c Config) Format(f fmt.State, verb rune) {
	switch verb {
	case 'v', 's', 'q':
		fmt.Fprintf(f, fmt.FormatString(f, verb), c.String())
	default:
		fmt.Fprintf(f, "%%!%c(failover.Config=%s)", verb, c.String())
	}
}

// MarshalJSON encodes the endpoints, redacted as [Endpoint.MarshalJSON]
// encodes them, and the plain settings; policies, the base transport, the
// registerer and the logger are left out.
func (c Config) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Endpoints      []Endpoint
		MaxRetries     int
		ClientBaseURLs []string
		Breaker        BreakerConfig
		BackoffMin     string
		BackoffMax     string
		MaxWait        string
		Cooldown       string
		MaxCooldown    string
		MaxBodyBuffer  int64
		MaxErrorBody   int64
		EndpointHeader string
	}{c.Endpoints, c.MaxRetries, c.ClientBaseURLs, c.Breaker, c.BackoffMin.String(), c.BackoffMax.String(),
		c.MaxWait.String(), c.Cooldown.String(), c.MaxCooldown.String(), c.MaxBodyBuffer, c.MaxErrorBody, c.EndpointHeader})
}

// LogValue is the configuration for log/slog: its endpoints' names and
// redacted base URLs.
func (c Config) LogValue() slog.Value {
	attrs := make([]slog.Attr, len(c.Endpoints))
	for i, e := range c.Endpoints {
		attrs[i] = slog.Any(fmt.Sprint(i), e)
	}
	return slog.GroupValue(slog.Attr{Key: "endpoints", Value: slog.GroupValue(attrs...)})
}

// String names the Transport's current endpoints, never a key.
func (t *Transport) String() string {
	if t == nil {
		return "failover.Transport(nil)"
	}
	var b strings.Builder
	b.WriteString("failover.Transport{")
	if s := t.snap.Load(); s != nil {
		for i, e := range s.endpoints {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(e.cfg.String())
		}
	}
	b.WriteString("}")
	return b.String()
}

// Format prints the Transport under every fmt verb as String does, so that
// no verb reaches a key.
func (t *Transport) Format(f fmt.State, verb rune) {
	switch verb {
	case 'v', 's', 'q':
		fmt.Fprintf(f, fmt.FormatString(f, verb), t.String())
	default:
		fmt.Fprintf(f, "%%!%c(%s)", verb, t.String())
	}
}

// LogValue is the Transport for log/slog: its current endpoints.
func (t *Transport) LogValue() slog.Value {
	return slog.StringValue(t.String())
}
