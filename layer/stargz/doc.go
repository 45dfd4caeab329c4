// Package stargz reads eStargz and zstd:chunked layers at random, from their table of
// contents (TOC), without a pass over the whole blob: the format such images were built for
// (github.com/containerd/stargz-snapshotter/estargz does the parsing).
//
// Trust flows from the manifest: the layer descriptor's annotation names the TOC's digest
// (TOCDigest), Open refuses a TOC that does not match it, and ReadAt checks every chunk it
// reads against the chunk digest the TOC gives before it returns any of its bytes. So a
// registry or a peer that serves altered bytes gets an error, never a wrong file.
//
// The blob itself is read through an io.ReaderAt: Range requests to the registry, or blocks
// of the blob task from the block cache and peers, so that only the ranges a read needs are
// fetched. A reader whose bytes may come from peers is a Rejecter: bytes that fail their check
// are rejected to it and read once more, from the registry, before the read fails.
package stargz
