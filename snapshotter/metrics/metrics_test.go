package metrics_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"
	"time"

	"github.com/p2pimage/p2p-snapshotter/blockcache"
	"github.com/p2pimage/p2p-snapshotter/p2p"
	"github.com/p2pimage/p2p-snapshotter/snapshotter/layerfs"
	"github.com/p2pimage/p2p-snapshotter/snapshotter/metrics"
)

type fakeCache struct{ st blockcache.Stats }

func (f fakeCache) Stats() blockcache.Stats { return f.st }

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s, %v", url, resp.Status, err)
	}
	return string(b)
}

// TestDaemonGathersTheDataPlane: the daemon's /metrics serves its own metrics and the data
// plane's, gathered from where the data plane serves them (the FUSE manager's socket), with
// the values the parts count and the observations made.
func TestDaemonGathersTheDataPlane(t *testing.T) {
	dp := metrics.NewDataPlane(metrics.Sources{
		Cache:     fakeCache{blockcache.Stats{Hits: 7, Misses: 3, InflightWaits: 2, Evictions: 1, Blocks: 4, BytesHeld: 4 << 20}},
		CacheSize: 64 << 20,
		Uploaded:  func() int64 { return 1000 },
		Downloaded: func() int64 {
			return 2000
		},
	})
	dp.ObserveFetch(p2p.SourceSeed, 30*time.Millisecond)
	dp.ObserveFetch(p2p.SourceSeed, 3*time.Millisecond)
	dp.ObserveFetch(p2p.SourceRegistry, 200*time.Millisecond)
	dp.ObserveFUSE(layerfs.OpRead, 2*time.Millisecond)
	manager := httptest.NewServer(dp.Handler())
	defer manager.Close()

	m := metrics.New()
	m.LayerPrepared(metrics.LayerLazy)
	m.LayerPrepared(metrics.LayerLazy)
	m.LayerPrepared(metrics.LayerFallback)
	gather := metrics.TextGatherer(func() (io.ReadCloser, error) {
		resp, err := http.Get(manager.URL)
		if err != nil {
			return nil, err
		}
		return resp.Body, nil
	})
	daemon := httptest.NewServer(m.Handler(gather))
	defer daemon.Close()

	got := scrape(t, daemon.URL)
	for _, want := range []string{
		`p2p_layers_prepared_total{outcome="lazy"} 2`,
		`p2p_layers_prepared_total{outcome="fallback"} 1`,
		`p2p_layers_prepared_total{outcome="unknown"} 0`,
		`p2p_cache_hits_total 7`,
		`p2p_cache_misses_total 3`,
		`p2p_cache_inflight_waits_total 2`,
		`p2p_cache_evictions_total 1`,
		`p2p_cache_bytes 4.194304e\+06`,
		`p2p_cache_limit_bytes 6.7108864e\+07`,
		`p2p_peer_upload_bytes_total 1000`,
		`p2p_peer_download_bytes_total 2000`,
		`p2p_block_fetch_duration_seconds_count{source="seed"} 2`,
		`p2p_block_fetch_duration_seconds_bucket{source="seed",le="0.005"} 1`,
		`p2p_block_fetch_duration_seconds_count{source="registry"} 1`,
		`p2p_block_fetch_duration_seconds_count{source="peer"} 0`,
		`p2p_fuse_operation_duration_seconds_count{op="read"} 1`,
		`p2p_fuse_operation_duration_seconds_count{op="lookup"} 0`,
		`go_goroutines \d+`,
		`p2p_data_plane_goroutines \d+`,
		`p2p_data_plane_open_fds \d+`,
	} {
		if !regexp.MustCompile(`(?m)^` + want + `$`).MatchString(got) {
			t.Errorf("/metrics has no line %q", want)
		}
	}

	// The data plane gone (a FUSE manager restarting): the daemon's own metrics still serve.
	manager.Close()
	if got := scrape(t, daemon.URL); !regexp.MustCompile(`(?m)^p2p_layers_prepared_total\{outcome="lazy"\} 2$`).MatchString(got) {
		t.Errorf("with the data plane unreachable: got\n%s\nwant the daemon's own metrics", got)
	}
}
