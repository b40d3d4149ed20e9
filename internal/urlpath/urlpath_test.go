package urlpath

import (
	"net/url"
	"testing"
)

func TestUnder(t *testing.T) {
	for _, tc := range []struct {
		p, base string
		want    bool
	}{
		{"/v1", "/v1", true},
		{"/v1/models", "/v1", true},
		{"/v1x", "/v1", false},
		{"/v", "/v1", false},
		{"/anything", "", true},
		{"", "", true},
	} {
		if got := Under(tc.p, tc.base); got != tc.want {
			t.Errorf("Under(%q, %q) = %v, want %v", tc.p, tc.base, got, tc.want)
		}
	}
}

func TestHasDotSegment(t *testing.T) {
	for _, tc := range []struct {
		target string
		want   bool
	}{
		{"/v1/chat/completions", false},
		{"/v1/files/file-abc.jsonl/content", false},
		{"/v1/files/.../content", false},
		{"/v1/files/.hidden", false},
		{"/v1/files/a%2Fb/content", false},
		{"/v1/../../admin/keys", true},
		{"/v1/./models", true},
		{"/v1/..", true},
		{"/v1/.", true},
		{"/..", true},
		{"/v1/%2e%2e/%2e%2e/admin/keys", true},
		{"/v1/%2E%2E/admin", true},
		{"/v1/.%2e/admin", true},
		{"/v1/%2e/models", true},
		{"/v1/..%2f..%2fadmin%2fkeys", true},
		{"/v1/models%2f..", true},
		{"/v1/models%2f.%2fx", true},
	} {
		u, err := url.ParseRequestURI(tc.target)
		if err != nil {
			t.Fatal(err)
		}
		if got := HasDotSegment(u.Path); got != tc.want {
			t.Errorf("HasDotSegment(%s) = %v, want %v", tc.target, got, tc.want)
		}
	}
}
