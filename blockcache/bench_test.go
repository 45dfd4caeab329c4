package blockcache

import (
	"context"
	"testing"

	"github.com/p2pimage/p2p-snapshotter/layer"
)

// Hit benchmarks on 1 MiB blocks. "Pin" measures handing out a block by reference (what the
// peer server does before writing it to a socket); "Copy" also copies the whole block out
// (what a FUSE read does). Run with -cpu 1,2 to compare one core with all of them.

const benchBlocks = 64

func newBenchCache(b *testing.B) (*Cache, Filler) {
	c, err := New(benchBlocks*layer.DefaultBlockSize, WithBlockSize(layer.DefaultBlockSize))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	f := FillerFunc(func(_ context.Context, _ layer.BlockKey, buf []byte) (int, error) {
		for i := range buf {
			buf[i] = byte(i)
		}
		return len(buf), nil
	})
	for i := range benchBlocks {
		blk, err := c.Get(context.Background(), key(i), f)
		if err != nil {
			b.Fatal(err)
		}
		blk.Release()
	}
	return c, f
}

func BenchmarkHitPin(b *testing.B) {
	c, f := newBenchCache(b)
	ctx := context.Background()
	b.SetBytes(layer.DefaultBlockSize)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			blk, err := c.Get(ctx, key(i%benchBlocks), f)
			if err != nil {
				b.Fatal(err)
			}
			blk.Release()
			i++
		}
	})
	if s := c.Stats(); s.Misses != benchBlocks {
		b.Fatalf("benchmark missed: %+v", s)
	}
}

func BenchmarkHitCopy(b *testing.B) {
	c, f := newBenchCache(b)
	ctx := context.Background()
	b.SetBytes(layer.DefaultBlockSize)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		dst := make([]byte, layer.DefaultBlockSize)
		i := 0
		for pb.Next() {
			if _, err := c.ReadAt(ctx, key(i%benchBlocks), f, dst, 0); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}
