package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/p2pimage/p2p-snapshotter/integration/netlab"
)

// payloadPerFrame is the share of a capped link's rate that bulk TCP carries as payload:
// 1448 bytes in each 1514-byte Ethernet frame (netlab's doc).
const payloadPerFrame = 1448.0 / 1514.0

// payload returns the payload rate, in bytes/s, of a link capped at bits bits/s of frames.
func payload(bits uint64) float64 { return float64(bits) / 8 * payloadPerFrame }

// bound is the Kumar–Ross lower bound on the time to distribute f bytes from a source that
// uploads at us bytes/s to peers with uploads up and downloads down (bytes/s, one each per
// peer): max(f/us, f/min down, N·f/(us + Σ up)).
func bound(f, us float64, up, down []float64) float64 {
	t := f / us
	sum := us
	for _, u := range up {
		sum += u
	}
	if n := len(up); n > 0 {
		t = max(t, float64(n)*f/sum)
	}
	if len(down) > 0 {
		dmin := math.Inf(1)
		for _, d := range down {
			dmin = min(dmin, d)
		}
		t = max(t, f/dmin)
	}
	return t
}

// linkBound is bound for a seed with limits s and peers with limits ps.
func linkBound(f int64, s netlab.Limits, ps []netlab.Limits) float64 {
	up, down := make([]float64, len(ps)), make([]float64, len(ps))
	for i, p := range ps {
		up[i], down[i] = payload(p.Up), payload(p.Down)
	}
	return bound(float64(f), payload(s.Up), up, down)
}

// parseRate parses a rate in tc's units: a number followed by bit, kbit, mbit or gbit (powers
// of 1000), or nothing (bits/s).
func parseRate(s string) (uint64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := uint64(1)
	for _, u := range []struct {
		suffix string
		mult   uint64
	}{{"kbit", netlab.Kbit}, {"mbit", netlab.Mbit}, {"gbit", netlab.Gbit}, {"bit", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSuffix(t, u.suffix), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v <= 0 || math.IsInf(v, 0) {
		return 0, fmt.Errorf("rate %q: want a positive number of bit, kbit, mbit or gbit", s)
	}
	return uint64(v * float64(mult)), nil
}
