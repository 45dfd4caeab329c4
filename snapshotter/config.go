package snapshotter

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	units "github.com/docker/go-units"
	"github.com/pelletier/go-toml/v2"

	"github.com/p2pimage/p2p-snapshotter/layer"
)

// Defaults of the daemon's configuration.
const (
	DefaultAddress       = "/run/p2p-snapshotter/p2p-snapshotter.sock"
	DefaultMirrorAddress = "127.0.0.1:65001"
	DefaultRoot          = "/var/lib/p2p-snapshotter"
	DefaultLogLevel      = "info"
)

// Config is the daemon's configuration, read from TOML. Flags override it.
type Config struct {
	// Version of the configuration format; 1.
	Version int `toml:"version"`
	// Root holds snapshots and metadata.
	Root string `toml:"root"`
	// Address is the unix socket on which containerd reaches the snapshotter.
	Address string `toml:"address"`
	// LogLevel is one of trace, debug, info, warn, error.
	LogLevel string `toml:"log_level"`
	// Mirror configures the node's registry mirror.
	Mirror MirrorConfig `toml:"mirror"`
	// Cache configures the in-memory block cache.
	Cache CacheConfig `toml:"cache"`
	// Registry configures how the daemon reaches registries.
	Registry RegistryConfig `toml:"registry"`
	// Lazy configures lazily mounted layers.
	Lazy LazyConfig `toml:"lazy"`
	// P2P configures the peer-to-peer network.
	P2P P2PConfig `toml:"p2p"`
	// Metrics serves Prometheus metrics; Debug serves Go's pprof profiles. Both are off
	// while their address is empty, as containerd's [metrics] and [debug].
	Metrics MetricsConfig `toml:"metrics"`
	Debug   DebugConfig   `toml:"debug"`
}

// P2PConfig configures this node as a peer: its block service, its scheduler, and what it
// tells the scheduler about itself.
type P2PConfig struct {
	// Address is the host:port the block service listens on; empty disables the P2P
	// network (every layer is then read from its registry).
	Address string `toml:"address"`
	// AdvertiseAddress is the host:port other peers reach the block service at; empty means
	// Address (which then must name a host, not 0.0.0.0).
	AdvertiseAddress string `toml:"advertise_address"`
	// Schedulers lists the schedulers' gRPC addresses (host:port; a name resolving to several
	// addresses counts as several). Empty runs a scheduler inside this daemon.
	Schedulers []string `toml:"schedulers"`
	// SchedulerCooldown is how long a scheduler that failed a call is skipped.
	SchedulerCooldown Duration `toml:"scheduler_cooldown"`
	// HostID names this node to the scheduler; empty derives it from the hostname and the
	// advertised address.
	HostID string `toml:"host_id"`
	// Seed makes this node a seed peer: the scheduler sends it layers to read from their
	// registries, and it keeps them on disk.
	Seed bool `toml:"seed"`
	// IDC and Location place the node for parent selection (Location is "a/b/c", compared
	// by prefix).
	IDC      string `toml:"idc"`
	Location string `toml:"location"`
	// UploadSlots bounds the blocks served at once; one more request is answered busy.
	UploadSlots int `toml:"upload_slots"`
	// UploadCapacity and DownloadCapacity are the node's link rates in bytes/s ("100MiB"),
	// 0 if unknown; the scheduler weighs parents by their free upload bandwidth.
	UploadCapacity   ByteSize `toml:"upload_capacity"`
	DownloadCapacity ByteSize `toml:"download_capacity"`
	// TLS, when its files are set, is this node's mutual-TLS identity towards peers and
	// schedulers: its block service then serves TLS only, and it speaks TLS to them.
	TLS TLSConfig `toml:"tls"`
}

// TLSConfig names the PEM files of a mutual-TLS identity: all three, or none for plaintext.
// With BootstrapToken instead of Cert and Key the node gets its certificate from a scheduler.
type TLSConfig struct {
	// CA signs every peer's and scheduler's certificate; Cert and Key are this node's.
	CA   string `toml:"ca"`
	Cert string `toml:"cert"`
	Key  string `toml:"key"`
	// BootstrapToken, presented to a scheduler that holds the CA's key, gets this node its
	// certificate (kept under root/tls/ and renewed before it expires).
	BootstrapToken string `toml:"bootstrap_token"`
}

// MetricsConfig configures the Prometheus endpoint.
type MetricsConfig struct {
	// Address is the host:port serving /metrics; empty for none.
	Address string `toml:"address"`
}

// DebugConfig configures the diagnostics endpoint.
type DebugConfig struct {
	// Address is the host:port serving /debug/pprof/; empty for none. Profiles show memory
	// and goroutines: bind it to loopback.
	Address string `toml:"address"`
}

// MirrorConfig configures the registry mirror that containerd is pointed at with hosts.toml;
// it learns which layer each snapshot holds when no labels say so.
type MirrorConfig struct {
	// Address is the host:port the mirror listens on; empty disables the mirror.
	Address string `toml:"address"`
}

// CacheConfig configures the block cache.
type CacheConfig struct {
	// Size bounds the memory the cache holds, e.g. "1GiB".
	Size ByteSize `toml:"size"`
	// BlockSize is the size of a block, e.g. "1MiB". Every node of a cluster must use the same.
	BlockSize ByteSize `toml:"block_size"`
}

// RegistryConfig configures the registry client.
type RegistryConfig struct {
	// HostsDir is a containerd certs.d directory of hosts.toml files (mirrors, TLS, plain HTTP).
	HostsDir string `toml:"hosts_dir"`
	// Insecure lists registries (host or host:port) reached over plain HTTP.
	Insecure []string `toml:"insecure"`
}

// LazyConfig configures lazily mounted layers.
type LazyConfig struct {
	// Enable mounts layers lazily when their source is known; when false every layer is
	// unpacked by containerd as with the overlayfs snapshotter.
	Enable bool `toml:"enable"`
	// Timeout bounds how long a Prepare waits for a layer this node has never seen (its one
	// streaming pass) before it falls back to a normal snapshot.
	Timeout Duration `toml:"timeout"`
	// FuseManager serves the FUSE layers from a separate process that the daemon starts and
	// that outlives it, so that restarting the daemon does not break running containers.
	FuseManager bool `toml:"fuse_manager"`
	// Stargz mounts eStargz and zstd:chunked layers from their table of contents, reading only
	// the chunks that are read, instead of with one pass over the whole blob.
	Stargz bool `toml:"stargz"`
}

//go:embed default.toml
var defaultTOML []byte

// DefaultTOML returns the default configuration as a TOML file, every key set to its default
// with a comment saying what it does (`p2p-snapshotter config default`; docs/config.md shows
// the same, and its test keeps both equal to DefaultConfig).
func DefaultTOML() []byte { return bytes.Clone(defaultTOML) }

// DefaultConfig returns the configuration used when no file or flag says otherwise.
func DefaultConfig() Config {
	return Config{
		Version:  1,
		Root:     DefaultRoot,
		Address:  DefaultAddress,
		LogLevel: DefaultLogLevel,
		Mirror:   MirrorConfig{Address: DefaultMirrorAddress},
		Cache:    CacheConfig{Size: 1 << 30, BlockSize: layer.DefaultBlockSize},
		Lazy:     LazyConfig{Enable: true, Timeout: Duration(5 * time.Minute), FuseManager: true, Stargz: true},
		P2P:      P2PConfig{SchedulerCooldown: Duration(30 * time.Second), UploadSlots: 16},
	}
}

// LoadConfig reads a TOML file over the defaults and validates the result. Unknown keys are
// errors that name the key and its line, so a typo does not silently fall back to a default.
func LoadConfig(path string) (Config, error) {
	cfg, err := ReadConfig(path)
	if err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

// ReadConfig is LoadConfig without the validation, for a caller that applies flags over the
// file first and validates the whole (a file may leave p2p.advertise_address to a flag).
func ReadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("read config: %w", err)
	}
	dec := toml.NewDecoder(bytes.NewReader(b)).DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			errs := make([]error, 0, len(strict.Errors))
			for _, e := range strict.Errors {
				row, col := e.Position()
				errs = append(errs, fmt.Errorf("config %s:%d:%d: unknown key %s", path, row, col, strings.Join(e.Key(), ".")))
			}
			return cfg, errors.Join(errs...)
		}
		var derr *toml.DecodeError
		if errors.As(err, &derr) {
			row, col := derr.Position()
			return cfg, fmt.Errorf("config %s:%d:%d: %w", path, row, col, err)
		}
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Validate checks values that would otherwise fail later and less clearly.
func (c *Config) Validate() error {
	var errs []error
	switch t := c.P2P.TLS; {
	case t.BootstrapToken != "":
		if t.CA == "" || t.Cert != "" || t.Key != "" || len(c.P2P.Schedulers) == 0 {
			errs = append(errs, errors.New("p2p.tls.bootstrap_token: needs p2p.tls.ca and p2p.schedulers, and gets cert and key itself (no p2p.tls.cert, p2p.tls.key)"))
		}
	case (t.CA != "" || t.Cert != "" || t.Key != "") && (t.CA == "" || t.Cert == "" || t.Key == ""):
		errs = append(errs, fmt.Errorf("p2p.tls: ca, cert and key go together (ca %q, cert %q, key %q)", t.CA, t.Cert, t.Key))
	}
	if c.Version != 1 {
		errs = append(errs, fmt.Errorf("version = %d: this build reads version 1", c.Version))
	}
	if !filepath.IsAbs(c.Root) {
		errs = append(errs, fmt.Errorf("root = %q: must be an absolute path", c.Root))
	}
	if !filepath.IsAbs(c.Address) {
		errs = append(errs, fmt.Errorf("address = %q: must be an absolute socket path", c.Address))
	}
	for _, a := range []struct{ key, addr string }{{"mirror.address", c.Mirror.Address}, {"metrics.address", c.Metrics.Address}, {"debug.address", c.Debug.Address}} {
		if a.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			errs = append(errs, fmt.Errorf("%s = %q: %w", a.key, a.addr, err))
		}
	}
	if c.Cache.BlockSize < layer.MinBlockSize || c.Cache.BlockSize > layer.MaxBlockSize {
		errs = append(errs, fmt.Errorf("cache.block_size = %s: want %s to %s", c.Cache.BlockSize, ByteSize(layer.MinBlockSize), ByteSize(layer.MaxBlockSize)))
	}
	if c.Cache.Size < c.Cache.BlockSize {
		errs = append(errs, fmt.Errorf("cache.size = %s: smaller than one block (%s)", c.Cache.Size, c.Cache.BlockSize))
	}
	if c.P2P.Address != "" {
		if _, _, err := net.SplitHostPort(c.P2P.Address); err != nil {
			errs = append(errs, fmt.Errorf("p2p.address = %q: %w", c.P2P.Address, err))
		}
		adv := c.P2P.AdvertiseAddress
		if adv == "" {
			adv = c.P2P.Address
		}
		if host, _, err := net.SplitHostPort(adv); err != nil || host == "" || net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified() {
			errs = append(errs, fmt.Errorf("p2p.advertise_address = %q: peers need a host they can reach (set it when p2p.address listens on every interface)", c.P2P.AdvertiseAddress))
		}
		for _, s := range c.P2P.Schedulers {
			if _, _, err := net.SplitHostPort(s); err != nil {
				errs = append(errs, fmt.Errorf("p2p.schedulers: %q: %w", s, err))
			}
		}
		if c.P2P.UploadSlots < 1 {
			errs = append(errs, fmt.Errorf("p2p.upload_slots = %d: must be at least 1", c.P2P.UploadSlots))
		}
		if c.P2P.SchedulerCooldown <= 0 {
			errs = append(errs, fmt.Errorf("p2p.scheduler_cooldown = %s: must be positive", c.P2P.SchedulerCooldown))
		}
	}
	if c.Lazy.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("lazy.timeout = %s: must be positive", c.Lazy.Timeout))
	}
	switch c.LogLevel {
	case "trace", "debug", "info", "warn", "warning", "error", "fatal", "panic":
	default:
		errs = append(errs, fmt.Errorf("log_level = %q: want trace, debug, info, warn or error", c.LogLevel))
	}
	return errors.Join(errs...)
}

// ByteSize is a size in bytes written in TOML as a string with a unit ("512MiB", "1GiB") or
// as a number of bytes.
type ByteSize int64

// UnmarshalText parses "512MiB", "1GiB", "1048576" and the like.
func (b *ByteSize) UnmarshalText(text []byte) error {
	n, err := units.RAMInBytes(string(text))
	if err != nil {
		return fmt.Errorf("size %q: %w", text, err)
	}
	*b = ByteSize(n)
	return nil
}

// MarshalText writes the size with a binary unit.
func (b ByteSize) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

func (b ByteSize) String() string { return units.BytesSize(float64(b)) }

// Duration is a time.Duration written in TOML as a string ("90s", "5m").
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
