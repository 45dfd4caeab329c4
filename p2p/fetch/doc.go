// Package fetch fills blocks of a task from other peers: the downloader of the P2P network.
//
// A Fetcher is the block cache's Filler for one task. For each block it asks the primary
// parent the ParentSource named, if any, while that one is usable (a chain of primaries is a
// pipeline: see scheduler/chain.go); otherwise it picks a parent at weighted random among
// the candidate parents it knows, weighing each by the rate at which
// it has been delivering and by the free upload slots it last reported (every answer of the
// peer protocol carries them), divided by the requests already in flight to it; it asks that
// parent, allowing it to wait for a block it is itself still receiving; and it checks what
// arrives against the block's digest before the cache may serve it.
//
// Digests come only from parents that can vouch for them (a seed producing the task, or a
// peer whose copy of the whole task verified) or from this node's own complete record. A
// block that does not match is dropped, its sender is marked bad for the task and reported,
// and the block is asked of another parent. A parent that refuses (busy), fails or stalls
// past a bounded time is set aside for a short cooldown and the block goes elsewhere; when
// no parent is left, the Fetcher asks its ParentSource for new ones.
//
// At most MaxPerParent requests go to one parent at a time; blocks waiting for a slot take
// them lowest index first, since that is the block children most likely wait for.
//
// A whole task is fetched by stream.Copy with a Fetcher as filler: its window keeps several
// blocks in flight over several parents, and it checks the whole stream's digest at the end.
package fetch
