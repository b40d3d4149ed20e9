package main

import (
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionLine(t *testing.T) {
	platform := " " + runtime.GOOS + "/" + runtime.GOARCH
	for _, tc := range []struct {
		name string
		info *debug.BuildInfo
		want string
	}{
		{"no build info", nil, "failover (unknown) (no VCS information) " + runtime.Version() + platform},
		{"release", &debug.BuildInfo{
			GoVersion: "go1.26.8",
			Main:      debug.Module{Path: "github.com/failover-go/failover", Version: "v1.2.0"},
			Settings: []debug.BuildSetting{
				{Key: "vcs", Value: "git"},
				{Key: "vcs.revision", Value: "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"},
				{Key: "vcs.time", Value: "2026-11-26T09:12:03Z"},
				{Key: "vcs.modified", Value: "false"},
			},
		}, "failover v1.2.0 (revision 0a1b2c3d4e5f, 2026-11-26T09:12:03Z) go1.26.8" + platform},
		{"modified tree", &debug.BuildInfo{
			GoVersion: "go1.26.8",
			Main:      debug.Module{Version: "(devel)"},
			Settings:  []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "true"}},
		}, "failover (devel) (revision abc, modified) go1.26.8" + platform},
		{"no VCS", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			"failover (devel) (no VCS information) go1.26.8" + platform},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := versionLine(tc.info); got != tc.want {
				t.Errorf("versionLine = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestVersionCommand runs both spellings: each prints this binary's
// version line and exits 0.
func TestVersionCommand(t *testing.T) {
	lineRE := regexp.MustCompile(`^failover \S+ \(.*\) go\S+ \S+/\S+\n$`)
	for _, args := range [][]string{{"version"}, {"-version"}} {
		code, stdout, stderr := runCommand(t, nil, args...)
		if code != exitOK || !lineRE.MatchString(stdout) || stderr != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
	}
	if code, _, stderr := runCommand(t, nil, "version", "extra"); code != exitUsage || !strings.Contains(stderr, "extra") {
		t.Errorf("version extra: exit %d, stderr %q; want 2 naming the argument", code, stderr)
	}
}
