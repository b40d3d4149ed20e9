package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// runVersionCommand runs "failover version" (or -version).
func runVersionCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintf(stderr, "failover version: unexpected argument %q\n", args[0])
		return exitUsage
	}
	info, _ := debug.ReadBuildInfo()
	fmt.Fprintln(stdout, versionLine(info))
	return exitOK
}

// versionLine describes a build from its build info (nil when the binary
// has none): the module version, the VCS revision, its time and whether
// the tree was modified, and the Go version and platform. For example:
//
//	failover v1.2.0 (revision 0a1b2c3d4e5f, 2026-11-26T09:12:03Z) go1.26.8 linux/amd64
//	failover (devel) (revision 0a1b2c3d4e5f, modified) go1.26.8 linux/amd64
//	failover (devel) (no VCS information) go1.26.8 linux/amd64
func versionLine(info *debug.BuildInfo) string {
	version, goVersion := "(unknown)", runtime.Version()
	var revision, at string
	modified := false
	if info != nil {
		if info.Main.Version != "" {
			version = info.Main.Version
		}
		if info.GoVersion != "" {
			goVersion = info.GoVersion
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	vcs := "no VCS information"
	if revision != "" {
		if len(revision) > 12 {
			revision = revision[:12]
		}
		vcs = "revision " + revision
		if at != "" {
			vcs += ", " + at
		}
		if modified {
			vcs += ", modified"
		}
	}
	return fmt.Sprintf("failover %s (%s) %s %s/%s", version, vcs, goVersion, runtime.GOOS, runtime.GOARCH)
}
