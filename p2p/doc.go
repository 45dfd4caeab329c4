// Package p2p will hold the data plane between nodes: a block server that answers other
// peers from the blockcache (waiting for blocks still in flight, so blocks stream down a tree
// of peers), a downloader that fetches each block from one of several parents chosen from
// their live state and verifies it against the layer's block table, seed mode (one streaming
// pass from the registry with layer/ingest), and stream mode for consumers that read a layer
// front to back.
//
// Nothing is implemented here yet; the design is in docs/architecture.md.
package p2p
