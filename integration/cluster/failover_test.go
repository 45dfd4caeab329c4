package cluster

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/p2pimage/p2p-snapshotter/integration/netlab"
	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/p2p/scheduling"
	"github.com/p2pimage/p2p-snapshotter/scheduler/metrics"
	"github.com/p2pimage/p2p-snapshotter/snapshotter"
)

// TestSchedulerKilledMidDistribution: three schedulers share the work; the one that owns the
// layer's task is killed (SIGKILL) while peers fetch it. Every peer still completes: its
// daemon moves the task to the next scheduler on the ring, registers there again and reports
// what it holds. The next scheduler has the task (its metrics say so) within the daemons'
// scheduler cooldown of the kill.
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
	order := ring.Order(string(layer.TaskIDFromDigest(src.DiffID)))
	owner, next := order[0], schedulerAt(t, c, order[1])
	if n, err := schedulerTasks(ctx, next.Metrics); err != nil || n != 0 {
		t.Fatalf("before the kill, the next scheduler on the ring has %v tasks (%v); want 0", n, err)
	}

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
	killed := time.Now()
	cooldown := time.Duration(snapshotter.DefaultConfig().P2P.SchedulerCooldown)
	for {
		n, err := schedulerTasks(ctx, next.Metrics)
		if err == nil && n >= 1 {
			t.Logf("scheduler %s took the task %s after the kill", next.Addr, time.Since(killed).Round(time.Millisecond))
			break
		}
		if time.Since(killed) > cooldown {
			t.Fatalf("%v after the kill (the cooldown), the next scheduler on the ring has %v tasks (%v); want the task", cooldown, n, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i, err := range <-done {
		if err != nil {
			t.Errorf("peer %d: %v", i, err)
		}
	}
	t.Logf("every peer completed %s after the start", time.Since(start).Round(time.Millisecond))
}

// schedulerAt returns the cluster's scheduler serving at addr.
func schedulerAt(t *testing.T, c *Cluster, addr string) *Service {
	t.Helper()
	for _, s := range c.Schedulers {
		if s.Addr == addr {
			return s
		}
	}
	t.Fatalf("no scheduler at %s", addr)
	return nil
}

// schedulerTasks reads the p2p_scheduler_tasks gauge from the metrics at addr.
func schedulerTasks(ctx context.Context, addr string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("metrics at %s: %s", addr, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), metrics.Namespace+"_tasks "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("metrics at %s: no %s_tasks", addr, metrics.Namespace)
}
