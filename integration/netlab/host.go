package netlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"sync"

	"github.com/containerd/errdefs"
)

// Rates, in bits per second.
const (
	Kbit uint64 = 1000
	Mbit        = 1000 * Kbit
	Gbit        = 1000 * Mbit
)

// Limits caps a host's link, in bits per second of Ethernet frames (headers included, as a
// NIC's rate: bulk TCP carries about 95% of it as payload); 0 is no limit. Up limits what the
// host sends, Down what it receives, from other hosts and from the driver alike.
type Limits struct {
	Up, Down uint64
}

// Host is one host of a Lab: a network namespace whose "eth0" is a port of the lab's bridge.
type Host struct {
	// Name is the name given to AddHost; Netns the namespace's, as `ip netns` shows it.
	Name, Netns string
	// Addr is the address of the host's eth0.
	Addr netip.Addr
	// Port is the bridge's end of the host's link, in the namespace Lab.Name+"-switch".
	Port string

	lab *Lab

	mu     sync.Mutex // guards limits, held while they change
	limits Limits
}

// AddHost adds a host called name (1 to 32 of [a-z0-9_-], starting with a letter or digit;
// not "switch") with the next free address of the subnet and the given limits. Its
// namespace is Lab.Name+"-"+name, with loopback up, and it reaches the driver and the other
// hosts, nothing else (no default route). On error AddHost removes what it created.
func (l *Lab) AddHost(ctx context.Context, name string, limits Limits) (*Host, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, fmt.Errorf("netlab %s: add host %s: lab closed", l.Name, name)
	}
	if !hostNameRE.MatchString(name) || name == switchSuffix[1:] {
		return nil, fmt.Errorf("netlab %s: add host %q: bad name: %w", l.Name, name, errdefs.ErrInvalidArgument)
	}
	for _, h := range l.hosts {
		if h.Name == name {
			return nil, fmt.Errorf("netlab %s: add host %s: %w", l.Name, name, errdefs.ErrAlreadyExists)
		}
	}
	if !l.Subnet.Contains(l.next.Next()) { // l.next is the broadcast address
		return nil, fmt.Errorf("netlab %s: add host %s: no address left in %s", l.Name, name, l.Subnet)
	}
	index := len(l.hosts) + 1
	h := &Host{
		Name: name, Netns: l.Name + "-" + name, Addr: l.next,
		Port: l.Name + "h" + strconv.Itoa(index), lab: l,
	}
	sw := l.switchNS()
	mtu := strconv.Itoa(l.mtu)
	if _, err := runCmd(ctx, l.ip, "netns", "add", h.Netns); err != nil {
		return nil, fmt.Errorf("netlab %s: add host %s: %w", l.Name, name, err)
	}
	err := l.run(ctx,
		[]string{l.ip, "-n", h.Netns, "link", "set", "lo", "up"},
		[]string{l.ip, "-n", sw, "link", "add", h.Port, "mtu", mtu, "type", "veth", "peer", "name", hostIf, "mtu", mtu, "netns", h.Netns},
		[]string{l.ip, "-n", sw, "link", "set", h.Port, "addrgenmode", "none"},
		[]string{l.ip, "-n", h.Netns, "link", "set", hostIf, "addrgenmode", "none"},
		[]string{l.ip, "-n", h.Netns, "addr", "add", netip.PrefixFrom(h.Addr, l.Subnet.Bits()).String(), "dev", hostIf},
		[]string{l.ip, "-n", h.Netns, "link", "set", hostIf, "up"},
		[]string{l.ip, "-n", sw, "link", "set", h.Port, "master", bridgeName, "up"},
	)
	if err == nil {
		err = h.SetLimits(ctx, limits)
	}
	if err != nil {
		err = fmt.Errorf("netlab %s: add host %s: %w", l.Name, name, err)
		// The port first: deleting it deletes the pair at once, the namespace only later.
		if _, derr := runCmd(ctx, l.ip, "-n", sw, "link", "show", h.Port); derr == nil {
			_, derr = runCmd(ctx, l.ip, "-n", sw, "link", "del", h.Port)
			err = errors.Join(err, derr)
		}
		_, derr := runCmd(ctx, l.ip, "netns", "del", h.Netns)
		return nil, errors.Join(err, derr)
	}
	l.hosts = append(l.hosts, h)
	l.next = l.next.Next()
	return h, nil
}

// SetLimits changes the host's limits.
func (h *Host) SetLimits(ctx context.Context, limits Limits) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.lab
	if err := l.shape(ctx, h.Netns, hostIf, h.limits.Up, limits.Up); err != nil {
		return fmt.Errorf("netlab %s: host %s: limit upload: %w", l.Name, h.Name, err)
	}
	h.limits.Up = limits.Up
	if err := l.shape(ctx, l.switchNS(), h.Port, h.limits.Down, limits.Down); err != nil {
		return fmt.Errorf("netlab %s: host %s: limit download: %w", l.Name, h.Name, err)
	}
	h.limits.Down = limits.Down
	return nil
}

// Limits returns the host's limits.
func (h *Host) Limits() Limits {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.limits
}

// shape caps the egress of dev in namespace ns at rate (bits/s), or removes the cap when
// rate is 0; old is the rate set before.
func (l *Lab) shape(ctx context.Context, ns, dev string, old, rate uint64) error {
	if rate == old {
		return nil
	}
	if old != 0 {
		if _, err := runCmd(ctx, l.tc, "-n", ns, "qdisc", "del", "dev", dev, "root"); err != nil {
			return err
		}
	}
	if rate == 0 {
		return nil
	}
	for _, argv := range shapeCommands(dev, rate, l.mtu) {
		if _, err := runCmd(ctx, append([]string{l.tc, "-n", ns}, argv...)...); err != nil {
			return err
		}
	}
	return nil
}

// Command returns a command that runs argv inside the host's namespace (`ip netns exec`,
// which also mounts the namespace's /sys): it has the host's network, and the machine's files
// and processes. The process is not the lab's: Close kills it only if it is still in the
// namespace then. Use Start for daemons.
func (h *Host) Command(ctx context.Context, argv ...string) *exec.Cmd {
	return exec.CommandContext(ctx, h.lab.ip, append([]string{"netns", "exec", h.Netns}, argv...)...)
}

// Listen listens on address in the host's namespace, from this process: connections to it
// come in over the host's link, and what is sent on them goes out over it. address is
// "IP:port" or ":port" (the host's addresses), never a name to resolve.
func (h *Host) Listen(ctx context.Context, network, address string) (net.Listener, error) {
	if host, _, err := net.SplitHostPort(address); err != nil {
		return nil, fmt.Errorf("netlab %s: host %s: listen %s: %w", h.lab.Name, h.Name, address, err)
	} else if _, err := netip.ParseAddr(host); host != "" && err != nil {
		return nil, fmt.Errorf("netlab %s: host %s: listen %s: want an IP address: %w", h.lab.Name, h.Name, address, errdefs.ErrInvalidArgument)
	}
	var ln net.Listener
	err := inNetns(nsPath(h.Netns), func() (err error) {
		ln, err = (&net.ListenConfig{}).Listen(ctx, network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netlab %s: host %s: %w", h.lab.Name, h.Name, err)
	}
	return ln, nil
}

// Dial connects to addr from the host's namespace, from this process: the connection goes
// over the host's link.
func (h *Host) Dial(ctx context.Context, network string, addr netip.AddrPort) (net.Conn, error) {
	var conn net.Conn
	err := inNetns(nsPath(h.Netns), func() (err error) {
		conn, err = (&net.Dialer{}).DialContext(ctx, network, addr.String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netlab %s: host %s: %w", h.lab.Name, h.Name, err)
	}
	return conn, nil
}

// linkStats is what `ip -j -s link show` says of a link, as far as netlab reads it.
type linkStats struct {
	Name  string `json:"ifname"`
	Stats struct {
		RX struct {
			Bytes uint64 `json:"bytes"`
		} `json:"rx"`
		TX struct {
			Bytes uint64 `json:"bytes"`
		} `json:"tx"`
	} `json:"stats64"`
}

// Counters returns the bytes the host's eth0 has received and sent, Ethernet headers
// included.
func (h *Host) Counters(ctx context.Context) (rxBytes, txBytes uint64, err error) {
	var links []linkStats
	if err := runJSON(ctx, &links, h.lab.ip, "-n", h.Netns, "-j", "-s", "link", "show", "dev", hostIf); err != nil {
		return 0, 0, fmt.Errorf("netlab %s: host %s: counters: %w", h.lab.Name, h.Name, err)
	}
	if len(links) != 1 {
		return 0, 0, fmt.Errorf("netlab %s: host %s: counters: %d links called %s", h.lab.Name, h.Name, len(links), hostIf)
	}
	return links[0].Stats.RX.Bytes, links[0].Stats.TX.Bytes, nil
}

// Traffic is what a host sent and received, in bytes, Ethernet headers included.
type Traffic struct{ Sent, Received uint64 }

// PortCounters returns every host's traffic by host name, as its bridge port counts it (what
// the port received, the host sent), read in one call for the whole lab: cheaper than
// Counters host by host when sampling often.
func (l *Lab) PortCounters(ctx context.Context) (map[string]Traffic, error) {
	var links []linkStats
	if err := runJSON(ctx, &links, l.ip, "-n", l.switchNS(), "-j", "-s", "link", "show"); err != nil {
		return nil, fmt.Errorf("netlab %s: port counters: %w", l.Name, err)
	}
	byPort := make(map[string]linkStats, len(links))
	for _, ln := range links {
		byPort[ln.Name] = ln
	}
	out := make(map[string]Traffic)
	for _, h := range l.Hosts() {
		if ln, ok := byPort[h.Port]; ok {
			out[h.Name] = Traffic{Sent: ln.Stats.RX.Bytes, Received: ln.Stats.TX.Bytes}
		}
	}
	return out, nil
}
