package containerdenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// DefaultBaseDir holds the environments' directories when neither Options.BaseDir nor
// $P2P_TEST_DIR says otherwise. It is short, so that socket paths stay far below the
// 108-byte limit, and on a disk filesystem, so that overlayfs upper directories work.
const DefaultBaseDir = "/var/tmp/p2p-test"

// namespacePrefix starts the default containerd namespace of an environment.
const namespacePrefix = "p2p-test-"

// Options configure an Env. The zero value is a working default.
type Options struct {
	// BaseDir holds the environment's directory (default $P2P_TEST_DIR or DefaultBaseDir).
	BaseDir string
	// Namespace is the containerd namespace nerdctl and ctr use (default "p2p-test-" and
	// the name of the environment's directory: nerdctl names containers' cgroups after it,
	// and teardown removes them).
	Namespace string
	// SnapshotterName is the proxy plugin name containerd gives the daemon (default "p2p").
	SnapshotterName string
	// SnapshotterBinary is a p2p-snapshotter binary to run instead of building
	// ./cmd/p2p-snapshotter from the module (default $P2P_SNAPSHOTTER_BINARY).
	SnapshotterBinary string
	// SnapshotterConfig, when set, is written to a file passed with --config.
	SnapshotterConfig string
	// SnapshotterArgs are added to the daemon's command line.
	SnapshotterArgs []string
	// ContainerdConfig is TOML appended to the generated containerd config (version 3), in
	// which {{.HostsDir}} stands for HostsDir.
	ContainerdConfig string
	// LogLevel of containerd and the daemon (default "debug").
	LogLevel string
	// Tools overrides the shared tool set (SharedTools).
	Tools *Tools
	// Env is added to the environment of the daemon, containerd, nerdctl and ctr (e.g.
	// DOCKER_CONFIG for registry credentials).
	Env []string
	// CRI keeps containerd's CRI plugins, which serve the Kubernetes CRI on its socket
	// (configure them in ContainerdConfig); they are disabled otherwise.
	CRI bool
	// Builtin runs containerd-p2p (cmd/containerd-p2p, built from this module: containerd
	// with the snapshotter built in) instead of containerd and the daemon: no daemon process
	// runs, and [plugins."io.containerd.snapshotter.v1.p2p"] gets root = SnapshotterRoot;
	// ContainerdConfig adds the rest, the plugin's mirror table at least (its default
	// address would collide between environments). SnapshotterArgs and SnapshotterConfig
	// are not used.
	Builtin bool
}

// Env is one containerd with our daemon as its proxy snapshotter, both separate processes
// under a fresh directory, and nerdctl and ctr set up to talk to it. Everything it starts
// is stopped, unmounted and removed in t.Cleanup, failed test or not.
type Env struct {
	Tools *Tools
	// Dir is the environment's directory; everything it creates lives below it.
	Dir       string
	Namespace string
	// SnapshotterName is the snapshotter name to pass to nerdctl and ctr.
	SnapshotterName string

	ContainerdAddress  string // containerd's gRPC socket
	ContainerdRoot     string
	ContainerdConfig   string // path of the generated config
	SnapshotterAddress string // our daemon's socket
	SnapshotterRoot    string // our daemon's --root
	SnapshotterBinary  string
	NerdctlTOML        string // path of nerdctl's config, in $NERDCTL_TOML for every run
	HostsDir           string // nerdctl's hosts_dir: HOST/hosts.toml per registry
	LogDir             string

	opts        Options
	containerd  *daemon
	snapshotter *daemon
	registries  []*Registry
	runDirs     *runDirClaim
	ownCgroups  bool // the namespace is the environment's own: remove its cgroups
	cmdEnv      []string
}

// Log files under LogDir.
const (
	containerdLogName  = "containerd.log"
	snapshotterLogName = "p2p-snapshotter.log"
	registryLogName    = "registry.log"
)

// RequireRoot skips the test when it cannot or should not run an environment: with
// `go test -short`, or when not root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipped with -short: starts containerd, the p2p-snapshotter daemon and containers")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: starts containerd and runc containers, mounts overlayfs (CI runs it as root)")
	}
}

// New starts an environment: builds (or reuses) the tools and our daemon, starts the daemon,
// then containerd with the daemon as proxy snapshotter, and writes nerdctl's config. It
// fails the test if any step fails; the caller should have called RequireRoot.
func New(t testing.TB, opts Options) *Env {
	t.Helper()
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	if opts.SnapshotterName == "" {
		opts.SnapshotterName = "p2p"
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "debug"
	}
	if opts.BaseDir == "" {
		opts.BaseDir = os.Getenv("P2P_TEST_DIR")
	}
	if opts.BaseDir == "" {
		opts.BaseDir = DefaultBaseDir
	}

	tools := opts.Tools
	if tools == nil {
		var err error
		if tools, err = SharedTools(ctx); err != nil {
			t.Fatalf("containerdenv: tools: %v", err)
		}
	}
	base, err := filepath.Abs(opts.BaseDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatalf("containerdenv: %v", err)
	}
	if removed, err := SweepStale(base); err != nil {
		t.Logf("containerdenv: cleaning up after earlier runs: %v", err)
	} else if len(removed) > 0 {
		t.Logf("containerdenv: removed what earlier runs left: %s", strings.Join(removed, ", "))
	}
	dir, err := os.MkdirTemp(base, "")
	if err != nil {
		t.Fatalf("containerdenv: %v", err)
	}
	ownCgroups := opts.Namespace == ""
	if ownCgroups {
		opts.Namespace = namespacePrefix + filepath.Base(dir)
	}
	if err := writeOwner(dir); err != nil {
		os.RemoveAll(dir)
		t.Fatalf("containerdenv: %v", err)
	}
	e := &Env{
		Tools:              tools,
		Dir:                dir,
		Namespace:          opts.Namespace,
		SnapshotterName:    opts.SnapshotterName,
		ContainerdAddress:  filepath.Join(dir, "containerd.sock"),
		ContainerdRoot:     filepath.Join(dir, "containerd"),
		ContainerdConfig:   filepath.Join(dir, "containerd.toml"),
		SnapshotterAddress: filepath.Join(dir, "p2p.sock"),
		SnapshotterRoot:    filepath.Join(dir, "p2p"),
		NerdctlTOML:        filepath.Join(dir, "nerdctl.toml"),
		HostsDir:           filepath.Join(dir, "certs.d"),
		LogDir:             filepath.Join(dir, "logs"),
		opts:               opts,
		ownCgroups:         ownCgroups,
	}
	// Registered before anything starts, so that whatever did start is torn down.
	t.Cleanup(func() { e.teardown(t) })

	// The longest socket containerd derives is its ttrpc one.
	if n := len(e.ContainerdAddress + ".ttrpc"); n > 100 {
		t.Fatalf("containerdenv: socket path %s.ttrpc is %d bytes, over the unix limit: use a shorter $P2P_TEST_DIR", e.ContainerdAddress, n)
	}
	for _, d := range []string{e.ContainerdRoot, e.SnapshotterRoot, e.HostsDir, e.LogDir, filepath.Join(dir, "nerdctl")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e.cmdEnv = append(commandEnv(tools.Dir, e.NerdctlTOML), opts.Env...)

	if e.runDirs, err = claimRunDirs(ctx, base); err != nil {
		t.Fatalf("containerdenv: %v", err)
	}

	e.SnapshotterBinary = opts.SnapshotterBinary
	if e.SnapshotterBinary == "" {
		e.SnapshotterBinary = os.Getenv("P2P_SNAPSHOTTER_BINARY")
	}
	containerd := e.Tools.Containerd
	switch {
	case opts.Builtin:
		if containerd, err = sharedBinary(ctx, t, base, dir, "containerd-p2p", BuildContainerdP2P); err != nil {
			t.Fatalf("containerdenv: %v", err)
		}
	case e.SnapshotterBinary == "":
		if e.SnapshotterBinary, err = snapshotterBinary(ctx, t, base, dir); err != nil {
			t.Fatalf("containerdenv: %v", err)
		}
	}
	if !opts.Builtin {
		if err := e.startSnapshotter(ctx); err != nil {
			t.Fatalf("containerdenv: %v", err)
		}
	}
	if err := e.writeContainerdConfig(); err != nil {
		t.Fatal(err)
	}
	if err := e.startContainerd(ctx, containerd); err != nil {
		t.Fatalf("containerdenv: %v", err)
	}
	if err := e.writeNerdctlConfig(); err != nil {
		t.Fatal(err)
	}
	t.Logf("containerdenv: containerd and p2p-snapshotter up in %s, in %s", time.Since(began).Round(time.Millisecond), dir)
	return e
}

// commandEnv is the environment of every command the harness runs: the tools first on
// PATH (containerd finds the shim there), the sbin directories for runc, nerdctl's config,
// and none of the variables that would point nerdctl or ctr elsewhere.
func commandEnv(toolsDir, nerdctlTOML string) []string {
	var env []string
	path := toolsDir
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "PATH":
			if v != "" {
				path += ":" + v
			}
			continue
		case "NERDCTL_TOML", "CONTAINERD_ADDRESS", "CONTAINERD_NAMESPACE", "CONTAINERD_SNAPSHOTTER", "NOTIFY_SOCKET":
			continue
		}
		env = append(env, kv)
	}
	for _, d := range []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		if !strings.Contains(":"+path+":", ":"+d+":") {
			path += ":" + d
		}
	}
	return append(env, "PATH="+path, "NERDCTL_TOML="+nerdctlTOML)
}

// CommandEnv returns the environment the harness runs nerdctl and ctr with.
func (e *Env) CommandEnv() []string { return append([]string(nil), e.cmdEnv...) }

func (e *Env) startSnapshotter(ctx context.Context) error {
	argv := []string{e.SnapshotterBinary,
		"--root", e.SnapshotterRoot,
		"--address", e.SnapshotterAddress,
		"--log-level", e.opts.LogLevel,
		// No registry mirror unless a test asks for one (with its own --mirror-address):
		// the default port would collide between environments.
		"--mirror-address=",
	}
	if e.opts.SnapshotterConfig != "" {
		p := filepath.Join(e.Dir, "p2p-snapshotter.toml")
		if err := os.WriteFile(p, []byte(e.opts.SnapshotterConfig), 0o644); err != nil {
			return err
		}
		argv = append(argv, "--config", p)
	}
	argv = append(argv, e.opts.SnapshotterArgs...)
	env := e.cmdEnv
	if raceEnabled && os.Getenv("GORACE") == "" {
		// A race-detector binary sleeps a second before exiting by default: every restart
		// would wait for it. A race it found still makes it exit non-zero on SIGTERM, which
		// fails the test.
		env = append(slices.Clone(env), "GORACE=atexit_sleep_ms=50")
	}
	d, err := startDaemon("p2p-snapshotter", filepath.Join(e.LogDir, snapshotterLogName), env, argv...)
	if err != nil {
		return err
	}
	e.snapshotter = d
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err = d.waitReady(ctx, func(ctx context.Context) error {
		var dl net.Dialer
		c, err := dl.DialContext(ctx, "unix", e.SnapshotterAddress)
		if err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		return fmt.Errorf("%w\n%s", err, e.logTail(snapshotterLogName, 30))
	}
	return nil
}

func (e *Env) writeContainerdConfig() error {
	q := func(s string) string { return fmt.Sprintf("%q", s) }
	// CRI is not needed without Kubernetes (the pod sandbox controller needs CRI), and NRI
	// would create /var/run/nri.
	disabled := []string{"io.containerd.nri.v1.nri"}
	if !e.opts.CRI {
		disabled = append(disabled, "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images", "io.containerd.grpc.v1.cri",
			"io.containerd.podsandbox.controller.v1.podsandbox")
	}
	quoted := make([]string, len(disabled))
	for i, p := range disabled {
		quoted[i] = q(p)
	}
	cfg := `version = 3
root = ` + q(filepath.Join(e.ContainerdRoot, "root")) + `
state = ` + q(filepath.Join(e.ContainerdRoot, "state")) + `
disabled_plugins = [` + strings.Join(quoted, ", ") + `]

[grpc]
  address = ` + q(e.ContainerdAddress) + `

[ttrpc]
  address = ` + q(e.ContainerdAddress+".ttrpc") + `

[debug]
  level = ` + q(e.opts.LogLevel) + `

[plugins."io.containerd.internal.v1.opt"]
  path = ` + q(filepath.Join(e.ContainerdRoot, "opt")) + `

`
	if e.opts.Builtin {
		cfg += `[plugins."io.containerd.snapshotter.v1.p2p"]
  root = ` + q(e.SnapshotterRoot) + `
`
	} else {
		cfg += `[proxy_plugins.` + q(e.SnapshotterName) + `]
  type = "snapshot"
  address = ` + q(e.SnapshotterAddress) + `
  [proxy_plugins.` + q(e.SnapshotterName) + `.exports]
    enable_remote_snapshot_annotations = "true"
`
	}
	if e.opts.ContainerdConfig != "" {
		cfg += "\n" + strings.ReplaceAll(e.opts.ContainerdConfig, "{{.HostsDir}}", e.HostsDir) + "\n"
	}
	return os.WriteFile(e.ContainerdConfig, []byte(cfg), 0o644)
}

func (e *Env) startContainerd(ctx context.Context, binary string) error {
	d, err := startDaemon("containerd", filepath.Join(e.LogDir, containerdLogName), e.cmdEnv,
		binary, "--config", e.ContainerdConfig)
	if err != nil {
		return err
	}
	e.containerd = d
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	err = d.waitReady(ctx, func(ctx context.Context) error {
		_, stderr, err := runCmd(ctx, 10*time.Second, e.cmdEnv, e.Tools.Ctr, "--address", e.ContainerdAddress, "version")
		if err != nil {
			return fmt.Errorf("ctr version: %v: %s", err, strings.TrimSpace(stderr))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w\n%s", err, e.logTail(containerdLogName, 40))
	}
	return nil
}

func (e *Env) writeNerdctlConfig() error {
	q := func(s string) string { return fmt.Sprintf("%q", s) }
	cfg := `address = ` + q("unix://"+e.ContainerdAddress) + `
namespace = ` + q(e.Namespace) + `
data_root = ` + q(filepath.Join(e.Dir, "nerdctl")) + `
hosts_dir = [` + q(e.HostsDir) + `]
cgroup_manager = "cgroupfs"
cni_path = ` + q(filepath.Join(e.Dir, "cni", "bin")) + `
cni_netconfpath = ` + q(filepath.Join(e.Dir, "cni", "net.d")) + `
`
	return os.WriteFile(e.NerdctlTOML, []byte(cfg), 0o644)
}

// StartRegistry starts an in-process registry on loopback for this environment (logging
// to LogDir/registry.log, stopped in cleanup) and makes containerd reach it over plain
// HTTP through a hosts.toml in HostsDir.
func (e *Env) StartRegistry(t testing.TB) *Registry {
	t.Helper()
	lf, err := os.OpenFile(filepath.Join(e.LogDir, registryLogName), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	r, err := StartRegistry(lf)
	if err != nil {
		lf.Close()
		t.Fatalf("containerdenv: %v", err)
	}
	e.registries = append(e.registries, r)
	t.Cleanup(func() { lf.Close() }) // after teardown closes the registry: cleanups run last-in first-out
	hosts := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n",
		"http://"+r.Host, "http://"+r.Host)
	if err := e.SetHostsTOML(r.Host, hosts); err != nil {
		t.Fatal(err)
	}
	return r
}

// SetHostsTOML writes the containerd hosts.toml that nerdctl uses for registry host (as
// in image references, "HOST:PORT"), e.g. to make a mirror of it.
func (e *Env) SetHostsTOML(host, body string) error {
	d := filepath.Join(e.HostsDir, host)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(d, "hosts.toml"), []byte(body), 0o644)
}

// shared is the daemon binary built once for all the environments of a test binary run
// through RunTests.
var shared struct {
	sync.Mutex
	enabled bool
	dir     string            // under a base directory, with an owner file: swept if the run dies
	bins    map[string]string // by name, the binaries built there
}

// RunTests runs a test package's tests (call it from TestMain) so that the daemon is built
// at most once for all of them, when the first environment starts, and removed after the
// last test. Without it, each New builds the daemon (quick with a warm build cache).
//
//	func TestMain(m *testing.M) { os.Exit(containerdenv.RunTests(m)) }
func RunTests(m *testing.M) int {
	shared.Lock()
	shared.enabled = true
	shared.Unlock()
	code := m.Run()
	shared.Lock()
	defer shared.Unlock()
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
		shared.dir, shared.bins = "", nil
	}
	return code
}

// snapshotterBinary builds the daemon for an environment: into envDir, or once into a
// shared directory under base when RunTests runs the tests.
func snapshotterBinary(ctx context.Context, t testing.TB, base, envDir string) (string, error) {
	t.Helper()
	return sharedBinary(ctx, t, base, envDir, "p2p-snapshotter", BuildSnapshotter)
}

// sharedBinary builds the binary name with build: into envDir, or once for the test binary
// into a shared directory under base when RunTests runs the tests.
func sharedBinary(ctx context.Context, t testing.TB, base, envDir, name string, build func(ctx context.Context, out string) error) (string, error) {
	t.Helper()
	shared.Lock()
	defer shared.Unlock()
	if bin := shared.bins[name]; shared.enabled && bin != "" {
		return bin, nil
	}
	dir := envDir
	if shared.enabled {
		if shared.dir == "" {
			d, err := os.MkdirTemp(base, "bin-")
			if err != nil {
				return "", err
			}
			if err := writeOwner(d); err != nil {
				os.RemoveAll(d)
				return "", err
			}
			shared.dir = d
		}
		dir = shared.dir
	}
	bin := filepath.Join(dir, name)
	start := time.Now()
	if err := build(ctx, bin); err != nil {
		return "", err
	}
	t.Logf("containerdenv: built %s in %s", name, time.Since(start).Round(time.Millisecond))
	if shared.enabled {
		if shared.bins == nil {
			shared.bins = map[string]string{}
		}
		shared.bins[name] = bin
	}
	return bin, nil
}

// BuildSnapshotter builds ./cmd/p2p-snapshotter of this module into out, with the race
// detector when the calling test binary has it.
func BuildSnapshotter(ctx context.Context, out string) error {
	return buildSnapshotter(ctx, out, raceEnabled)
}

func buildSnapshotter(ctx context.Context, out string, race bool) error {
	return BuildCommand(ctx, "./cmd/p2p-snapshotter", out, race)
}

// BuildCommand builds the command pkg ("./cmd/NAME") of this module into out, with the race
// detector if race.
func BuildCommand(ctx context.Context, pkg, out string, race bool) error {
	args := []string{"-o", out}
	if race {
		args = append(args, "-race")
	}
	return goBuild(ctx, ".", append(args, pkg)...)
}

// BuildContainerdP2P builds cmd/containerd-p2p, a module of its own inside this one, to out.
func BuildContainerdP2P(ctx context.Context, out string) error {
	return goBuild(ctx, filepath.Join("cmd", "containerd-p2p"), "-o", out, ".")
}

// goBuild runs go build with args in dir, relative to this module's root.
func goBuild(ctx context.Context, dir string, args ...string) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	goBin, err := goCommand()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	args = append([]string{"build"}, args...)
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = filepath.Join(root, dir)
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s in %s: %v\n%s", strings.Join(args, " "), cmd.Dir, err, b)
	}
	return nil
}

// modulePath is the module whose daemon the harness builds.
const modulePath = "github.com/p2pimage/p2p-snapshotter"

// ModuleRoot finds the directory of this module's go.mod, upwards from the working
// directory (a test runs in its package's directory).
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), "module "+modulePath) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of %s above the working directory", modulePath)
		}
		dir = parent
	}
}
