package netlab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// helperEnv switches the test binary into a helper (see runHelper) that tests start inside
// a host, so that they need no tool but ip.
const helperEnv = "NETLAB_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		if err := runHelper(mode, os.Args[1:]); err != nil {
			fmt.Fprintf(os.Stderr, "netlab test helper %s: %v\n", mode, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runHelper runs one of the helpers:
//
//	serve ADDR   a TCP server on ADDR for the requests of serveConn
//	echo ADDR    sends "echo" and a greeting to the server at ADDR, prints the answer
//	spawn        starts a child "sleep", prints its pid, sleeps
//	sleep        sleeps
//	hello        prints hello
func runHelper(mode string, args []string) error {
	switch mode {
	case "serve":
		ln, err := net.Listen("tcp", args[0])
		if err != nil {
			return err
		}
		for {
			conn, err := ln.Accept()
			if err != nil {
				return err
			}
			go serveConn(conn)
		}
	case "echo":
		conn, err := net.DialTimeout("tcp", args[0], 5*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		fmt.Fprintf(conn, "echo\nhello %s from %s\n", args[0], conn.LocalAddr())
		conn.(*net.TCPConn).CloseWrite()
		_, err = io.Copy(os.Stdout, conn)
		return err
	case "spawn":
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		child := exec.Command(exe)
		child.Env = append(os.Environ(), helperEnv+"=sleep")
		if err := child.Start(); err != nil {
			return err
		}
		fmt.Printf("child %d\n", child.Process.Pid)
		return child.Wait()
	case "sleep":
		time.Sleep(time.Hour)
		return nil
	case "hello":
		_, err := fmt.Println("hello")
		return err
	}
	return fmt.Errorf("unknown helper")
}

// serveConn answers one request: "echo\n" sends back what follows; "sink\n" reads to the
// end, then answers with the number of bytes read.
func serveConn(conn net.Conn) {
	defer conn.Close()
	r := bufio.NewReader(conn)
	switch req, _ := r.ReadString('\n'); req {
	case "echo\n":
		io.Copy(conn, r)
	case "sink\n":
		n, _ := io.Copy(io.Discard, r)
		fmt.Fprintf(conn, "%d\n", n)
	}
}

// helperCommand returns argv that runs helper mode with args, for Host.Start and
// Host.Command. Built with -race, a helper would sleep 1 s before it exits, but for
// atexit_sleep_ms=0.
func helperCommand(t testing.TB, mode string, args ...string) []string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	return append([]string{"env", helperEnv + "=" + mode, "GORACE=" + gorace, exe}, args...)
}

// newLab sweeps what an earlier run left of lab name and creates it anew, closed when the
// test ends. It skips the test when not root or without iproute2.
func newLab(t testing.TB, name, subnet string, opts ...Option) *Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("netlab needs root (network namespaces, veths, tc): run the tests as root")
	}
	for _, tool := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("netlab needs %s: install iproute2", tool)
		}
	}
	ctx := context.Background()
	if removed, err := Sweep(ctx, name); err != nil {
		t.Fatal(err)
	} else if len(removed) > 0 {
		t.Logf("removed leftovers of an earlier run: %v", removed)
	}
	l, err := New(ctx, name, netip.MustParsePrefix(subnet), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	return l
}

func addHost(t testing.TB, l *Lab, name string, limits Limits) *Host {
	t.Helper()
	h, err := l.AddHost(context.Background(), name, limits)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// startServer starts the helper server on h's port 7000 and waits until the driver reaches
// it.
func startServer(t *testing.T, h *Host) netip.AddrPort {
	t.Helper()
	addr := netip.AddrPortFrom(h.Addr, 7000)
	log := filepath.Join(t.TempDir(), h.Name+".log")
	p, err := h.Start(t.Context(), log, helperCommand(t, "serve", addr.String())...)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		conn, err := net.DialTimeout("tcp", addr.String(), time.Second)
		if err == nil {
			conn.Close()
			return addr
		}
		select {
		case <-p.Exited():
			b, _ := os.ReadFile(log)
			t.Fatalf("server on %s exited: %v\n%s", h.Name, p.Wait(t.Context()), b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server on %s: %v", h.Name, err)
		}
	}
}

func echo(ctx context.Context, conn net.Conn, msg string) (string, error) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, "echo\n"+msg); err != nil {
		return "", err
	}
	conn.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(conn)
	return string(b), err
}

// transfer sends n bytes over a TCP connection with congestion control cc ("" for the
// default) from a host to a sink at to, and returns how long it took until the sink had them
// all.
func transfer(ctx context.Context, from *Host, to netip.AddrPort, cc string, n int64) (time.Duration, error) {
	start := time.Now()
	var conn net.Conn
	err := inNetns(nsPath(from.Netns), func() (err error) {
		d := &net.Dialer{}
		if cc != "" {
			d.Control = func(_, _ string, c syscall.RawConn) error {
				var serr error
				err := c.Control(func(fd uintptr) {
					serr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, cc)
				})
				return errors.Join(err, serr)
			}
		}
		conn, err = d.DialContext(ctx, "tcp", to.String())
		return err
	})
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "sink\n"); err != nil {
		return 0, err
	}
	if _, err := io.Copy(conn, io.LimitReader(zeros{}, n)); err != nil {
		return 0, err
	}
	conn.(*net.TCPConn).CloseWrite()
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return 0, err
	}
	elapsed := time.Since(start)
	if got, err := strconv.ParseInt(strings.TrimSpace(line), 10, 64); err != nil || got != n {
		return 0, fmt.Errorf("the sink got %q bytes; want %d", line, n)
	}
	return elapsed, nil
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// sink serves serveConn in host h, from this process, until the test ends.
func sink(t testing.TB, h *Host, port uint16) netip.AddrPort {
	t.Helper()
	addr := netip.AddrPortFrom(h.Addr, port)
	ln, err := h.Listen(context.Background(), "tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go serveConn(conn)
		}
	}()
	return addr
}

// measure sends n bytes from one host to another and returns the payload rate and the rate
// of Ethernet frames that the receiver's eth0 took in, in bits per second.
func measure(ctx context.Context, from, to *Host, sinkAddr netip.AddrPort, cc string, n int64) (goodput, wire float64, err error) {
	rx0, _, err := to.Counters(ctx)
	if err != nil {
		return 0, 0, err
	}
	elapsed, err := transfer(ctx, from, sinkAddr, cc, n)
	if err != nil {
		return 0, 0, err
	}
	rx1, _, err := to.Counters(ctx)
	if err != nil {
		return 0, 0, err
	}
	return float64(n*8) / elapsed.Seconds(), float64((rx1-rx0)*8) / elapsed.Seconds(), nil
}
