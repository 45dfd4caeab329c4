// Package clock is the scheduler's view of time: Now and tickers, behind a two-method
// interface so that keepalive expiry and periodic work are tested without sleeping.
//
// Real is the wall clock. Fake is a clock that moves only when a test calls Advance; its
// tickers fire as Advance crosses their periods, dropping ticks that the reader has not taken
// yet, as time.Ticker does.
package clock
