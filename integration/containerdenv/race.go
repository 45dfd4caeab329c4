//go:build race

package containerdenv

// raceEnabled: the test binary runs under the race detector, so the daemon is built with it.
const raceEnabled = true
