package cluster

import (
	"archive/tar"
	"bufio"
	"context"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/p2pimage/p2p-snapshotter/integration/containerdenv"
	"github.com/p2pimage/p2p-snapshotter/integration/netlab"
	"github.com/p2pimage/p2p-snapshotter/layer/layertest"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("cluster tests need root: network namespaces, veths, tbf")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("cluster tests need iproute2's ip")
	}
}

// startCluster starts a cluster for t and pushes one image of a single layer holding a
// random file of size bytes; it returns the layer's source as the daemons see it.
func startCluster(t *testing.T, o Options, size int) (*Cluster, seed.Source) {
	t.Helper()
	c, src, _ := startClusterWithFiles(t, o, size)
	return c, src
}

// startClusterWithFiles is startCluster that also returns the layer's files.
func startClusterWithFiles(t *testing.T, o Options, size int) (*Cluster, seed.Source, []layertest.File) {
	t.Helper()
	c := startEmptyCluster(t, o)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	src, files := pushLayer(ctx, t, c, "test/dist:v1", size, 7)
	c.Registry.ResetCounters()
	return c, src, files
}

// pushLayer pushes an image of one layer, a file data.bin of size random bytes drawn from
// fill, to repoTag and returns the layer's source and files.
func pushLayer(ctx context.Context, t *testing.T, c *Cluster, repoTag string, size int, fill byte) (seed.Source, []layertest.File) {
	t.Helper()
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{fill}).Read(data)
	files := []layertest.File{{Header: tar.Header{Typeflag: tar.TypeReg, Name: "data.bin", Mode: 0o644, Format: tar.FormatPAX}, Data: data}}
	img, err := c.Registry.PushStored(ctx, repoTag, files)
	if err != nil {
		t.Fatal(err)
	}
	l := img.Layers[0]
	return seed.Source{
		Host: c.Registry.Addr, Repository: repoTag[:strings.LastIndexByte(repoTag, ':')],
		Blob:   ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.Digest(l.Digest), Size: l.Size},
		DiffID: digest.Digest(l.DiffID),
	}, files
}

// startEmptyCluster starts a cluster for t, its registry empty; the cluster and its
// directory go at the end of the test (the directory stays if the test failed).
func startEmptyCluster(t *testing.T, o Options) *Cluster {
	t.Helper()
	needRoot(t)
	if o.Dir == "" {
		o.Dir = filepath.Join(os.TempDir(), "p2p-cluster-"+o.Name)
		os.RemoveAll(o.Dir)
		t.Cleanup(func() {
			if !t.Failed() && os.Getenv("P2P_CLUSTER_KEEP") == "" {
				os.RemoveAll(o.Dir)
			}
		})
	}
	o.Race = containerdenv.RaceEnabled
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logTails(t, o.Dir)
		}
		c.Close()
	})
	t.Logf("cluster of %d peers, %d seeds, %d schedulers up in %s", o.Peers, o.Seeds, len(c.Schedulers), time.Since(start).Round(time.Millisecond))
	return c
}

// warmAll warms src on every daemon at once and returns each one's error.
func warmAll(ctx context.Context, ds []*Daemon, src seed.Source) []error {
	errs := make([]error, len(ds))
	var wg sync.WaitGroup
	for i, d := range ds {
		wg.Go(func() { errs[i] = d.Control.Warm(ctx, src) })
	}
	wg.Wait()
	return errs
}

// TestEightPeersOneRegistryCopy: a 64 MiB layer reaches 8 peers, each verifying it against
// its diffID, while the registry serves exactly one copy of its blob.
func TestEightPeersOneRegistryCopy(t *testing.T) {
	c, src := startCluster(t, Options{
		Name: "p2pd8", Subnet: netip.MustParsePrefix("10.213.8.0/24"), Peers: 8, Seeds: 1,
		Limits: netlab.Limits{Up: 400 * netlab.Mbit, Down: 400 * netlab.Mbit}, RegistryLimits: netlab.Limits{Up: 400 * netlab.Mbit},
		CacheSize: "160MiB", BlockSize: "1MiB",
	}, 64<<20)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	for i, err := range warmAll(ctx, c.Peers, src) {
		if err != nil {
			t.Errorf("peer %d: %v", i, err)
		}
	}
	t.Logf("8 peers warmed the layer in %s", time.Since(start).Round(time.Millisecond))
	if got := c.Registry.BytesOf(src.Blob.Digest); got != src.Blob.Size {
		t.Errorf("registry sent %d blob bytes, want exactly one copy (%d)", got, src.Blob.Size)
	}

	// The daemons' metrics tell the same story: every peer received the layer's blocks, each
	// fetch timed by source, and the peers and the seed sent them.
	var sent float64
	for _, d := range append([]*Daemon{c.Seeds[0]}, c.Peers...) {
		m, err := scrape(ctx, d.Metrics)
		if err != nil {
			t.Fatal(err)
		}
		sent += m["p2p_peer_upload_bytes_total"]
		if d.Name == "seed0" {
			continue
		}
		fetched := m[`p2p_block_fetch_duration_seconds_count{source="peer"}`] + m[`p2p_block_fetch_duration_seconds_count{source="seed"}`]
		if got := m["p2p_peer_download_bytes_total"]; got < 64<<20 || fetched < 64 {
			t.Errorf("%s's metrics: %v bytes received in %v fetches; want the 64 MiB layer's blocks", d.Name, got, fetched)
		}
	}
	if sent < 8*64<<20 {
		t.Errorf("the daemons' metrics show %v bytes sent to peers; want at least 8 copies of the layer", sent)
	}
}

// scrape returns the samples of the Prometheus metrics at addr, by name and labels as the
// text format writes them.
func scrape(ctx context.Context, addr string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.LastIndexByte(line, ' '); i > 0 && !strings.HasPrefix(line, "#") {
			if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
				out[line[:i]] = v
			}
		}
	}
	return out, sc.Err()
}

// TestParentKilledMidTransfer: a peer is killed (SIGKILL) while the others fetch from it;
// every other peer still completes.
func TestParentKilledMidTransfer(t *testing.T) {
	c, src := startCluster(t, Options{
		Name: "p2pdk", Subnet: netip.MustParsePrefix("10.213.9.0/24"), Peers: 5, Seeds: 1,
		Limits: netlab.Limits{Up: 200 * netlab.Mbit, Down: 200 * netlab.Mbit}, RegistryLimits: netlab.Limits{Up: 200 * netlab.Mbit},
		CacheSize: "96MiB", BlockSize: "1MiB", Topology: "tree",
	}, 48<<20)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	victim := c.Peers[0]
	errs := make(chan error, 1)
	go func() { errs <- victim.Control.Warm(ctx, src) }()
	time.Sleep(200 * time.Millisecond) // the victim joins the tree first, near its root
	done := make(chan []error, 1)
	go func() { done <- warmAll(ctx, c.Peers[1:], src) }()
	time.Sleep(time.Second)
	if err := victim.Proc.Kill(); err != nil {
		t.Fatal(err)
	}
	<-errs
	for i, err := range <-done {
		if err != nil && !strings.Contains(err.Error(), "context") {
			t.Errorf("peer %d after its parent died: %v", i+1, err)
		} else if err != nil {
			t.Errorf("peer %d did not complete in time: %v", i+1, err)
		}
	}
	if got := c.Registry.BytesOf(src.Blob.Digest); got != src.Blob.Size {
		t.Errorf("registry sent %d blob bytes, want one copy (%d)", got, src.Blob.Size)
	}
}

// logTails logs the last lines of every log in dir that are not debug lines.
func logTails(t *testing.T, dir string) {
	t.Logf("logs are in %s", dir)
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, p := range logs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var keep []string
		for _, line := range strings.Split(string(b), "\n") {
			if line != "" && !strings.Contains(line, "level=debug") {
				keep = append(keep, line)
			}
		}
		t.Logf("%s, last lines:\n%s", filepath.Base(p), strings.Join(keep[max(0, len(keep)-15):], "\n"))
	}
}
