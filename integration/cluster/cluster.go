package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/p2pimage/p2p-snapshotter/integration/containerdenv"
	"github.com/p2pimage/p2p-snapshotter/integration/netlab"
	"github.com/p2pimage/p2p-snapshotter/p2p/tlsfiles"
	"github.com/p2pimage/p2p-snapshotter/snapshotter/fusemanager"
)

// Ports the cluster's services listen on, inside their hosts.
const (
	registryPort  = 5000
	schedulerPort = 65003
	blockPort     = 65002
	metricsPort   = 9103
)

// Options describe a cluster.
type Options struct {
	// Name is the lab's name (at most 6 characters); Subnet its private IPv4 prefix.
	Name   string
	Subnet netip.Prefix
	// Peers, Seeds and Schedulers count the hosts of each role (Schedulers at least 1).
	Peers, Seeds, Schedulers int
	// Limits caps every peer's and seed's link; RegistryLimits the registry's.
	Limits, RegistryLimits netlab.Limits
	// CacheSize and BlockSize configure every daemon ("256MiB", "1MiB").
	CacheSize, BlockSize string
	// Topology is the schedulers' mode, "dag" or "tree" ("" for their default).
	Topology string
	// TLS, if set, gives each host (by name: "sched0", "seed0", "peer0"…) the files of its
	// mutual-TLS identity: every scheduler and daemon then speaks mutual TLS only.
	TLS func(host string) tlsfiles.Files
	// Issuing, if set, makes the schedulers the cluster's CA (with its certificate and key
	// files) and has every daemon get its certificate from them with the bootstrap token.
	Issuing *Issuing
	// SchedulerConfig, if set, is a p2p-scheduler TOML file every scheduler reads (--config);
	// the options above still win.
	SchedulerConfig string
	// Private, if set, guards the registry's repositories whose names start with its
	// Prefix with its Auth (enable it after pushing); DockerConfig gives each daemon, by
	// name, the docker config directory it reads credentials from ("" for none).
	Private *Private
	// Dir holds the daemons' roots and logs.
	Dir string
	// Race builds the binaries with the race detector.
	Race bool
}

// Private makes some of the registry's repositories private.
type Private struct {
	Auth         *containerdenv.TokenAuth
	Prefix       string
	DockerConfig func(host, registry string) string
}

// Issuing is a CA the schedulers hold, and the token the daemons present.
type Issuing struct {
	CA, CAKey, Token string
}

// Cluster is a running cluster.
type Cluster struct {
	Lab        *netlab.Lab
	Registry   *Registry
	Schedulers []*Service
	Seeds      []*Daemon
	Peers      []*Daemon
	bin        string
}

// Service is a process in a host.
type Service struct {
	Host *netlab.Host
	Proc *netlab.Process
	// Addr is the service's host:port.
	Addr string
	// Metrics is the host:port serving its Prometheus /metrics, if it serves them.
	Metrics string
	Log     string
}

// Daemon is a p2p-snapshotter in a host.
type Daemon struct {
	Service
	Name string
	Root string
	// Control is the daemon's data-plane socket.
	Control *fusemanager.Client
	argv    []string
}

// Start builds the binaries and starts a cluster. On error it tears down what it started.
func Start(ctx context.Context, o Options) (_ *Cluster, retErr error) {
	if o.Schedulers < 1 {
		o.Schedulers = 1
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	c := &Cluster{bin: filepath.Join(o.Dir, "bin")}
	defer func() {
		if retErr != nil {
			c.Close()
		}
	}()
	for _, cmd := range []string{"p2p-snapshotter", "p2p-scheduler", "p2pctl"} {
		if err := containerdenv.BuildCommand(ctx, "./cmd/"+cmd, filepath.Join(c.bin, cmd), o.Race); err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
	}
	if _, err := netlab.Sweep(ctx, o.Name); err != nil {
		return nil, fmt.Errorf("cluster: sweep: %w", err)
	}
	lab, err := netlab.New(ctx, o.Name, o.Subnet)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	c.Lab = lab

	regHost, err := lab.AddHost(ctx, "registry", o.RegistryLimits)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if c.Registry, err = startRegistry(ctx, regHost, o.Private); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}

	var schedAddrs []string
	for i := range o.Schedulers {
		h, err := lab.AddHost(ctx, "sched"+strconv.Itoa(i), netlab.Limits{})
		if err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
		addr := netip.AddrPortFrom(h.Addr, schedulerPort).String()
		logPath := filepath.Join(o.Dir, h.Name+".log")
		metrics := netip.AddrPortFrom(h.Addr, metricsPort).String()
		argv := []string{filepath.Join(c.bin, "p2p-scheduler"), "--address", addr, "--metrics-address", metrics, "--log-level", "debug"}
		if o.Topology != "" {
			argv = append(argv, "--topology", o.Topology)
		}
		if o.TLS != nil || o.Issuing != nil {
			if o.SchedulerConfig != "" {
				return nil, errors.New("cluster: TLS and SchedulerConfig together are not supported")
			}
			var tlsTable string
			if o.Issuing != nil {
				tlsTable = fmt.Sprintf("ca = %q\nca_key = %q\nbootstrap_tokens = [%q]\n", o.Issuing.CA, o.Issuing.CAKey, o.Issuing.Token)
			} else {
				f := o.TLS(h.Name)
				tlsTable = fmt.Sprintf("ca = %q\ncert = %q\nkey = %q\n", f.CA, f.Cert, f.Key)
			}
			path := filepath.Join(o.Dir, h.Name+".toml")
			// The registry table lets it check proofs of access to private repositories.
			conf := fmt.Sprintf("version = 1\n[tls]\n%s[registry]\ninsecure = [%q]\n", tlsTable, c.Registry.Addr)
			if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
				return nil, err
			}
			argv = append(argv, "--config", path)
		}
		if o.SchedulerConfig != "" {
			argv = append(argv, "--config", o.SchedulerConfig)
		}
		p, err := h.Start(context.WithoutCancel(ctx), logPath, argv...) // lives until Close
		if err != nil {
			return nil, fmt.Errorf("cluster: start scheduler: %w", err)
		}
		c.Schedulers = append(c.Schedulers, &Service{Host: h, Proc: p, Addr: addr, Metrics: metrics, Log: logPath})
		schedAddrs = append(schedAddrs, addr)
	}
	for _, s := range c.Schedulers {
		if err := waitTCP(ctx, s.Host, s.Addr, 30*time.Second); err != nil {
			return nil, fmt.Errorf("cluster: scheduler %s: %w (log %s)", s.Addr, err, s.Log)
		}
	}

	for i := range o.Seeds + o.Peers {
		seed := i < o.Seeds
		name := "peer" + strconv.Itoa(i-o.Seeds)
		if seed {
			name = "seed" + strconv.Itoa(i)
		}
		d, err := c.startDaemon(ctx, o, name, seed, schedAddrs)
		if err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
		if seed {
			c.Seeds = append(c.Seeds, d)
		} else {
			c.Peers = append(c.Peers, d)
		}
	}
	return c, nil
}

func (c *Cluster) startDaemon(ctx context.Context, o Options, name string, seed bool, schedulers []string) (*Daemon, error) {
	h, err := c.Lab.AddHost(ctx, name, o.Limits)
	if err != nil {
		return nil, err
	}
	root := filepath.Join(o.Dir, name)
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, err
	}
	addr := netip.AddrPortFrom(h.Addr, blockPort).String()
	metrics := netip.AddrPortFrom(h.Addr, metricsPort).String()
	quoted := make([]string, len(schedulers))
	for i, s := range schedulers {
		quoted[i] = strconv.Quote(s)
	}
	cfg := fmt.Sprintf(`version = 1
root = %q
address = %q
log_level = "debug"
[mirror]
address = ""
[cache]
size = %q
block_size = %q
[registry]
insecure = [%q]
[lazy]
fuse_manager = false
[p2p]
address = %q
schedulers = [%s]
host_id = %q
seed = %t
upload_capacity = %q
[metrics]
address = %q
`, root, filepath.Join(root, "p2p-snapshotter.sock"), o.CacheSize, o.BlockSize, c.Registry.Addr, addr,
		strings.Join(quoted, ", "), name, seed, strconv.FormatUint(o.Limits.Up/8, 10), metrics)
	switch {
	case o.Issuing != nil:
		cfg += fmt.Sprintf("[p2p.tls]\nca = %q\nbootstrap_token = %q\n", o.Issuing.CA, o.Issuing.Token)
	case o.TLS != nil:
		f := o.TLS(name)
		cfg += fmt.Sprintf("[p2p.tls]\nca = %q\ncert = %q\nkey = %q\n", f.CA, f.Cert, f.Key)
	}
	cfgPath := filepath.Join(root, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	argv := []string{filepath.Join(c.bin, "p2p-snapshotter"), "--config", cfgPath}
	if o.Private != nil && o.Private.DockerConfig != nil {
		dockerConfig := o.Private.DockerConfig(name, c.Registry.Addr)
		if dockerConfig == "" {
			dockerConfig = filepath.Join(root, "no-docker-config") // no credentials at all
		}
		argv = append([]string{"env", "DOCKER_CONFIG=" + dockerConfig}, argv...)
	}
	d := &Daemon{Name: name, Root: root, Control: fusemanager.NewClient(filepath.Join(root, "fuse-manager.sock")), argv: argv}
	d.Host, d.Addr, d.Log, d.Metrics = h, addr, filepath.Join(o.Dir, name+".log"), metrics
	if err := d.Start(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

// Start starts (or restarts) the daemon and waits until its control socket answers.
func (d *Daemon) Start(ctx context.Context) error {
	p, err := d.Host.Start(context.WithoutCancel(ctx), d.Log, d.argv...) // lives until Close or Kill
	if err != nil {
		return fmt.Errorf("start %s: %w", d.Name, err)
	}
	d.Proc = p
	deadline := time.Now().Add(30 * time.Second)
	for {
		if d.Control.Ping(ctx) == nil {
			return nil
		}
		select {
		case <-p.Exited():
			return fmt.Errorf("%s exited at start; see %s", d.Name, d.Log)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer in 30 s; see %s", d.Name, d.Log)
		}
	}
}

// waitTCP waits until addr accepts connections from host.
func waitTCP(ctx context.Context, h *netlab.Host, addr string, timeout time.Duration) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		conn, err := h.Dial(ctx, "tcp", ap)
		if err == nil {
			conn.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Close stops every process and removes the lab.
func (c *Cluster) Close() error {
	var errs []error
	for _, d := range append(append([]*Daemon(nil), c.Peers...), c.Seeds...) {
		if d.Proc != nil {
			d.Proc.Kill()
		}
	}
	if c.Registry != nil {
		errs = append(errs, c.Registry.Close())
	}
	if c.Lab != nil {
		errs = append(errs, c.Lab.Close())
	}
	return errors.Join(errs...)
}

// Registry is an OCI registry served from this process, inside the registry host. Its
// counters (BytesOf, ResetCounters, BlobBytesServed) are the inner registry's: pushes go
// over loopback and fetch no blob, so they count what the lab's hosts received.
type Registry struct {
	*containerdenv.Registry // pushes go to it over loopback
	// Addr is the registry's host:port inside the lab, the registry part of image
	// references that daemons use.
	Addr string
	srv  *http.Server
}

// BytesOf returns the bytes of blob dgst sent to the lab's hosts.
func (r *Registry) BytesOf(dgst digest.Digest) int64 { return r.BlobBytesOf(dgst.String()) }

func startRegistry(ctx context.Context, h *netlab.Host, private *Private) (*Registry, error) {
	inner, err := containerdenv.StartRegistry(os.Stderr)
	if err != nil {
		return nil, err
	}
	addr := netip.AddrPortFrom(h.Addr, registryPort).String()
	ln, err := h.Listen(ctx, "tcp", addr)
	if err != nil {
		inner.Close()
		return nil, err
	}
	r := &Registry{Registry: inner, Addr: addr}
	handler := inner.Handler()
	if private != nil {
		handler = private.Auth.Guard(handler, "http://"+addr+"/token", func(req *http.Request) bool {
			return strings.HasPrefix(req.URL.Path, "/v2/"+private.Prefix)
		})
	}
	r.srv = &http.Server{Handler: handler, ReadHeaderTimeout: 30 * time.Second}
	go r.srv.Serve(ln)
	return r, nil
}

// Close stops both listeners.
func (r *Registry) Close() error {
	return errors.Join(r.srv.Close(), r.Registry.Close())
}
