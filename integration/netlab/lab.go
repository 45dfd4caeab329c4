package netlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"sync"
	"time"

	"github.com/containerd/errdefs"
)

// Lab is a set of hosts, each a network namespace, joined by one bridge, plus the driver: the
// root namespace, which reaches every host over an unlimited link. Create it with New, add
// hosts with AddHost, remove everything with Close. Its methods are safe for concurrent use.
type Lab struct {
	// Name prefixes every namespace and interface the lab creates.
	Name string
	// Subnet is the private IPv4 prefix the lab numbers the driver and its hosts in.
	Subnet netip.Prefix
	// Addr is the driver's address, Subnet's first; DriverIf is its interface, in the root
	// namespace.
	Addr     netip.Addr
	DriverIf string

	ip, tc string
	mtu    int

	mu     sync.Mutex // guards what follows; held while a host is added
	hosts  []*Host
	next   netip.Addr // the address of the next host
	procs  map[*Process]struct{}
	closed bool

	closeMu sync.Mutex // serialises Close
}

// Names the lab gives to what it creates, from the lab's name L: the namespaces L-switch
// (the bridge) and L-HOST (each host), the driver's veth L-drv in the root namespace, whose
// peer "drv" is a port of the bridge "br0", and for each host the pair of L+"h"+index, a
// port of the bridge, and "eth0" inside the host.
const (
	switchSuffix = "-switch"
	driverSuffix = "-drv"
	driverPort   = "drv"
	bridgeName   = "br0"
	hostIf       = "eth0"
)

var (
	labNameRE  = regexp.MustCompile(`^[a-z][a-z0-9]{0,5}$`)
	hostNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)
)

// Option configures a Lab.
type Option func(*Lab)

// WithMTU sets the MTU of every link of the lab (default 1500, as Ethernet).
func WithMTU(mtu int) Option {
	return func(l *Lab) { l.mtu = mtu }
}

// New creates the lab name, numbered in subnet: the switch namespace with its bridge, and
// the driver's link to it, with Subnet's first address. name is 1 to 6 lowercase letters and
// digits, starting with a letter, and must not be in use (Sweep removes what a crashed run
// left). subnet is a private IPv4 prefix of /30 or larger that overlaps no address or route of
// the machine; the lab adds a route to it, and no other, in the root namespace. On error New
// removes what it created.
func New(ctx context.Context, name string, subnet netip.Prefix, opts ...Option) (*Lab, error) {
	subnet = subnet.Masked()
	l := &Lab{
		Name: name, Subnet: subnet, Addr: subnet.Addr().Next(), DriverIf: name + driverSuffix,
		mtu: 1500, next: subnet.Addr().Next().Next(), procs: map[*Process]struct{}{},
	}
	for _, o := range opts {
		o(l)
	}
	if !labNameRE.MatchString(name) {
		return nil, fmt.Errorf("netlab %q: bad name: want 1-6 of [a-z0-9], a letter first: %w", name, errdefs.ErrInvalidArgument)
	}
	if !subnet.IsValid() || !subnet.Addr().Is4() || !subnet.Addr().IsPrivate() || subnet.Bits() > 30 {
		return nil, fmt.Errorf("netlab %s: subnet %s: want a private IPv4 /30 or larger: %w", name, subnet, errdefs.ErrInvalidArgument)
	}
	if l.mtu < 576 || l.mtu > 65535 {
		return nil, fmt.Errorf("netlab %s: MTU %d out of range: %w", name, l.mtu, errdefs.ErrInvalidArgument)
	}
	var err error
	if l.ip, err = exec.LookPath("ip"); err != nil {
		return nil, fmt.Errorf("netlab %s: %w (install iproute2)", name, err)
	}
	if l.tc, err = exec.LookPath("tc"); err != nil {
		return nil, fmt.Errorf("netlab %s: %w (install iproute2)", name, err)
	}
	if left, err := leftovers(ctx, l.ip, name); err != nil {
		return nil, fmt.Errorf("netlab %s: %w", name, err)
	} else if len(left) > 0 {
		return nil, fmt.Errorf("netlab %s: %v in use (a crashed run? call Sweep): %w", name, left, errdefs.ErrAlreadyExists)
	}
	if err := checkSubnetFree(ctx, l.ip, subnet); err != nil {
		return nil, fmt.Errorf("netlab %s: %w", name, err)
	}

	sw := l.switchNS()
	cidr := netip.PrefixFrom(l.Addr, subnet.Bits()).String()
	mtu := fmt.Sprint(l.mtu)
	err = l.run(ctx,
		[]string{l.ip, "netns", "add", sw},
		[]string{l.ip, "-n", sw, "link", "set", "lo", "up"},
		[]string{l.ip, "-n", sw, "link", "add", bridgeName, "mtu", mtu, "type", "bridge", "forward_delay", "0"},
		[]string{l.ip, "-n", sw, "link", "set", bridgeName, "addrgenmode", "none"},
		[]string{l.ip, "link", "add", l.DriverIf, "mtu", mtu, "type", "veth", "peer", "name", driverPort, "mtu", mtu, "netns", sw},
		[]string{l.ip, "link", "set", l.DriverIf, "addrgenmode", "none"},
		[]string{l.ip, "-n", sw, "link", "set", driverPort, "addrgenmode", "none"},
		[]string{l.ip, "-n", sw, "link", "set", driverPort, "master", bridgeName, "up"},
		[]string{l.ip, "-n", sw, "link", "set", bridgeName, "up"},
		[]string{l.ip, "addr", "add", cidr, "dev", l.DriverIf},
		[]string{l.ip, "link", "set", l.DriverIf, "up"},
	)
	if err == nil {
		err = disableBridgeNetfilter(nsPath(sw))
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("netlab %s: %w", name, err), l.Close())
	}
	return l, nil
}

// disableBridgeNetfilter turns off, in the switch's namespace, br_netfilter's passing of
// bridged frames to iptables (on by default in every namespace once the module is loaded):
// the namespace has no rules, so it would only cost time. In the root namespace the same
// setting (and a FORWARD policy of DROP, as Docker sets) would drop traffic between hosts:
// that is why the bridge is not there.
func disableBridgeNetfilter(ns string) error {
	return inNetns(ns, func() error {
		for _, name := range []string{"bridge-nf-call-iptables", "bridge-nf-call-ip6tables", "bridge-nf-call-arptables"} {
			err := os.WriteFile("/proc/sys/net/bridge/"+name, []byte("0\n"), 0o644)
			if err != nil && !errors.Is(err, os.ErrNotExist) { // no br_netfilter: nothing to do
				return fmt.Errorf("switch: %w", err)
			}
		}
		return nil
	})
}

// checkSubnetFree refuses a subnet that overlaps an address of this machine, or a route as
// specific as the lab's or more (a less specific one, such as a VPN's 10.0.0.0/8, the lab's
// route overrides for its subnet only).
func checkSubnetFree(ctx context.Context, ip string, subnet netip.Prefix) error {
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
		if netip.PrefixFrom(addr.Unmap(), ones).Masked().Overlaps(subnet) {
			return fmt.Errorf("subnet %s overlaps %s, an address of this machine: pick another: %w", subnet, a, errdefs.ErrAlreadyExists)
		}
	}
	var routes []struct {
		Dst string `json:"dst"`
	}
	if err := runJSON(ctx, &routes, ip, "-j", "-4", "route", "show", "table", "all"); err != nil {
		return err
	}
	for _, r := range routes {
		p, err := netip.ParsePrefix(r.Dst)
		if err != nil {
			a, aerr := netip.ParseAddr(r.Dst)
			if aerr != nil {
				continue // "default" and the like
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Bits() >= subnet.Bits() && p.Overlaps(subnet) {
			return fmt.Errorf("subnet %s overlaps the route to %s: pick another: %w", subnet, p, errdefs.ErrAlreadyExists)
		}
	}
	return nil
}

// Hosts returns the hosts added so far, in order.
func (l *Lab) Hosts() []*Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Host(nil), l.hosts...)
}

// Close tears down the lab: it kills the processes it started (their whole process groups)
// and every other process still in one of its namespaces, then deletes the driver's link and
// the namespaces, which takes the bridge and the hosts' links with them. It works after a
// partial failure of New or AddHost, and may be called again (to retry after an error, or
// for nothing).
func (l *Lab) Close() error {
	l.closeMu.Lock()
	defer l.closeMu.Unlock()
	l.mu.Lock()
	l.closed = true
	procs := make([]*Process, 0, len(l.procs))
	for p := range l.procs {
		procs = append(procs, p)
	}
	l.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	for _, p := range procs {
		if err := p.Kill(); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := sweep(ctx, l.ip, l.Name); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("netlab %s: close: %w", l.Name, err)
	}
	return nil
}

func (l *Lab) switchNS() string { return l.Name + switchSuffix }

// run runs each command in turn and stops at the first that fails.
func (l *Lab) run(ctx context.Context, cmds ...[]string) error {
	for _, argv := range cmds {
		if _, err := runCmd(ctx, argv...); err != nil {
			return err
		}
	}
	return nil
}
