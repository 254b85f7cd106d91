//go:build race

package endpointslice_test

// raceEnabled: see TestRestartAndCompaction.
const raceEnabled = true
