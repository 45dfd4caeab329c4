package cluster

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/p2pimage/p2p-snapshotter/integration/netlab"
	"github.com/p2pimage/p2p-snapshotter/layer/layertest"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
)

// TestPrefetchThenLazyStart: `p2pctl prefetch --files` on one peer warms the blocks of a file
// into that peer's cache, the seed reading the layer from the registry once; a lazy start
// after it, on that peer or another, mounts the layer and reads the file with nothing more
// from the registry.
func TestPrefetchThenLazyStart(t *testing.T) {
	c, src, files := startClusterWithFiles(t, Options{
		Name: "p2pdp", Subnet: netip.MustParsePrefix("10.213.17.0/24"), Peers: 2, Seeds: 1,
		Limits: netlab.Limits{Up: 400 * netlab.Mbit, Down: 400 * netlab.Mbit}, RegistryLimits: netlab.Limits{Up: 400 * netlab.Mbit},
		CacheSize: "64MiB", BlockSize: "1MiB",
	}, 12<<20)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	d := c.Peers[0]
	out, err := d.Host.Command(ctx, filepath.Join(c.bin, "p2pctl"), "prefetch", "--root", d.Root, "--insecure-registry", c.Registry.Addr,
		"--files", "data.bin", c.Registry.Addr+"/test/dist:v1").CombinedOutput()
	if err != nil {
		t.Fatalf("p2pctl prefetch: %v\n%s", err, out)
	}
	t.Logf("p2pctl prefetch:\n%s", out)
	if !strings.Contains(string(out), "layer 0 ") || !strings.Contains(string(out), " warm in ") {
		t.Errorf("p2pctl prefetch printed no layer warm:\n%s", out)
	}
	prefetched := c.Registry.BytesOf(src.Blob.Digest)
	if prefetched != src.Blob.Size {
		t.Errorf("the prefetch took %d bytes of the blob from the registry; want one copy, %d", prefetched, src.Blob.Size)
	}
	lazyStarts(ctx, t, c, src, files[0], prefetched)
}

// TestPrefetchTheFleet: `p2pctl prefetch --scheduler` has the scheduler send the prefetch to
// hosts that watch it, two of the three peers here (--hosts 2); both warm the layer through
// the P2P network, the seed reading the registry once, and report back; a lazy start on any
// peer after it reads nothing from the registry.
func TestPrefetchTheFleet(t *testing.T) {
	c, src, files := startClusterWithFiles(t, Options{
		Name: "p2pdq", Subnet: netip.MustParsePrefix("10.213.18.0/24"), Peers: 3, Seeds: 1,
		Limits: netlab.Limits{Up: 400 * netlab.Mbit, Down: 400 * netlab.Mbit}, RegistryLimits: netlab.Limits{Up: 400 * netlab.Mbit},
		CacheSize: "64MiB", BlockSize: "1MiB",
	}, 12<<20)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	s := c.Schedulers[0]
	out, err := s.Host.Command(ctx, filepath.Join(c.bin, "p2pctl"), "prefetch", "--scheduler", s.Addr, "--hosts", "2",
		"--insecure-registry", c.Registry.Addr, c.Registry.Addr+"/test/dist:v1").CombinedOutput()
	if err != nil {
		t.Fatalf("p2pctl prefetch --scheduler: %v\n%s", err, out)
	}
	t.Logf("p2pctl prefetch --scheduler:\n%s", out)
	if !strings.Contains(string(out), "warm on 2 of 2 hosts") {
		t.Errorf("p2pctl prefetch --scheduler did not report two hosts warm:\n%s", out)
	}
	prefetched := c.Registry.BytesOf(src.Blob.Digest)
	if prefetched != src.Blob.Size {
		t.Errorf("the fleet's prefetch took %d bytes of the blob from the registry; want one copy, %d", prefetched, src.Blob.Size)
	}
	lazyStarts(ctx, t, c, src, files[0], prefetched)
}

// lazyStarts mounts src on every peer and reads f through each mount, as a container start
// would, and checks that the registry served nothing beyond the served bytes it had sent.
func lazyStarts(ctx context.Context, t *testing.T, c *Cluster, src seed.Source, f layertest.File, served int64) {
	t.Helper()
	for _, p := range c.Peers {
		dir := filepath.Join(p.Root, "start")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := p.Control.Mount(ctx, dir, src, nil); err != nil {
			t.Fatalf("%s: mount: %v", p.Name, err)
		}
		t.Cleanup(func() { p.Control.Unmount(context.Background(), dir) })
		got, err := readInDaemon(ctx, p, filepath.Join(dir, f.Header.Name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, f.Data) {
			t.Fatalf("%s: %s read through the mount differs from the layer's", p.Name, f.Header.Name)
		}
		if after := c.Registry.BytesOf(src.Blob.Digest); after != served {
			t.Errorf("%s: the lazy start read %d bytes from the registry after the prefetch; want none", p.Name, after-served)
		}
	}
}
