package p2p

import (
	"slices"
	"testing"
)

func TestRarestFirst(t *testing.T) {
	tests := []struct {
		name    string
		band    int
		total   int
		holders []int // by block; blocks past it have none
		begun   []int
		several bool  // several parents
		want    []int // the order of next calls, until ok is false
	}{
		{"one parent, nothing held: front to back", 4, -1, nil, nil, false, []int{0, 1, 2, 3}},
		{"several parents, nothing held: nothing begins", 4, -1, nil, nil, true, nil},
		{"several parents: the held blocks, rarest first, and no other", 4, -1, []int{0, 3, 1, 0}, nil, true, []int{2, 1}},
		{"one parent: the held blocks, then front to back", 4, -1, []int{0, 1, 1, 0}, nil, false, []int{1, 2, 0, 3}},
		{"begun blocks are skipped", 4, -1, []int{1, 1, 1, 1}, []int{0, 1, 2}, true, []int{3}},
		{"the band ends at the task's end", 8, 3, []int{0, 0, 0, 5, 5}, nil, false, []int{0, 1, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRarestFirst(tt.band, 1)
			for _, i := range tt.begun {
				r.markBegun(i)
			}
			holders := func(i int) int {
				if i < len(tt.holders) {
					return tt.holders[i]
				}
				return 0
			}
			var got []int
			for {
				i, ok := r.next(0, tt.total, holders, tt.several)
				if !ok {
					break
				}
				got = append(got, i)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func TestRarestFirstBreaksTiesAtRandom(t *testing.T) {
	all := func(int) int { return 1 }
	firsts := map[int]bool{}
	for seed := range uint64(32) {
		i, _ := newRarestFirst(16, seed).next(0, -1, all, true)
		firsts[i] = true
		if i, _ := newRarestFirst(16, seed).next(0, -1, all, false); i != 0 {
			t.Errorf("without random ties, began with block %d; want 0", i)
		}
	}
	if len(firsts) < 4 {
		t.Fatalf("32 pickers began with only %v; want their picks spread over the band", firsts)
	}
}
