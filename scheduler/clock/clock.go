package clock

import "time"

// Clock tells the time and makes tickers. Implementations are safe for concurrent use.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// NewTicker returns a ticker that delivers the time on its channel every d; d must be
	// positive. The caller stops it.
	NewTicker(d time.Duration) Ticker
}

// Ticker is the subset of time.Ticker the scheduler uses.
type Ticker interface {
	// C is the channel ticks arrive on; a tick is dropped when the reader has not taken the
	// previous one.
	C() <-chan time.Time
	// Stop stops the ticker; no tick arrives after it returns. It does not close C.
	Stop()
}

// Real is the wall clock.
type Real struct{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// NewTicker returns a time.Ticker.
func (Real) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time { return r.t.C }
func (r realTicker) Stop()               { r.t.Stop() }
