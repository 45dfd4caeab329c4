package cluster

import (
	"context"
	"crypto/sha256"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/p2pimage/p2p-snapshotter/integration/netlab"
)

// TestGetStreamsALayerToStdout: `p2pctl get` on a peer writes the layer's tar to stdout,
// fetched from the P2P network in stream mode and checked against its diffID, and the peer
// writes nothing of it to disk.
func TestGetStreamsALayerToStdout(t *testing.T) {
	c, src := startCluster(t, Options{
		Name: "p2pdg", Subnet: netip.MustParsePrefix("10.213.12.0/24"), Peers: 2, Seeds: 1,
		Limits: netlab.Limits{Up: 400 * netlab.Mbit, Down: 400 * netlab.Mbit}, RegistryLimits: netlab.Limits{Up: 400 * netlab.Mbit},
		CacheSize: "32MiB", BlockSize: "1MiB",
	}, 48<<20) // larger than the cache: the stream cannot be held whole
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := c.Peers[0].Control.Warm(ctx, src); err != nil {
		t.Fatal(err)
	}
	d := c.Peers[1]
	cmd := d.Host.Command(ctx, filepath.Join(c.bin, "p2pctl"), "get", "--root", d.Root, "--insecure-registry", c.Registry.Addr, c.Registry.Addr+"/test/dist:v1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, out)
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("p2pctl get: %v", err)
	}
	if got := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)); got != src.DiffID {
		t.Fatalf("p2pctl get wrote %d bytes with digest %s, want the layer %s", n, got, src.DiffID)
	}
	// Nothing of the layer on the peer's disk: no seeded layer, no stream file.
	entries, _ := os.ReadDir(filepath.Join(d.Root, "layers"))
	for _, e := range entries {
		t.Errorf("the peer wrote %s under its layers directory", e.Name())
	}
	if got := c.Registry.BytesOf(src.Blob.Digest); got != src.Blob.Size {
		t.Errorf("registry sent %d blob bytes, want one copy (%d)", got, src.Blob.Size)
	}
}
