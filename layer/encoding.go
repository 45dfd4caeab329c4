package layer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"
)

// The index encoding, version 1. All integers are unsigned varints unless noted.
//
//	magic "P2PLIDX" | version byte (1)
//	diffID string | stream size | block size | block count | block count × 32-byte SHA-256
//	entry count | entries
//
// An entry is:
//
//	type byte | flags byte (1: opaque, 2: has xattrs, 4: implicit directory)
//	name as (length of the prefix shared with the previous name, suffix string)
//	mode | uid | gid | mtime seconds (signed varint) | mtime nanoseconds
//	regular: size, offset · symlink, hardlink: linkname · char, block: major, minor
//	if has xattrs: count, then (key string, value string) in key order
//
// A string is its length followed by its bytes. Sharing name prefixes keeps a 10,000-file
// layer's index to a few hundred KiB.
const (
	indexMagic   = "P2PLIDX"
	indexVersion = 1

	flagOpaque    = 1
	flagHasXattrs = 2
	flagImplicit  = 4

	// maxStringLen bounds one decoded string (a name, link target or xattr value).
	maxStringLen = 1 << 20
)

// ErrBadIndex is wrapped by every error Unmarshal returns.
var ErrBadIndex = errors.New("bad index encoding")

// Marshal encodes the index. It validates the index first, so only indexes that Unmarshal
// accepts are ever written.
func (x *Index) Marshal() ([]byte, error) {
	if err := x.Validate(); err != nil {
		return nil, fmt.Errorf("marshal index: %w", err)
	}
	w := &encoder{buf: make([]byte, 0, 64+len(x.Blocks.Digests)*32+len(x.Entries)*48)}
	w.buf = append(w.buf, indexMagic...)
	w.buf = append(w.buf, indexVersion)
	w.string(string(x.DiffID))
	w.uvarint(uint64(x.Blocks.Size))
	w.uvarint(uint64(x.Blocks.BlockSize))
	w.uvarint(uint64(len(x.Blocks.Digests)))
	for _, d := range x.Blocks.Digests {
		w.buf = append(w.buf, d[:]...)
	}
	w.uvarint(uint64(len(x.Entries)))
	prev := ""
	for i := range x.Entries {
		e := &x.Entries[i]
		var flags byte
		if e.Opaque {
			flags |= flagOpaque
		}
		if len(e.Xattrs) > 0 {
			flags |= flagHasXattrs
		}
		if e.Implicit {
			flags |= flagImplicit
		}
		w.buf = append(w.buf, byte(e.Type), flags)
		shared := commonPrefix(prev, e.Name)
		w.uvarint(uint64(shared))
		w.string(e.Name[shared:])
		prev = e.Name
		w.uvarint(uint64(e.Mode))
		w.uvarint(uint64(e.UID))
		w.uvarint(uint64(e.GID))
		w.buf = binary.AppendVarint(w.buf, e.ModTimeSec)
		w.uvarint(uint64(e.ModTimeNsec))
		switch e.Type {
		case TypeRegular:
			w.uvarint(uint64(e.Size))
			w.uvarint(uint64(e.Offset))
		case TypeSymlink, TypeHardlink:
			w.string(e.Linkname)
		case TypeChar, TypeBlock:
			w.uvarint(uint64(e.DevMajor))
			w.uvarint(uint64(e.DevMinor))
		}
		if flags&flagHasXattrs != 0 {
			keys := e.SortedXattrKeys()
			w.uvarint(uint64(len(keys)))
			for _, k := range keys {
				w.string(k)
				w.string(e.Xattrs[k])
			}
		}
	}
	return w.buf, nil
}

// Digest returns the digest of the index's encoding, by which a peer that received the
// index from the network checks it against what a trusted party published.
func (x *Index) Digest() (digest.Digest, error) {
	b, err := x.Marshal()
	if err != nil {
		return "", err
	}
	return digest.FromBytes(b), nil
}

// Unmarshal decodes and validates an index. Its input may come from anyone: every error wraps
// ErrBadIndex and names what is wrong.
func Unmarshal(data []byte) (*Index, error) {
	x, err := decode(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadIndex, err)
	}
	if err := x.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadIndex, err)
	}
	return x, nil
}

func decode(data []byte) (*Index, error) {
	if !bytes.HasPrefix(data, []byte(indexMagic)) {
		return nil, errors.New("missing magic")
	}
	r := &decoder{buf: data[len(indexMagic):]}
	if v := r.byte(); r.err == nil && v != indexVersion {
		return nil, fmt.Errorf("unsupported version %d (this build reads %d)", v, indexVersion)
	}
	x := &Index{DiffID: digest.Digest(r.string())}
	x.Blocks.Size = r.int64()
	x.Blocks.BlockSize = r.int64()
	nblocks := r.count(32)
	if r.err == nil {
		x.Blocks.Digests = make([]BlockDigest, nblocks)
		for i := range x.Blocks.Digests {
			copy(x.Blocks.Digests[i][:], r.bytes(32))
		}
	}
	// Each entry takes at least 9 bytes: type, flags, prefix, name length, mode, uid, gid,
	// seconds, nanoseconds.
	nentries := r.count(9)
	if r.err != nil {
		return nil, r.err
	}
	x.Entries = make([]Entry, nentries)
	prev := ""
	for i := range x.Entries {
		e := &x.Entries[i]
		e.Type = EntryType(r.byte())
		flags := r.byte()
		shared := r.uvarint()
		suffix := r.string()
		if r.err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, r.err)
		}
		if shared > uint64(len(prev)) {
			return nil, fmt.Errorf("entry %d: shares %d bytes with a %d-byte name", i, shared, len(prev))
		}
		e.Name = prev[:shared] + suffix
		prev = e.Name
		e.Mode = r.uint32()
		e.UID = r.uint32()
		e.GID = r.uint32()
		e.ModTimeSec = r.varint()
		e.ModTimeNsec = r.uint32()
		e.Opaque = flags&flagOpaque != 0
		e.Implicit = flags&flagImplicit != 0
		switch e.Type {
		case TypeRegular:
			e.Size = r.int64()
			e.Offset = r.int64()
		case TypeSymlink, TypeHardlink:
			e.Linkname = r.string()
		case TypeChar, TypeBlock:
			e.DevMajor = r.uint32()
			e.DevMinor = r.uint32()
		}
		if flags&^(flagOpaque|flagHasXattrs|flagImplicit) != 0 {
			return nil, fmt.Errorf("entry %d: unknown flags %#x", i, flags)
		}
		if flags&flagHasXattrs != 0 {
			n := r.count(2)
			if r.err == nil && n == 0 {
				return nil, fmt.Errorf("entry %d: xattr flag with no xattrs", i)
			}
			e.Xattrs = make(map[string]string, n)
			last := ""
			for j := 0; j < n && r.err == nil; j++ {
				k, v := r.string(), r.string()
				if r.err != nil {
					break
				}
				if j > 0 && k <= last {
					return nil, fmt.Errorf("entry %d: xattr keys not in strict order", i)
				}
				e.Xattrs[k], last = v, k
			}
		}
		if r.err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, r.err)
		}
	}
	if len(r.buf) != 0 {
		return nil, fmt.Errorf("%d trailing bytes", len(r.buf))
	}
	return x, nil
}

type encoder struct{ buf []byte }

func (w *encoder) uvarint(v uint64) { w.buf = binary.AppendUvarint(w.buf, v) }

func (w *encoder) string(s string) {
	w.uvarint(uint64(len(s)))
	w.buf = append(w.buf, s...)
}

// decoder reads from buf; after the first error every read returns zero and err stays set.
type decoder struct {
	buf []byte
	err error
}

func (r *decoder) fail(err error) {
	if r.err == nil {
		r.err = err
	}
	r.buf = nil
}

func (r *decoder) byte() byte {
	if len(r.buf) < 1 {
		r.fail(errors.New("truncated"))
		return 0
	}
	b := r.buf[0]
	r.buf = r.buf[1:]
	return b
}

func (r *decoder) bytes(n int) []byte {
	if n < 0 || len(r.buf) < n {
		r.fail(errors.New("truncated"))
		return nil
	}
	b := r.buf[:n]
	r.buf = r.buf[n:]
	return b
}

func (r *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(r.buf)
	if n <= 0 {
		r.fail(errors.New("bad varint"))
		return 0
	}
	r.buf = r.buf[n:]
	return v
}

func (r *decoder) varint() int64 {
	v, n := binary.Varint(r.buf)
	if n <= 0 {
		r.fail(errors.New("bad varint"))
		return 0
	}
	r.buf = r.buf[n:]
	return v
}

func (r *decoder) uint32() uint32 {
	v := r.uvarint()
	if v > 1<<32-1 {
		r.fail(fmt.Errorf("value %d overflows 32 bits", v))
		return 0
	}
	return uint32(v)
}

func (r *decoder) int64() int64 {
	v := r.uvarint()
	if v > 1<<63-1 {
		r.fail(fmt.Errorf("value %d overflows 63 bits", v))
		return 0
	}
	return int64(v)
}

// count reads a count of items that each take at least minSize bytes, refusing counts that
// the remaining input could not hold, so a hostile count cannot force a huge allocation.
func (r *decoder) count(minSize int) int {
	v := r.uvarint()
	if r.err == nil && v > uint64(len(r.buf)/minSize) {
		r.fail(fmt.Errorf("count %d exceeds what %d remaining bytes can hold", v, len(r.buf)))
		return 0
	}
	return int(v)
}

func (r *decoder) string() string {
	n := r.uvarint()
	if r.err == nil && n > maxStringLen {
		r.fail(fmt.Errorf("string of %d bytes exceeds %d", n, maxStringLen))
	}
	return string(r.bytes(int(n)))
}

func commonPrefix(a, b string) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}
