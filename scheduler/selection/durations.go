package selection

import (
	"math"
	"time"
)

// Slowness thresholds of Durations.
const (
	// MinSamples is the history a parent needs before the mean + 3σ rule applies
	// (Dragonfly's normalDistributionLen): with fewer, block times that vary with the
	// parent's number of children look abnormal.
	MinSamples = 30
	// fewSamplesFactor: with 2 to MinSamples-1 samples, a block slower than this many
	// times the mean is abnormal (Dragonfly's rule for short histories).
	fewSamplesFactor = 20
	// sigmaFloor is the least σ as a share of the mean, so that a parent with perfectly
	// regular times is not marked slow for one slightly slower block.
	sigmaFloor = 0.1 / 3
	// SlowFor is how long an abnormal block time marks a parent slow. The mark must lapse
	// by itself: a parent that is slow gets no children, so no new block times, and one that
	// held the whole task would otherwise stay unused for good.
	SlowFor = 5 * time.Second
)

// Durations is a parent's history of block fetch times, as its children report them. The
// zero value is an empty history.
//
// A parent is slow when its latest block time is abnormal against the history before it:
// above mean + 3σ once the history has MinSamples samples, above 20 × mean before that. σ is
// at least a thirtieth of the mean. The history is the whole life of the parent in its task,
// kept as running mean and variance (Welford), so it costs the same whatever its length.
// The mark lasts until the next normal block time or for SlowFor, whichever comes first.
type Durations struct {
	n         int
	mean      float64 // seconds
	m2        float64
	slowUntil time.Time
}

// Add records one block fetch time t, reported at now.
func (d *Durations) Add(t time.Duration, now time.Time) {
	x := t.Seconds()
	slow := false
	switch {
	case d.n >= MinSamples:
		sigma := math.Sqrt(d.m2 / float64(d.n-1))
		slow = x > d.mean+3*max(sigma, sigmaFloor*d.mean)
	case d.n >= 2:
		slow = x > fewSamplesFactor*d.mean
	}
	d.slowUntil = time.Time{}
	if slow {
		d.slowUntil = now.Add(SlowFor)
	}
	d.n++
	delta := x - d.mean
	d.mean += delta / float64(d.n)
	d.m2 += delta * (x - d.mean)
}

// Slow reports whether the latest block time was abnormal and reported less than SlowFor
// before now.
func (d *Durations) Slow(now time.Time) bool { return now.Before(d.slowUntil) }

// Len returns the number of samples.
func (d *Durations) Len() int { return d.n }

// Mean returns the mean block time.
func (d *Durations) Mean() time.Duration {
	return time.Duration(d.mean * float64(time.Second))
}
