package topology

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestTreeAdd(t *testing.T) {
	tests := []struct {
		name   string
		fanOut int
		adds   int
		// wantParent[i] is the parent of node i, -1 for the root.
		wantParent []int
		wantHeight int
	}{
		{name: "binary", fanOut: 2, adds: 7, wantParent: []int{-1, 0, 0, 1, 1, 2, 2}, wantHeight: 3},
		{name: "ternary", fanOut: 3, adds: 5, wantParent: []int{-1, 0, 0, 0, 1}, wantHeight: 3},
		{name: "chain", fanOut: 1, adds: 4, wantParent: []int{-1, 0, 1, 2}, wantHeight: 4},
		{name: "lone root", fanOut: 2, adds: 1, wantParent: []int{-1}, wantHeight: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewTree[int](tt.fanOut)
			for i := range tt.adds {
				p, ok := tr.Add(i)
				want := tt.wantParent[i]
				if (want < 0) == ok || (ok && p != want) {
					t.Fatalf("Add(%d): got parent %d (%v); want %d", i, p, ok, want)
				}
			}
			if got := tr.Height(); got != tt.wantHeight {
				t.Fatalf("got height %d; want %d", got, tt.wantHeight)
			}
		})
	}
}

func TestTreeRemove(t *testing.T) {
	tests := []struct {
		name      string
		remove    int
		wantMoved []int
		// wantParent of the remaining nodes after the removal; -1 for the root.
		wantParent map[int]int
	}{
		// 0 → 1,2; 1 → 3,4; 2 → 5,6. Removing 1 moves 6 into its slot.
		{name: "inner node", remove: 1, wantMoved: []int{6, 3, 4},
			wantParent: map[int]int{0: -1, 6: 0, 2: 0, 3: 6, 4: 6, 5: 2}},
		{name: "last node", remove: 6, wantMoved: nil,
			wantParent: map[int]int{0: -1, 1: 0, 2: 0, 3: 1, 4: 1, 5: 2}},
		{name: "root", remove: 0, wantMoved: []int{6, 1, 2},
			wantParent: map[int]int{6: -1, 1: 6, 2: 6, 3: 1, 4: 1, 5: 2}},
		// 5 takes the place of its sibling-to-be 6? No: removing 5 moves 6 under the same parent.
		{name: "sibling of the last", remove: 5, wantMoved: nil,
			wantParent: map[int]int{0: -1, 1: 0, 2: 0, 3: 1, 4: 1, 6: 2}},
		{name: "absent", remove: 42, wantMoved: nil,
			wantParent: map[int]int{0: -1, 1: 0, 2: 0, 3: 1, 4: 1, 5: 2, 6: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewTree[int](2)
			for i := range 7 {
				tr.Add(i)
			}
			moved := tr.Remove(tt.remove)
			slices.Sort(moved)
			want := slices.Clone(tt.wantMoved)
			slices.Sort(want)
			if !slices.Equal(moved, want) {
				t.Fatalf("got moved %v; want %v", moved, want)
			}
			checkParents(t, tr, tt.wantParent)
		})
	}
}

func TestTreePromote(t *testing.T) {
	tr := NewTree[int](2)
	for i := range 5 {
		tr.Add(i)
	}
	// 0 → 1,2; 1 → 3,4. Promote 4: 4 ↔ 0.
	moved := tr.Promote(4)
	slices.Sort(moved)
	if want := []int{0, 1, 2, 4}; !slices.Equal(moved, want) {
		t.Fatalf("got moved %v; want %v", moved, want)
	}
	checkParents(t, tr, map[int]int{4: -1, 1: 4, 2: 4, 3: 1, 0: 1})
	if moved := tr.Promote(4); moved != nil {
		t.Fatalf("promoting the root: got moved %v; want none", moved)
	}
}

func checkParents(t *testing.T, tr *Tree[int], want map[int]int) {
	t.Helper()
	if tr.Len() != len(want) {
		t.Fatalf("got %d nodes; want %d", tr.Len(), len(want))
	}
	for n, wp := range want {
		p, ok := tr.Parent(n)
		if !tr.Contains(n) || (wp < 0) == ok || (ok && p != wp) {
			t.Fatalf("node %d: got parent %d (%v, present %v); want %d", n, p, ok, tr.Contains(n), wp)
		}
	}
}

// TestTreeProperties drives random joins, leaves and promotions and checks, after every
// step, against an independent walk of the tree: one root, every node reachable from it (no
// orphan), at most F children, height within ⌈log_F((F−1)N+1)⌉ (⌈log₂(N+1)⌉ for F = 2), a
// join placed under the first node in BFS order with a free slot, and the moved nodes being
// exactly those whose parent changed.
func TestTreeProperties(t *testing.T) {
	tests := []struct {
		name   string
		seed   uint64
		fanOut int
		steps  int
	}{
		{"binary seed 1", 1, 2, 4000},
		{"binary seed 2", 2, 2, 4000},
		{"ternary", 3, 3, 3000},
		{"chain", 4, 1, 2000},
		{"wide", 5, 8, 3000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(tt.seed, 0))
			tr := NewTree[int](tt.fanOut)
			var live []int
			next := 0
			for step := range tt.steps {
				before := parentMap(tr, live)
				var moved []int
				switch r := rng.IntN(10); {
				case r < 5 || len(live) == 0: // join
					x := next
					next++
					wantParent, hasWant := firstFreeBFS(tr)
					p, ok := tr.Add(x)
					if ok != hasWant || p != wantParent {
						t.Fatalf("step %d: Add(%d) got parent %d (%v); want %d (%v)", step, x, p, ok, wantParent, hasWant)
					}
					live = append(live, x)
				case r < 9: // leave
					i := rng.IntN(len(live))
					x := live[i]
					live = slices.Delete(live, i, i+1)
					moved = tr.Remove(x)
					delete(before, x)
				default: // promote
					x := live[rng.IntN(len(live))]
					moved = tr.Promote(x)
				}
				checkTree(t, step, tr, live)
				after := parentMap(tr, live)
				var changed []int
				for n, p := range after {
					if old, ok := before[n]; ok && old != p {
						changed = append(changed, n)
					}
				}
				slices.Sort(changed)
				slices.Sort(moved)
				if !slices.Equal(changed, moved) {
					t.Fatalf("step %d: got moved %v; want the nodes whose parent changed %v", step, moved, changed)
				}
			}
		})
	}
}

// parentMap maps each node to its parent, -1 for the root.
func parentMap(tr *Tree[int], live []int) map[int]int {
	m := make(map[int]int, len(live))
	for _, n := range live {
		if p, ok := tr.Parent(n); ok {
			m[n] = p
		} else {
			m[n] = -1
		}
	}
	return m
}

// firstFreeBFS walks the tree from its root by Children and returns the first node with
// fewer than F children.
func firstFreeBFS(tr *Tree[int]) (int, bool) {
	root, ok := tr.Root()
	if !ok {
		return 0, false
	}
	queue := []int{root}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		ch := tr.Children(nil, n)
		if len(ch) < tr.FanOut() {
			return n, true
		}
		queue = append(queue, ch...)
	}
	panic("unreachable: a finite tree has a node with a free slot")
}

func checkTree(t *testing.T, step int, tr *Tree[int], live []int) {
	t.Helper()
	if tr.Len() != len(live) {
		t.Fatalf("step %d: got %d nodes; want %d", step, tr.Len(), len(live))
	}
	if len(live) == 0 {
		return
	}
	roots := 0
	for _, n := range live {
		p, ok := tr.Parent(n)
		if !ok {
			roots++
			continue
		}
		if !slices.Contains(tr.Children(nil, p), n) {
			t.Fatalf("step %d: node %d has parent %d that does not list it as a child", step, n, p)
		}
	}
	if roots != 1 {
		t.Fatalf("step %d: got %d roots; want 1", step, roots)
	}
	root, _ := tr.Root()
	seen := make(map[int]bool, len(live))
	height := 0
	type item struct{ n, depth int }
	queue := []item{{root, 1}}
	for len(queue) > 0 {
		it := queue[0]
		queue = queue[1:]
		if seen[it.n] {
			t.Fatalf("step %d: node %d reached twice", step, it.n)
		}
		seen[it.n] = true
		height = max(height, it.depth)
		ch := tr.Children(nil, it.n)
		if len(ch) > tr.FanOut() {
			t.Fatalf("step %d: node %d has %d children; want at most %d", step, it.n, len(ch), tr.FanOut())
		}
		for _, c := range ch {
			queue = append(queue, item{c, it.depth + 1})
		}
	}
	if len(seen) != len(live) {
		t.Fatalf("step %d: %d of %d nodes reachable from the root; want all (no orphan)", step, len(seen), len(live))
	}
	if bound := heightBound(len(live), tr.FanOut()); height > bound {
		t.Fatalf("step %d: got height %d with %d nodes; want at most %d", step, height, len(live), bound)
	}
	if height != tr.Height() {
		t.Fatalf("step %d: walked height %d; Height() says %d", step, height, tr.Height())
	}
}

// heightBound is the least number of levels that holds n nodes with fan-out f:
// ⌈log_f((f−1)n+1)⌉, or n for a chain.
func heightBound(n, f int) int {
	if f == 1 {
		return n
	}
	if f == 2 {
		return int(math.Ceil(math.Log2(float64(n + 1))))
	}
	h, capacity, width := 0, 0, 1
	for capacity < n {
		h++
		capacity += width
		width *= f
	}
	return h
}
