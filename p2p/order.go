package p2p

import (
	"math/rand/v2"
)

// rarestFirst chooses the order in which Warm fetches a task's blocks. Peers that fetch one
// task at once, each front to back, hold the same blocks at the same time and have nothing to
// give each other: everything then comes down the few paths from the seed. So within a band
// of blocks ahead of the reader (which checks the stream front to back, and bounds what is
// held unread), a peer with several parents takes the block the fewest of them hold, at least
// one, ties broken at random: peers hold different blocks and trade them, and a block only
// the seed has goes to one peer, not to all. It begins no block that none of its parents
// holds: each would ask for it anyway, and wait at parents that wait in turn at theirs,
// holding their request slots for seconds; the next bitmaps show what arrived.
//
// A peer with a single parent (a tree) has no one to differ from: it takes blocks front to
// back, those its parent does not hold yet too, so that it follows its parent's order, its
// requests wait at the parent for the blocks arriving there (a pipeline), and its own
// children can follow it.
//
// It is not safe for concurrent use.
type rarestFirst struct {
	band  int
	begun []bool
	rng   *rand.Rand
}

func newRarestFirst(band int, seed uint64) *rarestFirst {
	return &rarestFirst{band: max(band, 1), rng: rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))}
}

// next returns the block to begin, given the reader's position from, the task's block count
// total (-1 while unknown), holders(i), how many parents hold block i, and whether this peer
// has several parents; ok is false when no block of the band is to begin now.
func (r *rarestFirst) next(from, total int, holders func(i int) int, severalParents bool) (i int, ok bool) {
	end := from + r.band
	if total >= 0 {
		end = min(end, total)
	}
	best, bestHolders, ties := -1, 0, 0
	first := -1
	for j := from; j < end; j++ {
		if r.isBegun(j) {
			continue
		}
		if first < 0 {
			first = j
		}
		h := holders(j)
		switch {
		case h == 0:
		case best < 0 || h < bestHolders:
			best, bestHolders, ties = j, h, 1
		case h == bestHolders:
			ties++
			if severalParents && r.rng.IntN(ties) == 0 { // reservoir sampling: each tie equally likely
				best = j
			}
		}
	}
	if best < 0 && !severalParents {
		best = first
	}
	if best < 0 {
		return 0, false
	}
	r.markBegun(best)
	return best, true
}

func (r *rarestFirst) isBegun(i int) bool { return i < len(r.begun) && r.begun[i] }

func (r *rarestFirst) markBegun(i int) {
	if i >= len(r.begun) {
		r.begun = append(r.begun, make([]bool, i+1-len(r.begun))...)
	}
	r.begun[i] = true
}
