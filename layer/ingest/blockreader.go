package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// blockReader reads the uncompressed stream into block buffers and serves the tar reader from
// them, so that every byte is copied once, into the block it belongs to. Full blocks go to the
// hasher. It implements forward io.Seeker (io.SeekCurrent only), which archive/tar uses to
// skip file data without copying it.
type blockReader struct {
	ctx    context.Context
	src    io.Reader
	hasher *hasher

	buf    []byte // the current block
	filled int    // bytes of buf read from src
	pos    int    // bytes of buf consumed by the reader
	base   int64  // stream offset of buf[0]
	eof    bool
}

// offset returns the stream offset of the next byte the reader will return.
func (b *blockReader) offset() int64 { return b.base + int64(b.pos) }

// more makes at least one unconsumed byte available, or returns io.EOF at the end of the
// stream.
func (b *blockReader) more() error {
	for b.pos == b.filled {
		if b.filled == len(b.buf) {
			next, err := b.hasher.ship(b.buf, b.filled)
			if err != nil {
				return err
			}
			b.buf, b.base, b.filled, b.pos = next, b.base+int64(b.filled), 0, 0
		}
		if b.eof {
			return io.EOF
		}
		n, err := b.src.Read(b.buf[b.filled:])
		b.filled += n
		switch {
		case errors.Is(err, io.EOF):
			b.eof = true
		case err != nil:
			return fmt.Errorf("read layer at offset %d: %w", b.base+int64(b.filled), err)
		}
	}
	return nil
}

func (b *blockReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if err := b.more(); err != nil {
		return 0, err
	}
	n := copy(p, b.buf[b.pos:b.filled])
	b.pos += n
	return n, nil
}

// Seek skips forward. It reports the offset actually reached, which falls short of the one
// asked for when the stream ends first; the reader's next Read then returns io.EOF.
func (b *blockReader) Seek(offset int64, whence int) (int64, error) {
	if whence != io.SeekCurrent || offset < 0 {
		return b.offset(), fmt.Errorf("blockReader: only forward relative seeks are supported")
	}
	for offset > 0 {
		if err := b.more(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return b.offset(), err
		}
		step := min(offset, int64(b.filled-b.pos))
		b.pos += int(step)
		offset -= step
	}
	return b.offset(), nil
}

// finish consumes the rest of the stream (tar padding after the end-of-archive marker
// belongs to the diffID too) and ships the last, partial block.
func (b *blockReader) finish() error {
	for {
		b.pos = b.filled
		if err := b.more(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return err
		}
	}
	if b.filled == 0 {
		return nil
	}
	_, err := b.hasher.ship(b.buf[:b.filled:b.filled], b.filled)
	b.base, b.buf, b.filled, b.pos = b.base+int64(b.filled), nil, 0, 0
	return err
}
