//go:build !race

package endpointslice_test

const raceEnabled = false
