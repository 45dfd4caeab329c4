package containerdenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Versions of the tools the harness builds. Changing one rebuilds that tool on the next run.
const (
	ContainerdVersion = "v2.2.3"
	NerdctlVersion    = "v2.2.2"
)

// DefaultToolsDir is where the tools are built when $P2P_TOOLS_DIR is not set: outside the
// repository, kept between runs.
const DefaultToolsDir = "/var/cache/p2p-snapshotter-tools/bin"

// stampFile, in the tools directory, records which version of each tool group is there.
const stampFile = "VERSIONS"

// Tools are the absolute paths of the binaries the harness runs.
type Tools struct {
	Dir        string // holds every binary below; put it first on PATH
	Containerd string
	Ctr        string
	Shim       string // containerd-shim-runc-v2: containerd finds it on PATH
	Nerdctl    string
	Runc       string // from the system (Debian's runc package)
}

// ToolsDir returns $P2P_TOOLS_DIR, or DefaultToolsDir.
func ToolsDir() string {
	if d := os.Getenv("P2P_TOOLS_DIR"); d != "" {
		return d
	}
	return DefaultToolsDir
}

// toolGroup is one build: the binaries it writes and how.
type toolGroup struct {
	name     string
	version  string
	binaries []string
	build    func(ctx context.Context, goBin, work, out string, progress io.Writer) error
}

var toolGroups = []toolGroup{
	{
		name:     "containerd",
		version:  ContainerdVersion,
		binaries: []string{"containerd", "ctr", "containerd-shim-runc-v2"},
		build:    buildContainerd,
	},
	{
		name:     "nerdctl",
		version:  NerdctlVersion,
		binaries: []string{"nerdctl"},
		build:    buildNerdctl,
	},
}

var (
	toolsOnce   sync.Once
	toolsResult *Tools
	toolsErr    error
)

// SharedTools is EnsureTools on ToolsDir, done once per process, with progress on stderr.
func SharedTools(ctx context.Context) (*Tools, error) {
	toolsOnce.Do(func() {
		toolsResult, toolsErr = EnsureTools(ctx, ToolsDir(), os.Stderr)
	})
	return toolsResult, toolsErr
}

// EnsureTools makes sure dir holds containerd, ctr and containerd-shim-runc-v2 at
// ContainerdVersion and nerdctl at NerdctlVersion, building what is missing or of another
// version with the go command (each build takes a minute or two; progress goes to
// progress). Builds of one directory are serialised across processes with a lock file, and
// binaries are moved into place before the stamp file names their version, so an interrupted
// build is redone, never half used. It also finds runc on PATH.
func EnsureTools(ctx context.Context, dir string, progress io.Writer) (*Tools, error) {
	if progress == nil {
		progress = io.Discard
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("tools directory: %w", err)
	}
	unlock, err := lockFile(ctx, filepath.Join(dir, ".lock"), unix.LOCK_EX)
	if err != nil {
		return nil, fmt.Errorf("lock tools directory: %w", err)
	}
	defer unlock()

	for _, g := range toolGroups {
		if groupPresent(dir, g) {
			continue
		}
		goBin, err := goCommand()
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(progress, "containerdenv: building %s %s into %s (takes a minute or two, once)\n", g.name, g.version, dir)
		start := time.Now()
		if err := buildGroup(ctx, goBin, dir, g, progress); err != nil {
			return nil, fmt.Errorf("build %s %s: %w", g.name, g.version, err)
		}
		fmt.Fprintf(progress, "containerdenv: built %s %s in %s\n", g.name, g.version, time.Since(start).Round(time.Second))
	}

	t := &Tools{
		Dir:        dir,
		Containerd: filepath.Join(dir, "containerd"),
		Ctr:        filepath.Join(dir, "ctr"),
		Shim:       filepath.Join(dir, "containerd-shim-runc-v2"),
		Nerdctl:    filepath.Join(dir, "nerdctl"),
	}
	if t.Runc, err = lookPath("runc"); err != nil {
		return nil, fmt.Errorf("runc not found on PATH or in /usr/sbin, /sbin: install Debian's runc package (apt-get install runc)")
	}
	return t, nil
}

func groupPresent(dir string, g toolGroup) bool {
	if readStamps(dir)[g.name] != g.version {
		return false
	}
	for _, b := range g.binaries {
		if st, err := os.Stat(filepath.Join(dir, b)); err != nil || !st.Mode().IsRegular() {
			return false
		}
	}
	return true
}

func buildGroup(ctx context.Context, goBin, dir string, g toolGroup, progress io.Writer) error {
	work, err := os.MkdirTemp(dir, ".build-"+g.name+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	out := filepath.Join(work, "bin")
	if err := os.Mkdir(out, 0o755); err != nil {
		return err
	}
	// Progress while the go command is quiet (it says nothing while compiling).
	done := make(chan struct{})
	defer close(done)
	go func() {
		start := time.Now()
		tick := time.NewTicker(15 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				fmt.Fprintf(progress, "containerdenv: still building %s (%s)\n", g.name, time.Since(start).Round(time.Second))
			}
		}
	}()
	if err := g.build(ctx, goBin, work, out, progress); err != nil {
		return err
	}
	// The stamp is dropped first and rewritten last: a crash in between leaves a group that
	// is rebuilt, never one that is trusted with a binary of another version.
	if err := writeStamp(dir, g.name, ""); err != nil {
		return err
	}
	for _, b := range g.binaries {
		if err := os.Rename(filepath.Join(out, b), filepath.Join(dir, b)); err != nil {
			return fmt.Errorf("install %s: %w", b, err)
		}
	}
	return writeStamp(dir, g.name, g.version)
}

func buildContainerd(ctx context.Context, goBin, work, out string, progress io.Writer) error {
	args := []string{"install"}
	for _, c := range []string{"containerd", "ctr", "containerd-shim-runc-v2"} {
		args = append(args, "github.com/containerd/containerd/v2/cmd/"+c+"@"+ContainerdVersion)
	}
	return runGo(ctx, goBin, work, []string{"GOBIN=" + out}, progress, args...)
}

// buildNerdctl builds nerdctl through a throwaway module that imports its main package.
// `go install …/cmd/nerdctl@version` cannot work: nerdctl's go.mod replaces its test module
// github.com/containerd/nerdctl/mod/tigron with a local directory that the module proxy
// does not serve, yet one small package of it (tig, an interface of testing.T's methods) is
// linked into the binary. The wrapper module replaces it with a one-file module of its own.
func buildNerdctl(ctx context.Context, goBin, work, out string, progress io.Writer) error {
	files := map[string]string{
		"go.mod": "module p2p-snapshotter-tools/nerdctl\n\ngo 1.24\n\n" +
			"require github.com/containerd/nerdctl/v2 " + NerdctlVersion + "\n\n" +
			"replace github.com/containerd/nerdctl/mod/tigron => ./tigron\n",
		"tools.go":      "//go:build tools\n\npackage tools\n\nimport _ \"github.com/containerd/nerdctl/v2/cmd/nerdctl\"\n",
		"tigron/go.mod": "module github.com/containerd/nerdctl/mod/tigron\n\ngo 1.24\n",
		"tigron/tig/tig.go": "// Package tig stands in for nerdctl's test helper module in a release build.\n" +
			"package tig\n\n" +
			"// T is the subset of testing.T that nerdctl's test helpers use.\n" +
			"type T interface {\n\tHelper()\n\tLog(args ...any)\n\tLogf(format string, args ...any)\n" +
			"\tFail()\n\tFailNow()\n\tFailed() bool\n\tName() string\n\tTempDir() string\n}\n",
	}
	for name, body := range files {
		p := filepath.Join(work, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			return err
		}
	}
	// tidy -e reports, and skips, the packages of the real tigron module that only
	// nerdctl's tests import: show only its downloads.
	tidyProgress := &prefixFilter{w: progress, prefix: "go: downloading "}
	if err := runGo(ctx, goBin, work, nil, tidyProgress, "mod", "tidy", "-e"); err != nil {
		return err
	}
	return runGo(ctx, goBin, work, nil, progress, "build", "-o", filepath.Join(out, "nerdctl"), "github.com/containerd/nerdctl/v2/cmd/nerdctl")
}

// prefixFilter passes on the writes (whole lines from runGo) that start with prefix.
type prefixFilter struct {
	w      io.Writer
	prefix string
}

func (f *prefixFilter) Write(p []byte) (int, error) {
	if strings.HasPrefix(strings.TrimPrefix(string(p), "containerdenv:   "), f.prefix) {
		return f.w.Write(p)
	}
	return len(p), nil
}

// runGo runs the go command in dir, echoing its output to progress (it prints modules as it
// downloads them) and keeping the tail for the error.
func runGo(ctx context.Context, goBin, dir string, env []string, progress io.Writer, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = dir
	// The builds must not see the caller's module, workspace or flags (go test -race, -mod).
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-buildvcs=false", "GO111MODULE=on")
	cmd.Env = append(cmd.Env, env...)
	cmd.WaitDelay = 10 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	tail := newTailBuffer(40)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			fmt.Fprintf(progress, "containerdenv:   %s\n", sc.Text())
			tail.add(sc.Text())
		}
		io.Copy(io.Discard, pr)
	}()
	err := cmd.Run()
	pw.Close()
	<-copied
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", err, ctx.Err())
		}
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, tail.String())
	}
	return nil
}

// goCommand finds the go command: on PATH, else the one that built this binary.
func goCommand() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	return "", errors.New("the go command is not on PATH: it is needed to build containerd and nerdctl")
}

// lookPath finds a system binary on PATH or in the sbin directories, which a non-login
// root shell may not have on PATH.
func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return filepath.Abs(p)
	}
	for _, d := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found", name)
}

// readStamps reads the stamp file: one "group version" per line.
func readStamps(dir string) map[string]string {
	m := map[string]string{}
	b, err := os.ReadFile(filepath.Join(dir, stampFile))
	if err != nil {
		return m
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			m[f[0]] = f[1]
		}
	}
	return m
}

// writeStamp sets (or, with an empty version, drops) one group's line, atomically.
func writeStamp(dir, group, version string) error {
	m := readStamps(dir)
	if version == "" {
		delete(m, group)
	} else {
		m[group] = version
	}
	var sb strings.Builder
	for _, g := range toolGroups {
		if v, ok := m[g.name]; ok {
			fmt.Fprintf(&sb, "%s %s\n", g.name, v)
		}
	}
	tmp := filepath.Join(dir, "."+stampFile+".tmp")
	if err := os.WriteFile(tmp, []byte(sb.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, stampFile))
}

// lockFile takes a flock on path (created if needed), waiting until ctx ends.
func lockFile(ctx context.Context, path string, how int) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := flockWait(ctx, f, how); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}
