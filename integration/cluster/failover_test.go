package cluster

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/p2pimage/p2p-snapshotter/integration/netlab"
	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/p2p/scheduling"
)

// TestSchedulerKilledMidDistribution: three schedulers share the work; the one that owns the
// layer's task is killed (SIGKILL) while peers fetch it. Every peer still completes: its
// daemon moves the task to the next scheduler on the ring, registers there again and reports
// what it holds.
func TestSchedulerKilledMidDistribution(t *testing.T) {
	c, src := startCluster(t, Options{
		Name: "p2pds", Subnet: netip.MustParsePrefix("10.213.11.0/24"), Peers: 4, Seeds: 1, Schedulers: 3,
		Limits: netlab.Limits{Up: 100 * netlab.Mbit, Down: 100 * netlab.Mbit}, RegistryLimits: netlab.Limits{Up: 100 * netlab.Mbit},
		CacheSize: "96MiB", BlockSize: "1MiB",
	}, 48<<20)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	var addrs []string
	for _, s := range c.Schedulers {
		addrs = append(addrs, s.Addr)
	}
	ring, err := scheduling.NewRing(ctx, addrs, time.Minute, net.DefaultResolver, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	owner := ring.Order(string(layer.TaskIDFromDigest(src.DiffID)))[0]

	done := make(chan []error, 1)
	start := time.Now()
	go func() { done <- warmAll(ctx, c.Peers, src) }()
	time.Sleep(1500 * time.Millisecond)
	for _, s := range c.Schedulers {
		if s.Addr == owner {
			if err := s.Proc.Kill(); err != nil {
				t.Fatal(err)
			}
			t.Logf("killed scheduler %s, the task's owner, %s after the start", owner, time.Since(start).Round(time.Millisecond))
		}
	}
	for i, err := range <-done {
		if err != nil {
			t.Errorf("peer %d: %v", i, err)
		}
	}
	t.Logf("every peer completed %s after the start", time.Since(start).Round(time.Millisecond))
}
