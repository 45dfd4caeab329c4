// Package blobs serves registry blobs to this node's consumers through its block cache, in
// stream mode: the registry mirror hands containerd a layer blob this way when containerd
// unpacks it itself (a layer the node does not mount lazily).
//
// A blob is a task of its own, named by its digest and cut into blocks of the compressed
// bytes. Missing blocks are read from the registry with Range requests made with the
// credentials the caller presented, a window of them at a time; concurrent and later readers
// of the same blob share the cached blocks. The first complete read checks the blob digest
// before its last block is passed on (package stream) and records the blob's block table;
// from then on each block filled again is checked on its own. The fill reads the registry
// only: the mirror copies a blob this way when containerd unpacks a layer itself, while
// layers the node mounts lazily travel through the P2P network (package p2p, whose Blob
// reads an eStargz blob's blocks from peers under the same task).
//
// An uncompressed layer's blob digest is its diffID, so its blob task and its layer task are
// the same stream with the same blocks; a compressed blob's task never collides with a layer.
package blobs
