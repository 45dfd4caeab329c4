package topology

import (
	"errors"
	"slices"
)

// ErrCycle is returned by SetParents for a parent that is the node itself or one of its
// descendants.
var ErrCycle = errors.New("parent would make a cycle")

// ErrUnknownNode is returned for a node that is not (or no longer) in the graph.
var ErrUnknownNode = errors.New("node not in the graph")

// DAG is a directed acyclic graph of parent → child edges between nodes that the caller
// holds as handles (*Node), so that walking the graph costs no lookup. The zero value is not
// usable; call NewDAG.
type DAG[T any] struct {
	n     int
	gen   uint64     // generation of the last MarkDescendants
	queue []*Node[T] // scratch of MarkDescendants
}

// Node is a node of a DAG, carrying the caller's Value.
type Node[T any] struct {
	Value    T
	dag      *DAG[T]
	parents  []*Node[T]
	children []*Node[T]
	mark     uint64 // == dag.gen: a descendant found by the last MarkDescendants
}

// NewDAG returns an empty graph.
func NewDAG[T any]() *DAG[T] { return &DAG[T]{gen: 1} } // new nodes (mark 0) are unmarked

// Len returns the number of nodes.
func (d *DAG[T]) Len() int { return d.n }

// Add adds a node carrying v, with no edges, and returns its handle.
func (d *DAG[T]) Add(v T) *Node[T] {
	d.n++
	return &Node[T]{Value: v, dag: d}
}

// Parents returns n's parents. The slice belongs to the graph: read it before the next
// change.
func (n *Node[T]) Parents() []*Node[T] { return n.parents }

// Children returns n's children. The slice belongs to the graph: read it before the next
// change.
func (n *Node[T]) Children() []*Node[T] { return n.children }

// Remove drops n and its edges and returns its former children (each lost n as a parent).
// The returned slice is the caller's. Removing a node twice returns nil.
func (d *DAG[T]) Remove(n *Node[T]) (orphans []*Node[T]) {
	if n.dag != d {
		return nil
	}
	for _, p := range n.parents {
		p.children = remove(p.children, n)
	}
	for _, c := range n.children {
		c.parents = remove(c.parents, n)
	}
	orphans = n.children
	n.parents, n.children, n.dag = nil, nil, nil
	d.n--
	return orphans
}

// SetParents replaces n's parents with parents (duplicates dropped). It changes nothing and
// returns ErrCycle if one of them is n or a descendant of n, and ErrUnknownNode if n or one of
// them is not in the graph. It clears the marks of MarkDescendants.
func (d *DAG[T]) SetParents(n *Node[T], parents []*Node[T]) error {
	if n.dag != d {
		return ErrUnknownNode
	}
	if len(parents) > 0 {
		d.MarkDescendants(n)
		for _, p := range parents {
			if p.dag != d {
				return ErrUnknownNode
			}
			if p == n || d.Marked(p) {
				return ErrCycle
			}
		}
		d.gen++ // the marks are no longer promised
	}
	for _, p := range n.parents {
		p.children = remove(p.children, n)
	}
	clear(n.parents)
	n.parents = n.parents[:0]
	for _, p := range parents {
		if slices.Contains(n.parents, p) {
			continue
		}
		n.parents = append(n.parents, p)
		p.children = append(p.children, n)
	}
	return nil
}

// MarkDescendants marks the nodes reachable from n along child edges (n excluded), for
// Marked, until the next MarkDescendants or SetParents. It costs O(descendants).
func (d *DAG[T]) MarkDescendants(n *Node[T]) {
	d.gen++
	gen := d.gen
	q := d.queue[:0]
	for _, c := range n.children {
		if c.mark != gen {
			c.mark = gen
			q = append(q, c)
		}
	}
	for len(q) > 0 {
		c := q[len(q)-1]
		q = q[:len(q)-1]
		for _, g := range c.children {
			if g.mark != gen {
				g.mark = gen
				q = append(q, g)
			}
		}
	}
	d.queue = q
}

// Marked reports whether the last MarkDescendants found x.
func (d *DAG[T]) Marked(x *Node[T]) bool { return x.mark == d.gen }

// remove deletes the first x from s, keeping the order of the rest.
func remove[T comparable](s []T, x T) []T {
	if i := slices.Index(s, x); i >= 0 {
		var zero T
		copy(s[i:], s[i+1:])
		s[len(s)-1] = zero
		s = s[:len(s)-1]
	}
	return s
}
