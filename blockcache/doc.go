// Package blockcache keeps blocks of layers in memory, bounded in bytes, evicting the oldest
// first, and makes every reader of a block that is still arriving wait for it instead of
// fetching it again.
//
// # Terms
//
//   - A block is named by a layer.BlockKey. Every block buffer has the cache's block size;
//     a block's content may be shorter (the last block of a stream).
//   - A block is resident once filled: Get and Lookup return it at once (a hit).
//   - A block is in flight while it is being filled, by a Filler that a Get started on a
//     miss, or by the owner of a Writer from Begin (a seed streaming a layer in). Every Get or
//     Lookup of an in-flight block waits for the fill to end (an in-flight wait), so
//     concurrent misses on one block cause one fetch.
//   - A Block handle returned by Get or Lookup pins the block: a pinned block is never
//     evicted nor its buffer reused until the handle is released.
//
// # Waiting
//
// A fill ends by committing the block or failing. Waiters sleep on a channel that the end of
// the fill closes: a condition variable that a context can interrupt. A failed fill wakes every
// waiter with its error and leaves nothing behind, so the next Get starts a new fill. No lock
// is held while a Filler runs or a waiter sleeps; the cache's one mutex guards only map and
// list updates. Per-block state lives in the block's entry and goes when the entry goes.
//
// A fill started by Get runs in its own goroutine with the caller's context values but not its
// cancellation: a reader that gives up does not waste the bytes other readers, or the next
// one, are waiting for. Close cancels the fills in flight and waits for them.
//
// # The bound
//
// Bytes held count every block buffer in use: resident, in flight, and removed but still
// pinned. Before a fill starts, the cache makes room for one more buffer by evicting the
// oldest unpinned resident blocks (FIFO); when everything left is pinned or in flight, the fill
// waits for a release. Buffers no longer in use are kept as spares for the next fills while
// held and spare bytes together fit the bound, so a cache under churn allocates nothing. Held
// and spare bytes together never exceed max(limit, block size): the bound plus at most one
// block.
package blockcache
