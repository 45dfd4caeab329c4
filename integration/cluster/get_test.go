package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
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

// TestGetBlobToAFile: `p2pctl get IMAGE@0 --blob -o FILE` writes the layer's blob as the
// registry stores it, checked against the blob digest, through the P2P network: for the
// first peer the seed, the blob's origin, reads it from the registry once; the second peer
// gets it from the first and the seed, the registry serving nothing more. The layer's tar
// then goes into `tar -t` on one peer, and `p2pctl get TASK` (the diffID alone) writes it on
// the other from its peers.
func TestGetBlobToAFile(t *testing.T) {
	c, src := startCluster(t, Options{
		Name: "p2pdb", Subnet: netip.MustParsePrefix("10.213.16.0/24"), Peers: 2, Seeds: 1,
		Limits: netlab.Limits{Up: 400 * netlab.Mbit, Down: 400 * netlab.Mbit}, RegistryLimits: netlab.Limits{Up: 400 * netlab.Mbit},
		CacheSize: "64MiB", BlockSize: "1MiB",
	}, 12<<20)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var served []int64
	for _, d := range c.Peers {
		path := filepath.Join(t.TempDir(), "layer.tar.gz")
		cmd := d.Host.Command(ctx, filepath.Join(c.bin, "p2pctl"), "get", "--root", d.Root, "--insecure-registry", c.Registry.Addr,
			"--blob", "--json", "-o", path, c.Registry.Addr+"/test/dist:v1@0")
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: p2pctl get --blob: %v\n%s", d.Name, err, out)
		}
		var written []struct {
			Blob  string `json:"blob"`
			Bytes int64  `json:"bytes"`
		}
		if err := json.Unmarshal(out, &written); err != nil || len(written) != 1 || written[0].Blob != src.Blob.Digest.String() || written[0].Bytes != src.Blob.Size {
			t.Errorf("%s: p2pctl get --json printed %s (%v); want the blob and its %d bytes", d.Name, out, err, src.Blob.Size)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := digest.FromBytes(data); got != src.Blob.Digest {
			t.Fatalf("%s: wrote %d bytes with digest %s; want the blob %s", d.Name, len(data), got, src.Blob.Digest)
		}
		served = append(served, c.Registry.BytesOf(src.Blob.Digest))
	}
	if served[0] != src.Blob.Size || served[1] != served[0] {
		t.Errorf("the registry served %d bytes of the blob after the first peer and %d after the second; want one copy, %d, both times",
			served[0], served[1], src.Blob.Size)
	}
	// The layer's tar piped into tar, as an operator would.
	d := c.Peers[1]
	pipe := fmt.Sprintf("%s get --root %s --insecure-registry %s %s | tar -t", filepath.Join(c.bin, "p2pctl"), d.Root, c.Registry.Addr, c.Registry.Addr+"/test/dist:v1@0")
	out, err := d.Host.Command(ctx, "bash", "-c", "set -o pipefail; "+pipe).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "data.bin" {
		t.Errorf("%s: got %q, %v; want tar to list data.bin", pipe, out, err)
	}

	// The layer by its task id alone, with no image and no registry, on the other peer: from
	// the peers that hold it.
	before := c.Registry.BytesOf(src.Blob.Digest)
	d = c.Peers[0]
	h := sha256.New()
	cmd := d.Host.Command(ctx, filepath.Join(c.bin, "p2pctl"), "get", "--root", d.Root, src.DiffID.String())
	cmd.Stdout, cmd.Stderr = h, os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("p2pctl get TASK: %v", err)
	}
	if got := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)); got != src.DiffID {
		t.Errorf("p2pctl get TASK wrote a stream with digest %s; want the layer %s", got, src.DiffID)
	}
	if after := c.Registry.BytesOf(src.Blob.Digest); after != before {
		t.Errorf("p2pctl get TASK read %d bytes from the registry; want none", after-before)
	}
}
