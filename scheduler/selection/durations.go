package selection

import (
	"math"
	"time"
)

// Slowness thresholds of Durations.
const (
	// MinSamples is the history a parent needs before the mean + 3σ rule applies.
	MinSamples = 10
	// fewSamplesFactor: with 2 to MinSamples-1 samples, a block slower than this many
	// times the mean is abnormal (Dragonfly's rule for short histories).
	fewSamplesFactor = 20
	// sigmaFloor is the least σ as a share of the mean, so that a parent with perfectly
	// regular times is not marked slow for one slightly slower block.
	sigmaFloor = 0.1 / 3
)

// Durations is a parent's history of block fetch times, as its children report them. The
// zero value is an empty history.
//
// A parent is slow when its latest block time is abnormal against the history before it:
// above mean + 3σ once the history has MinSamples samples, above 20 × mean before that. σ is
// at least a thirtieth of the mean. The history is the whole life of the parent in its task,
// kept as running mean and variance (Welford), so it costs the same whatever its length.
type Durations struct {
	n    int
	mean float64 // seconds
	m2   float64
	slow bool
}

// Add records one block fetch time.
func (d *Durations) Add(t time.Duration) {
	x := t.Seconds()
	switch {
	case d.n >= MinSamples:
		sigma := math.Sqrt(d.m2 / float64(d.n-1))
		d.slow = x > d.mean+3*max(sigma, sigmaFloor*d.mean)
	case d.n >= 2:
		d.slow = x > fewSamplesFactor*d.mean
	default:
		d.slow = false
	}
	d.n++
	delta := x - d.mean
	d.mean += delta / float64(d.n)
	d.m2 += delta * (x - d.mean)
}

// Slow reports whether the latest block time was abnormal.
func (d *Durations) Slow() bool { return d.slow }

// Len returns the number of samples.
func (d *Durations) Len() int { return d.n }

// Mean returns the mean block time.
func (d *Durations) Mean() time.Duration {
	return time.Duration(d.mean * float64(time.Second))
}
