package selection

import (
	"math"
	"testing"
	"time"
)

func TestFilter(t *testing.T) {
	ok := func() Candidate { return Candidate{Serving: true} }
	with := func(f func(*Candidate)) Candidate { c := ok(); f(&c); return c }
	tests := []struct {
		name string
		c    Candidate
		want Reason
	}{
		{"a good candidate", ok(), OK},
		{"itself", with(func(c *Candidate) { c.Self = true }), ReasonSelf},
		{"excluded by the asker", with(func(c *Candidate) { c.Excluded = true }), ReasonExcluded},
		{"a descendant: cycle", with(func(c *Candidate) { c.Descendant = true }), ReasonDescendant},
		{"nothing to pass on", with(func(c *Candidate) { c.Serving = false }), ReasonNotServing},
		{"sent a corrupt block", with(func(c *Candidate) { c.Corrupt = true }), ReasonCorrupt},
		{"two failures: still usable", with(func(c *Candidate) { c.Failures = 2 }), OK},
		{"three failures in a row", with(func(c *Candidate) { c.Failures = 3 }), ReasonFailing},
		{"slow", with(func(c *Candidate) { c.Slow = true }), ReasonSlow},
		{"no free slot", with(func(c *Candidate) {
			c.Host = Host{UploadSlots: 4, Reported: true, FreeUploadSlots: 0}
		}), ReasonNoFreeSlots},
		{"one free slot", with(func(c *Candidate) {
			c.Host = Host{UploadSlots: 4, Reported: true, FreeUploadSlots: 1}
		}), OK},
		{"no state yet: slots assumed free", with(func(c *Candidate) {
			c.Host = Host{UploadSlots: 4}
		}), OK},
		{"unlimited slots", with(func(c *Candidate) {
			c.Host = Host{Reported: true}
		}), OK},
		{"self wins over every other reason", Candidate{Self: true, Corrupt: true}, ReasonSelf},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := (Filter{}).Check(&tt.c); got != tt.want {
				t.Fatalf("got %v; want %v", got, tt.want)
			}
		})
	}
	if got := (Filter{MaxFailures: 5}).Check(&Candidate{Serving: true, Failures: 4}); got != OK {
		t.Fatalf("MaxFailures 5, 4 failures: got %v; want ok", got)
	}
}

func TestFilterBad(t *testing.T) {
	tests := []struct {
		name string
		c    Candidate
		want bool
	}{
		{"busy but fine", Candidate{Host: Host{UploadSlots: 1, Reported: true}}, false},
		{"not serving yet", Candidate{}, false},
		{"corrupt", Candidate{Corrupt: true}, true},
		{"failing", Candidate{Failures: 3}, true},
		{"slow", Candidate{Slow: true}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := (Filter{}).Bad(&tt.c); got != tt.want {
				t.Fatalf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func TestFreeBandwidth(t *testing.T) {
	tests := []struct {
		name string
		h    Host
		want float64
	}{
		{"idle", Host{UploadCapacity: 100}, 1},
		{"a quarter used", Host{UploadCapacity: 100, UploadRate: 25}, 0.75},
		{"saturated", Host{UploadCapacity: 100, UploadRate: 100}, 0},
		{"over capacity", Host{UploadCapacity: 100, UploadRate: 150}, 0},
		{"capacity unknown", Host{UploadRate: 50}, 0.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FreeBandwidth(tt.h); !near(got, tt.want) {
				t.Fatalf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func TestLoadScore(t *testing.T) {
	tests := []struct {
		name string
		c    Candidate
		want float64
	}{
		{"idle, no children", Candidate{}, 1},
		{"reported load", Candidate{Host: Host{Reported: true, Load: 0.25}}, 0.75},
		{"load ignored until reported", Candidate{Host: Host{Load: 0.9}}, 1},
		{"children of the default limit 8", Candidate{Children: 2}, 0.75},
		{"children of an announced slot limit", Candidate{Children: 2, Host: Host{UploadSlots: 4}}, 0.5},
		{"the larger of the two", Candidate{Children: 2, Host: Host{Reported: true, Load: 0.5}}, 0.5},
		{"full", Candidate{Children: 20}, 0},
		{"load above 1 clamps", Candidate{Host: Host{Reported: true, Load: 3}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := (Evaluator{}).LoadScore(&tt.c); !near(got, tt.want) {
				t.Fatalf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func TestBlocksScore(t *testing.T) {
	tests := []struct {
		name string
		c    Candidate
		want float64
	}{
		{"none", Candidate{BlockCount: 10}, 0},
		{"half", Candidate{BlocksHeld: 5, BlockCount: 10}, 0.5},
		{"complete", Candidate{Complete: true}, 1},
		{"count unknown", Candidate{BlocksHeld: 5}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := BlocksScore(&tt.c); !near(got, tt.want) {
				t.Fatalf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func TestIDCScore(t *testing.T) {
	tests := []struct {
		a, b string
		want float64
	}{
		{"hz", "hz", 1},
		{"hz", "sh", 0},
		{"", "", 0},
		{"hz", "", 0},
	}
	for _, tt := range tests {
		if got := IDCScore(tt.a, tt.b); got != tt.want {
			t.Errorf("IDCScore(%q, %q): got %v; want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestLocationScore(t *testing.T) {
	tests := []struct {
		a, b string
		want float64
	}{
		{"eu/west/rack1", "eu/west/rack1", 1},
		{"eu/west/rack1", "eu/west/rack2", 2.0 / 3},
		{"eu/west/rack1", "eu/east/rack1", 1.0 / 3},
		{"eu/west/rack1", "us/west/rack1", 0},
		{"eu/west", "eu/west/rack1", 2.0 / 3},
		{"eu", "eu", 1},
		{"", "eu", 0},
		{"eu/westfalen", "eu/west", 0.5},
	}
	for _, tt := range tests {
		if got := LocationScore(tt.a, tt.b); !near(got, tt.want) {
			t.Errorf("LocationScore(%q, %q): got %v; want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestHostTypeScore(t *testing.T) {
	if got := HostTypeScore(Host{}); got != 1 {
		t.Errorf("normal host: got %v; want 1", got)
	}
	if got := HostTypeScore(Host{Seed: true}); got != 0.5 {
		t.Errorf("seed: got %v; want 0.5", got)
	}
}

func TestScore(t *testing.T) {
	e := Evaluator{Weights: DefaultWeights()}
	child := Host{IDC: "hz", Location: "cn/hz/r1"}
	tests := []struct {
		name string
		c    Candidate
		want float64
	}{
		{"perfect", Candidate{Complete: true, Host: Host{IDC: "hz", Location: "cn/hz/r1", UploadCapacity: 10}}, 1},
		{"nothing known, empty", Candidate{}, 0.3*0.5 + 0.2 + 0.1},
		{"seed in another IDC, half done", Candidate{BlocksHeld: 1, BlockCount: 2,
			Host: Host{Seed: true, IDC: "sh", Location: "cn/sh", UploadCapacity: 10}}, 0.3 + 0.2 + 0.05 + 0 + 0.1/3 + 0.1*0.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := e.Score(child, &tt.c); !near(got, tt.want) {
				t.Fatalf("got %v; want %v", got, tt.want)
			}
		})
	}
	// Each term moves the score in the right direction.
	base := Candidate{BlockCount: 10, BlocksHeld: 5, Host: Host{UploadCapacity: 100, UploadRate: 50}}
	better := []struct {
		name string
		f    func(*Candidate)
	}{
		{"more free bandwidth", func(c *Candidate) { c.Host.UploadRate = 10 }},
		{"fewer children", func(c *Candidate) { c.Children = 0 }},
		{"more blocks", func(c *Candidate) { c.BlocksHeld = 9 }},
		{"same IDC", func(c *Candidate) { c.Host.IDC = "hz" }},
		{"closer", func(c *Candidate) { c.Host.Location = "cn/hz" }},
	}
	base.Children = 3
	for _, b := range better {
		c := base
		b.f(&c)
		if e.Score(child, &c) <= e.Score(child, &base) {
			t.Errorf("%s: got score %v, not above %v", b.name, e.Score(child, &c), e.Score(child, &base))
		}
	}
}

func TestWeightsValidate(t *testing.T) {
	tests := []struct {
		name    string
		w       Weights
		wantErr bool
	}{
		{"defaults", DefaultWeights(), false},
		{"only IDC", Weights{IDC: 1}, false},
		{"negative", Weights{IDC: 1, Load: -1}, true},
		{"NaN", Weights{IDC: math.NaN()}, true},
		{"all zero", Weights{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.w.Validate(); (err != nil) != tt.wantErr {
				t.Fatalf("got %v; want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestDurations(t *testing.T) {
	ms := time.Millisecond
	steady := func(n int, d time.Duration) []time.Duration {
		s := make([]time.Duration, n)
		for i := range s {
			s[i] = d + time.Duration(i%3)*ms // 10, 11, 12, 10, …
		}
		return s
	}
	tests := []struct {
		name     string
		samples  []time.Duration
		wantSlow bool
	}{
		{"empty", nil, false},
		{"one sample", []time.Duration{time.Second}, false},
		{"short history, 5x the mean: fine", []time.Duration{10 * ms, 10 * ms, 50 * ms}, false},
		{"short history, 30x the mean: slow", []time.Duration{10 * ms, 10 * ms, 300 * ms}, true},
		{"long history, within 3σ", append(steady(MinSamples+10, 10*ms), 12*ms), false},
		{"long history, above mean + 3σ", append(steady(MinSamples+10, 10*ms), 20*ms), true},
		{"regular times, one slightly slower block is not slow", append(repeat(MinSamples+10, 10*ms), 11*ms), false},
		{"recovers with the next normal block", append(steady(MinSamples+10, 10*ms), 50*ms, 11*ms), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d Durations
			now := time.Unix(1e9, 0)
			for _, s := range tt.samples {
				now = now.Add(s)
				d.Add(s, now)
			}
			if got := d.Slow(now); got != tt.wantSlow {
				t.Fatalf("got slow %v (mean %v over %d); want %v", got, d.Mean(), d.Len(), tt.wantSlow)
			}
			if d.Slow(now.Add(SlowFor)) {
				t.Errorf("still slow %v after the last block time; the mark lasts %v", SlowFor, SlowFor)
			}
		})
	}
}

func repeat(n int, d time.Duration) []time.Duration {
	s := make([]time.Duration, n)
	for i := range s {
		s[i] = d
	}
	return s
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
