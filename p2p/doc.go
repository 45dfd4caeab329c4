// Package p2p is this node's side of the P2P network: it decides, with the scheduler, where
// each layer comes from, and serves what the node holds to other peers.
//
// A Node holds the block cache's record of tasks (package tasks), the block server (package
// peer), the seed store (package seed, the back-to-source tier) and a Scheduler. Asked for a
// layer, it returns one held on disk; otherwise it registers with the scheduler, which says
// either to read the registry (the node then seeds the layer itself, and peers fetch its
// blocks while its pass runs) or to fetch from parents: the node gets the layer index from a
// parent that vouches for it (a seed or a peer that holds the whole verified layer) and
// returns a layer whose blocks are fetched from parents on demand (package fetch), so a
// container starts after reading only what it needs. Warm fetches a whole layer, checked
// against its diffID, after which this node vouches for it too.
//
// An eStargz or zstd:chunked layer is read at random instead (Blob): its blob is a task of its
// own, named by the blob digest and cut into blocks of the bytes as stored, which carry no
// digests. The node the scheduler makes the blob's origin reads the registry on demand; the
// others read blocks from parents, and their reader checks each chunk against the layer's
// TOC and rejects a block that fails, which is then read from the registry.
//
// The pieces, each in its own package: wire (the peer protocol), peer (block server and
// client), tasks (what this node holds and vouches for), fetch (the downloader), stream
// (front-to-back reads with a window), seed (one pass from the registry), blobs (registry
// blobs through the cache for the mirror).
package p2p
