// Package wire is the peer protocol: how one node asks another for blocks of a task and
// for the digests that verify them. It is a lean framed protocol over TCP, one request and
// one response at a time per connection; a client wanting several blocks at once opens
// several connections (DESIGN-NOTES §4: Dragonfly halved large-file times by leaving gRPC for
// a framed protocol; the benchmark in package peer measures ours against gRPC).
//
// Every integer is big-endian. A request:
//
//	magic "P2PB" | version u8 (1) | op u8 | task length u16 | task | index u32 | wait u32 (ms)
//
// op is OpBlock (block index of task), OpTable (the block digests of task from index on) or
// OpIndex (the task's layer index, as layer.Index encodes it).
// wait is how long the server may wait for a block or digest it is still receiving before it
// answers StatusNotFound; 0 means it must not wait.
//
// A response:
//
//	status u8 | free upload slots u16 | upload rate u64 (bytes/s) | load u16 (per mille) |
//	payload length u32 | payload
//
// Every response carries the server's live state, so a client learns its parents' state
// from the answers it gets (Dragonfly's SyncHost, for free). The payload of an OpBlock
// answer is the block; of an OpIndex answer, the encoded index; of an OpTable answer, a table
// part:
//
//	total blocks u32 (0: not known yet) | complete u8 | from u32 | count u32 | count × 32-byte digests
//
// Error answers carry a UTF-8 message as payload. Decoders bound every length before they
// allocate, so a hostile peer cannot make a node allocate more than MaxPayload.
package wire
