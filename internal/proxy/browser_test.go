package proxy

import (
	"net/http"
	"strings"
	"testing"
)

func TestIsLoopbackHost(t *testing.T) {
	for _, tc := range []struct {
		host string
		want bool
	}{
		{"localhost", true},
		{"LOCALHOST:8080", true},
		{"LocalHost:", true},
		{"127.0.0.1", true},
		{"127.0.0.1:8080", true},
		{"127.1.2.3:80", true},
		{"[::1]", true},
		{"[::1]:8080", true},
		{"[::ffff:127.0.0.1]:8080", true},
		{"", false},
		{"evil.example", false},
		{"evil.example:8080", false},
		{"localhost.evil.example", false},
		{"127.0.0.1.nip.io:8080", false},
		{"0.0.0.0:8080", false},
		{"[::]:8080", false},
		{"192.168.1.2:8080", false},
		{"[fe80::1%25lo]:8080", false},
		{"0x7f000001", false},
	} {
		if got := isLoopbackHost(tc.host); got != tc.want {
			t.Errorf("isLoopbackHost(%q) = %v, want %v", tc.host, got, tc.want)
		}
	}
}

func TestNewOriginPolicy(t *testing.T) {
	for _, tc := range []struct {
		name    string
		list    []string
		haveKey bool
		mention string // in the error; "" for none
		allowed []string
		refused []string
	}{
		{"none", nil, false, "", nil, []string{"https://app.example", "null", ""}},
		{"exact", []string{"https://app.example", "http://localhost:3000"}, false, "",
			[]string{"https://app.example", "http://localhost:3000"},
			[]string{"http://app.example", "https://app.example:8443", "https://APP.example", "http://localhost:3001", "https://evil.example", "null"}},
		{"any with a key", []string{"*"}, true, "", []string{"https://anything.example", "null"}, nil},
		{"any without a key", []string{"*"}, false, "FAILOVER_PROXY_KEY", nil, nil},
		{"uppercase", []string{"https://App.example"}, false, `"https://app.example"`, nil, nil},
		{"trailing slash", []string{"https://app.example/"}, false, "trailing /", nil, nil},
		{"path", []string{"https://app.example/ui"}, false, "path", nil, nil},
		{"default port", []string{"https://app.example:443"}, false, "https://app.example", nil, nil},
		{"null", []string{"null"}, false, "null origin", nil, nil},
		{"no scheme", []string{"app.example"}, false, "not an origin", nil, nil},
		{"user", []string{"https://u@app.example"}, false, "user information", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pol, err := newOriginPolicy(tc.list, tc.haveKey)
			if tc.mention != "" {
				if err == nil || !strings.Contains(err.Error(), tc.mention) {
					t.Fatalf("error %v, want one mentioning %s", err, tc.mention)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range tc.allowed {
				if !pol.allows(o) {
					t.Errorf("%q refused, want allowed", o)
				}
			}
			for _, o := range tc.refused {
				if pol.allows(o) {
					t.Errorf("%q allowed, want refused", o)
				}
			}
		})
	}
}

func TestStripCORS(t *testing.T) {
	resp := &http.Response{Header: http.Header{
		"Access-Control-Allow-Origin":      {"*"},
		"Access-Control-Allow-Credentials": {"true"},
		"access-control-expose-headers":    {"*"},
		"Content-Type":                     {"application/json"},
		"X-Request-Id":                     {"req_1"},
	}}
	if err := stripCORS(resp); err != nil {
		t.Fatal(err)
	}
	for k := range resp.Header {
		if strings.HasPrefix(strings.ToLower(k), "access-control-") {
			t.Errorf("%s kept", k)
		}
	}
	if len(resp.Header) != 2 {
		t.Errorf("headers left %v, want Content-Type and X-Request-Id", resp.Header)
	}
}
