package failover

import (
	"strings"
	"testing"
)

// TestReviewEnvErrorsShowNoSecretOfNewVariables: a key pasted by mistake
// into one of the variables the models feature added (OPENAI_MODELS_N,
// OPENAI_API_VERSION_N) is not echoed in the error: as for every other
// variable, at most a short prefix and the length (issue 11).
func TestReviewEnvErrorsShowNoSecretOfNewVariables(t *testing.T) {
	const secret = "SECRET0123456789abcdef"
	for _, tc := range []struct{ name, v string }{
		{"OPENAI_API_VERSION_1", "Zk9vYmFy+" + secret + "/=="},                 // a base64 key: not an api-version
		{"OPENAI_MODELS_1", "sk-proj-" + secret + "\x01"},                      // a key with a stray control character
		{"OPENAI_MODELS_1", "gpt-4o=sk-proj-" + secret + "\x01"},               // the same as an upstream name
		{"OPENAI_MODELS_1", "gpt-4o, sk-proj-" + secret + "\x7f, gpt-4o-mini"}, // among others
	} {
		t.Run(tc.name+"="+strings.ToValidUTF8(tc.v[:10], "?"), func(t *testing.T) {
			_, err := ConfigFromEnviron([]string{"OPENAI_BASE_URL_1=https://a.example/v1", "OPENAI_API_TYPE_1=azure", tc.name + "=" + tc.v})
			if err == nil {
				t.Fatalf("%s=%q accepted, want an error", tc.name, tc.v)
			}
			if !strings.Contains(err.Error(), tc.name) {
				t.Errorf("error %q does not name %s", err, tc.name)
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Errorf("error echoes the value: %v", err)
			}
		})
	}
}
