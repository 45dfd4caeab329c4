package layer

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"
)

// DefaultBlockSize is the block size used when a deployment configures none: 1 MiB, as in
// nydus and DADI; FaaSNet used 512 KiB and Dragonfly 4 MiB and more.
const DefaultBlockSize = 1 << 20

// MaxBlockSize bounds the block size a deployment or an untrusted index may ask for.
const MaxBlockSize = 64 << 20

// MinBlockSize bounds the block size from below; smaller blocks cost more in metadata and
// round trips than they save.
const MinBlockSize = 4 << 10

// ErrDigestMismatch is wrapped by every error that reports content not matching its digest.
var ErrDigestMismatch = errors.New("digest mismatch")

// TaskID names a task: one layer's byte stream. It is a digest string such as
// "sha256:…", normally the layer's diffID.
type TaskID string

// TaskIDFromDigest returns the task that the stream with digest d forms.
func TaskIDFromDigest(d digest.Digest) TaskID { return TaskID(d) }

// Digest returns the task id as a digest.
func (t TaskID) Digest() digest.Digest { return digest.Digest(t) }

// Validate reports whether t is a well-formed digest.
func (t TaskID) Validate() error {
	if err := digest.Digest(t).Validate(); err != nil {
		return fmt.Errorf("task id %q: %w", string(t), err)
	}
	return nil
}

// BlockKey names one block of one task.
type BlockKey struct {
	Task  TaskID
	Index int
}

func (k BlockKey) String() string { return fmt.Sprintf("%s#%d", k.Task, k.Index) }

// BlockDigest is the SHA-256 of one block.
type BlockDigest [sha256.Size]byte

// DigestBlock returns the digest of a block's content.
func DigestBlock(data []byte) BlockDigest { return sha256.Sum256(data) }

func (d BlockDigest) String() string { return "sha256:" + hex.EncodeToString(d[:]) }

// BlockTable describes how a task's stream of Size bytes is cut into blocks of BlockSize
// bytes, and the digest of each block.
type BlockTable struct {
	BlockSize int64
	Size      int64
	Digests   []BlockDigest
}

// BlockCount returns the number of blocks a stream of size bytes has with the given block size.
func BlockCount(size, blockSize int64) int {
	if size <= 0 || blockSize <= 0 {
		return 0
	}
	return int((size + blockSize - 1) / blockSize)
}

// Count returns the number of blocks in the stream.
func (t *BlockTable) Count() int { return BlockCount(t.Size, t.BlockSize) }

// Range returns the offset and length of block i in the stream.
func (t *BlockTable) Range(i int) (offset, length int64) {
	offset = int64(i) * t.BlockSize
	length = min(t.BlockSize, t.Size-offset)
	return offset, length
}

// Span returns the first and last block holding the bytes [off, off+n). n must be positive
// and the range must lie within the stream.
func (t *BlockTable) Span(off, n int64) (first, last int) {
	return int(off / t.BlockSize), int((off + n - 1) / t.BlockSize)
}

// Verify checks that data is exactly block i of the stream. The error wraps
// ErrDigestMismatch when the content is wrong.
func (t *BlockTable) Verify(i int, data []byte) error {
	if i < 0 || i >= len(t.Digests) {
		return fmt.Errorf("verify block %d: out of range [0, %d)", i, len(t.Digests))
	}
	if _, want := t.Range(i); int64(len(data)) != want {
		return fmt.Errorf("verify block %d: %d bytes, want %d: %w", i, len(data), want, ErrDigestMismatch)
	}
	if got := DigestBlock(data); got != t.Digests[i] {
		return fmt.Errorf("verify block %d: got %s, want %s: %w", i, got, t.Digests[i], ErrDigestMismatch)
	}
	return nil
}

// Validate checks the table's internal consistency: a sane block size and one digest per block.
func (t *BlockTable) Validate() error {
	if t.BlockSize < MinBlockSize || t.BlockSize > MaxBlockSize {
		return fmt.Errorf("block size %d outside [%d, %d]", t.BlockSize, MinBlockSize, MaxBlockSize)
	}
	if t.Size < 0 {
		return fmt.Errorf("negative stream size %d", t.Size)
	}
	if got, want := len(t.Digests), t.Count(); got != want {
		return fmt.Errorf("%d block digests for %d bytes in blocks of %d, want %d", got, t.Size, t.BlockSize, want)
	}
	return nil
}
