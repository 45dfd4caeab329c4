package topology

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

// graph is a DAG of ints with their handles, for tests.
type graph struct {
	d     *DAG[int]
	nodes map[int]*Node[int]
}

func newGraph(n int) *graph {
	g := &graph{d: NewDAG[int](), nodes: map[int]*Node[int]{}}
	for i := range n {
		g.add(i)
	}
	return g
}

func (g *graph) add(i int) { g.nodes[i] = g.d.Add(i) }

func (g *graph) handles(is []int) []*Node[int] {
	var out []*Node[int]
	for _, i := range is {
		n, ok := g.nodes[i]
		if !ok {
			n = &Node[int]{Value: i} // not in the graph
		}
		out = append(out, n)
	}
	return out
}

func values(ns []*Node[int]) []int {
	var out []int
	for _, n := range ns {
		out = append(out, n.Value)
	}
	return out
}

func (g *graph) set(t *testing.T, x int, parents ...int) {
	t.Helper()
	if err := g.d.SetParents(g.nodes[x], g.handles(parents)); err != nil {
		t.Fatal(err)
	}
}

func TestDAGSetParents(t *testing.T) {
	// 0 → 1 → 2, 0 → 3.
	build := func() *graph {
		g := newGraph(5)
		g.set(t, 1, 0)
		g.set(t, 2, 1)
		g.set(t, 3, 0)
		return g
	}
	tests := []struct {
		name    string
		node    int
		parents []int
		wantErr error
	}{
		{name: "new edges", node: 4, parents: []int{2, 3}},
		{name: "itself", node: 1, parents: []int{1}, wantErr: ErrCycle},
		{name: "a child", node: 1, parents: []int{2}, wantErr: ErrCycle},
		{name: "a grandchild", node: 0, parents: []int{2}, wantErr: ErrCycle},
		{name: "a sibling", node: 3, parents: []int{1}},
		{name: "unknown parent", node: 3, parents: []int{9}, wantErr: ErrUnknownNode},
		{name: "duplicates dropped", node: 4, parents: []int{0, 0}},
		{name: "none", node: 2, parents: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := build()
			n := g.nodes[tt.node]
			before := values(n.Parents())
			err := g.d.SetParents(n, g.handles(tt.parents))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got error %v; want %v", err, tt.wantErr)
			}
			got := values(n.Parents())
			want := slices.Compact(slices.Clone(tt.parents))
			if tt.wantErr != nil {
				want = before
			}
			if !slices.Equal(got, want) {
				t.Fatalf("got parents %v; want %v", got, want)
			}
			for _, p := range n.Parents() {
				if !slices.Contains(p.Children(), n) {
					t.Fatalf("parent %d does not list %d as a child", p.Value, tt.node)
				}
			}
		})
	}
	g := build()
	if err := g.d.SetParents(&Node[int]{}, nil); !errors.Is(err, ErrUnknownNode) {
		t.Fatalf("unknown node: got %v; want ErrUnknownNode", err)
	}
}

func TestDAGMarkDescendants(t *testing.T) {
	g := newGraph(6)
	g.set(t, 1, 0)
	g.set(t, 2, 1)
	g.set(t, 3, 1, 0)
	g.set(t, 4, 3)
	g.d.MarkDescendants(g.nodes[1])
	var got []int
	for i := range 6 {
		if g.d.Marked(g.nodes[i]) {
			got = append(got, i)
		}
	}
	if want := []int{2, 3, 4}; !slices.Equal(got, want) {
		t.Fatalf("got descendants %v; want %v", got, want)
	}
}

func TestDAGRemove(t *testing.T) {
	g := newGraph(4)
	g.set(t, 2, 0, 1)
	g.set(t, 3, 1)
	orphans := values(g.d.Remove(g.nodes[1]))
	slices.Sort(orphans)
	if want := []int{2, 3}; !slices.Equal(orphans, want) {
		t.Fatalf("got orphans %v; want %v", orphans, want)
	}
	if got := values(g.nodes[2].Parents()); !slices.Equal(got, []int{0}) {
		t.Fatalf("got parents of 2 %v; want [0]", got)
	}
	if got := g.nodes[3].Parents(); len(got) != 0 {
		t.Fatalf("got parents of 3 %v; want none", values(got))
	}
	if g.d.Len() != 3 {
		t.Fatalf("got %d nodes; want 3", g.d.Len())
	}
	if again := g.d.Remove(g.nodes[1]); again != nil {
		t.Fatalf("second remove: got %v; want nil", values(again))
	}
	if err := g.d.SetParents(g.nodes[2], g.handles([]int{1})); !errors.Is(err, ErrUnknownNode) {
		t.Fatalf("removed parent: got %v; want ErrUnknownNode", err)
	}
}

// TestDAGProperties drives random joins, leaves and reparentings, each asking for up to 3
// random parents of which the cycle-making ones are skipped as a scheduler skips them, and
// checks after every step that the graph is acyclic (Kahn's algorithm) and that parent and
// child edges agree.
func TestDAGProperties(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		rng := rand.New(rand.NewPCG(seed, 42))
		g := newGraph(0)
		var live []int
		next := 0
		for step := range 5000 {
			switch r := rng.IntN(10); {
			case r < 3 || len(live) < 2:
				g.add(next)
				live = append(live, next)
				next++
			case r < 5:
				i := rng.IntN(len(live))
				x := g.nodes[live[i]]
				for _, o := range g.d.Remove(x) {
					if slices.Contains(o.Parents(), x) {
						t.Fatalf("seed %d step %d: orphan %d still has the removed parent", seed, step, o.Value)
					}
				}
				delete(g.nodes, live[i])
				live = slices.Delete(live, i, i+1)
			default:
				x := g.nodes[live[rng.IntN(len(live))]]
				g.d.MarkDescendants(x)
				var parents []*Node[int]
				for range 3 {
					p := g.nodes[live[rng.IntN(len(live))]]
					if !g.d.Marked(p) && p != x {
						parents = append(parents, p)
					}
				}
				if err := g.d.SetParents(x, parents); err != nil {
					t.Fatalf("seed %d step %d: %v", seed, step, err)
				}
				// And a deliberately cyclic request is refused.
				if ch := x.Children(); len(ch) > 0 {
					if err := g.d.SetParents(x, ch[:1]); !errors.Is(err, ErrCycle) {
						t.Fatalf("seed %d step %d: got %v for a child as parent; want ErrCycle", seed, step, err)
					}
				}
			}
			checkDAG(t, seed, step, g, live)
		}
	}
}

func checkDAG(t *testing.T, seed uint64, step int, g *graph, live []int) {
	t.Helper()
	if g.d.Len() != len(live) {
		t.Fatalf("seed %d step %d: got %d nodes; want %d", seed, step, g.d.Len(), len(live))
	}
	indeg := map[*Node[int]]int{}
	for _, i := range live {
		n := g.nodes[i]
		for _, p := range n.Parents() {
			if g.nodes[p.Value] != p {
				t.Fatalf("seed %d step %d: %d has a removed parent %d", seed, step, i, p.Value)
			}
			if !slices.Contains(p.Children(), n) {
				t.Fatalf("seed %d step %d: edge %d → %d missing from the children", seed, step, p.Value, i)
			}
		}
		for _, c := range n.Children() {
			if !slices.Contains(c.Parents(), n) {
				t.Fatalf("seed %d step %d: edge %d → %d missing from the parents", seed, step, i, c.Value)
			}
		}
		indeg[n] = len(n.Parents())
	}
	var queue []*Node[int]
	for _, i := range live {
		if indeg[g.nodes[i]] == 0 {
			queue = append(queue, g.nodes[i])
		}
	}
	done := 0
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		done++
		for _, c := range n.Children() {
			if indeg[c]--; indeg[c] == 0 {
				queue = append(queue, c)
			}
		}
	}
	if done != len(live) {
		t.Fatalf("seed %d step %d: topological order covers %d of %d nodes; want all (a cycle)", seed, step, done, len(live))
	}
}
