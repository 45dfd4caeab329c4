package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/containerd/platforms"
	"github.com/spf13/cobra"

	"github.com/p2pimage/p2p-snapshotter/snapshotter"
)

func newConfigCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Print the default configuration, containerd's part of it, or check a file",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "default",
		Short: "Print the complete default configuration, every key commented",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := cmd.OutOrStdout().Write(snapshotter.DefaultTOML())
			return err
		},
	}, newConfigContainerdCommand(), newConfigCheckCommand())
	return cmd
}

// defaultCertsDir is where containerd looks for hosts.toml files (its config_path).
const defaultCertsDir = "/etc/containerd/certs.d"

func newConfigContainerdCommand() *cobra.Command {
	var (
		configPath, certsDir, dir string
		registries                []string
	)
	cmd := &cobra.Command{
		Use:   "containerd --registry HOST...",
		Short: "Print containerd's configuration for this daemon: the proxy plugin and the mirror's hosts.toml files",
		Long: `containerd prints what containerd needs to use this daemon: a configuration fragment with the
proxy snapshotter "p2p" at the daemon's socket (for containerd 2.x's conf.d imports), the CRI and
transfer service settings that pass image labels and read hosts.toml, and for each --registry
a hosts.toml that makes the daemon's registry mirror containerd's first host for it. The
addresses come from the daemon's configuration (--config, or the defaults). With --dir the
files are written under DIR (conf.d/p2p-snapshotter.toml, certs.d/HOST/hosts.toml), as
containerd's /etc/containerd would hold them; otherwise they are printed one after the other.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(registries) == 0 {
				return errors.New("name at least one --registry (docker.io, ghcr.io, registry.example.com:5000)")
			}
			cfg := snapshotter.DefaultConfig()
			if configPath != "" {
				var err error
				if cfg, err = snapshotter.LoadConfig(configPath); err != nil {
					return err
				}
			}
			if cfg.Mirror.Address == "" {
				return errors.New("mirror.address is empty: the daemon serves no registry mirror for hosts.toml to name")
			}
			files := []struct{ path, content string }{{"conf.d/p2p-snapshotter.toml", containerdFragment(cfg, certsDir)}}
			for _, r := range registries {
				if strings.ContainsAny(r, "/ ") || r == "" {
					return fmt.Errorf("--registry %q: want a registry host, host:port", r)
				}
				files = append(files, struct{ path, content string }{filepath.Join("certs.d", r, "hosts.toml"), hostsTOML(r, cfg.Mirror.Address)})
			}
			out := cmd.OutOrStdout()
			for i, f := range files {
				if dir != "" {
					path := filepath.Join(dir, f.path)
					if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
						return err
					}
					if err := os.WriteFile(path, []byte(f.content), 0o644); err != nil {
						return err
					}
					fmt.Fprintln(out, "wrote", path)
					continue
				}
				if i > 0 {
					fmt.Fprintln(out)
				}
				target := filepath.Join("/etc/containerd", f.path)
				if strings.HasPrefix(f.path, "certs.d/") {
					target = filepath.Join(certsDir, strings.TrimPrefix(f.path, "certs.d/"))
				}
				fmt.Fprintf(out, "# %s\n%s", target, f.content)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "the daemon's TOML configuration (default: the defaults)")
	f.StringArrayVar(&registries, "registry", nil, "a registry (host or host:port) to pull through the daemon's mirror; repeatable")
	f.StringVar(&certsDir, "certs-dir", defaultCertsDir, "containerd's hosts directory (config_path)")
	f.StringVar(&dir, "dir", "", "write the files under this directory instead of printing them")
	return cmd
}

// containerdFragment is containerd's configuration for the daemon of cfg.
func containerdFragment(cfg snapshotter.Config, certsDir string) string {
	return fmt.Sprintf(`# containerd 2.x imports /etc/containerd/conf.d/*.toml; restart containerd after a change.
version = 3

[proxy_plugins.p2p]
  type = "snapshot"
  address = %q
  [proxy_plugins.p2p.exports]
    # containerd >= 2.1 pulls for CRI through the transfer service: pass it the layers' labels.
    enable_remote_snapshot_annotations = "true"

[plugins."io.containerd.cri.v1.images"]
  # For Kubernetes: pods use the p2p snapshotter, with the layers' labels. On containerd
  # >= 2.1 this setting also has CRI pull by itself rather than through the transfer
  # service; remove it to pull through the transfer service, configured below.
  snapshotter = "p2p"
  disable_snapshot_annotations = false
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = %q

[plugins."io.containerd.transfer.v1.local"]
  config_path = %q
  # The snapshotters the transfer service may unpack into (p2p for CRI, overlayfs for others).
  [[plugins."io.containerd.transfer.v1.local".unpack_config]]
    platform = %q
    snapshotter = "p2p"
  [[plugins."io.containerd.transfer.v1.local".unpack_config]]
    platform = %q
    snapshotter = "overlayfs"
`, cfg.Address, certsDir, certsDir, platforms.DefaultString(), platforms.DefaultString())
}

// hostsTOML is the hosts.toml that puts the daemon's mirror at mirror before registry.
func hostsTOML(registry, mirror string) string {
	server := "https://" + registry
	if registry == "docker.io" {
		server = "https://registry-1.docker.io"
	}
	return fmt.Sprintf(`server = %q

[host."http://%s"]
  capabilities = ["pull", "resolve"]
`, server, mirror)
}

func newConfigCheckCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "check FILE",
		Short: "Report unknown keys and bad values of a configuration file, with their lines",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			problems, err := checkConfig(args[0])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for _, p := range problems {
				fmt.Fprintln(out, p)
			}
			if n := len(problems); n == 1 {
				return fmt.Errorf("%s: 1 problem", args[0])
			} else if n > 1 {
				return fmt.Errorf("%s: %d problems", args[0], n)
			}
			fmt.Fprintf(out, "%s: ok\n", args[0])
			return nil
		},
	}
}

// keyOfProblem finds the key a Validate message is about: "cache.block_size = ..." or
// "p2p.tls: ...".
var keyOfProblem = regexp.MustCompile(`^([a-z0-9_]+(?:\.[a-z0-9_]+)*)(?: =|:)`)

// checkConfig returns the problems of the configuration file at path, each "FILE:LINE: what"
// (or "FILE: what" for a key the file does not set): a file that does not decode fails on
// its first problem, as the daemon would; one that does is checked whole.
func checkConfig(path string) ([]string, error) {
	cfg, err := snapshotter.ReadConfig(path)
	if err != nil {
		return strings.Split(err.Error(), "\n"), nil
	}
	lines, err := keyLines(path)
	if err != nil {
		return nil, err
	}
	verr := cfg.Validate()
	if verr == nil {
		return nil, nil
	}
	var out []string
	for _, msg := range strings.Split(verr.Error(), "\n") {
		where := path
		if m := keyOfProblem.FindStringSubmatch(msg); m != nil {
			if line, ok := lines[m[1]]; ok {
				where = fmt.Sprintf("%s:%d", path, line)
			}
		}
		out = append(out, where+": "+msg)
	}
	return out, nil
}

// keyLines maps each dotted key a TOML file sets, and each table it opens, to its line.
func keyLines(path string) (map[string]int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	lines := map[string]int{}
	table := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			table = strings.Trim(strings.SplitN(line, "]", 2)[0], "[ ")
			lines[table] = n
		default:
			key, _, ok := strings.Cut(line, "=")
			if !ok {
				continue
			}
			full := strings.TrimSpace(key)
			if table != "" {
				full = table + "." + full
			}
			lines[full] = n
		}
	}
	return lines, sc.Err()
}
