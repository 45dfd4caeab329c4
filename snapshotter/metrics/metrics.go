package metrics

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/p2pimage/p2p-snapshotter/blockcache"
	"github.com/p2pimage/p2p-snapshotter/p2p"
	"github.com/p2pimage/p2p-snapshotter/snapshotter"
	"github.com/p2pimage/p2p-snapshotter/snapshotter/layerfs"
)

// Namespace prefixes every metric of the daemon.
const Namespace = "p2p"

// FetchBuckets returns the upper bounds, in seconds, of the block fetch latency histogram:
// 1 ms to 10 s, a 1 MiB block taking about 10 ms at 1 Gbit/s and 1 s at 10 Mbit/s.
func FetchBuckets() []float64 {
	return []float64{1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 5, 10}
}

// Outcomes of a layer containerd prepared, as the layers counter labels them.
const (
	LayerLazy     = snapshotter.OutcomeLazy
	LayerFallback = snapshotter.OutcomeFallback
	LayerUnknown  = snapshotter.OutcomeUnknown
)

// Sources are the parts of the data plane whose own counts DataPlane reads at each scrape. A
// nil field is not reported.
type Sources struct {
	// Cache is the node's block cache.
	Cache interface{ Stats() blockcache.Stats }
	// CacheSize is the cache's bound in bytes.
	CacheSize int64
	// Uploaded and Downloaded return the bytes of blocks sent to and received from peers.
	Uploaded, Downloaded func() int64
}

// Metrics are the daemon's own metrics: the layers containerd prepared, and the Go runtime's
// and the process's. Make it with New, give LayerPrepared to the snapshotter, and serve
// Handler with the data plane's metrics beside.
type Metrics struct {
	reg    *prometheus.Registry
	layers *prometheus.CounterVec
}

// New returns the daemon's metrics.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		layers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "layers_prepared_total",
			Help: "Layers containerd prepared, by how they were served: lazy (mounted, nothing downloaded), fallback (the lazy path failed) or unknown (no source known); the last two containerd unpacked.",
		}, []string{"outcome"}),
	}
	for _, o := range []string{LayerLazy, LayerFallback, LayerUnknown} {
		m.layers.WithLabelValues(o) // shown at 0 before the first
	}
	m.reg.MustRegister(m.layers, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// LayerPrepared counts a layer containerd prepared, served as outcome says.
func (m *Metrics) LayerPrepared(outcome string) { m.layers.WithLabelValues(outcome).Inc() }

// Handler serves the daemon's metrics and those of dataPlane, if not nil (the data plane's,
// gathered from the process that holds it), in the Prometheus text format.
func (m *Metrics) Handler(dataPlane prometheus.Gatherer) http.Handler {
	var g prometheus.Gatherer = m.reg
	if dataPlane != nil {
		g = prometheus.Gatherers{m.reg, dataPlane}
	}
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// DataPlane are the data plane's metrics: the block cache, bytes to and from peers, and block
// fetch latency by source. The process that holds the data plane serves them (Handler), on
// its control socket; the daemon gathers them from there (TextGatherer).
type DataPlane struct {
	reg   *prometheus.Registry
	fetch *prometheus.HistogramVec
	fuse  *prometheus.HistogramVec
	// The histograms of the known labels, looked up once: they are observed on every FUSE
	// operation and every block fetched.
	byOp     map[string]prometheus.Observer
	bySource map[string]prometheus.Observer
}

// FUSEBuckets returns the upper bounds, in seconds, of the FUSE operation latency histogram:
// 10 µs (from memory) to 10 s (a read waiting for its blocks from afar).
func FUSEBuckets() []float64 {
	return []float64{10e-6, 50e-6, 100e-6, 500e-6, 1e-3, 5e-3, 10e-3, 50e-3, 100e-3, 500e-3, 1, 5, 10}
}

// NewDataPlane returns the data plane's metrics, reading src at each scrape.
func NewDataPlane(src Sources) *DataPlane {
	d := &DataPlane{
		reg: prometheus.NewRegistry(),
		fetch: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "block_fetch_duration_seconds",
			Help:    "Time to fetch one block, or read one range of a blob, this node did not hold, by where it came from: peer, seed or registry.",
			Buckets: FetchBuckets(),
		}, []string{"source"}),
	}
	d.fuse = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "fuse_operation_duration_seconds",
		Help:    "Time a lazily mounted layer took to answer a FUSE lookup, read or directory listing; a read includes fetching its blocks.",
		Buckets: FUSEBuckets(),
	}, []string{"op"})
	d.bySource, d.byOp = map[string]prometheus.Observer{}, map[string]prometheus.Observer{}
	for _, s := range []string{p2p.SourcePeer, p2p.SourceSeed, p2p.SourceRegistry} {
		d.bySource[s] = d.fetch.WithLabelValues(s)
	}
	for _, op := range []string{layerfs.OpLookup, layerfs.OpRead, layerfs.OpReaddir} {
		d.byOp[op] = d.fuse.WithLabelValues(op)
	}
	d.reg.MustRegister(d.fetch, d.fuse, &collector{src: src})
	return d
}

// ObserveFUSE records a FUSE operation that took took (fusemanager.WithOpObserver).
func (d *DataPlane) ObserveFUSE(op string, took time.Duration) {
	o, ok := d.byOp[op]
	if !ok {
		o = d.fuse.WithLabelValues(op)
	}
	o.Observe(took.Seconds())
}

// ObserveFetch records a block fetched from source in took (p2p.WithFetchObserver).
func (d *DataPlane) ObserveFetch(source string, took time.Duration) {
	o, ok := d.bySource[source]
	if !ok {
		o = d.fetch.WithLabelValues(source)
	}
	o.Observe(took.Seconds())
}

// Handler serves the data plane's metrics in the Prometheus text format.
func (d *DataPlane) Handler() http.Handler { return promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{}) }

// TextGatherer gathers metrics that fetch returns in the Prometheus text format: the data
// plane's, from the process that serves them.
type TextGatherer func() (io.ReadCloser, error)

// Gather implements prometheus.Gatherer.
func (t TextGatherer) Gather() ([]*dto.MetricFamily, error) {
	rc, err := t()
	if err != nil {
		return nil, fmt.Errorf("gather the data plane's metrics: %w", err)
	}
	defer rc.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(rc)
	if err != nil {
		return nil, fmt.Errorf("parse the data plane's metrics: %w", err)
	}
	out := make([]*dto.MetricFamily, 0, len(fams))
	for _, f := range fams {
		out = append(out, f)
	}
	return out, nil
}

// collector reads the counts of the daemon's parts at each scrape.
type collector struct{ src Sources }

var (
	descCacheHits      = desc("cache_hits_total", "Block lookups that found the block in the cache.")
	descCacheMisses    = desc("cache_misses_total", "Block lookups that did not find the block in the cache.")
	descCacheWaits     = desc("cache_inflight_waits_total", "Block lookups that waited for a fill already in flight (a block still arriving).")
	descCacheEvictions = desc("cache_evictions_total", "Blocks dropped from the cache to make room.")
	descCacheFillFails = desc("cache_fill_errors_total", "Block fills that failed.")
	descCacheBytes     = desc("cache_bytes", "Bytes of block buffers in use: resident, in flight or pinned.")
	descCacheBlocks    = desc("cache_blocks", "Blocks resident in the cache.")
	descCacheLimit     = desc("cache_limit_bytes", "The cache's bound.")
	descUploaded       = desc("peer_upload_bytes_total", "Bytes of blocks sent to peers.")
	descDownloaded     = desc("peer_download_bytes_total", "Bytes of blocks received from peers and seeds.")
	descGoroutines     = desc("data_plane_goroutines", "Goroutines of the process that holds the data plane (the FUSE manager).")
	descOpenFDs        = desc("data_plane_open_fds", "Open file descriptors of the process that holds the data plane (the FUSE manager).")
)

func desc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, nil, nil)
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCacheHits, descCacheMisses, descCacheWaits, descCacheEvictions, descCacheFillFails,
		descCacheBytes, descCacheBlocks, descCacheLimit, descUploaded, descDownloaded, descGoroutines, descOpenFDs} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	if c.src.Cache != nil {
		st := c.src.Cache.Stats()
		for d, v := range map[*prometheus.Desc]uint64{descCacheHits: st.Hits, descCacheMisses: st.Misses, descCacheWaits: st.InflightWaits,
			descCacheEvictions: st.Evictions, descCacheFillFails: st.FillErrors} {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
		}
		ch <- prometheus.MustNewConstMetric(descCacheBytes, prometheus.GaugeValue, float64(st.BytesHeld))
		ch <- prometheus.MustNewConstMetric(descCacheBlocks, prometheus.GaugeValue, float64(st.Blocks))
		ch <- prometheus.MustNewConstMetric(descCacheLimit, prometheus.GaugeValue, float64(c.src.CacheSize))
	}
	if c.src.Uploaded != nil {
		ch <- prometheus.MustNewConstMetric(descUploaded, prometheus.CounterValue, float64(c.src.Uploaded()))
	}
	if c.src.Downloaded != nil {
		ch <- prometheus.MustNewConstMetric(descDownloaded, prometheus.CounterValue, float64(c.src.Downloaded()))
	}
	ch <- prometheus.MustNewConstMetric(descGoroutines, prometheus.GaugeValue, float64(runtime.NumGoroutine()))
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		ch <- prometheus.MustNewConstMetric(descOpenFDs, prometheus.GaugeValue, float64(len(fds)))
	}
}
