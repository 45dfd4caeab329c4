// Package layer defines the block model shared by every part of the system: what a task is,
// how its byte stream is cut into blocks, how blocks are verified, and the index of the
// filesystem a layer holds.
//
// # Terms
//
//   - A task is one layer's byte stream, named by a content-derived TaskID: the layer's diffID
//     (the digest of its uncompressed tar stream) for ordinary layers, so the same layer pulled
//     from two registries is one task.
//   - A block is the fixed-size slice [i*BlockSize, min((i+1)*BlockSize, Size)) of that stream.
//     Blocks are the unit of caching, transfer, verification and scheduling. A BlockKey names
//     one block of one task.
//   - A BlockTable lists the SHA-256 digest of every block. Whoever holds the table can verify
//     any block on its own, before a reader ever sees it, and the table itself is tied to the
//     diffID: the concatenation of all blocks hashes to it.
//   - An Index is the table plus one Entry per file in the layer's tar stream: type, mode,
//     owner, times, link target, device numbers, extended attributes, whiteouts and opaque
//     directories, and for regular files the offset of their data in the stream. A read of a
//     file becomes a read of the blocks covering [Offset, Offset+Size).
//
// Index has a compact, versioned binary encoding (Marshal, Unmarshal). Unmarshal treats its
// input as untrusted: it bounds every length by the bytes that remain and validates the result
// with the same rules the builder enforces (see Index.Validate).
//
// This package holds types and pure functions only; building an index from a layer stream is
// in the ingest subpackage.
package layer
