package scheduler

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/p2pimage/p2p-snapshotter/scheduler/selection"
)

// Defaults of the service's configuration.
const (
	DefaultAddress  = "0.0.0.0:65003"
	DefaultLogLevel = "info"
)

// Config is the p2p-scheduler service's configuration, read from TOML; flags override it.
// Options turns it into the core's options. Every key is optional:
//
//	version = 1
//	address = "0.0.0.0:65003"
//	metrics_address = ""  # host:port of /metrics; empty: no metrics server
//	log_level = "info"
//
//	[selection]
//	candidates = 3        # K: parents returned, and parents per peer in a DAG
//	sample_size = 15      # candidates that pass the filter scored per decision
//	child_limit = 8       # children that count as a full load (hosts without upload_slots)
//	max_failures = 3      # failed requests in a row that make a parent bad
//	[selection.weights]
//	bandwidth = 0.3
//	load = 0.2
//	blocks = 0.1
//	idc = 0.2
//	location = 0.1
//	host_type = 0.1
//
//	[topology]
//	mode = "dag"          # or "tree"
//	fan_out = 2           # tree mode
//	[topology.tasks]      # per-task mode, overriding mode
//	"sha256:…" = "tree"
//
//	[seed]
//	max_back_to_source = 1
//
//	[registry]            # to check proofs of access to private repositories
//	hosts_dir = ""        # containerd certs.d directory (TLS, plain HTTP)
//	insecure = []         # registries reached over plain HTTP
//
//	[keepalive]
//	interval = "5s"
//	misses = 3
type Config struct {
	// Version of the configuration format; 1.
	Version int `toml:"version"`
	// Address is the host:port the gRPC service listens on.
	Address string `toml:"address"`
	// MetricsAddress is the host:port of the HTTP server exposing Prometheus metrics at
	// /metrics; empty (the default) runs none.
	MetricsAddress string `toml:"metrics_address"`
	// LogLevel is one of trace, debug, info, warn, error.
	LogLevel  string          `toml:"log_level"`
	Selection SelectionConfig `toml:"selection"`
	Topology  TopologyConfig  `toml:"topology"`
	Seed      SeedConfig      `toml:"seed"`
	Keepalive KeepaliveConfig `toml:"keepalive"`
	// TLS, when its files are set, has the gRPC service speak mutual TLS only: every host
	// and client must present a certificate the CA signed.
	TLS TLSConfig `toml:"tls"`
	// Registry says how the scheduler reaches registries, to check the proofs of access
	// hosts give for private tasks (a HEAD of the blob with the host's token).
	Registry RegistryConfig `toml:"registry"`
}

// RegistryConfig configures how the scheduler reaches registries, as the daemon's
// [registry] does.
type RegistryConfig struct {
	// HostsDir is a containerd certs.d directory of hosts.toml files (TLS, plain HTTP).
	HostsDir string `toml:"hosts_dir"`
	// Insecure lists registries (host or host:port) reached over plain HTTP.
	Insecure []string `toml:"insecure"`
}

// TLSConfig names the PEM files of a mutual-TLS identity: all three, or none for plaintext.
// With CAKey instead of Cert and Key the scheduler is the cluster's CA (package issuer).
type TLSConfig struct {
	// CA signs every host's and client's certificate; Cert and Key are this scheduler's.
	CA   string `toml:"ca"`
	Cert string `toml:"cert"`
	Key  string `toml:"key"`
	// CAKey is the CA's private key: the scheduler then issues its own certificate and those
	// of hosts that present one of BootstrapTokens, valid for CertificateTTL, and renews them.
	CAKey           string   `toml:"ca_key"`
	BootstrapTokens []string `toml:"bootstrap_tokens"`
	CertificateTTL  Duration `toml:"certificate_ttl"`
}

// SelectionConfig configures parent selection (package selection).
type SelectionConfig struct {
	// Candidates is K: the parents returned when a peer asks for no number, and the parents
	// of a peer in a DAG.
	Candidates int `toml:"candidates"`
	// SampleSize is how many candidates that pass the filter are scored per decision.
	SampleSize int `toml:"sample_size"`
	// ChildLimit is the number of children that counts as a full load for a host that
	// announced no upload slot limit.
	ChildLimit int `toml:"child_limit"`
	// MaxFailures failed block requests in a row make a parent bad.
	MaxFailures int `toml:"max_failures"`
	// Weights of the evaluator's terms.
	Weights selection.Weights `toml:"weights"`
}

// TopologyConfig configures the shape of tasks.
type TopologyConfig struct {
	// Mode of new tasks: "dag" or "tree".
	Mode Mode `toml:"mode"`
	// FanOut is the most children of a tree node.
	FanOut int `toml:"fan_out"`
	// Tasks maps task ids to the mode they use instead of Mode.
	Tasks map[string]Mode `toml:"tasks"`
}

// SeedConfig configures seeding.
type SeedConfig struct {
	// MaxBackToSource is how many peers of a task may read its source at a time when no seed
	// can; 0 sends no peer to the source.
	MaxBackToSource int `toml:"max_back_to_source"`
}

// KeepaliveConfig configures host liveness.
type KeepaliveConfig struct {
	// Interval between keepalives asked of hosts.
	Interval Duration `toml:"interval"`
	// Misses is how many intervals a host may stay silent before it is removed.
	Misses int `toml:"misses"`
}

// DefaultConfig returns the configuration used when no file or flag says otherwise.
func DefaultConfig() Config {
	return Config{
		Version:  1,
		Address:  DefaultAddress,
		LogLevel: DefaultLogLevel,
		Selection: SelectionConfig{
			Candidates:  DefaultCandidates,
			SampleSize:  DefaultSampleSize,
			ChildLimit:  selection.DefaultChildLimit,
			MaxFailures: selection.DefaultMaxFailures,
			Weights:     selection.DefaultWeights(),
		},
		Topology:  TopologyConfig{Mode: DefaultMode, FanOut: DefaultFanOut},
		Seed:      SeedConfig{MaxBackToSource: DefaultMaxBackToSource},
		Keepalive: KeepaliveConfig{Interval: Duration(DefaultKeepaliveInterval), Misses: DefaultKeepaliveMisses},
		TLS:       TLSConfig{CertificateTTL: Duration(24 * time.Hour)},
	}
}

// LoadConfig reads a TOML file over the defaults. Unknown keys are errors that name the key
// and its line, so a typo does not silently fall back to a default.
func LoadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("read config: %w", err)
	}
	dec := toml.NewDecoder(bytes.NewReader(b)).DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			return cfg, fmt.Errorf("config %s: %s", path, strict.String())
		}
		var derr *toml.DecodeError
		if errors.As(err, &derr) {
			row, col := derr.Position()
			return cfg, fmt.Errorf("config %s:%d:%d: %w", path, row, col, err)
		}
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, cfg.Validate()
}

// Validate checks every value, naming the key of each that is wrong.
func (c *Config) Validate() error {
	var errs []error
	switch t := c.TLS; {
	case t.CAKey != "":
		if t.CA == "" || t.Cert != "" || t.Key != "" {
			errs = append(errs, fmt.Errorf("tls.ca_key: the issuing scheduler needs tls.ca and makes its own certificate (no tls.cert, tls.key)"))
		}
		if time.Duration(t.CertificateTTL) < time.Minute {
			errs = append(errs, fmt.Errorf("tls.certificate_ttl = %s: want at least a minute", time.Duration(t.CertificateTTL)))
		}
	case (t.CA != "" || t.Cert != "" || t.Key != "") && (t.CA == "" || t.Cert == "" || t.Key == ""):
		errs = append(errs, fmt.Errorf("tls: ca, cert and key go together (ca %q, cert %q, key %q)", t.CA, t.Cert, t.Key))
	}
	if c.Version != 1 {
		errs = append(errs, fmt.Errorf("version = %d: this build reads version 1", c.Version))
	}
	if _, _, err := net.SplitHostPort(c.Address); err != nil {
		errs = append(errs, fmt.Errorf("address = %q: %w", c.Address, err))
	}
	if c.MetricsAddress != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddress); err != nil {
			errs = append(errs, fmt.Errorf("metrics_address = %q: %w", c.MetricsAddress, err))
		}
	}
	switch c.LogLevel {
	case "trace", "debug", "info", "warn", "warning", "error", "fatal", "panic":
	default:
		errs = append(errs, fmt.Errorf("log_level = %q: want trace, debug, info, warn or error", c.LogLevel))
	}
	o := defaultSettings()
	for _, opt := range c.Options() {
		opt(&o)
	}
	if err := o.validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Options returns the core's options for c.
func (c *Config) Options() []Option {
	opts := []Option{
		WithCandidates(c.Selection.Candidates),
		WithSampleSize(c.Selection.SampleSize),
		WithChildLimit(c.Selection.ChildLimit),
		WithMaxFailures(c.Selection.MaxFailures),
		WithWeights(c.Selection.Weights),
		WithTopology(c.Topology.Mode, c.Topology.FanOut),
		WithMaxBackToSource(c.Seed.MaxBackToSource),
		WithKeepalive(time.Duration(c.Keepalive.Interval), c.Keepalive.Misses),
	}
	for id, m := range c.Topology.Tasks {
		opts = append(opts, WithTaskMode(id, m))
	}
	return opts
}

// Duration is a time.Duration written in TOML as a string ("5s", "1m30s").
type Duration time.Duration

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

func (d Duration) String() string { return time.Duration(d).String() }
