package scheduler

import (
	"fmt"
	"time"

	"github.com/p2pimage/p2p-snapshotter/scheduler/clock"
	"github.com/p2pimage/p2p-snapshotter/scheduler/selection"
)

// Mode is the shape a task's peers form.
type Mode string

const (
	// ModeDAG gives each peer up to K parents chosen by the evaluator, with no cycle.
	ModeDAG Mode = "dag"
	// ModeTree arranges a task's peers in a FaaSNet balanced tree under its source.
	ModeTree Mode = "tree"
)

// Defaults of the options.
const (
	DefaultCandidates        = 3
	DefaultSampleSize        = 15
	DefaultMode              = ModeDAG
	DefaultFanOut            = 2
	DefaultMaxBackToSource   = 1
	DefaultKeepaliveInterval = 5 * time.Second
	DefaultKeepaliveMisses   = 3
)

// Limits on what a peer may send.
const (
	// maxBlockCount bounds a task's block count (and so every bitmap: 2 MiB).
	maxBlockCount = 1 << 24
	// maxCandidates bounds max_count of GetCandidateParents.
	maxCandidates = 64
	// watchQueue bounds the host commands waiting to be sent on one WatchHost stream; past it
	// the stream ends and the host, opening a new one, gets its pending commands again.
	watchQueue = 1024
)

// Option configures a Scheduler.
type Option func(*settings)

type settings struct {
	clock           clock.Clock
	weights         selection.Weights
	candidates      int
	sampleSize      int
	childLimit      int
	maxFailures     int
	mode            Mode
	taskModes       map[string]Mode
	fanOut          int
	maxBackToSource int
	interval        time.Duration
	misses          int
	seed            uint64
	seeded          bool
	manualSweep     bool
	observer        DurationObserver
	verifier        AccessVerifier
}

func defaultSettings() settings {
	return settings{
		clock:           clock.Real{},
		weights:         selection.DefaultWeights(),
		candidates:      DefaultCandidates,
		sampleSize:      DefaultSampleSize,
		childLimit:      selection.DefaultChildLimit,
		maxFailures:     selection.DefaultMaxFailures,
		mode:            DefaultMode,
		fanOut:          DefaultFanOut,
		maxBackToSource: DefaultMaxBackToSource,
		interval:        DefaultKeepaliveInterval,
		misses:          DefaultKeepaliveMisses,
	}
}

func (o *settings) validate() error {
	if err := o.weights.Validate(); err != nil {
		return err
	}
	switch {
	case o.candidates < 1 || o.candidates > maxCandidates:
		return fmt.Errorf("candidates = %d: want 1 to %d", o.candidates, maxCandidates)
	case o.sampleSize < o.candidates:
		return fmt.Errorf("sample size = %d: want at least the candidates (%d)", o.sampleSize, o.candidates)
	case o.childLimit < 1:
		return fmt.Errorf("child limit = %d: want at least 1", o.childLimit)
	case o.fanOut < 1:
		return fmt.Errorf("fan-out = %d: want at least 1", o.fanOut)
	case o.maxBackToSource < 0:
		return fmt.Errorf("max back-to-source = %d: want at least 0", o.maxBackToSource)
	case o.interval <= 0:
		return fmt.Errorf("keepalive interval = %s: want a positive duration", o.interval)
	case o.misses < 1:
		return fmt.Errorf("keepalive misses = %d: want at least 1", o.misses)
	}
	if err := o.mode.validate(); err != nil {
		return err
	}
	for id, m := range o.taskModes {
		if err := validTaskID(id); err != nil {
			return fmt.Errorf("task mode for %q: %w", id, err)
		}
		if err := m.validate(); err != nil {
			return fmt.Errorf("task mode for %s: %w", id, err)
		}
	}
	return nil
}

func (m Mode) validate() error {
	if m != ModeDAG && m != ModeTree {
		return fmt.Errorf("topology mode %q: want %q or %q", m, ModeDAG, ModeTree)
	}
	return nil
}

// WithClock sets the clock keepalive expiry runs on; the default is the wall clock.
func WithClock(c clock.Clock) Option { return func(o *settings) { o.clock = c } }

// WithWeights sets the evaluator's weights; the default is selection.DefaultWeights.
func WithWeights(w selection.Weights) Option { return func(o *settings) { o.weights = w } }

// WithCandidates sets K, the number of candidate parents returned when the peer does not
// ask for a number, and the number of parents of a peer in a DAG; the default is 3.
func WithCandidates(k int) Option { return func(o *settings) { o.candidates = k } }

// WithSampleSize sets how many candidates that pass the filter are scored per decision;
// the default is 15, as in Dragonfly.
func WithSampleSize(n int) Option { return func(o *settings) { o.sampleSize = n } }

// WithChildLimit sets the number of children that counts as a full load for a host that
// announced no upload slot limit; the default is 8.
func WithChildLimit(n int) Option { return func(o *settings) { o.childLimit = n } }

// WithMaxFailures sets how many failed block requests in a row make a parent failing; the
// default is 3.
func WithMaxFailures(n int) Option { return func(o *settings) { o.maxFailures = n } }

// WithTopology sets the default mode of new tasks and the tree's fan-out; the defaults are
// ModeDAG and 2.
func WithTopology(mode Mode, fanOut int) Option {
	return func(o *settings) { o.mode, o.fanOut = mode, fanOut }
}

// WithTaskMode sets the mode of one task, overriding the default.
func WithTaskMode(taskID string, mode Mode) Option {
	return func(o *settings) {
		if o.taskModes == nil {
			o.taskModes = make(map[string]Mode)
		}
		o.taskModes[taskID] = mode
	}
}

// WithMaxBackToSource sets how many peers of a task may read its source at a time when no
// seed can; the default is 1. Seeds do not count.
func WithMaxBackToSource(n int) Option { return func(o *settings) { o.maxBackToSource = n } }

// WithKeepalive sets the keepalive interval asked of hosts and how many intervals a host
// may stay silent before it is removed; the defaults are 5 s and 3.
func WithKeepalive(interval time.Duration, misses int) Option {
	return func(o *settings) { o.interval, o.misses = interval, misses }
}

// DurationObserver is told how long each parent decision took, in seconds; a
// prometheus.Histogram is one. Observe is called with the scheduler's lock held: it must be
// quick, safe for concurrent use, and must not call the Scheduler.
type DurationObserver interface {
	Observe(seconds float64)
}

// WithDecisionObserver has o told the duration of every parent decision: the time the core
// spends choosing one peer's parents (on registration, GetCandidateParents, reparenting or a
// retry of a starving peer), waiting for the lock excluded. The default observes nothing.
func WithDecisionObserver(o DurationObserver) Option {
	return func(s *settings) { s.observer = o }
}

// WithManualSweep keeps the scheduler from running its sweeper goroutine: the caller calls
// Sweep at the moments it chooses, so that a simulation driving a fake clock step by step is
// deterministic.
func WithManualSweep() Option { return func(o *settings) { o.manualSweep = true } }

// WithRandSeed makes the sampling of candidates deterministic, for tests and simulations.
func WithRandSeed(seed uint64) Option {
	return func(o *settings) { o.seed, o.seeded = seed, true }
}
