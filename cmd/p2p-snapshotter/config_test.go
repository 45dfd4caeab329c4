package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"

	"github.com/p2pimage/p2p-snapshotter/snapshotter"
)

// runCommand runs p2p-snapshotter with args and returns what it printed and its error.
func runCommand(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestConfigDefault(t *testing.T) {
	out, err := runCommand(t, "config", "default")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := snapshotter.ReadConfig(path)
	if err != nil {
		t.Fatalf("the printed default does not load: %v", err)
	}
	// Empty lists decode as empty, not nil.
	cfg.Registry.Insecure, cfg.P2P.Schedulers = nil, nil
	if want := snapshotter.DefaultConfig(); !reflect.DeepEqual(cfg, want) {
		t.Errorf("the printed default loads as %+v; want %+v", cfg, want)
	}
	if !strings.Contains(out, "# ") {
		t.Error("the printed default has no comments")
	}
}

func TestConfigContainerd(t *testing.T) {
	cfgPath := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(cfgPath, []byte("version = 1\naddress = \"/run/p2p/p2p.sock\"\n[mirror]\naddress = \"127.0.0.1:7000\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := runCommand(t, "config", "containerd", "--config", cfgPath, "--registry", "docker.io", "--registry", "registry.example.com:5000", "--dir", dir); err != nil {
		t.Fatal(err)
	}
	var fragment struct {
		ProxyPlugins map[string]struct {
			Type, Address string
			Exports       map[string]string
		} `toml:"proxy_plugins"`
		Plugins struct {
			Images struct {
				Snapshotter                string `toml:"snapshotter"`
				DisableSnapshotAnnotations bool   `toml:"disable_snapshot_annotations"`
			} `toml:"io.containerd.cri.v1.images"`
			Transfer struct {
				UnpackConfig []struct{ Platform, Snapshotter string } `toml:"unpack_config"`
			} `toml:"io.containerd.transfer.v1.local"`
		} `toml:"plugins"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "conf.d", "p2p-snapshotter.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := toml.Unmarshal(b, &fragment); err != nil {
		t.Fatalf("containerd's fragment: %v", err)
	}
	if p := fragment.ProxyPlugins["p2p"]; p.Type != "snapshot" || p.Address != "/run/p2p/p2p.sock" {
		t.Errorf("proxy_plugins.p2p = %+v; want a snapshot plugin at the daemon's socket", p)
	}
	// What CRI needs, either way it pulls (integration/e2e TestCRIPodFromLabels runs both).
	if fragment.ProxyPlugins["p2p"].Exports["enable_remote_snapshot_annotations"] != "true" {
		t.Error("the transfer service is not told to pass the layers' labels (enable_remote_snapshot_annotations)")
	}
	if im := fragment.Plugins.Images; im.Snapshotter != "p2p" || im.DisableSnapshotAnnotations {
		t.Errorf("CRI images: %+v; want the p2p snapshotter with the layers' labels", im)
	}
	if u := fragment.Plugins.Transfer.UnpackConfig; len(u) == 0 || u[0].Snapshotter != "p2p" || u[0].Platform == "" {
		t.Errorf("transfer service unpack_config %+v; want the p2p snapshotter for this platform", u)
	}
	for reg, server := range map[string]string{"docker.io": "https://registry-1.docker.io", "registry.example.com:5000": "https://registry.example.com:5000"} {
		var hosts struct {
			Server string
			Host   map[string]struct{ Capabilities []string }
		}
		b, err := os.ReadFile(filepath.Join(dir, "certs.d", reg, "hosts.toml"))
		if err != nil {
			t.Fatal(err)
		}
		if err := toml.Unmarshal(b, &hosts); err != nil {
			t.Fatalf("hosts.toml of %s: %v", reg, err)
		}
		if m := hosts.Host["http://127.0.0.1:7000"]; hosts.Server != server || len(m.Capabilities) != 2 {
			t.Errorf("hosts.toml of %s: %+v; want server %s and the mirror, for pull and resolve", reg, hosts, server)
		}
	}
	if _, err := runCommand(t, "config", "containerd"); err == nil {
		t.Error("no --registry: want an error")
	}
}

func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, file string
		want       []string // lines of the report
	}{
		{"good", "version = 1\n[cache]\nsize = \"2GiB\"\n", []string{"good.toml: ok"}},
		{"unknown key", "version = 1\n[cache]\nsize = \"2GiB\"\nsizes = 3\n", []string{"unknown key.toml:4:1: unknown key cache.sizes"}},
		{"bad values", "version = 1\nroot = \"relative\"\n\n[cache]\nblock_size = \"1KiB\"\n",
			[]string{"bad values.toml:2: root = \"relative\"", "bad values.toml:5: cache.block_size = 1KiB"}},
		{"a table's problem", "version = 1\n[p2p.tls]\nca = \"/ca.pem\"\n", []string{"a table's problem.toml:2: p2p.tls: ca, cert and key go together"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+".toml")
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := runCommand(t, "config", "check", path)
			if (err == nil) != (tc.name == "good") {
				t.Errorf("exit: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("the report has no %q:\n%s", w, out)
				}
			}
		})
	}
}
