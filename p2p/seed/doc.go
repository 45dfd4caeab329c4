// Package seed reads each layer from its registry once and keeps it for this node.
//
// Seeding a layer is one streaming pass (layer/ingest): the blob is decompressed as it
// downloads, cut into blocks that go into the block cache as each completes (where readers
// already waiting for them wake at once) and into the layer's stream file on disk, and indexed.
// The pass ends by checking the blob digest and the diffID; only then is the index written,
// and its presence marks the layer complete, so a crash mid-pass leaves nothing that looks
// valid. A layer whose pass failed has its blocks dropped from the cache.
//
// The stream file is the back-to-source tier of DESIGN-NOTES §3: a gzip layer has no random
// access, so a block evicted from every cache could otherwise only be rebuilt by downloading
// and decompressing the layer again from its start. Reads go through the block cache; a miss
// reads the block from the stream file and verifies it against the block table before the
// cache serves it.
//
// On disk, under the store's directory: <diffID hex>/stream (the uncompressed tar stream) and
// <diffID hex>/index (the encoded layer.Index).
package seed
