// Package metrics exports a scheduler's state and decisions as Prometheus metrics.
//
// Metrics owns a prometheus.Registry of its own (no global registry): the scheduler's
// gauges and counters are read from scheduler.Stats when scraped, so the core keeps plain
// counters under its own lock and knows nothing of Prometheus; the decision latency
// histogram is fed by the core through scheduler.WithDecisionObserver. The Go runtime and
// process collectors are registered beside them. Serve exposes the registry at /metrics.
//
// Wiring, as cmd/p2p-scheduler does it:
//
//	m := metrics.New()
//	core, err := scheduler.New(append(opts, m.Option())...)
//	...
//	m.Track(core)
//	go metrics.Serve(ctx, ln, m.Handler())
//
// The metrics, all prefixed p2p_scheduler_:
//
//	hosts                          gauge      hosts announced and not removed
//	seed_hosts                     gauge      seed hosts that can be asked to seed (watching)
//	tasks                          gauge      tasks with at least one peer
//	peers                          gauge      peers registered, seed peers included
//	starving_peers                 gauge      peers waiting for a parent
//	back_to_source_peers           gauge      peers reading their task's source, seeds excluded
//	decisions_total                counter    parent decisions
//	decision_duration_seconds      histogram  time to decide one peer's parents, lock wait excluded
//	back_to_source_total           counter    peers sent back to the source (no seed could)
//	seed_triggers_total            counter    seed hosts asked to read a task
//	peers_reparented_total         counter    peers given new parents after a parent left or went bad
//	hosts_expired_total            counter    hosts removed for missing their keepalives
package metrics
