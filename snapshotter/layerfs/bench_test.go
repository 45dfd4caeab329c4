package layerfs

import (
	"path/filepath"
	"testing"

	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/layer/layertest"
)

// BenchmarkRead reads a 256 MiB file with dd bs=1M, through the page cache (with our
// readahead and the kernel's default) and with iflag=direct, from a fresh mount each time (so the page cache starts empty) over a block
// cache that already holds every block: it measures the FUSE path, not the filler.
//
//	go test -run '^$' -bench Read -benchtime 5x ./snapshotter/layerfs/
func BenchmarkRead(b *testing.B) {
	requireFUSE(b)
	const size = 256 << 20
	x, stream := buildLayer(b, layertest.Generated(11, size, 10), layer.DefaultBlockSize)
	r, _ := newCacheReader(b, x, stream, 2*size)
	e, ok := x.Lookup("data/large.bin")
	if !ok {
		b.Fatal("no data/large.bin")
	}
	warm := make([]byte, 1<<20)
	for off := int64(0); off < x.Blocks.Size; off += int64(len(warm)) {
		if _, err := r.ReadStreamAt(b.Context(), warm, off); err != nil && off+int64(len(warm)) <= x.Blocks.Size {
			b.Fatal(err)
		}
	}
	for _, run := range []struct {
		name  string
		opts  []Option
		flags []string
	}{
		{"page-cache/readahead=1MiB", nil, nil},
		{"page-cache/readahead=128KiB", []Option{WithReadAhead(0)}, nil},
		{"direct", nil, []string{"iflag=direct"}},
	} {
		b.Run(run.name, func(b *testing.B) {
			b.SetBytes(e.Size)
			for b.Loop() {
				b.StopTimer()
				m, dir := mountLayer(b, x, r, run.opts...)
				b.StartTimer()
				dd(b, filepath.Join(dir, e.Name), "/dev/null", run.flags...)
				b.StopTimer()
				if err := m.Unmount(); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}
