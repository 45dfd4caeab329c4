package peer

import (
	"math"
	"sync"
	"time"
)

// RateMeter measures a byte rate as an exponentially weighted moving average over periods of
// rateTick. It is safe for concurrent use; now is injected so tests need not sleep.
type RateMeter struct {
	now func() time.Time

	mu        sync.Mutex
	total     int64
	lastTick  time.Time
	lastTotal int64
	rate      float64
	primed    bool
}

// rateTick is the period over which a rate sample is taken.
const rateTick = 500 * time.Millisecond

// rateWeight is the weight of the newest sample.
const rateWeight = 0.5

// NewRateMeter returns a meter reading the time from now.
func NewRateMeter(now func() time.Time) *RateMeter {
	return &RateMeter{now: now, lastTick: now()}
}

// Add counts n bytes.
func (m *RateMeter) Add(n int64) {
	m.mu.Lock()
	m.total += n
	m.advanceLocked()
	m.mu.Unlock()
}

// Total is every byte counted.
func (m *RateMeter) Total() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.total
}

// Rate is the current rate in bytes per second.
func (m *RateMeter) Rate() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.advanceLocked()
	return int64(m.rate)
}

func (m *RateMeter) advanceLocked() {
	now := m.now()
	dt := now.Sub(m.lastTick)
	if dt < rateTick {
		return
	}
	sample := float64(m.total-m.lastTotal) / dt.Seconds()
	if !m.primed {
		m.rate, m.primed = sample, true
	} else {
		// Idle periods longer than a tick count as several samples of their average.
		w := 1 - math.Pow(1-rateWeight, float64(dt/rateTick))
		m.rate = w*sample + (1-w)*m.rate
	}
	m.lastTick, m.lastTotal = now, m.total
}
