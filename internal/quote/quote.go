// Package quote shows values that may be secrets in error messages without
// echoing them: a key pasted into the wrong variable or field (an endpoint's
// name, a weight) must not be printed in full.
package quote

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// whole is the longest value Value shows whole; prefix is how many
// characters of a longer one it shows.
const whole, prefix = 8, 3

// Value quotes v for an error message without echoing a secret: a value of
// up to 8 bytes whole, a longer one as its first 3 characters and its
// length, such as `"sk-"... (164 bytes)`.
func Value(v string) string {
	if len(v) <= whole {
		return strconv.Quote(v)
	}
	cut := 0
	for range prefix {
		_, size := utf8.DecodeRuneInString(v[cut:])
		cut += size
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.Quote(v[:cut]), len(v))
}

// Name quotes an endpoint's name for an error message: whole when it reads
// as a name, as [Value] shows it (a short prefix and its length) when it
// looks like a secret (see [LooksSecret]), so that a key pasted into a
// name is never printed in full.
func Name(name string) string {
	if LooksSecret(name) {
		return Value(name)
	}
	return strconv.Quote(name)
}

// Secret-looking names: longer than maxName bytes, or holding a run of at
// least minRun ASCII letters and digits that mixes both.
const (
	maxName = 64
	minRun  = 20
)

// keyPrefixes begin API keys of common providers (OpenAI's sk-, sk-proj-,
// Anthropic's sk-ant-, Groq's gsk_, Google's AIza), compared without case.
var keyPrefixes = []string{"sk-", "sk_", "gsk_", "aiza"}

// LooksSecret reports whether s looks like an API key rather than a name:
// it is not valid UTF-8 or holds a control character, it begins with a
// common key prefix (sk-, sk_, gsk_, AIza), it is longer than 64 bytes, or
// it holds a run of 20 or more ASCII letters and digits that has both. A
// host name ("api.openai.com", "my-resource.openai.azure.com") or a label
// such as "azure-eastus2-gpt4o" does not.
func LooksSecret(s string) bool {
	if !utf8.ValidString(s) || len(s) > maxName {
		return true
	}
	lower := strings.ToLower(s)
	for _, p := range keyPrefixes {
		if strings.HasPrefix(lower, p) {
			return true
		}
	}
	run, letters, digits := 0, false, false
	for _, r := range s {
		switch {
		case r < ' ' || r == 0x7f:
			return true
		case r >= '0' && r <= '9':
			run, digits = run+1, true
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
			run, letters = run+1, true
		default:
			run, letters, digits = 0, false, false
		}
		if run >= minRun && letters && digits {
			return true
		}
	}
	return false
}
