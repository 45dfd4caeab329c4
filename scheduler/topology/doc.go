// Package topology holds the two shapes a task's peers can form, as plain data structures
// over comparable node values (the scheduler uses its peer pointers): Tree, a FaaSNet-style
// balanced tree, and DAG, a directed acyclic graph of several parents per node. Neither knows
// what a peer is, how parents are scored, or anything about time; neither is safe for
// concurrent use (the scheduler holds its lock around every call).
//
// # Tree
//
// Tree keeps its nodes in the array layout of a complete F-ary tree: the node at index i has
// its parent at (i-1)/F and its children at F·i+1 … F·i+F. So:
//
//   - Add appends: the new node's parent is the first node, in breadth-first order, with a
//     free child slot, as FaaSNet inserts.
//   - Remove moves the last node into the leaver's slot. The leaver's children (orphans) are
//     reattached to it at once and the tree stays complete, so it never needs rotations and
//     its height is always the least possible: ⌈log_F((F−1)·N+1)⌉ levels, which is
//     ⌈log₂(N+1)⌉ for F = 2. At most F+1 nodes change parent.
//   - Promote makes a node the root by swapping it with the root, for when the task's
//     source of data (a seed, a peer reading the registry) arrives after other peers.
//
// Each of them returns the nodes whose parent changed, which the caller tells of their new
// parent. Height here counts levels: a lone root has height 1.
//
// # DAG
//
// DAG records parent and child edges. SetParents replaces a node's parents and refuses any
// parent that is the node itself or one of its descendants, so the graph can never hold a
// cycle. Remove drops a node and its edges and returns its children, which lost a parent.
// Descendants gives the set a caller filters candidate parents against.
package topology
