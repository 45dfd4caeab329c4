// Package ingest turns a layer's byte stream (gzip, zstd or uncompressed tar) into blocks and
// an index in one streaming pass.
//
// Build decompresses as the input arrives, cuts the uncompressed stream into fixed-size blocks,
// digests each block, hashes the whole stream for its diffID, and parses the tar headers on the
// way to build a layer.Index. Completed blocks are handed to a BlockSink in order, as soon as
// each is complete: a consumer can take block k before block k+1 exists, which is what lets a
// seed serve a layer to its children while it is still downloading it.
//
// # Concurrency and cost
//
// Decompression and tar parsing run in the caller's goroutine; hashing and the sink run in one
// more goroutine, fed through a ring of a few block buffers, so on two cores the pass costs
// little more than decompression alone. The tar reader never copies file data: the block
// buffer doubles as its read buffer and skips over file data by seeking within it. Memory is
// bounded by the ring (four blocks) plus the index.
//
// # Input it refuses
//
// Names with ".." components, NUL bytes, hardlinks to entries that do not come earlier,
// parents that are not directories, sparse files, unknown entry types and malformed headers
// are errors wrapping ErrMalformed, naming the entry. A stream whose digest differs from the
// expected diffID is an error wrapping layer.ErrDigestMismatch.
package ingest
