// Package tasks records the tasks this node holds or is receiving, and answers the peer
// server from that record: the blocks it can serve and the digests it can vouch for.
//
// A task enters the record when the node starts receiving it (Expect): from then on, a peer
// asking for one of its blocks waits for it rather than being turned away. Blocks enter as
// they land (Landed), before the cache commits them, so a waiting request wakes and then
// waits on the cache's in-flight fill. A seed's streaming pass also produces the digests, in
// order (Produced); a task whose whole stream verified records its complete block table and,
// if it has one, where to refill evicted blocks from (Complete).
//
// Digests are vouched for only by a seed producing them from the registry, or by a node whose
// copy of the whole stream matched the task's digest: a peer that merely relays blocks does
// not serve digests, so a corrupt peer cannot make its corruption verify.
package tasks
