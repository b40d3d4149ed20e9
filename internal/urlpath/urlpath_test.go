package urlpath

import (
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"
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

func TestUnsafe(t *testing.T) {
	for _, tc := range []struct {
		path string
		want string // "" for safe
	}{
		{"/chat/completions", ""},
		{"/files/file-abc/content", ""},
		{"/models/ft:gpt-4o:org:x:1", ""},
		{"/files/a.b", ""},
		{"/files/50%off", ""}, // a lone % after one decoding: nothing a second decoding reads
		{"/files/ünïcode", ""},
		{"/../admin", "a . or .. segment"},
		{"/files/.", "a . or .. segment"},
		{"/%2e%2e/admin", "a . or .. segment once decoded again"},
		{"/..%2fadmin", "a . or .. segment once decoded again"},
		{"/files%5c..%5cadmin", "a . or .. segment once decoded again"},
		{"/files\\admin", "a backslash"},
		{"/files;x", "a semicolon"},
		{"/files/\x00", "a control character"},
		{"/files/a\r\nb", "a control character"},
		{"/files/\xc0\xae\xc0\xae", "bytes that are not UTF-8"},
		{"/files/%c0%ae", "bytes that are not UTF-8 once decoded again"},
		{"/files/%00", "a control character once decoded again"},
		{"/files/%3b", "a semicolon once decoded again"},
		{"/files/%5c", "a backslash once decoded again"},
	} {
		if got := Unsafe(tc.path); got != tc.want {
			t.Errorf("Unsafe(%q) = %q, want %q", tc.path, got, tc.want)
		}
	}
}

// FuzzUnsafe: a path Unsafe passes has, decoded once more, no dot segment
// whether "/" or "\" separates segments, and no byte an upstream could
// read as a separator or a terminator.
func FuzzUnsafe(f *testing.F) {
	for _, s := range []string{"/chat/completions", "/%2e%2e/x", "/..%2f", "/a%5c..%5cb", "/%c0%ae", "/a;b", "/%252e%252e", "/files/50%off"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if Unsafe(p) != "" {
			return
		}
		for _, form := range []string{p, mustUnescape(p)} {
			if !utf8.ValidString(form) || strings.ContainsAny(form, "\\;\x00") {
				t.Fatalf("Unsafe(%q) passed a path whose form %q has a separator, a NUL or bad UTF-8", p, form)
			}
			for seg := range strings.FieldsFuncSeq(form, func(r rune) bool { return r == '/' || r == '\\' }) {
				if seg == "." || seg == ".." {
					t.Fatalf("Unsafe(%q) passed a path whose form %q has a dot segment", p, form)
				}
			}
		}
	})
}

// mustUnescape decodes p once more, or returns it as is when it does not
// decode.
func mustUnescape(p string) string {
	if u, err := url.PathUnescape(p); err == nil {
		return u
	}
	return p
}
