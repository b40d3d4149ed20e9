//go:build unix

package cputime

import "testing"

func TestProcessGrows(t *testing.T) {
	before, ok := Process()
	if !ok {
		t.Fatal("Process does not report the CPU time on a unix platform")
	}
	x := 0
	for i := range 50_000_000 {
		x += i % 7
	}
	after, _ := Process()
	if after <= before || x == 0 {
		t.Fatalf("CPU time went from %v to %v over a busy loop", before, after)
	}
}
