//go:build !race

package containerdenv

const raceEnabled = false
