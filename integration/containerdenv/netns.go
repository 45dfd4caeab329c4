package containerdenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// NetNS is a network namespace of this machine joined to the host by a veth pair: a second
// host for tests and benchmarks, e.g. a registry behind a slow link. Each end of the pair has
// one address of a private subnet that the caller picks and that must not be in use on the
// machine. Traffic between the two addresses never leaves the machine.
//
// Run a process inside with Command (`ip netns exec`); limit the link with LimitRate; Close
// removes the namespace and both veth ends.
type NetNS struct {
	// Name is the namespace's name, as `ip netns` shows it.
	Name string
	// HostIf is the veth end in the host's namespace, NSIf the one inside Name.
	HostIf, NSIf string
	// HostAddr and NSAddr are the addresses of HostIf and NSIf, in Subnet.
	HostAddr, NSAddr netip.Addr
	Subnet           netip.Prefix

	ip, tc string
}

// Limits of interface names (IFNAMSIZ less the NUL) and of namespace names (a file name).
const (
	maxIfName = 15
	maxNSName = 64
)

// NewNetNS creates the namespace name and a veth pair: hostIf in the host's namespace and
// "eth0" inside name, numbered with the first two addresses of subnet (a private IPv4 /30 or
// larger), both up, and the namespace's loopback up. It refuses a subnet that overlaps an
// address already on the machine and a name already taken. On error it removes what it
// created.
func NewNetNS(ctx context.Context, name, hostIf string, subnet netip.Prefix) (*NetNS, error) {
	subnet = subnet.Masked()
	if !subnet.Addr().Is4() || !subnet.Addr().IsPrivate() || subnet.Bits() > 30 {
		return nil, fmt.Errorf("netns %s: subnet %s: want a private IPv4 /30 or larger", name, subnet)
	}
	if name == "" || len(name) > maxNSName || strings.ContainsAny(name, "/ ") {
		return nil, fmt.Errorf("netns: bad name %q", name)
	}
	if hostIf == "" || len(hostIf) > maxIfName || strings.ContainsAny(hostIf, "/ ") {
		return nil, fmt.Errorf("netns %s: bad interface name %q (at most %d bytes)", name, hostIf, maxIfName)
	}
	ipPath, err := lookPath("ip")
	if err != nil {
		return nil, fmt.Errorf("netns: %w (install iproute2)", err)
	}
	tcPath, err := lookPath("tc")
	if err != nil {
		return nil, fmt.Errorf("netns: %w (install iproute2)", err)
	}
	if err := checkSubnetFree(subnet); err != nil {
		return nil, fmt.Errorf("netns %s: %w", name, err)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", name)); err == nil {
		return nil, fmt.Errorf("netns %s exists already", name)
	}
	if _, err := net.InterfaceByName(hostIf); err == nil {
		return nil, fmt.Errorf("netns %s: interface %s exists already", name, hostIf)
	}
	hostAddr := subnet.Addr().Next()
	n := &NetNS{
		Name: name, HostIf: hostIf, NSIf: "eth0",
		HostAddr: hostAddr, NSAddr: hostAddr.Next(), Subnet: subnet,
		ip: ipPath, tc: tcPath,
	}
	cidr := func(a netip.Addr) string { return netip.PrefixFrom(a, subnet.Bits()).String() }
	steps := [][]string{
		{n.ip, "netns", "add", name},
		{n.ip, "link", "add", hostIf, "type", "veth", "peer", "name", n.NSIf, "netns", name},
		{n.ip, "addr", "add", cidr(n.HostAddr), "dev", hostIf},
		{n.ip, "link", "set", hostIf, "up"},
		{n.ip, "-n", name, "addr", "add", cidr(n.NSAddr), "dev", n.NSIf},
		{n.ip, "-n", name, "link", "set", n.NSIf, "up"},
		{n.ip, "-n", name, "link", "set", "lo", "up"},
	}
	for _, argv := range steps {
		if err := runQuiet(ctx, argv...); err != nil {
			return nil, errors.Join(err, n.Close())
		}
	}
	return n, nil
}

// checkSubnetFree refuses a subnet that overlaps an address of any interface here.
func checkSubnetFree(subnet netip.Prefix) error {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return err
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		addr, ok := netip.AddrFromSlice(ipn.IP)
		if !ok {
			continue
		}
		ones, _ := ipn.Mask.Size()
		if p := netip.PrefixFrom(addr.Unmap(), ones).Masked(); p.Overlaps(subnet) {
			return fmt.Errorf("subnet %s overlaps %s, already on this machine: pick another", subnet, a)
		}
	}
	return nil
}

// Command returns a command that runs argv inside the namespace (`ip netns exec`). The
// process has the namespace's network only; files and processes are the host's.
func (n *NetNS) Command(ctx context.Context, argv ...string) *exec.Cmd {
	return exec.CommandContext(ctx, n.ip, append([]string{"netns", "exec", n.Name}, argv...)...)
}

// LimitRate puts a token bucket filter (tc tbf) of rate (tc's syntax: "100mbit") on the
// egress of both veth ends, so each direction of the link carries at most rate. burst is
// 32 kbit and the queue holds 400 ms of traffic.
func (n *NetNS) LimitRate(ctx context.Context, rate string) error {
	tbf := []string{"root", "tbf", "rate", rate, "burst", "32kbit", "latency", "400ms"}
	if err := runQuiet(ctx, append([]string{n.tc, "qdisc", "replace", "dev", n.HostIf}, tbf...)...); err != nil {
		return err
	}
	return runQuiet(ctx, append([]string{n.tc, "-n", n.Name, "qdisc", "replace", "dev", n.NSIf}, tbf...)...)
}

// HostIfBytes returns the bytes the host's veth end has received (sent by the namespace) and
// sent (to the namespace), headers included.
func (n *NetNS) HostIfBytes() (received, sent uint64, err error) {
	read := func(stat string) (uint64, error) {
		b, err := os.ReadFile(filepath.Join("/sys/class/net", n.HostIf, "statistics", stat))
		if err != nil {
			return 0, err
		}
		return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	}
	if received, err = read("rx_bytes"); err != nil {
		return 0, 0, err
	}
	sent, err = read("tx_bytes")
	return received, sent, err
}

// Close removes the veth pair and the namespace. Processes still running inside keep the
// namespace alive, without its name, until they exit: stop them first.
func (n *NetNS) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	if _, err := net.InterfaceByName(n.HostIf); err == nil {
		if err := runQuiet(ctx, n.ip, "link", "del", n.HostIf); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := os.Stat(filepath.Join("/run/netns", n.Name)); err == nil {
		if err := runQuiet(ctx, n.ip, "netns", "del", n.Name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// SweepNetNS deletes the namespaces named prefix + PID whose process PID is gone: what a
// killed run that names its namespaces so left behind. Deleting a namespace removes the veth
// pair whose end is inside. It returns the names it deleted.
func SweepNetNS(ctx context.Context, prefix string) ([]string, error) {
	entries, err := os.ReadDir("/run/netns")
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	ipPath, err := lookPath("ip")
	if err != nil {
		return nil, err
	}
	var deleted []string
	var errs []error
	for _, e := range entries {
		pid, err := strconv.Atoi(strings.TrimPrefix(e.Name(), prefix))
		if !strings.HasPrefix(e.Name(), prefix) || err != nil || pid <= 0 {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil && !isZombie(pid) {
			continue
		}
		if err := runQuiet(ctx, ipPath, "netns", "del", e.Name()); err != nil {
			errs = append(errs, err)
			continue
		}
		deleted = append(deleted, e.Name())
	}
	return deleted, errors.Join(errs...)
}

// runQuiet runs argv and returns an error with its output if it fails.
func runQuiet(ctx context.Context, argv ...string) error {
	stdout, stderr, err := runCmd(ctx, 30*time.Second, nil, argv...)
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, strings.TrimSpace(stdout+stderr))
	}
	return nil
}
