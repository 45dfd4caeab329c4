package selection

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// Weights weigh the terms of Score. Each is at least 0 and they need not sum to 1.
type Weights struct {
	Bandwidth float64 `toml:"bandwidth"`
	Load      float64 `toml:"load"`
	Blocks    float64 `toml:"blocks"`
	IDC       float64 `toml:"idc"`
	Location  float64 `toml:"location"`
	HostType  float64 `toml:"host_type"`
}

// DefaultWeights are Dragonfly's proportions (see the package documentation).
func DefaultWeights() Weights {
	return Weights{Bandwidth: 0.3, Load: 0.2, Blocks: 0.1, IDC: 0.2, Location: 0.1, HostType: 0.1}
}

// Validate refuses negative or non-finite weights, and all zero.
func (w Weights) Validate() error {
	var errs []error
	sum := 0.0
	for _, x := range []struct {
		name string
		v    float64
	}{{"bandwidth", w.Bandwidth}, {"load", w.Load}, {"blocks", w.Blocks}, {"idc", w.IDC}, {"location", w.Location}, {"host_type", w.HostType}} {
		if x.v < 0 || math.IsNaN(x.v) || math.IsInf(x.v, 0) {
			errs = append(errs, fmt.Errorf("weight %s = %v: want a finite number ≥ 0", x.name, x.v))
		}
		sum += x.v
	}
	if len(errs) == 0 && sum == 0 {
		errs = append(errs, errors.New("weights: all zero"))
	}
	return errors.Join(errs...)
}

// DefaultChildLimit is the number of children that counts as a full load when a host
// announced no upload slot limit.
const DefaultChildLimit = 8

// Evaluator scores candidates for one asking peer.
type Evaluator struct {
	Weights Weights
	// ChildLimit is the number of children that count as a full load for a host with no
	// announced slot limit; 0 means DefaultChildLimit. A host with a limit uses it.
	ChildLimit int
}

// Score returns how good a parent c is for a peer on host child: higher is better, at most
// the sum of the weights.
func (e Evaluator) Score(child Host, c *Candidate) float64 {
	w := e.Weights
	return w.Bandwidth*FreeBandwidth(c.Host) +
		w.Load*e.LoadScore(c) +
		w.Blocks*BlocksScore(c) +
		w.IDC*IDCScore(child.IDC, c.Host.IDC) +
		w.Location*LocationScore(child.Location, c.Host.Location) +
		w.HostType*HostTypeScore(c.Host)
}

// FreeBandwidth is the share of h's upload capacity not in use, in [0, 1]; ½ when the
// capacity is unknown.
func FreeBandwidth(h Host) float64 {
	if h.UploadCapacity == 0 {
		return 0.5
	}
	if h.UploadRate >= h.UploadCapacity {
		return 0
	}
	return float64(h.UploadCapacity-h.UploadRate) / float64(h.UploadCapacity)
}

// LoadScore is 1 − load, load being the larger of the reported load and the share of the
// child limit c already serves.
func (e Evaluator) LoadScore(c *Candidate) float64 {
	limit := e.ChildLimit
	if c.Host.UploadSlots > 0 {
		limit = int(c.Host.UploadSlots)
	}
	if limit <= 0 {
		limit = DefaultChildLimit
	}
	load := min(1, float64(c.Children)/float64(limit))
	if c.Host.Reported && !math.IsNaN(c.Host.Load) {
		load = max(load, min(1, c.Host.Load))
	}
	return 1 - max(0, load)
}

// BlocksScore is the fraction of the task c holds: 1 when complete, 0 when the block count
// is unknown.
func BlocksScore(c *Candidate) float64 {
	switch {
	case c.Complete:
		return 1
	case c.BlockCount <= 0:
		return 0
	}
	return min(1, float64(c.BlocksHeld)/float64(c.BlockCount))
}

// IDCScore is 1 when a and b name the same IDC, else 0.
func IDCScore(a, b string) float64 {
	if a != "" && a == b {
		return 1
	}
	return 0
}

// LocationScore is the number of leading "/"-separated elements a and b share, over the
// element count of the longer one; 0 when either is empty.
func LocationScore(a, b string) float64 {
	if a == "" || b == "" {
		return 0
	}
	na, nb := strings.Count(a, "/")+1, strings.Count(b, "/")+1
	common := 0
	for a != "" && b != "" {
		ea, ra, _ := strings.Cut(a, "/")
		eb, rb, _ := strings.Cut(b, "/")
		if ea != eb {
			break
		}
		common++
		a, b = ra, rb
	}
	return float64(common) / float64(max(na, nb))
}

// HostTypeScore is 1 for a normal host and ½ for a seed.
func HostTypeScore(h Host) float64 {
	if h.Seed {
		return 0.5
	}
	return 1
}
