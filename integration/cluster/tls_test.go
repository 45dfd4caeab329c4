package cluster

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/p2pimage/p2p-snapshotter/integration/netlab"
	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/p2p/peer"
	"github.com/p2pimage/p2p-snapshotter/p2p/tlsfiles"
	"github.com/p2pimage/p2p-snapshotter/p2p/tlsfiles/tlstest"
)

// TestDistributionOverMutualTLS: every scheduler and daemon of a cluster configured with
// certificates of one CA ([tls], [p2p.tls]); a layer still reaches every peer with one copy
// from the registry, and a daemon's block service serves a client of the CA and refuses one
// with no certificate.
func TestDistributionOverMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewAuthority(t, "cluster CA")
	c, src := startCluster(t, Options{
		Name: "p2pdt", Subnet: netip.MustParsePrefix("10.213.19.0/24"), Peers: 4, Seeds: 1,
		Limits: netlab.Limits{Up: 400 * netlab.Mbit, Down: 400 * netlab.Mbit}, RegistryLimits: netlab.Limits{Up: 400 * netlab.Mbit},
		CacheSize: "64MiB", BlockSize: "1MiB",
		TLS: func(host string) tlsfiles.Files { return ca.Valid(t, dir, host) },
	}, 16<<20)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	for i, err := range warmAll(ctx, c.Peers, src) {
		if err != nil {
			t.Errorf("peer %d: %v", i, err)
		}
	}
	if got := c.Registry.BytesOf(src.Blob.Digest); got != src.Blob.Size {
		t.Errorf("registry sent %d blob bytes, want one copy (%d)", got, src.Blob.Size)
	}

	id, err := tlsfiles.Load(ca.Valid(t, dir, "operator"))
	if err != nil {
		t.Fatal(err)
	}
	task := layer.TaskIDFromDigest(src.DiffID)
	buf := make([]byte, 1<<20)
	member := peer.NewClient(peer.WithClientTLS(id.ClientConfig()))
	defer member.Close()
	if _, _, err := member.Block(ctx, c.Peers[0].Addr, task, 0, time.Second, buf); err != nil {
		t.Errorf("a client of the cluster's CA: %v", err)
	}
	stranger := peer.NewClient()
	defer stranger.Close()
	if _, _, err := stranger.Block(ctx, c.Peers[0].Addr, task, 0, time.Second, buf); err == nil {
		t.Error("a client with no certificate got a block")
	}
}

// TestCertificatesFromTheSchedulers: the scheduler holds the cluster's CA key and every
// daemon has only the CA's certificate and a bootstrap token; each gets its certificate from
// the scheduler at start, and a layer reaches every peer over mutual TLS.
func TestCertificatesFromTheSchedulers(t *testing.T) {
	dir := t.TempDir()
	caFile, caKey := tlstest.NewAuthority(t, "cluster CA").WriteCA(t, dir)
	c, src := startCluster(t, Options{
		Name: "p2pdi", Subnet: netip.MustParsePrefix("10.213.20.0/24"), Peers: 3, Seeds: 1,
		Limits: netlab.Limits{Up: 400 * netlab.Mbit, Down: 400 * netlab.Mbit}, RegistryLimits: netlab.Limits{Up: 400 * netlab.Mbit},
		CacheSize: "64MiB", BlockSize: "1MiB",
		Issuing: &Issuing{CA: caFile, CAKey: caKey, Token: "bootstrap-token"},
	}, 16<<20)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	for i, err := range warmAll(ctx, c.Peers, src) {
		if err != nil {
			t.Errorf("peer %d: %v", i, err)
		}
	}
	for _, d := range append([]*Daemon{c.Seeds[0]}, c.Peers...) {
		if _, err := os.Stat(filepath.Join(d.Root, "tls", "cert.pem")); err != nil {
			t.Errorf("%s has no certificate from the scheduler: %v", d.Name, err)
		}
	}
	stranger := peer.NewClient()
	defer stranger.Close()
	if _, _, err := stranger.Block(ctx, c.Peers[0].Addr, layer.TaskIDFromDigest(src.DiffID), 0, time.Second, make([]byte, 1<<20)); err == nil {
		t.Error("a client with no certificate got a block")
	}
}
