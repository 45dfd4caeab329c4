package metrics

import (
	"errors"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/p2pimage/p2p-snapshotter/scheduler"
)

// Namespace prefixes every metric of the scheduler.
const Namespace = "p2p_scheduler"

// DecisionBuckets returns the upper bounds, in seconds, of the decision latency histogram:
// 10 µs to 10 ms in 1–2.5–5 steps, so that the 5 ms goal of issue 5 is a bucket bound. A
// tree decision (a few µs) falls in the first bucket, a DAG decision at 10,000 peers in the
// first three.
func DecisionBuckets() []float64 {
	return []float64{10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3}
}

// Stater is the part of scheduler.Scheduler that Metrics reads.
type Stater interface {
	Stats() scheduler.Stats
}

// Metrics are a scheduler's metrics in a registry of their own. Make it with New, give
// Option to scheduler.New, then Track the scheduler it made.
type Metrics struct {
	reg      *prometheus.Registry
	duration prometheus.Histogram
}

// New returns the metrics, with the Go runtime and process collectors registered and the
// scheduler's not yet (Track).
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace,
			Name:      "decision_duration_seconds",
			Help:      "Time the scheduler took to decide one peer's parents, waiting for its lock excluded.",
			Buckets:   DecisionBuckets(),
		}),
	}
	m.reg.MustRegister(
		m.duration,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Option has the scheduler report each decision's duration to the histogram.
func (m *Metrics) Option() scheduler.Option { return scheduler.WithDecisionObserver(m.duration) }

// Track registers the gauges and counters of s, read at each scrape. A Metrics tracks one
// scheduler: a second Track fails.
func (m *Metrics) Track(s Stater) error {
	if err := m.reg.Register(newStatsCollector(s)); err != nil {
		var dup prometheus.AlreadyRegisteredError
		if errors.As(err, &dup) {
			return errors.New("metrics: already tracking a scheduler")
		}
		return err
	}
	return nil
}

// Registry returns the registry, for callers that add metrics of their own.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// stat is one metric read from scheduler.Stats.
type stat struct {
	desc  *prometheus.Desc
	typ   prometheus.ValueType
	value func(*scheduler.Stats) float64
}

// statsCollector reads its metrics from one Stats call per scrape, so that they agree with
// each other.
type statsCollector struct {
	s     Stater
	stats []stat
}

func newStatsCollector(s Stater) *statsCollector {
	def := func(name, help string, typ prometheus.ValueType, v func(*scheduler.Stats) float64) stat {
		return stat{prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, nil, nil), typ, v}
	}
	g, c := prometheus.GaugeValue, prometheus.CounterValue
	return &statsCollector{s: s, stats: []stat{
		def("hosts", "Hosts announced and not removed.", g, func(st *scheduler.Stats) float64 { return float64(st.Hosts) }),
		def("seed_hosts", "Seed hosts with an open WatchHost stream, which can be asked to seed a task.", g, func(st *scheduler.Stats) float64 { return float64(st.Seeds) }),
		def("tasks", "Tasks with at least one peer.", g, func(st *scheduler.Stats) float64 { return float64(st.Tasks) }),
		def("peers", "Peers registered over all tasks, seed peers included.", g, func(st *scheduler.Stats) float64 { return float64(st.Peers) }),
		def("starving_peers", "Peers waiting for a parent.", g, func(st *scheduler.Stats) float64 { return float64(st.Starving) }),
		def("back_to_source_peers", "Peers reading their task's source now, seed peers excluded.", g, func(st *scheduler.Stats) float64 { return float64(st.BackToSource) }),
		def("decisions_total", "Parent decisions: one peer's parents chosen.", c, func(st *scheduler.Stats) float64 { return float64(st.Decisions) }),
		def("back_to_source_total", "Peers told to read their task's source because no seed could.", c, func(st *scheduler.Stats) float64 { return float64(st.SentBackToSource) }),
		def("seed_triggers_total", "Seed hosts asked to read a task.", c, func(st *scheduler.Stats) float64 { return float64(st.SeedTriggers) }),
		def("peers_reparented_total", "Peers given new parents because a parent left, went bad or moved in a tree.", c, func(st *scheduler.Stats) float64 { return float64(st.Reparented) }),
		def("hosts_expired_total", "Hosts removed for missing their keepalives.", c, func(st *scheduler.Stats) float64 { return float64(st.HostsExpired) }),
	}}
}

// Describe implements prometheus.Collector.
func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, s := range c.stats {
		ch <- s.desc
	}
}

// Collect implements prometheus.Collector.
func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	for _, s := range c.stats {
		ch <- prometheus.MustNewConstMetric(s.desc, s.typ, s.value(&st))
	}
}
