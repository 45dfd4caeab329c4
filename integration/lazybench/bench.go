package main

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/p2pimage/p2p-snapshotter/integration/containerdenv"
	"github.com/p2pimage/p2p-snapshotter/layer/layertest"
)

// Names of the run's network namespace and host veth end: the pid tells a killed run's
// leftovers (containerdenv.SweepNetNS) from a live one's.
const netnsPrefix = "lazybench-"

// smallFile is what the container reads.
const smallFile = "the only file the container reads\n"

// bench is one run: the tools, the daemons' binaries, the registry in its namespace and the
// images on it.
type bench struct {
	cfg   config
	dir   string // the run's directory: binaries, logs, daemon roots
	tools *containerdenv.Tools

	ns       *containerdenv.NetNS
	registry *process
	regLog   *registryLog
	regHost  string // "ADDR:PORT" of the registry, as in image references

	p2pRevision string // of the daemon, when built from the work tree

	lab *peerLab // p2p-peer's network, when it runs

	gzipImage imageInfo // the image as pushed: gzip layers
	esgzImage imageInfo // its eStargz copy
	peerImage imageInfo // the gzip image by the lab registry's address
}

type imageInfo struct {
	ref    string
	layers []layerInfo
}

type layerInfo struct {
	digest    string
	diffID    string
	size      int64
	mediaType string
}

func (i imageInfo) size() int64 {
	var n int64
	for _, l := range i.layers {
		n += l.size
	}
	return n
}

func newBench(ctx context.Context, cfg config) (*bench, error) {
	if deleted, err := containerdenv.SweepNetNS(ctx, netnsPrefix); err != nil {
		return nil, fmt.Errorf("remove the namespaces of earlier runs: %w", err)
	} else if len(deleted) > 0 {
		progress("removed network namespaces left by earlier runs: %v", deleted)
	}
	dir, err := workDir(cfg.workBase)
	if err != nil {
		return nil, err
	}
	b := &bench{cfg: cfg, dir: dir}
	progress("working in %s", dir)
	if b.tools, err = containerdenv.SharedTools(ctx); err != nil {
		return b, err
	}
	if b.cfg.p2pBinary == "" {
		b.cfg.p2pBinary = filepath.Join(dir, "bin", "p2p-snapshotter")
		b.p2pRevision = revision(ctx)
		progress("building p2p-snapshotter (%s)", b.p2pRevision)
		if err := containerdenv.BuildSnapshotter(ctx, b.cfg.p2pBinary); err != nil {
			return b, err
		}
	}
	if b.cfg.stargzBinary == "" && contains(cfg.contenders, contStargz) {
		b.cfg.stargzBinary = filepath.Join(dir, "bin", "stargzd")
		progress("building stargzd (its own module: the first build downloads stargz-snapshotter's dependencies)")
		if err := buildStargzd(ctx, b.cfg.stargzBinary); err != nil {
			return b, err
		}
	}

	if contains(cfg.contenders, contP2PPeer) {
		if b.cfg.schedulerBinary == "" {
			b.cfg.schedulerBinary = filepath.Join(dir, "bin", "p2p-scheduler")
			progress("building p2p-scheduler")
			if err := containerdenv.BuildCommand(ctx, "./cmd/p2p-scheduler", b.cfg.schedulerBinary, false); err != nil {
				return b, err
			}
		}
		// The lab first: its registry host's listener goes to the registry process.
		if b.lab, err = newPeerLab(ctx, cfg); err != nil {
			return b, err
		}
	}

	nsName := fmt.Sprintf("%s%d", netnsPrefix, os.Getpid())
	hostIf := fmt.Sprintf("lzb%d", os.Getpid())
	if b.ns, err = containerdenv.NewNetNS(ctx, nsName, hostIf, cfg.subnet); err != nil {
		return b, err
	}
	progress("namespace %s: registry side %s, host side %s (%s)", nsName, b.ns.NSAddr, b.ns.HostAddr, hostIf)
	if err := b.startRegistry(ctx); err != nil {
		return b, err
	}
	if b.lab != nil {
		if err := b.lab.start(ctx, b.cfg, dir); err != nil {
			return b, err
		}
	}
	return b, nil
}

// revision describes the module's work tree: `git describe --always --dirty`.
func revision(ctx context.Context) string {
	root, err := containerdenv.ModuleRoot()
	if err != nil {
		return "unknown revision"
	}
	out, err := exec.CommandContext(ctx, "git", "-C", root, "describe", "--always", "--dirty").Output()
	if err != nil {
		return "unknown revision"
	}
	return "work tree at " + strings.TrimSpace(string(out))
}

// buildStargzd builds the stargzd module (integration/stargzd) into out.
func buildStargzd(ctx context.Context, out string) error {
	root, err := containerdenv.ModuleRoot()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, ".")
	cmd.Dir = filepath.Join(root, "integration", "stargzd")
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build stargzd: %v\n%s", err, b)
	}
	return nil
}

// startRegistry runs this program as the registry inside the namespace and waits until it
// answers from the host.
func (b *bench) startRegistry(ctx context.Context) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	addr := netip.AddrPortFrom(b.ns.NSAddr, 5000)
	b.regHost = addr.String()
	logPath := filepath.Join(b.dir, "registry.log")
	// Not tied to ctx: it is stopped in close, after everything that uses it.
	cmd := b.ns.Command(context.Background(), self, serveRegistryCommand, "-listen", addr.String())
	if b.lab != nil {
		// The same registry on a second listener, made in the lab's registry host.
		f, err := b.lab.listenerFile()
		if err != nil {
			return err
		}
		defer f.Close() // the process has its own copy
		cmd.ExtraFiles = []*os.File{f}
		cmd.Args = append(cmd.Args, "-listen-fd", "3")
	}
	if b.registry, err = startProcess("registry", logPath, cmd); err != nil {
		return err
	}
	b.regLog = &registryLog{path: logPath}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + b.regHost + "/v2/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if !b.registry.running() || time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("registry at %s does not answer: %v (log: %s)", b.regHost, err, logPath)
		}
		time.Sleep(100 * time.Millisecond)
	}
	progress("registry serving on http://%s inside the namespace", b.regHost)
	if b.lab != nil {
		resp, err := http.Get("http://" + b.lab.regAddr + "/v2/")
		if err != nil {
			return fmt.Errorf("registry on the lab's listener %s does not answer: %w (log: %s)", b.lab.regAddr, err, logPath)
		}
		resp.Body.Close()
		progress("the same registry serving on http://%s in lab %s", b.lab.regAddr, b.lab.lab.Name)
	}
	return nil
}

// prepareImages pushes the image and its eStargz copy, before the link is limited.
func (b *bench) prepareImages(ctx context.Context) error {
	bb, err := containerdenv.BusyboxLayer("/bin/busybox")
	if err != nil {
		return err
	}
	epoch := time.Date(2024, 5, 17, 10, 30, 0, 0, time.UTC)
	file := func(name string, data []byte) layertest.File {
		return layertest.File{Header: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, ModTime: epoch, Format: tar.FormatPAX}, Data: data}
	}
	big := []layertest.File{
		file("big.bin", layertest.Pattern(200, b.cfg.sizeMB*1_000_000)),
		file("small.txt", []byte(smallFile)),
	}
	progress("pushing the image: busybox layer + a layer of a %d MB random file and a small file", b.cfg.sizeMB)
	start := time.Now()
	pctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	reg := &containerdenv.Registry{Host: b.regHost}
	img, err := reg.Push(pctx, "bench/lazy:gzip", bb, big)
	if err != nil {
		return err
	}
	progress("pushed %s in %s", img.Ref, time.Since(start).Round(time.Millisecond))
	if b.gzipImage, err = inspectImage(ctx, img.Ref); err != nil {
		return err
	}
	if b.lab != nil {
		if b.peerImage, err = inspectImage(ctx, b.lab.image(b.gzipImage, b.regHost).ref); err != nil {
			return fmt.Errorf("the image on the lab's listener: %w", err)
		}
	}
	images := []imageInfo{b.gzipImage}
	if contains(b.cfg.contenders, contStargz) || contains(b.cfg.contenders, contP2PEsgz) {
		if b.esgzImage, err = b.convert(ctx, img.Ref, b.regHost+"/bench/lazy:esgz"); err != nil {
			return err
		}
		images = append(images, b.esgzImage)
	}
	for _, im := range images {
		progress("image %s: %s in %d layers", im.ref, mb(im.size()), len(im.layers))
		for _, l := range im.layers {
			progress("  %s %s %s", l.digest[:19], mb(l.size), l.mediaType)
		}
	}
	// The pushes are not part of any measurement.
	if _, _, _, err := b.regLog.servedSince(); err != nil {
		return err
	}
	return nil
}

// convert makes an eStargz copy of src with `nerdctl image convert --estargz --oci` in a
// containerd of its own, and pushes it as dst.
func (b *bench) convert(ctx context.Context, src, dst string) (imageInfo, error) {
	err := runStep(ctx, "convert", os.Stderr, func(t *step) {
		env := containerdenv.New(t, containerdenv.Options{SnapshotterBinary: b.cfg.p2pBinary, LogLevel: b.cfg.logLevel})
		b.keepLogsOf(t, env)
		hosts := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n", "http://"+b.regHost, "http://"+b.regHost)
		if err := env.SetHostsTOML(b.regHost, hosts); err != nil {
			t.Fatal(err)
		}
		b.nerdctl(t, env, "pull", "--quiet", src)
		b.nerdctl(t, env, "image", "convert", "--estargz", "--oci", src, dst)
		b.nerdctl(t, env, "push", "--quiet", dst)
	})
	if err != nil {
		return imageInfo{}, err
	}
	return inspectImage(ctx, dst)
}

// inspectImage reads an image's manifest from the registry.
func inspectImage(ctx context.Context, ref string) (imageInfo, error) {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return imageInfo{}, err
	}
	img, err := remote.Image(r, remote.WithContext(ctx))
	if err != nil {
		return imageInfo{}, err
	}
	m, err := img.Manifest()
	if err != nil {
		return imageInfo{}, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return imageInfo{}, err
	}
	if len(cf.RootFS.DiffIDs) != len(m.Layers) {
		return imageInfo{}, fmt.Errorf("%s: %d layers, %d diffIDs", ref, len(m.Layers), len(cf.RootFS.DiffIDs))
	}
	info := imageInfo{ref: ref}
	for i, l := range m.Layers {
		info.layers = append(info.layers, layerInfo{digest: l.Digest.String(), diffID: cf.RootFS.DiffIDs[i].String(),
			size: l.Size, mediaType: string(l.MediaType)})
	}
	return info, nil
}

// keepLogsOf copies the environment's logs to -keep-logs at the end of the step.
func (b *bench) keepLogsOf(t *step, env *containerdenv.Env) {
	if b.cfg.keepLogs == "" {
		return
	}
	// Registered after New's teardown, so it runs before it, while the logs are there.
	t.Cleanup(func() {
		dst := filepath.Join(b.cfg.keepLogs, sanitize(t.Name()))
		if err := copyDir(env.LogDir, dst); err != nil {
			t.Logf("keep logs: %v", err)
		}
	})
}

func sanitize(s string) string {
	out := []byte(s)
	for i, c := range out {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			out[i] = '_'
		}
	}
	return string(out)
}

func copyDir(src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if !e.Type().IsRegular() || e.Name() == "owner" {
			continue
		}
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err == nil {
			err = os.WriteFile(filepath.Join(dst, e.Name()), data, 0o644)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// close stops the registry, removes the namespace and p2p-peer's lab (with its processes),
// the daemon roots and the run's directory.
func (b *bench) close() error {
	var errs []error
	if b.registry != nil {
		if err := b.registry.stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if b.ns != nil {
		if err := b.ns.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if b.lab != nil {
		if err := b.lab.close(); err != nil {
			errs = append(errs, err)
		}
	}
	if b.dir != "" {
		if b.cfg.keepLogs != "" {
			if err := copyDir(b.dir, b.cfg.keepLogs); err != nil { // registry.log and the daemons' logs
				errs = append(errs, err)
			}
		}
		if pids := stopProcessesMentioning(b.dir + "/"); len(pids) > 0 {
			progress("stopped leftover processes %v", pids)
		}
		if _, err := containerdenv.UnmountAll(b.dir); err != nil {
			errs = append(errs, err)
		}
		if err := os.RemoveAll(b.dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// freeAddress returns a free port on loopback for the daemon's mirror.
func freeAddress() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
