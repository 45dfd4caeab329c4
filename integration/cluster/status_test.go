package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/p2pimage/p2p-snapshotter/integration/netlab"
	"github.com/p2pimage/p2p-snapshotter/scheduler/status"
)

// TestStatusPageShowsADistribution: while a layer goes to four peers down a tree, the
// scheduler's status page, loaded in headless Chromium, draws the task: the seed and every
// peer with its progress, and the edges blocks flow along with their throughput; once every
// peer holds the layer it shows them all complete. p2pctl status and p2pctl tree show the
// same cluster. With P2P_STATUS_SCREENSHOT=FILE the test also saves a screenshot of the page
// mid-distribution there (docs/status-page.png was made so).
func TestStatusPageShowsADistribution(t *testing.T) {
	chromium := needChromium(t)
	c, src := startCluster(t, Options{
		Name: "p2pdu", Subnet: netip.MustParsePrefix("10.213.15.0/24"), Peers: 4, Seeds: 1, Topology: "tree",
		Limits: netlab.Limits{Up: 100 * netlab.Mbit, Down: 100 * netlab.Mbit}, RegistryLimits: netlab.Limits{Up: 100 * netlab.Mbit},
		CacheSize: "128MiB", BlockSize: "1MiB",
	}, 48<<20) // about 4 s a hop at 100 Mbit/s
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	sched := c.Schedulers[0]
	page := "http://" + sched.Metrics + status.PathPage
	task := src.DiffID.String()

	warmed := make(chan []error, 1)
	go func() { warmed <- warmAll(ctx, c.Peers, src) }()

	// Mid-distribution: every peer registered, blocks flowing, no peer complete yet.
	mid, err := waitTask(ctx, sched, task, func(t status.Task) bool {
		flowing := false
		for _, p := range t.Peers {
			for _, e := range p.Parents {
				flowing = flowing || e.Rate > 0
			}
		}
		return len(t.Peers) == 5 && flowing
	})
	if err != nil {
		t.Fatal(err)
	}
	dom, err := chromiumDOM(ctx, sched.Host, chromium, page)
	if err != nil {
		t.Fatal(err)
	}
	checkPage(t, dom, task, c, false)
	if path := os.Getenv("P2P_STATUS_SCREENSHOT"); path != "" {
		if err := chromiumScreenshot(ctx, sched.Host, chromium, page, path); err != nil {
			t.Error(err)
		}
	}
	tree := p2pctl(ctx, t, c, sched, "tree", strings.TrimPrefix(task, "sha256:")[:12], "--scheduler", sched.Metrics)
	t.Logf("mid-distribution (%d of 5 complete in the JSON):\n%s", completeCount(mid), tree)
	for _, d := range append([]*Daemon{c.Seeds[0]}, c.Peers...) {
		if !strings.Contains(tree, d.Name) {
			t.Errorf("p2pctl tree shows no %s:\n%s", d.Name, tree)
		}
	}

	for _, err := range <-warmed {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := waitTask(ctx, sched, task, func(t status.Task) bool { return completeCount(t) == 5 }); err != nil {
		t.Fatal(err)
	}
	dom, err = chromiumDOM(ctx, sched.Host, chromium, page)
	if err != nil {
		t.Fatal(err)
	}
	checkPage(t, dom, task, c, true)
	st := p2pctl(ctx, t, c, sched, "status", "--scheduler", sched.Metrics)
	if !strings.Contains(st, strings.TrimPrefix(task, "sha256:")[:12]) || !strings.Contains(st, "seed0") {
		t.Errorf("p2pctl status shows no task or no seed:\n%s", st)
	}
}

// needChromium returns Debian's chromium, or skips the test where the machine has none
// (never in CI, which installs it).
func needChromium(t *testing.T) string {
	t.Helper()
	needRoot(t)
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("CI must install chromium (apt-get install chromium) for the status page test")
		}
		t.Skip("the status page test needs Debian's chromium: apt-get install chromium")
	}
	return path
}

// chromiumArgs are the flags a headless Chromium needs on a machine with no network beyond
// the test's own addresses.
func chromiumArgs(dir string) []string {
	return []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--user-data-dir=" + dir,
		"--virtual-time-budget=3000", "--window-size=1400,900"}
}

// chromiumDOM loads url in headless Chromium, from host h, lets its scripts run, and
// returns the DOM they built.
func chromiumDOM(ctx context.Context, h *netlab.Host, chromium, url string) (string, error) {
	dir, err := os.MkdirTemp("", "p2p-chromium-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	cmd := h.Command(ctx, append(append([]string{chromium}, chromiumArgs(dir)...), "--dump-dom", url)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("chromium --dump-dom %s: %w: %s", url, err, stderr.String())
	}
	return string(out), nil
}

func chromiumScreenshot(ctx context.Context, h *netlab.Host, chromium, url, path string) error {
	dir, err := os.MkdirTemp("", "p2p-chromium-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	cmd := h.Command(ctx, append(append([]string{chromium}, chromiumArgs(dir)...), "--screenshot="+abs, url)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("chromium --screenshot: %w: %s", err, out)
	}
	return nil
}

var (
	peerElem = regexp.MustCompile(`<g class="peer( [a-z ]+)?" data-peer="[^"]+" data-host="([^"]+)" data-progress="([0-9.]+)"`)
	edgeElem = regexp.MustCompile(`<g class="edge( active)?" data-parent="[^"]+" data-child="[^"]+" data-rate="([0-9]+)"`)
	hostRow  = regexp.MustCompile(`<tr data-host="([^"]+)">`)
)

// checkPage checks what the page drew for task: a node per host (the seed and the peers)
// with its progress, edges with throughput while blocks flow, all complete at the end, and a
// row per host in the hosts table.
func checkPage(t *testing.T, dom, task string, c *Cluster, done bool) {
	t.Helper()
	if !strings.Contains(dom, `data-task="`+task+`"`) {
		t.Fatalf("the page draws no task %s:\n%.2000s", task, dom)
	}
	progress := map[string]float64{}
	complete := 0
	for _, m := range peerElem.FindAllStringSubmatch(dom, -1) {
		p, _ := strconv.ParseFloat(m[3], 64)
		progress[m[2]] = p
		if strings.Contains(m[1], "complete") {
			complete++
		}
	}
	active := 0
	for _, m := range edgeElem.FindAllStringSubmatch(dom, -1) {
		if r, _ := strconv.Atoi(m[2]); m[1] != "" && r > 0 {
			active++
		}
	}
	rows := len(hostRow.FindAllString(dom, -1))
	t.Logf("the page shows peers %v, %d complete, %d edges with throughput, %d host rows", progress, complete, active, rows)
	for _, d := range append([]*Daemon{c.Seeds[0]}, c.Peers...) {
		if _, ok := progress[d.Name]; !ok {
			t.Errorf("the page draws no peer on %s", d.Name)
		}
	}
	if rows != 5 {
		t.Errorf("the hosts table has %d rows; want 5", rows)
	}
	if done {
		for h, p := range progress {
			if p != 1 {
				t.Errorf("after the distribution %s shows progress %v; want 1", h, p)
			}
		}
		if complete != 5 {
			t.Errorf("after the distribution %d peers are drawn complete; want 5", complete)
		}
		return
	}
	if active == 0 {
		t.Error("mid-distribution the page shows no edge with throughput")
	}
}

// waitTask polls the scheduler's JSON until ok holds for task.
func waitTask(ctx context.Context, s *Service, task string, ok func(status.Task) bool) (status.Task, error) {
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return nil, err
		}
		return s.Host.Dial(ctx, network, ap)
	}}}
	var last status.Task
	for {
		resp, err := client.Get("http://" + s.Metrics + status.TaskPath(task))
		if err == nil {
			if resp.StatusCode == http.StatusOK {
				err = json.NewDecoder(resp.Body).Decode(&last)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil && ok(last) {
				return last, nil
			}
		}
		select {
		case <-ctx.Done():
			return last, fmt.Errorf("task %s never showed what the test waits for; last %+v", task, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func completeCount(t status.Task) int {
	n := 0
	for _, p := range t.Peers {
		if p.Complete {
			n++
		}
	}
	return n
}

// p2pctl runs p2pctl in the scheduler's host and returns its output.
func p2pctl(ctx context.Context, t *testing.T, c *Cluster, s *Service, args ...string) string {
	t.Helper()
	out, err := s.Host.Command(ctx, append([]string{filepath.Join(c.bin, "p2pctl")}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("p2pctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
