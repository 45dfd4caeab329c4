package netlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

func TestNewInvalid(t *testing.T) {
	for _, tc := range []struct{ name, subnet string }{
		{"toolong", "10.213.0.0/24"},
		{"a-b", "10.213.0.0/24"},
		{"1ab", "10.213.0.0/24"},
		{"Ab", "10.213.0.0/24"},
		{"nlt", "8.8.8.0/24"},
		{"nlt", "10.213.0.0/31"},
		{"nlt", "fd00:213::/64"},
	} {
		_, err := New(context.Background(), tc.name, netip.MustParsePrefix(tc.subnet))
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("New(%q, %s): got %v; want an invalid-argument error", tc.name, tc.subnet, err)
		}
	}
}

func TestReach(t *testing.T) {
	l := newLab(t, "nltr", "10.213.1.0/24")
	ctx := t.Context()
	var hosts []*Host
	servers := map[string]netip.AddrPort{}
	for _, name := range []string{"a", "b", "c"} {
		h := addHost(t, l, name, Limits{})
		hosts = append(hosts, h)
		servers[name] = startServer(t, h)
	}
	if got, want := l.Addr.String(), "10.213.1.1"; got != want {
		t.Errorf("driver address %s; want %s", got, want)
	}
	for i, h := range hosts {
		if got, want := h.Addr.String(), fmt.Sprintf("10.213.1.%d", i+2); got != want {
			t.Errorf("host %s: address %s; want %s", h.Name, got, want)
		}
	}

	t.Run("host to host", func(t *testing.T) {
		for _, from := range hosts {
			for _, to := range hosts {
				if from == to {
					continue
				}
				cmd := from.Command(ctx, helperCommand(t, "echo", servers[to.Name].String())...)
				out, err := cmd.CombinedOutput()
				want := fmt.Sprintf("hello %s from %s:", servers[to.Name], from.Addr)
				if err != nil || !strings.HasPrefix(string(out), want) {
					t.Errorf("%s to %s: got %q, %v; want %q…", from.Name, to.Name, out, err, want)
				}
			}
		}
	})

	t.Run("driver to host", func(t *testing.T) {
		for _, to := range hosts {
			conn, err := net.DialTimeout("tcp", servers[to.Name].String(), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := echo(ctx, conn, "from the driver"); got != "from the driver" || err != nil {
				t.Errorf("driver to %s: got %q, %v", to.Name, got, err)
			}
		}
	})

	t.Run("in process", func(t *testing.T) {
		a, b := hosts[0], hosts[1]
		ln, err := a.Listen(ctx, "tcp", ":7001")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		accepted := make(chan net.Addr, 1)
		go func() {
			conn, err := ln.Accept()
			if err != nil {
				accepted <- nil
				return
			}
			accepted <- conn.RemoteAddr()
			serveConn(conn)
		}()
		rx0, _, err := b.Counters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ports0, err := l.PortCounters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := b.Dial(ctx, "tcp", netip.AddrPortFrom(a.Addr, 7001))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := echo(ctx, conn, "in process"); got != "in process" || err != nil {
			t.Errorf("b to a: got %q, %v", got, err)
		}
		if got := <-accepted; got == nil || !strings.HasPrefix(got.String(), b.Addr.String()+":") {
			t.Errorf("a accepted a connection from %v; want one from %s", got, b.Addr)
		}
		if rx, _, err := b.Counters(ctx); err != nil || rx <= rx0 {
			t.Errorf("b's eth0 received %d bytes before, %d after, %v; want more after", rx0, rx, err)
		}
		ports, err := l.PortCounters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range []*Host{a, b} {
			if ports[h.Name].Sent <= ports0[h.Name].Sent || ports[h.Name].Received <= ports0[h.Name].Received {
				t.Errorf("%s's port counted %+v before, %+v after; want more sent and received", h.Name, ports0[h.Name], ports[h.Name])
			}
		}
		// The listener is a's alone: the driver reaches it on a's address only.
		if conn, err := net.DialTimeout("tcp", "127.0.0.1:7001", time.Second); err == nil {
			conn.Close()
			t.Error("the driver reached a's listener on its own loopback")
		}
	})

	t.Run("add host errors", func(t *testing.T) {
		// A namespace of the lab's that AddHost did not make is not AddHost's to delete.
		if out, err := exec.Command("ip", "netns", "add", "nltr-taken").CombinedOutput(); err != nil {
			t.Fatalf("ip netns add: %v: %s", err, out)
		}
		for _, tc := range []struct {
			name string
			is   func(error) bool
		}{
			{"a", errdefs.IsAlreadyExists},
			{"switch", errdefs.IsInvalidArgument},
			{"B", errdefs.IsInvalidArgument},
			{"", errdefs.IsInvalidArgument},
			{"taken", func(err error) bool { return err != nil }},
		} {
			if _, err := l.AddHost(ctx, tc.name, Limits{}); !tc.is(err) {
				t.Errorf("AddHost(%q): got %v", tc.name, err)
			}
		}
		if _, err := os.Stat(nsPath("nltr-taken")); err != nil {
			t.Errorf("the namespace that was there before: %v", err)
		}
		d := addHost(t, l, "d", Limits{Up: Gbit, Down: Gbit})
		if got, want := d.Addr.String(), "10.213.1.5"; got != want {
			t.Errorf("address after failures %s; want %s", got, want)
		}
		if got := len(l.Hosts()); got != 4 {
			t.Errorf("%d hosts; want 4", got)
		}
	})

	t.Run("no route out", func(t *testing.T) {
		out, err := hosts[0].Command(ctx, "ip", "-4", "route", "show").Output()
		if err != nil {
			t.Fatal(err)
		}
		if got, want := strings.Fields(string(out))[0], "10.213.1.0/24"; got != want || strings.Contains(string(out), "default") {
			t.Errorf("routes in a host:\n%s\nwant only %s", out, want)
		}
	})
}

func TestShaping(t *testing.T) {
	l := newLab(t, "nlts", "10.213.2.0/24")
	ctx := t.Context()
	const rate = 20 * Mbit
	up := addHost(t, l, "up", Limits{Up: rate})
	down := addHost(t, l, "down", Limits{Down: rate})
	peer := addHost(t, l, "peer", Limits{})
	for _, tc := range []struct {
		name     string
		from, to *Host
	}{
		{"up", up, peer},
		{"down", peer, down},
	} {
		t.Run(tc.name, func(t *testing.T) {
			goodput, wire, err := measure(ctx, tc.from, tc.to, sink(t, tc.to, 7000), "", 4<<20)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s to %s, capped at %d Mbit/s: payload %.2f Mbit/s, frames %.2f Mbit/s",
				tc.from.Name, tc.to.Name, rate/Mbit, goodput/1e6, wire/1e6)
			if r := goodput / float64(rate); r < 0.7 || r > 1.15 {
				t.Errorf("payload rate %.2f Mbit/s is %.2f× the cap; want 0.7–1.15×", goodput/1e6, r)
			}
		})
	}
	t.Run("unlimited", func(t *testing.T) {
		if err := up.SetLimits(ctx, Limits{}); err != nil {
			t.Fatal(err)
		}
		goodput, _, err := measure(ctx, up, peer, sink(t, peer, 7001), "", 4<<20)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("up to peer, no cap: %.0f Mbit/s", goodput/1e6)
		if goodput < 2*float64(rate) {
			t.Errorf("payload rate %.2f Mbit/s without a cap; want well above %d Mbit/s", goodput/1e6, rate/Mbit)
		}
	})
}

// BenchmarkShaping measures how close the payload and frame rates of one bulk TCP
// transfer come to the cap, up and down, with each congestion control available of bbr and
// cubic: go test -run '^$' -bench Shaping -benchtime 1x. payload/cap is 0.956 when the link
// is busy all the time (1448 payload bytes in each 1514-byte frame); frames/cap counts less
// than the link carried at high rates (see Host.Counters).
func BenchmarkShaping(b *testing.B) {
	l := newLab(b, "nltb", "10.213.3.0/24")
	ctx := context.Background()
	shaped := addHost(b, l, "shaped", Limits{})
	peer := addHost(b, l, "peer", Limits{})
	peerSink, shapedSink := sink(b, peer, 7000), sink(b, shaped, 7000)
	available, err := os.ReadFile("/proc/sys/net/ipv4/tcp_available_congestion_control")
	if err != nil {
		b.Fatal(err)
	}
	for _, cc := range []string{"bbr", "cubic"} {
		if !slices.Contains(strings.Fields(string(available)), cc) {
			continue
		}
		for _, rate := range []uint64{8 * Mbit, 20 * Mbit, 100 * Mbit, 300 * Mbit, Gbit} {
			for _, dir := range []string{"up", "down"} {
				b.Run(fmt.Sprintf("%s/%s/%dMbit", cc, dir, rate/Mbit), func(b *testing.B) {
					from, to, addr, limits := shaped, peer, peerSink, Limits{Up: rate}
					if dir == "down" {
						from, to, addr, limits = peer, shaped, shapedSink, Limits{Down: rate}
					}
					if err := shaped.SetLimits(ctx, limits); err != nil {
						b.Fatal(err)
					}
					n := max(int64(rate/8)*2, 4<<20) // about 2 s
					var goodput, wire float64
					for b.Loop() {
						g, w, err := measure(ctx, from, to, addr, cc, n)
						if err != nil {
							b.Fatal(err)
						}
						goodput, wire = goodput+g, wire+w
					}
					b.ReportMetric(goodput/float64(b.N)/float64(rate), "payload/cap")
					b.ReportMetric(wire/float64(b.N)/float64(rate), "frames/cap")
				})
			}
		}
	}
}

func TestCloseAndSweep(t *testing.T) {
	ctx := t.Context()
	leftovers := func(t *testing.T, name string) []string {
		t.Helper()
		var left []string
		out, err := exec.Command("ip", "netns", "list").Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, name+"-") {
				left = append(left, "netns "+line)
			}
		}
		out, err = exec.Command("ip", "-o", "link").Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], name) {
				left = append(left, "link "+f[1])
			}
		}
		return left
	}
	build := func(t *testing.T, name, subnet string) (*Lab, *Process, *exec.Cmd) {
		l := newLab(t, name, subnet)
		a := addHost(t, l, "a", Limits{Up: 10 * Mbit, Down: 10 * Mbit})
		addHost(t, l, "b", Limits{})
		p, err := a.Start(ctx, "", helperCommand(t, "sleep")...)
		if err != nil {
			t.Fatal(err)
		}
		// Not the lab's: Close or Sweep must find it in the namespace.
		stray := a.Command(ctx, helperCommand(t, "sleep")...)
		if err := stray.Start(); err != nil {
			t.Fatal(err)
		}
		if got := leftovers(t, name); len(got) != 4 { // netns a, b, switch; link -drv
			t.Fatalf("lab %s made %v; want 3 namespaces and 1 link", name, got)
		}
		return l, p, stray
	}
	checkGone := func(t *testing.T, name string, p *Process, stray *exec.Cmd) {
		t.Helper()
		if got := leftovers(t, name); len(got) > 0 {
			t.Errorf("left behind: %v", got)
		}
		select {
		case <-p.Exited():
		case <-time.After(5 * time.Second):
			t.Error("the lab's process still runs")
		}
		if err := stray.Wait(); err == nil {
			t.Error("the stray process exited with 0; want it killed")
		}
	}

	t.Run("close", func(t *testing.T) {
		l, p, stray := build(t, "nltc", "10.213.4.0/24")
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		checkGone(t, "nltc", p, stray)
		if err := l.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if _, err := l.AddHost(ctx, "c", Limits{}); err == nil {
			t.Error("AddHost after Close succeeded")
		}
	})

	t.Run("sweep", func(t *testing.T) {
		_, p, stray := build(t, "nltw", "10.213.5.0/24") // never closed before the sweep
		if _, err := New(ctx, "nltw", netip.MustParsePrefix("10.213.6.0/24")); !errdefs.IsAlreadyExists(err) {
			t.Errorf("New over leftovers: got %v; want an already-exists error", err)
		}
		if _, err := New(ctx, "nltx", netip.MustParsePrefix("10.213.5.128/25")); !errdefs.IsAlreadyExists(err) {
			t.Errorf("New on a subnet in use: got %v; want an already-exists error", err)
		}
		removed, err := Sweep(ctx, "nltw")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("swept %v", removed)
		if len(removed) != 4 {
			t.Errorf("Sweep removed %v; want 3 namespaces and 1 link", removed)
		}
		checkGone(t, "nltw", p, stray)
	})
}

func TestProcess(t *testing.T) {
	l := newLab(t, "nltk", "10.213.7.0/24", WithMTU(9000))
	h := addHost(t, l, "a", Limits{Up: 100 * Mbit})
	if out, err := h.Command(t.Context(), "ip", "link", "show", "eth0").Output(); err != nil || !strings.Contains(string(out), "mtu 9000") {
		t.Errorf("ip link show eth0: %v: %s; want mtu 9000", err, out)
	}

	t.Run("output", func(t *testing.T) {
		log := filepath.Join(t.TempDir(), "hello.log")
		for _, logPath := range []string{"", log} {
			p, err := h.Start(t.Context(), logPath, helperCommand(t, "hello")...)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Wait(t.Context()); err != nil {
				t.Errorf("log %q: the process failed: %v", logPath, err)
			}
		}
		if b, err := os.ReadFile(log); err != nil || !strings.HasSuffix(string(b), "\nhello\n") {
			t.Errorf("log: %q, %v; want a header line, then hello", b, err)
		}
	})

	t.Run("kill kills the group", func(t *testing.T) {
		log := filepath.Join(t.TempDir(), "spawn.log")
		p, err := h.Start(t.Context(), log, helperCommand(t, "spawn")...)
		if err != nil {
			t.Fatal(err)
		}
		var child int
		for deadline := time.Now().Add(10 * time.Second); child == 0; time.Sleep(10 * time.Millisecond) {
			b, _ := os.ReadFile(log)
			if i := strings.Index(string(b), "child "); i >= 0 {
				fmt.Sscanf(string(b[i:]), "child %d", &child)
			}
			if time.Now().After(deadline) {
				t.Fatalf("no child pid in the log:\n%s", b)
			}
		}
		if dead(child) {
			t.Fatalf("child %d is not running", child)
		}
		if err := p.Kill(); err != nil {
			t.Fatal(err)
		}
		var exit *exec.ExitError
		if err := p.Wait(t.Context()); !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Errorf("Wait after Kill: %v; want killed by SIGKILL", err)
		}
		for deadline := time.Now().Add(5 * time.Second); !dead(child); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("child %d survived Kill", child)
			}
		}
	})

	t.Run("stop", func(t *testing.T) {
		p, err := h.Start(t.Context(), "", helperCommand(t, "sleep")...)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := p.Stop(5 * time.Second); err != nil {
			t.Errorf("Stop: %v; want nil", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("Stop took %s; SIGTERM should have ended it at once", d)
		}
	})

	t.Run("context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		p, err := h.Start(ctx, "", helperCommand(t, "sleep")...)
		if err != nil {
			t.Fatal(err)
		}
		cancel()
		select {
		case <-p.Exited():
		case <-time.After(5 * time.Second):
			t.Fatal("the process outlived its context")
		}
	})
}
