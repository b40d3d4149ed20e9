// Package urlpath holds the tests on URL paths that the failover transport
// and its proxy share: whether a path is under a base path, and whether it
// is unsafe to send (a dot segment, or an encoding an upstream could
// resolve to one).
package urlpath

import (
	"net/url"
	"strings"
	"unicode/utf8"
)

// Under reports whether p is base or below it at a segment boundary; every
// path is under the empty base.
func Under(p, base string) bool {
	if base == "" {
		return true
	}
	return strings.HasPrefix(p, base) && (len(p) == len(base) || p[len(base)] == '/')
}

// HasDotSegment reports whether the decoded path p has a "." or ".."
// segment, which an upstream that cleans paths would resolve elsewhere.
// p is decoded (url.URL.Path), so escaped forms such as %2e%2e and ..%2f
// count too.
func HasDotSegment(p string) bool {
	if !strings.Contains(p, "/.") && !strings.HasPrefix(p, ".") {
		return false
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// Unsafe returns why the decoded path p must not be sent to an upstream, or
// "" when it may be. Beyond a "." or ".." segment, it refuses what an
// upstream that decodes twice, or that reads "\" or ";" as a separator,
// would resolve outside the base path: a segment that a second decoding
// turns into a dot segment (%252e%252e) or splits (..%252f), a backslash,
// a semicolon, a control character (NUL among them), and bytes that are
// not UTF-8 (overlong forms such as %c0%ae). No OpenAI API path has any of
// these. A path of plain characters is checked in one pass.
func Unsafe(p string) string {
	i := 0
	for i < len(p) && !special[p[i]] {
		i++
	}
	if i == len(p) {
		return "" // the common case: letters, digits, "/", "-", "_", ...
	}
	var dot, pct, high bool
	for ; i < len(p); i++ {
		switch c := p[i]; {
		case c == '\\':
			return "a backslash"
		case c == ';':
			return "a semicolon"
		case c < 0x20 || c == 0x7f:
			return "a control character"
		case c >= 0x80:
			high = true
		case c == '.':
			dot = true
		case c == '%':
			pct = true
		}
	}
	if high && !utf8.ValidString(p) {
		return "bytes that are not UTF-8"
	}
	if dot && HasDotSegment(p) {
		return "a . or .. segment"
	}
	if !pct {
		return ""
	}
	twice, err := url.PathUnescape(p)
	if err != nil {
		return "" // not an escape a second decoding could read either
	}
	if reason := Unsafe(strings.ReplaceAll(twice, "\\", "/")); reason != "" && reason != "a backslash" {
		return reason + " once decoded again"
	}
	if strings.Contains(twice, "\\") {
		return "a backslash once decoded again"
	}
	return ""
}

// special marks the bytes Unsafe must look at more closely: the ones it
// refuses, and ".", "%" and non-ASCII bytes.
var special = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c < 0x20 || c >= 0x7f || c == '\\' || c == ';' || c == '.' || c == '%'
	}
	return t
}()
