package snapshotter

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pelletier/go-toml/v2"
)

// Defaults of the daemon's configuration.
const (
	DefaultAddress  = "/run/p2p-snapshotter/p2p-snapshotter.sock"
	DefaultRoot     = "/var/lib/p2p-snapshotter"
	DefaultLogLevel = "info"
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
}

// DefaultConfig returns the configuration used when no file or flag says otherwise.
func DefaultConfig() Config {
	return Config{
		Version:  1,
		Root:     DefaultRoot,
		Address:  DefaultAddress,
		LogLevel: DefaultLogLevel,
	}
}

// LoadConfig reads a TOML file over the defaults. Unknown keys are errors that name the
// key and its line, so a typo does not silently fall back to a default.
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

// Validate checks values that would otherwise fail later and less clearly.
func (c *Config) Validate() error {
	var errs []error
	if c.Version != 1 {
		errs = append(errs, fmt.Errorf("version = %d: this build reads version 1", c.Version))
	}
	if !filepath.IsAbs(c.Root) {
		errs = append(errs, fmt.Errorf("root = %q: must be an absolute path", c.Root))
	}
	if !filepath.IsAbs(c.Address) {
		errs = append(errs, fmt.Errorf("address = %q: must be an absolute socket path", c.Address))
	}
	switch c.LogLevel {
	case "trace", "debug", "info", "warn", "warning", "error", "fatal", "panic":
	default:
		errs = append(errs, fmt.Errorf("log_level = %q: want trace, debug, info, warn or error", c.LogLevel))
	}
	return errors.Join(errs...)
}
