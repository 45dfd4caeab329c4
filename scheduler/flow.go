package scheduler

import "time"

// flowWindow is the span a flow's rate is measured over, in whole seconds.
const flowWindow = 5

// flow is what a peer has received from one parent, as its NewBlocks reports tell: bytes in
// all, and bytes per second over the last flowWindow seconds. Guarded by Scheduler.mu.
type flow struct {
	bytes   uint64
	buckets [flowWindow]uint64 // bytes by second, ring indexed by unix second
	last    int64              // the unix second of the newest bucket written
}

// add counts n bytes received at now.
func (f *flow) add(n uint64, now time.Time) {
	f.advance(now.Unix())
	f.buckets[mod(now.Unix())] += n
	f.bytes += n
}

// rate returns the bytes per second received over the flowWindow seconds up to now.
func (f *flow) rate(now time.Time) float64 {
	f.advance(now.Unix())
	var sum uint64
	for _, b := range f.buckets {
		sum += b
	}
	return float64(sum) / flowWindow
}

// advance clears the buckets of the seconds after the last one written, up to sec.
func (f *flow) advance(sec int64) {
	if sec <= f.last {
		return
	}
	for s := max(f.last+1, sec-flowWindow+1); s <= sec; s++ {
		f.buckets[mod(s)] = 0
	}
	f.last = sec
}

func mod(sec int64) int { return int((sec%flowWindow + flowWindow) % flowWindow) }
