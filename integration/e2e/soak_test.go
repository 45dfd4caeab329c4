package e2e

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/p2pimage/p2p-snapshotter/integration/containerdenv"
)

// soakCycles is how many containers TestNoLeaksOver200Starts starts and removes
// (P2P_SOAK_CYCLES overrides it).
const soakCycles = 200

// Leak bounds: what may be left after soakCycles starts beyond what was there after the
// warm-up. A goroutine or descriptor leaked per start would exceed them many times over.
const (
	soakGoroutineSlack = 20
	soakFDSlack        = 10
)

// TestNoLeaksOver200Starts starts and removes 200 containers on lazily mounted layers with
// plain nerdctl, and checks that neither the daemon nor its FUSE manager (the data plane)
// keeps more goroutines or file descriptors than after the first few, and that no mount is
// left behind: each container's overlayfs goes with it, while the layers stay mounted once.
func TestNoLeaksOver200Starts(t *testing.T) {
	cycles := soakCycles
	if v := os.Getenv("P2P_SOAK_CYCLES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("P2P_SOAK_CYCLES=%q: %v", v, err)
		}
		cycles = n
	}
	metricsAddr := freeAddress(t)
	env, reg := setupMirror(t, containerdenv.Options{SnapshotterArgs: []string{"--metrics-address", metricsAddr}}, true)
	img := containerdenv.PushTestImage(t, reg, "test/soak:v1")
	start := func() { run(t, env, "p2p", img, "cat", "/etc/hostname") }
	for range 5 { // warm-up: the layers are seeded and mounted, pools filled
		start()
	}
	before := soakSample(t, metricsAddr)
	t.Logf("after the warm-up: %+v", before)
	began := time.Now()
	for i := range cycles {
		start()
		if i%50 == 49 {
			t.Logf("%d starts, %s", i+1, time.Since(began).Round(time.Second))
		}
	}
	// Goroutines of a finished request may take a moment to end (connections idling out).
	var after soakState
	deadline := time.Now().Add(30 * time.Second)
	for {
		after = soakSample(t, metricsAddr)
		if after.within(before) || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	t.Logf("after %d more starts in %s: %+v", cycles, time.Since(began).Round(time.Second), after)
	if !after.within(before) {
		t.Errorf("leak over %d starts: before %+v, after %+v (slack %d goroutines, %d descriptors, no mount)",
			cycles, before, after, soakGoroutineSlack, soakFDSlack)
	}
	if got := countFUSE(t, env.SnapshotterRoot); got != len(img.Layers) {
		t.Errorf("%d FUSE layer mounts after the starts; want the image's %d, each once", got, len(img.Layers))
	}
}

// soakState is what TestNoLeaksOver200Starts compares.
type soakState struct {
	DaemonGoroutines, DaemonFDs int
	DataGoroutines, DataFDs     int
	Mounts                      int
}

func (s soakState) within(base soakState) bool {
	return s.DaemonGoroutines <= base.DaemonGoroutines+soakGoroutineSlack && s.DataGoroutines <= base.DataGoroutines+soakGoroutineSlack &&
		s.DaemonFDs <= base.DaemonFDs+soakFDSlack && s.DataFDs <= base.DataFDs+soakFDSlack && s.Mounts <= base.Mounts
}

// soakSample reads the daemon's metrics and this machine's mount table.
func soakSample(t *testing.T, metricsAddr string) soakState {
	t.Helper()
	body := scrapeMetrics(t, metricsAddr)
	value := func(name string) int {
		m := regexp.MustCompile(`(?m)^` + name + ` ([0-9.e+]+)$`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("the daemon's metrics have no %s", name)
		}
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			t.Fatal(err)
		}
		return int(v)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return soakState{
		DaemonGoroutines: value("go_goroutines"), DaemonFDs: value("process_open_fds"),
		DataGoroutines: value("p2p_data_plane_goroutines"), DataFDs: value("p2p_data_plane_open_fds"),
		Mounts: strings.Count(string(mounts), "\n"),
	}
}
