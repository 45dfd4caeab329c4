package scheduler

import (
	"testing"
	"time"
)

func TestFlowRate(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	for _, tc := range []struct {
		name      string
		adds      []struct{ at, n int } // seconds after t0, bytes
		at        int
		wantRate  float64
		wantBytes uint64
	}{
		{"nothing", nil, 0, 0, 0},
		{"within the window", []struct{ at, n int }{{0, 500}, {2, 1000}}, 3, 300, 1500},
		{"older than the window", []struct{ at, n int }{{0, 500}, {6, 1000}}, 6, 200, 1500},
		{"all gone", []struct{ at, n int }{{0, 500}, {1, 500}}, 20, 0, 1000},
		{"same second", []struct{ at, n int }{{4, 100}, {4, 150}}, 4, 50, 250},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var f flow
			for _, a := range tc.adds {
				f.add(uint64(a.n), t0.Add(time.Duration(a.at)*time.Second))
			}
			if got := f.rate(t0.Add(time.Duration(tc.at) * time.Second)); got != tc.wantRate {
				t.Errorf("rate: got %v; want %v", got, tc.wantRate)
			}
			if f.bytes != tc.wantBytes {
				t.Errorf("bytes: got %d; want %d", f.bytes, tc.wantBytes)
			}
		})
	}
}
