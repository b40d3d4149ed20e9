//go:build race

package integration

// raceEnabled reports whether the test binary was built with -race.
const raceEnabled = true
