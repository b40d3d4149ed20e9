package quote

import (
	"strings"
	"testing"
)

func TestValue(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", `""`},
		{"12345678", `"12345678"`},
		{"sk-proj-ABCDEFGHIJ", `"sk-"... (18 bytes)`},
		{"éééééé", `"ééé"... (12 bytes)`},
	} {
		if got := Value(tc.in); got != tc.want {
			t.Errorf("Value(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestLooksSecret(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"api.openai.com", false},
		{"api.openai.com-2", false},
		{"my-resource.openai.azure.com", false},
		{"azure-eastus2-gpt4o-deployment", false},
		{"primary", false},
		{"averyveryverylongresourcename", false}, // letters only
		{"", false},
		{"sk-proj-ABC123", true},
		{"SK-abc", true},
		{"gsk_abc", true},
		{"AIzaSyD-abc", true},
		{"0123456789abcdef0123456789abcdef", true}, // an Azure key
		{"a1b2c3d4e5f6g7h8i9j0", true},
		{"a1b2c3d4e5f6g7h8i9j", false}, // 19
		{strings.Repeat("a-", 33), true},
		{"name\nwith break", true},
		{"\xff", true},
	} {
		if got := LooksSecret(tc.in); got != tc.want {
			t.Errorf("LooksSecret(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestName(t *testing.T) {
	key := "sk-proj-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	if got, want := Name(key), `"sk-"... (44 bytes)`; got != want {
		t.Errorf("Name(key) = %s, want %s", got, want)
	}
	if got, want := Name("backup"), `"backup"`; got != want {
		t.Errorf("Name(backup) = %s, want %s", got, want)
	}
}
