package rendezvous

import (
	"fmt"
	"slices"
	"testing"
)

func TestPickDeterministicAndOrderFree(t *testing.T) {
	nodes := []string{"seed-a", "seed-b", "seed-c", "seed-d"}
	for i := range 100 {
		key := fmt.Sprintf("sha256:%064x", i)
		got, _ := Pick(key, nodes)
		rev := slices.Clone(nodes)
		slices.Reverse(rev)
		if again, _ := Pick(key, rev); again != got {
			t.Fatalf("key %s: got %s for one order and %s for the reverse; want the same", key, got, again)
		}
		if r := Rank(key, nodes); r[0] != got {
			t.Fatalf("key %s: got Rank()[0] %s; want Pick %s", key, r[0], got)
		}
	}
	if _, ok := Pick("k", nil); ok {
		t.Fatal("got a pick from no nodes; want none")
	}
}

func TestSpreadAndMinimalMovement(t *testing.T) {
	tests := []struct {
		name  string
		nodes int
	}{
		{"two seeds", 2},
		{"five seeds", 5},
		{"ten seeds", 10},
	}
	const keys = 10000
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var nodes []string
			for i := range tt.nodes {
				nodes = append(nodes, fmt.Sprintf("seed-%d", i))
			}
			count := map[string]int{}
			before := make([]string, keys)
			for i := range keys {
				n, _ := Pick(fmt.Sprintf("sha256:%064x", i), nodes)
				before[i] = n
				count[n]++
			}
			want := keys / tt.nodes
			for n, c := range count {
				if c < want*8/10 || c > want*12/10 {
					t.Errorf("node %s got %d keys; want %d ± 20%%", n, c, want)
				}
			}
			// Removing one node moves only its keys, each to its second choice.
			gone := nodes[0]
			rest := nodes[1:]
			for i := range keys {
				key := fmt.Sprintf("sha256:%064x", i)
				n, _ := Pick(key, rest)
				if before[i] != gone && n != before[i] {
					t.Fatalf("key %s moved from %s to %s though %s left; want it to stay", key, before[i], n, gone)
				}
				if before[i] == gone && n != Rank(key, nodes)[1] {
					t.Fatalf("key %s went to %s; want its second choice %s", key, n, Rank(key, nodes)[1])
				}
			}
		})
	}
}
