//go:build race

package peer

// raceEnabled: the race detector's scheduler randomizes the order in which
// goroutines made ready run.
const raceEnabled = true
