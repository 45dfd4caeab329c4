package sim

import (
	"testing"

	"github.com/p2pimage/p2p-snapshotter/scheduler"
)

func TestMinHeight(t *testing.T) {
	tests := []struct{ n, fanOut, want int }{
		{0, 2, 0}, {1, 2, 1}, {2, 2, 2}, {3, 2, 2}, {4, 2, 3}, {7, 2, 3}, {8, 2, 4},
		{1000, 2, 10}, {1023, 2, 10}, {1024, 2, 11}, {4, 3, 2}, {5, 3, 3}, {13, 3, 3}, {5, 1, 5},
	}
	for _, tt := range tests {
		if got := MinHeight(tt.n, tt.fanOut); got != tt.want {
			t.Errorf("MinHeight(%d, %d): got %d; want %d", tt.n, tt.fanOut, got, tt.want)
		}
	}
}

// peers builds a task's peers from "id:parent,parent" specs; a "*" suffix on the id marks a
// source, "+" a seed source, "!" a complete peer.
func peers(specs ...string) []scheduler.PeerInfo {
	var out []scheduler.PeerInfo
	for _, s := range specs {
		id, parents, _ := cut(s, ':')
		p := scheduler.PeerInfo{ID: id}
		switch id[len(id)-1] {
		case '*':
			p.Source = true
		case '+':
			p.Source, p.Seed = true, true
		case '!':
			p.Complete = true
		}
		for parents != "" {
			var one string
			one, parents, _ = cut(parents, ',')
			p.Parents = append(p.Parents, one)
		}
		out = append(out, p)
	}
	return out
}

func cut(s string, sep byte) (before, after string, found bool) {
	for i := range len(s) {
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

func TestQualityAdd(t *testing.T) {
	tests := []struct {
		name  string
		mode  scheduler.Mode
		peers []scheduler.PeerInfo
		check func(t *testing.T, q Quality)
	}{
		{"complete tree", scheduler.ModeTree, peers("s+", "a:s+", "b:s+", "c:a", "d:a", "e:b"), func(t *testing.T, q Quality) {
			if q.WorstHeight != 3 || q.WorstBound != 3 || q.OverBound != 0 || q.OverLimit != 0 || q.Orphans != 0 || q.BadRoots != 0 {
				t.Fatalf("got %+v; want height 3 = bound, nothing wrong", q)
			}
			if q.Fetching != 5 || q.WithSeedParent != 2 || q.Children.Max != 2 || q.Depth.Max != 3 {
				t.Fatalf("got %+v; want 5 fetching, 2 under the seed, 2 children at most, level 3 at most", q)
			}
		}},
		{"a chain is over the bound", scheduler.ModeTree, peers("s+", "a:s+", "b:a", "c:b"), func(t *testing.T, q Quality) {
			if q.WorstHeight != 4 || q.WorstBound != 3 || q.OverBound != 1 {
				t.Fatalf("got %+v; want height 4 over bound 3", q)
			}
		}},
		{"tree with two roots and a node over the fan-out", scheduler.ModeTree, peers("s+", "x", "a:s+", "b:s+", "c:s+"), func(t *testing.T, q Quality) {
			if q.BadRoots != 1 || q.OverLimit != 1 || q.Orphans != 1 {
				t.Fatalf("got %+v; want a bad root state, one parent over the fan-out, one orphan", q)
			}
		}},
		{"dag: orphan only while a provider exists", scheduler.ModeDAG, peers("a", "b:a"), func(t *testing.T, q Quality) {
			if q.Orphans != 0 || q.Fetching != 2 || q.WithParent != 1 {
				t.Fatalf("got %+v; want no orphan in a task without provider", q)
			}
		}},
		{"dag: orphan", scheduler.ModeDAG, peers("c!", "a", "b:c!,a"), func(t *testing.T, q Quality) {
			if q.Orphans != 1 || q.WithParent != 1 || q.WithSeedParent != 0 || q.WithSourceParent != 0 {
				t.Fatalf("got %+v; want one orphan", q)
			}
		}},
		{"dag: cycle and dangling parent", scheduler.ModeDAG, peers("s*", "a:s*,b", "b:a", "c:gone"), func(t *testing.T, q Quality) {
			if q.Cycles != 1 || q.Dangling != 1 || q.WithSourceParent != 1 {
				t.Fatalf("got %+v; want a cycle, a dangling id, one peer under the source", q)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newQuality(tt.mode, 2, 2)
			a.add(scheduler.TaskInfo{ID: "t", Mode: tt.mode, Peers: tt.peers})
			tt.check(t, a.result())
		})
	}
}

func TestDistribution(t *testing.T) {
	d := distribution([]int{1, 1, 2, 3, 4, 5, 9, 17, 1, 1})
	want := [7]int{4, 1, 1, 1, 1, 1, 1}
	if d.N != 10 || d.Histogram != want || d.P50 != 2 || d.P90 != 9 || d.Max != 17 || d.Mean != 4.4 {
		t.Fatalf("got %+v; want n 10, histogram %v, p50 2, p90 9, max 17, mean 4.4", d, want)
	}
}
