package rendezvous

import (
	"slices"
	"strings"
)

// Weight is node's weight for key; the node with the largest weight is key's first choice.
func Weight(key, node string) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= prime
	}
	h *= prime // the zero separator byte: ("ab","c") and ("a","bc") differ
	for i := 0; i < len(node); i++ {
		h ^= uint64(node[i])
		h *= prime
	}
	// SplitMix64 finalizer.
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// Pick returns the node of nodes that key maps to, and false when nodes is empty. Ties
// (equal weights) go to the smaller node name, so the answer never depends on the order of
// nodes.
func Pick(key string, nodes []string) (string, bool) {
	best, bestW, ok := "", uint64(0), false
	for _, n := range nodes {
		w := Weight(key, n)
		if !ok || w > bestW || (w == bestW && n < best) {
			best, bestW, ok = n, w, true
		}
	}
	return best, ok
}

// Rank returns nodes ordered by preference for key, first choice first. It does not modify
// nodes.
func Rank(key string, nodes []string) []string {
	type weighted struct {
		node string
		w    uint64
	}
	ws := make([]weighted, len(nodes))
	for i, n := range nodes {
		ws[i] = weighted{n, Weight(key, n)}
	}
	slices.SortFunc(ws, func(a, b weighted) int {
		switch {
		case a.w > b.w:
			return -1
		case a.w < b.w:
			return 1
		}
		return strings.Compare(a.node, b.node)
	})
	out := make([]string, len(ws))
	for i, x := range ws {
		out[i] = x.node
	}
	return out
}
