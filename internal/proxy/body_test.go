package proxy

import (
	"strings"
	"testing"
)

func TestBodyHint(t *testing.T) {
	for _, tc := range []struct {
		limit int64
		want  string
	}{
		{32 << 20, "-max-body 32 MiB"},
		{1 << 10, "-max-body 1 KiB"},
		{25_000_000, "-max-body 25000000 bytes"},
		{1 << 30, "-max-body 1 GiB"},
		{-1, "-max-body 0"},
	} {
		if got := bodyHint(tc.limit); !strings.Contains(got, tc.want) {
			t.Errorf("bodyHint(%d) = %q, want it to mention %q", tc.limit, got, tc.want)
		}
	}
}
