// Package stream reads a task front to back through the block cache: Dragonfly's stream
// mode, for consumers that want a whole stream once and in order, such as the registry
// mirror serving a blob to containerd or `p2pctl get` writing a layer to stdout.
//
// Copy keeps a sliding window [una, una+window) of blocks: block una is the next one the
// consumer gets, and the blocks after it are being fetched ahead. The task is never held
// whole in memory nor written to disk: the consumer holds one block at a time, and blocks
// fetched ahead sit in the cache, unpinned, as any other cached block, so other readers and
// peers can use them and the cache's bound holds. A prefetched block that is evicted before
// its turn is fetched again.
//
// Verification: fillers verify each block when they know its digest (a block table). When
// only the digest of the whole stream is known, as for a registry blob read the first time,
// Copy hashes what it passes on and holds back the last block until the whole stream
// matches, so no consumer ever receives a complete stream that is wrong; on a mismatch it
// drops the task's blocks from the cache. A stream that verified yields its block table,
// with which later fills verify each block.
package stream
