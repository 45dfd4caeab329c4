package scheduler

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadConfig(t *testing.T) {
	tests := []struct {
		name    string
		toml    string
		check   func(t *testing.T, c Config)
		wantErr string
	}{
		{name: "empty file: defaults", toml: "", check: func(t *testing.T, c Config) {
			if c.Address != DefaultAddress || c.MetricsAddress != "" || c.Topology.Mode != ModeDAG || c.Selection.Candidates != 3 ||
				c.Selection.Weights.Bandwidth != 0.3 || time.Duration(c.Keepalive.Interval) != 5*time.Second || c.Seed.MaxBackToSource != 1 {
				t.Fatalf("got %+v; want the defaults", c)
			}
		}},
		{name: "every key", toml: `
version = 1
address = "127.0.0.1:7000"
metrics_address = "127.0.0.1:9103"
log_level = "debug"
[selection]
candidates = 4
sample_size = 20
child_limit = 6
max_failures = 5
[selection.weights]
bandwidth = 0.5
load = 0.1
blocks = 0.1
idc = 0.1
location = 0.1
host_type = 0.1
[topology]
mode = "tree"
fan_out = 3
[topology.tasks]
"sha256:0000000000000000000000000000000000000000000000000000000000000001" = "dag"
[seed]
max_back_to_source = 2
[keepalive]
interval = "2s"
misses = 4
`, check: func(t *testing.T, c Config) {
			if c.Address != "127.0.0.1:7000" || c.MetricsAddress != "127.0.0.1:9103" || c.LogLevel != "debug" || c.Selection.Candidates != 4 || c.Selection.SampleSize != 20 ||
				c.Selection.ChildLimit != 6 || c.Selection.MaxFailures != 5 || c.Selection.Weights.Bandwidth != 0.5 ||
				c.Topology.Mode != ModeTree || c.Topology.FanOut != 3 || len(c.Topology.Tasks) != 1 ||
				c.Seed.MaxBackToSource != 2 || time.Duration(c.Keepalive.Interval) != 2*time.Second || c.Keepalive.Misses != 4 {
				t.Fatalf("got %+v", c)
			}
			s, err := New(c.Options()...)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if s.KeepaliveInterval() != 2*time.Second || s.opts.mode != ModeTree || s.opts.fanOut != 3 {
				t.Fatalf("options not applied: %+v", s.opts)
			}
		}},
		{name: "unknown key", toml: "[topology]\nmodes = \"tree\"\n", wantErr: "modes"},
		{name: "bad mode", toml: "[topology]\nmode = \"ring\"\n", wantErr: `"ring"`},
		{name: "bad duration", toml: "[keepalive]\ninterval = \"five\"\n", wantErr: "five"},
		{name: "zero interval", toml: "[keepalive]\ninterval = \"0s\"\n", wantErr: "keepalive interval"},
		{name: "negative weight", toml: "[selection.weights]\nidc = -1\n", wantErr: "idc"},
		{name: "sample below K", toml: "[selection]\ncandidates = 5\nsample_size = 2\n", wantErr: "sample size"},
		{name: "bad task id", toml: "[topology.tasks]\n\"md5:00\" = \"tree\"\n", wantErr: "md5:00"},
		{name: "bad address", toml: "address = \"nowhere\"\n", wantErr: "address"},
		{name: "bad metrics address", toml: "metrics_address = \"9103\"\n", wantErr: "metrics_address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "scheduler.toml")
			if err := os.WriteFile(path, []byte(tt.toml), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := LoadConfig(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v; want one naming %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}
