// Package urlpath holds the tests on URL paths that the failover transport
// and its proxy share: whether a path is under a base path, and whether it
// has a dot segment.
package urlpath

import "strings"

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
