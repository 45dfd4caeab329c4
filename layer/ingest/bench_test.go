package ingest

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/klauspost/compress/gzip"

	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/layer/layertest"
)

// The streaming pass against decompression alone, on a generated 32 MiB layer (text files
// and one incompressible file). MB/s count uncompressed bytes. The harness in
// integration/ingestbench compares with gzip -dc on a real tree of system files.

func benchLayer(b *testing.B) (gz []byte, size int64) {
	raw, err := layertest.Tar(layertest.Generated(42, 32<<20, 2000))
	if err != nil {
		b.Fatal(err)
	}
	return layertest.Gzip(raw), int64(len(raw))
}

func BenchmarkDecompressOnly(b *testing.B) {
	gz, size := benchLayer(b)
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, zr); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBuild(b *testing.B) {
	gz, size := benchLayer(b)
	sink := BlockSinkFunc(func(context.Context, int, []byte, layer.BlockDigest) error { return nil })
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		if _, err := Build(context.Background(), bytes.NewReader(gz), Options{Sink: sink}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecompressRead(b *testing.B) {
	gz, size := benchLayer(b)
	b.SetBytes(size)
	buf := make([]byte, 1<<20)
	b.ResetTimer()
	for b.Loop() {
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			b.Fatal(err)
		}
		for {
			_, err := io.ReadFull(zr, buf)
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}
