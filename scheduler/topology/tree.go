package topology

// Tree is a balanced tree with fan-out F kept complete (see the package documentation). The
// zero value is not usable; call NewTree.
type Tree[T comparable] struct {
	fanOut int
	nodes  []T       // array layout: parent of i is (i-1)/fanOut
	pos    map[T]int // node → index in nodes
}

// NewTree returns an empty tree in which a node has at most fanOut children; fanOut must be
// at least 1 (1 makes a chain).
func NewTree[T comparable](fanOut int) *Tree[T] {
	if fanOut < 1 {
		panic("topology: fan-out below 1")
	}
	return &Tree[T]{fanOut: fanOut, pos: make(map[T]int)}
}

// FanOut returns the most children a node may have.
func (t *Tree[T]) FanOut() int { return t.fanOut }

// Len returns the number of nodes.
func (t *Tree[T]) Len() int { return len(t.nodes) }

// Contains reports whether x is in the tree.
func (t *Tree[T]) Contains(x T) bool {
	_, ok := t.pos[x]
	return ok
}

// Root returns the root, and false when the tree is empty.
func (t *Tree[T]) Root() (T, bool) {
	if len(t.nodes) == 0 {
		var zero T
		return zero, false
	}
	return t.nodes[0], true
}

// Parent returns x's parent, and false when x is the root or not in the tree.
func (t *Tree[T]) Parent(x T) (T, bool) {
	i, ok := t.pos[x]
	if !ok || i == 0 {
		var zero T
		return zero, false
	}
	return t.nodes[(i-1)/t.fanOut], true
}

// Children appends x's children to dst and returns it.
func (t *Tree[T]) Children(dst []T, x T) []T {
	i, ok := t.pos[x]
	if !ok {
		return dst
	}
	for c := t.fanOut*i + 1; c <= t.fanOut*i+t.fanOut && c < len(t.nodes); c++ {
		dst = append(dst, t.nodes[c])
	}
	return dst
}

// NumChildren returns the number of x's children.
func (t *Tree[T]) NumChildren(x T) int {
	i, ok := t.pos[x]
	if !ok {
		return 0
	}
	first := t.fanOut*i + 1
	return max(0, min(t.fanOut, len(t.nodes)-first))
}

// IsAncestor reports whether a is a proper ancestor of b (b is in a's subtree, b ≠ a).
func (t *Tree[T]) IsAncestor(a, b T) bool {
	i, ok := t.pos[a]
	if !ok {
		return false
	}
	j, ok := t.pos[b]
	if !ok {
		return false
	}
	for j > i {
		j = (j - 1) / t.fanOut
	}
	return j == i && t.nodes[j] != b
}

// Height returns the number of levels: 0 for an empty tree, 1 for a lone root.
func (t *Tree[T]) Height() int {
	h, first, width := 0, 0, 1
	for first < len(t.nodes) {
		h++
		first += width
		width *= t.fanOut
	}
	return h
}

// Add inserts x as a child of the first node in breadth-first order with a free child slot
// (as the root when the tree is empty) and returns that parent, and false when x became the
// root. Adding a node already in the tree changes nothing and returns its parent.
func (t *Tree[T]) Add(x T) (parent T, ok bool) {
	if t.Contains(x) {
		return t.Parent(x)
	}
	t.pos[x] = len(t.nodes)
	t.nodes = append(t.nodes, x)
	return t.Parent(x)
}

// Remove takes x out of the tree. The last node in breadth-first order takes x's place, so
// x's children are reattached to it at once and the tree stays complete. It returns the nodes
// whose parent changed; removing a node not in the tree returns nil.
func (t *Tree[T]) Remove(x T) (moved []T) {
	i, ok := t.pos[x]
	if !ok {
		return nil
	}
	last := len(t.nodes) - 1
	if i == last {
		delete(t.pos, x)
		var zero T
		t.nodes[last] = zero
		t.nodes = t.nodes[:last]
		return nil
	}
	filler := t.nodes[last]
	before := t.parentsAround(nil, i, last)
	delete(t.pos, x)
	var zero T
	t.nodes[last] = zero
	t.nodes = t.nodes[:last]
	t.nodes[i] = filler
	t.pos[filler] = i
	return t.changed(before)
}

// Promote makes x the root by swapping it with the current root, and returns the nodes whose
// parent changed. Promoting the root or a node not in the tree returns nil.
func (t *Tree[T]) Promote(x T) (moved []T) {
	p, ok := t.pos[x]
	if !ok || p == 0 {
		return nil
	}
	before := t.parentsAround(nil, 0, p)
	root := t.nodes[0]
	t.nodes[0], t.nodes[p] = x, root
	t.pos[x], t.pos[root] = 0, p
	return t.changed(before)
}

// link is a node and the parent it had before an operation.
type link[T comparable] struct {
	node      T
	parent    T
	hasParent bool
}

// parentsAround records the current parent of the nodes at the given indexes and of their
// children: every node whose parent a move of those slots can change.
func (t *Tree[T]) parentsAround(dst []link[T], idx ...int) []link[T] {
	add := func(j int) {
		if j < len(t.nodes) {
			p, ok := t.Parent(t.nodes[j])
			dst = append(dst, link[T]{t.nodes[j], p, ok})
		}
	}
	for _, i := range idx {
		add(i)
		for c := t.fanOut*i + 1; c <= t.fanOut*i+t.fanOut; c++ {
			add(c)
		}
	}
	return dst
}

// changed returns the nodes of before still in the tree whose parent is now different, each
// once.
func (t *Tree[T]) changed(before []link[T]) []T {
	var out []T
	for k, l := range before {
		if !t.Contains(l.node) {
			continue
		}
		dup := false
		for _, e := range before[:k] {
			if e.node == l.node {
				dup = true
				break
			}
		}
		if dup {
			continue
		}
		p, ok := t.Parent(l.node)
		if ok != l.hasParent || p != l.parent {
			out = append(out, l.node)
		}
	}
	return out
}
