package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/p2pimage/p2p-snapshotter/integration/netlab"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
	"github.com/p2pimage/p2p-snapshotter/snapshotter/fusemanager"
)

// Ports of the lab's services, inside their hosts.
const (
	labRegistryPort  = 5000
	labSchedulerPort = 65003
	labBlockPort     = 65002
)

// peerLab is the network of the p2p-peer contender, a netlab lab:
//
//	driver (root namespace, link not capped): the measured node, containerd + p2p-snapshotter
//	registry host (-rate each way): a second listener of the benchmark's registry process
//	sched host (not capped): p2p-scheduler
//	seed host (-peer-rate each way): p2p-snapshotter with [p2p] seed = true
//
// The seed is warmed once, before the first measurement: it holds the image's layers on disk
// and tells the scheduler so. Each measured node is new (new containerd, new daemon root,
// new host_id) and leaves the scheduler when its daemon stops.
type peerLab struct {
	lab *netlab.Lab

	regHost *netlab.Host
	regAddr string       // "IP:PORT" of the registry in the lab, as in image references
	regLn   net.Listener // made in the registry host; handed to the registry process

	sched     *netlab.Host
	schedAddr string
	schedLog  string

	seed     *netlab.Host
	seedProc *netlab.Process
	seedLog  string
	seedCtl  *fusemanager.Client
}

// newPeerLab removes what an earlier run of the lab left, creates the lab and its registry
// host, and listens on the registry's address there (startRegistry hands the listener to
// the registry process). On error it returns what it made, for close.
func newPeerLab(ctx context.Context, cfg config) (*peerLab, error) {
	if removed, err := netlab.Sweep(ctx, cfg.labName); err != nil {
		return nil, err
	} else if len(removed) > 0 {
		progress("removed what an earlier run of lab %s left: %v", cfg.labName, removed)
	}
	rate, err := parseRate(cfg.rate)
	if err != nil {
		return nil, err
	}
	p := &peerLab{}
	if p.lab, err = netlab.New(ctx, cfg.labName, cfg.labSubnet); err != nil {
		return nil, err
	}
	if p.regHost, err = p.lab.AddHost(ctx, "registry", netlab.Limits{Up: rate, Down: rate}); err != nil {
		return p, err
	}
	p.regAddr = netip.AddrPortFrom(p.regHost.Addr, labRegistryPort).String()
	if p.regLn, err = p.regHost.Listen(ctx, "tcp", p.regAddr); err != nil {
		return p, err
	}
	return p, nil
}

// listenerFile returns a descriptor of the registry's listener for the registry process, and
// closes this process's listener: the registry process serves it from then on.
func (p *peerLab) listenerFile() (*os.File, error) {
	tl, ok := p.regLn.(*net.TCPListener)
	if !ok {
		return nil, fmt.Errorf("lab registry listener is a %T", p.regLn)
	}
	f, err := tl.File()
	tl.Close()
	p.regLn = nil
	return f, err
}

// start starts the scheduler and the seed and waits until both answer.
func (p *peerLab) start(ctx context.Context, cfg config, dir string) error {
	var err error
	if p.sched, err = p.lab.AddHost(ctx, "sched", netlab.Limits{}); err != nil {
		return err
	}
	p.schedAddr = netip.AddrPortFrom(p.sched.Addr, labSchedulerPort).String()
	p.schedLog = filepath.Join(dir, "lab-scheduler.log")
	// Not tied to ctx: the lab's Close stops them, after everything that uses them.
	schedProc, err := p.sched.Start(context.WithoutCancel(ctx), p.schedLog,
		cfg.schedulerBinary, "--address", p.schedAddr, "--log-level", cfg.logLevel)
	if err != nil {
		return err
	}
	if err := waitTCP(ctx, p.schedAddr, schedProc, 30*time.Second); err != nil {
		return fmt.Errorf("scheduler %s: %w (log %s)", p.schedAddr, err, p.schedLog)
	}

	peerRate, err := parseRate(cfg.peerRate)
	if err != nil {
		return err
	}
	if p.seed, err = p.lab.AddHost(ctx, "seed", netlab.Limits{Up: peerRate, Down: peerRate}); err != nil {
		return err
	}
	root := filepath.Join(dir, "lab-seed")
	if err := os.MkdirAll(root, 0o700); err != nil {
		return err
	}
	cfgPath := filepath.Join(root, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(p.seedConfig(cfg, root, peerRate)), 0o600); err != nil {
		return err
	}
	p.seedLog = filepath.Join(dir, "lab-seed.log")
	if p.seedProc, err = p.seed.Start(context.WithoutCancel(ctx), p.seedLog, cfg.p2pBinary, "--config", cfgPath); err != nil {
		return err
	}
	p.seedCtl = fusemanager.NewClient(filepath.Join(root, "fuse-manager.sock"))
	deadline := time.Now().Add(30 * time.Second)
	for p.seedCtl.Ping(ctx) != nil {
		select {
		case <-p.seedProc.Exited():
			return fmt.Errorf("the seed exited at start; see %s", p.seedLog)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the seed did not answer in 30 s; see %s", p.seedLog)
		}
	}
	progress("lab %s (%s): registry %s (%s each way), scheduler %s, seed %s (%s each way), measured node: the driver %s (not capped)",
		p.lab.Name, p.lab.Subnet, p.regAddr, cfg.rate, p.schedAddr, p.seed.Addr, rateText(peerRate), p.lab.Addr)
	return nil
}

// seedConfig is the seed daemon's configuration: a seed of the lab's scheduler, its data
// plane in the daemon's process (no FUSE manager), no mirror; cache and block size are the
// defaults, as the measured node's.
func (p *peerLab) seedConfig(cfg config, root string, rate uint64) string {
	return fmt.Sprintf(`version = 1
root = %q
address = %q
log_level = %q
[mirror]
address = ""
[registry]
insecure = [%q]
[lazy]
fuse_manager = false
[p2p]
address = %q
schedulers = [%q]
host_id = "seed"
seed = true
upload_capacity = %d
download_capacity = %d
`, root, filepath.Join(root, "p2p-snapshotter.sock"), cfg.logLevel, p.regAddr,
		netip.AddrPortFrom(p.seed.Addr, labBlockPort).String(), p.schedAddr, rate/8, rate/8)
}

// nodeConfig is the measured node's [p2p] section: its block service on the driver's lab
// address, the lab's scheduler, a host id of its own.
func (p *peerLab) nodeConfig(hostID string) (string, error) {
	ln, err := net.Listen("tcp", netip.AddrPortFrom(p.lab.Addr, 0).String())
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	return fmt.Sprintf("[p2p]\naddress = %q\nschedulers = [%q]\nhost_id = %q\n", addr, p.schedAddr, hostID), nil
}

// warm makes the seed read every layer of img from the registry (its control socket's Warm:
// the seed registers, the scheduler lets it read the source, it keeps the layer on disk and
// tells the scheduler it holds it).
func (p *peerLab) warm(ctx context.Context, img imageInfo) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	start := time.Now()
	errs := make([]error, len(img.layers))
	var wg sync.WaitGroup
	for i, l := range img.layers {
		src, err := p.source(img, l)
		if err != nil {
			return err
		}
		wg.Go(func() {
			if err := p.seedCtl.Warm(ctx, src); err != nil {
				errs[i] = fmt.Errorf("seed: warm layer %s: %w (log %s)", l.digest, err, p.seedLog)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	progress("the seed holds the image's %d layers (%s), read from the registry in %s",
		len(img.layers), mb(img.size()), time.Since(start).Round(time.Millisecond))
	return nil
}

// source is layer l of img, an image in the lab's registry, as a daemon names it.
func (p *peerLab) source(img imageInfo, l layerInfo) (seed.Source, error) {
	host, rest, ok := strings.Cut(img.ref, "/")
	if !ok || host != p.regAddr {
		return seed.Source{}, fmt.Errorf("image %s is not in the lab's registry %s", img.ref, p.regAddr)
	}
	repo, _, _ := strings.Cut(rest, ":")
	if l.diffID == "" {
		return seed.Source{}, fmt.Errorf("layer %s: no diffID", l.digest)
	}
	return seed.Source{
		Host: host, Repository: repo,
		Blob:   ocispec.Descriptor{MediaType: l.mediaType, Digest: digest.Digest(l.digest), Size: l.size},
		DiffID: digest.Digest(l.diffID),
	}, nil
}

// image is img as the lab names it: the same repository, tag and digests on the lab's
// listener of the registry.
func (p *peerLab) image(img imageInfo, regHost string) imageInfo {
	out := img
	out.ref = p.regAddr + strings.TrimPrefix(img.ref, regHost)
	return out
}

// counters returns the bytes the seed host has sent and the driver's link has received (all
// the measured node received from the lab: registry, seed, scheduler), headers included.
func (p *peerLab) counters(ctx context.Context) (seedSent, nodeReceived uint64, err error) {
	if _, seedSent, err = p.seed.Counters(ctx); err != nil {
		return 0, 0, err
	}
	b, err := os.ReadFile(filepath.Join("/sys/class/net", p.lab.DriverIf, "statistics", "rx_bytes"))
	if err != nil {
		return 0, 0, err
	}
	nodeReceived, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return seedSent, nodeReceived, err
}

// close stops the lab's processes and removes it.
func (p *peerLab) close() error {
	var errs []error
	if p.regLn != nil {
		errs = append(errs, p.regLn.Close())
	}
	if p.seedProc != nil {
		if err := p.seedProc.Stop(10 * time.Second); err != nil {
			errs = append(errs, fmt.Errorf("seed: %w", err))
		}
	}
	if p.lab != nil {
		errs = append(errs, p.lab.Close())
	}
	return errors.Join(errs...)
}

// waitTCP waits until addr accepts connections (from the driver), or proc exits.
func waitTCP(ctx context.Context, addr string, proc *netlab.Process, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var d net.Dialer
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		c, err := d.DialContext(dctx, "tcp", addr)
		cancel()
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-proc.Exited():
			return errors.New("exited at start")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// parseRate parses a rate in tc's syntax ("100mbit", "1gbit", "12500kbps"; SI prefixes, or
// binary ones with "i": "1mibit") into bits per second. "0" is 0: no limit.
func parseRate(s string) (uint64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], t[i:]
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("rate %q: want a number and a unit as tc takes them (100mbit)", s)
	}
	if v == 0 && unit == "" {
		return 0, nil
	}
	mult := 1.0
	if unit != "" && strings.ContainsRune("kmgt", rune(unit[0])) {
		base := 1000.0
		if len(unit) > 1 && unit[1] == 'i' {
			base = 1024
		}
		mult = map[byte]float64{'k': base, 'm': base * base, 'g': base * base * base, 't': base * base * base * base}[unit[0]]
		unit = strings.TrimPrefix(unit[1:], "i")
	}
	switch unit {
	case "bit":
	case "bps":
		mult *= 8 // tc's bps is bytes per second
	default:
		return 0, fmt.Errorf("rate %q: unit %q: want bit, kbit, mbit, gbit, tbit or …bps (bytes)", s, t[i:])
	}
	if v*mult < 1 {
		return 0, fmt.Errorf("rate %q: too small", s)
	}
	return uint64(v * mult), nil
}

// rateText formats bits per second for the report ("100 Mbit/s", "not capped").
func rateText(bps uint64) string {
	switch {
	case bps == 0:
		return "not capped"
	case bps%netlab.Gbit == 0:
		return fmt.Sprintf("%d Gbit/s", bps/netlab.Gbit)
	case bps%netlab.Mbit == 0:
		return fmt.Sprintf("%d Mbit/s", bps/netlab.Mbit)
	}
	return fmt.Sprintf("%.3f Mbit/s", float64(bps)/float64(netlab.Mbit))
}
