package sim

import (
	"math"
	"slices"

	"github.com/p2pimage/p2p-snapshotter/scheduler"
)

// Quality is what the samples of every task's topology showed. A task state is one task at
// one sampling moment; a peer state is one peer in one task state.
type Quality struct {
	// TaskStates and PeerStates examined.
	TaskStates int `json:"task_states"`
	PeerStates int `json:"peer_states"`
	// LargestTask is the most peers a task had at a sample; LargestHeight its height (tree)
	// or depth (DAG: the longest parent chain, in levels) then, and LargestBound the least
	// possible height of a tree of that many peers with the fan-out (⌈log₂(N+1)⌉ for 2).
	LargestTask   int `json:"largest_task"`
	LargestHeight int `json:"largest_height"`
	LargestBound  int `json:"largest_bound"`
	// WorstTask, WorstHeight and WorstBound are the same for the task state whose height
	// exceeded its bound the most (or came closest to it); OverBound counts the task states
	// over their bound: a tree must have none, a DAG has no such bound.
	WorstTask   int `json:"worst_task"`
	WorstHeight int `json:"worst_height"`
	WorstBound  int `json:"worst_bound"`
	OverBound   int `json:"over_bound"`
	// Depth is the distribution of the level of fetching peers (a root is level 1, its
	// children 2): the number of hops a block streams through to reach them, the longest
	// chain in a DAG.
	Depth Distribution `json:"depth"`
	// Orphans are peer states of a peer that needs a parent (neither reading the source nor
	// complete) and had none while its task had a provider. Must be 0.
	Orphans int `json:"orphans"`
	// Cycles are task states whose parent graph had a cycle; Dangling parent ids named a
	// peer not in the task; BadRoots are tree task states without exactly one root. All must
	// be 0.
	Cycles   int `json:"cycles"`
	Dangling int `json:"dangling"`
	BadRoots int `json:"bad_roots"`
	// ChildLimit is the fan-out (tree) or the scheduler's child limit (DAG, where it is a
	// soft limit: the load term of the evaluator); OverLimit counts parent states with more
	// children than that. A tree must have none.
	ChildLimit int `json:"child_limit"`
	OverLimit  int `json:"over_limit"`
	// Children is the distribution of children per parent, over the peer states with at
	// least one child.
	Children Distribution `json:"children"`
	// Fetching peer states (a parent needed), those with at least one parent, and those
	// with a seed peer, or any peer reading the source (a seed or a back-to-source peer),
	// among their parents.
	Fetching         int `json:"fetching"`
	WithParent       int `json:"with_parent"`
	WithSeedParent   int `json:"with_seed_parent"`
	WithSourceParent int `json:"with_source_parent"`
}

// Distribution summarises counts.
type Distribution struct {
	N    int     `json:"n"`
	Mean float64 `json:"mean"`
	P50  int     `json:"p50"`
	P90  int     `json:"p90"`
	P99  int     `json:"p99"`
	Max  int     `json:"max"`
	// Histogram counts values 1, 2, 3, 4, 5–8, 9–16 and above 16.
	Histogram [7]int `json:"histogram"`
}

// HistogramLabels name the buckets of Distribution.Histogram.
func HistogramLabels() [7]string { return [7]string{"1", "2", "3", "4", "5-8", "9-16", ">16"} }

// quality accumulates samples into a Quality.
type quality struct {
	q        Quality
	mode     scheduler.Mode
	fanOut   int
	children []int // one value per parent state
	levels   []int // one value per fetching peer state
	heights  int   // task states whose height was measured
}

func newQuality(mode scheduler.Mode, fanOut, childLimit int) *quality {
	return &quality{mode: mode, fanOut: fanOut, q: Quality{ChildLimit: childLimit}}
}

// add examines one task state.
func (a *quality) add(info scheduler.TaskInfo) {
	n := len(info.Peers)
	if n == 0 {
		return
	}
	q := &a.q
	q.TaskStates++
	q.PeerStates += n
	index := make(map[string]int, n)
	hasProvider := false
	for i, p := range info.Peers {
		index[p.ID] = i
		hasProvider = hasProvider || p.Source || p.Complete
	}
	children := make([]int, n)
	parents := make([][]int, n)
	roots := 0
	for i, p := range info.Peers {
		if len(p.Parents) == 0 {
			roots++
		}
		for _, id := range p.Parents {
			j, ok := index[id]
			if !ok {
				q.Dangling++
				continue
			}
			children[j]++
			parents[i] = append(parents[i], j)
		}
		if p.Source || p.Complete {
			continue
		}
		q.Fetching++
		if len(p.Parents) == 0 {
			if hasProvider {
				q.Orphans++
			}
			continue
		}
		q.WithParent++
		seed, source := false, false
		for _, j := range parents[i] {
			seed = seed || info.Peers[j].Seed
			source = source || info.Peers[j].Source
		}
		if seed {
			q.WithSeedParent++
		}
		if source {
			q.WithSourceParent++
		}
	}
	if info.Mode == scheduler.ModeTree && roots != 1 {
		q.BadRoots++
	}
	for _, c := range children {
		if c == 0 {
			continue
		}
		a.children = append(a.children, c)
		if c > q.ChildLimit {
			q.OverLimit++
		}
	}
	levels, cyclic := depth(parents)
	if cyclic {
		q.Cycles++
		return
	}
	height := 0
	for i, l := range levels {
		height = max(height, l)
		if p := info.Peers[i]; !p.Source && !p.Complete {
			a.levels = append(a.levels, l)
		}
	}
	bound := MinHeight(n, a.fanOut)
	if a.heights == 0 || height-bound > q.WorstHeight-q.WorstBound {
		q.WorstTask, q.WorstHeight, q.WorstBound = n, height, bound
	}
	a.heights++
	if height > bound {
		q.OverBound++
	}
	if n > q.LargestTask || n == q.LargestTask && height > q.LargestHeight {
		q.LargestTask, q.LargestHeight, q.LargestBound = n, height, bound
	}
}

// result returns the accumulated Quality.
func (a *quality) result() Quality {
	q := a.q
	q.Children = distribution(a.children)
	q.Depth = distribution(a.levels)
	return q
}

// depth returns the level of each node of the graph given by each node's parents (1 for a
// node without parents, else one more than its deepest parent), and whether the graph has a
// cycle (levels are then meaningless).
func depth(parents [][]int) (levels []int, cyclic bool) {
	const (
		unseen = iota
		open
		closed
	)
	state := make([]int8, len(parents))
	levels = make([]int, len(parents))
	var visit func(i int) int
	visit = func(i int) int {
		switch state[i] {
		case closed:
			return levels[i]
		case open:
			cyclic = true
			return 0
		}
		state[i] = open
		l := 1
		for _, j := range parents[i] {
			l = max(l, visit(j)+1)
		}
		state[i], levels[i] = closed, l
		return l
	}
	for i := range parents {
		visit(i)
	}
	return levels, cyclic
}

// MinHeight returns the least number of levels of a tree of n nodes in which a node has
// at most fanOut children: ⌈log₂(n+1)⌉ for fan-out 2.
func MinHeight(n, fanOut int) int {
	if fanOut <= 1 {
		return n
	}
	levels, capacity, width := 0, 0, 1
	for capacity < n {
		levels++
		capacity += width
		width *= fanOut
	}
	return levels
}

func distribution(vs []int) Distribution {
	d := Distribution{N: len(vs)}
	if len(vs) == 0 {
		return d
	}
	vs = slices.Clone(vs)
	slices.Sort(vs)
	sum := 0
	for _, v := range vs {
		sum += v
		switch {
		case v <= 4:
			d.Histogram[v-1]++
		case v <= 8:
			d.Histogram[4]++
		case v <= 16:
			d.Histogram[5]++
		default:
			d.Histogram[6]++
		}
	}
	d.Mean = float64(sum) / float64(len(vs))
	d.P50, d.P90, d.P99 = rank(vs, 0.50), rank(vs, 0.90), rank(vs, 0.99)
	d.Max = vs[len(vs)-1]
	return d
}

// rank returns the q-quantile of sorted vs by the nearest-rank method.
func rank[T any](vs []T, q float64) T {
	i := int(math.Ceil(float64(len(vs))*q)) - 1
	return vs[min(max(i, 0), len(vs)-1)]
}
