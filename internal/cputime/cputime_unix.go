//go:build unix

// Package cputime reads the CPU time the process has used, for benchmarks
// that report CPU per request beside wall time: on a shared machine it
// moves less than throughput, which also moves with what other tenants take.
package cputime

import (
	"syscall"
	"time"
)

// Process returns the CPU time (user plus system) the process has used so
// far, and whether the platform reports it.
func Process() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
