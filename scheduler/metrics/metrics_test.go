package metrics

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/log"

	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
	"github.com/p2pimage/p2p-snapshotter/scheduler"
	"github.com/p2pimage/p2p-snapshotter/scheduler/clock"
)

func TestMain(m *testing.M) {
	_ = log.SetLevel("error")
	os.Exit(m.Run())
}

// TestScrape drives a scheduler through registrations, a seed trigger, a host that misses
// its keepalives, a peer sent back to the source and a starving peer, and scrapes /metrics
// over HTTP after each step.
func TestScrape(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(time.Unix(1_700_000_000, 0))
	m := New()
	core, err := scheduler.New(m.Option(), scheduler.WithClock(clk), scheduler.WithManualSweep(),
		scheduler.WithRandSeed(1), scheduler.WithTopology(scheduler.ModeTree, 2))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { core.Close() })
	if err := m.Track(core); err != nil {
		t.Fatal(err)
	}
	url := serve(t, m)

	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	task := func(i int) string { return fmt.Sprintf("sha256:%064x", i) }
	source := &schedulerv1.TaskSource{Registry: "registry.test", Repository: "library/app"}
	register := func(host string, task string, src *schedulerv1.TaskSource) {
		t.Helper()
		must(core.RegisterPeer(ctx, &schedulerv1.RegisterPeerRequest{
			HostId: host, TaskId: task, TaskSize: 16 << 20, BlockSize: 1 << 20, BlockCount: 16, Source: src,
		}))
	}
	var watch *scheduler.Watch

	steps := []struct {
		name string
		do   func()
		want map[string]float64
	}{
		{"empty", func() {}, map[string]float64{
			"hosts": 0, "seed_hosts": 0, "tasks": 0, "peers": 0, "decisions_total": 0,
			"decision_duration_seconds_count": 0,
		}},
		{"three hosts and a watching seed", func() {
			for _, h := range []string{"seed", "h1", "h2", "h3"} {
				typ := schedulerv1.HostType_HOST_TYPE_NORMAL
				if h == "seed" {
					typ = schedulerv1.HostType_HOST_TYPE_SEED
				}
				must(core.AnnounceHost(ctx, &schedulerv1.AnnounceHostRequest{HostId: h, BlockAddress: h + ":65002", Type: typ}))
			}
			var err error
			if watch, err = core.WatchHost(ctx, &schedulerv1.WatchHostRequest{HostId: "seed"}); err != nil {
				t.Fatal(err)
			}
		}, map[string]float64{"hosts": 4, "seed_hosts": 1}},
		{"three peers on a task: the seed is triggered", func() {
			// Tree: the seed peer is the root, h1 and h2 its children, h3 under h1.
			register("h1", task(1), source)
			register("h2", task(1), source)
			register("h3", task(1), source)
		}, map[string]float64{
			"tasks": 1, "peers": 4, "seed_triggers_total": 1, "decisions_total": 3,
			"decision_duration_seconds_count": 3, "starving_peers": 0,
		}},
		{"h1 misses its keepalives: h3 is reparented", func() {
			clk.Advance(16 * time.Second)
			for _, h := range []string{"seed", "h2", "h3"} {
				must(core.Keepalive(ctx, &schedulerv1.KeepaliveRequest{HostId: h}))
			}
			core.Sweep(ctx)
		}, map[string]float64{
			"hosts": 3, "peers": 3, "hosts_expired_total": 1, "peers_reparented_total": 1,
			"decisions_total": 4, "decision_duration_seconds_count": 4,
		}},
		{"no seed watching: a peer is sent back to the source", func() {
			watch.Close()
			register("h2", task(2), source)
		}, map[string]float64{
			"seed_hosts": 0, "tasks": 2, "peers": 4, "back_to_source_peers": 1, "back_to_source_total": 1,
			"decisions_total": 4,
		}},
		{"a task nobody can source: its peer starves", func() {
			register("h3", task(3), nil)
		}, map[string]float64{
			"tasks": 3, "peers": 5, "starving_peers": 1, "decisions_total": 5, "decision_duration_seconds_count": 5,
			"seed_triggers_total": 1, "back_to_source_total": 1, "hosts_expired_total": 1,
		}},
	}
	for _, step := range steps {
		step.do()
		got := scrape(t, url)
		for name, want := range step.want {
			full := Namespace + "_" + name
			v, ok := got[full]
			if !ok {
				t.Errorf("%s: %s not exported", step.name, full)
				continue
			}
			if v != want {
				t.Errorf("%s: got %s %v; want %v", step.name, full, v, want)
			}
		}
	}
	// Every decision fell in a bucket at most 10 ms wide: the histogram's +Inf bucket holds
	// them all, and the runtime collectors are there too.
	got := scrape(t, url)
	if b := got[Namespace+`_decision_duration_seconds_bucket{le="+Inf"}`]; b != 5 {
		t.Errorf(`got decision_duration_seconds_bucket{le="+Inf"} %v; want 5`, b)
	}
	if _, ok := got["go_goroutines"]; !ok {
		t.Error("go_goroutines not exported; want the Go collector registered")
	}
}

func TestTrackTwice(t *testing.T) {
	core, err := scheduler.New(scheduler.WithManualSweep())
	if err != nil {
		t.Fatal(err)
	}
	defer core.Close()
	m := New()
	if err := m.Track(core); err != nil {
		t.Fatal(err)
	}
	if err := m.Track(core); err == nil {
		t.Fatal("got nil for a second Track; want an error")
	}
}

func TestDecisionBuckets(t *testing.T) {
	b := DecisionBuckets()
	if !slices.IsSorted(b) || b[0] != 10e-6 || b[len(b)-1] != 10e-3 || !slices.Contains(b, 5e-3) {
		t.Fatalf("got buckets %v; want ascending from 10 µs to 10 ms with 5 ms a bound", b)
	}
}

// serve runs Serve for m on 127.0.0.1:0 until the test ends and returns the metrics URL.
func serve(t *testing.T, m *Metrics) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, m.Handler()) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String() + Path
}

// scrape gets url and returns each sample of the text exposition format by its name and
// labels as written ("name" or `name{le="0.5"}`).
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return parseText(t, resp.Body)
}

func parseText(t *testing.T, r io.Reader) map[string]float64 {
	t.Helper()
	out := make(map[string]float64)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("sample line %q: want name and value", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("sample line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
