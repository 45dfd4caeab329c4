package containerdenv

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testSubnet is the private subnet the NetNS tests number their veth pairs in.
var testSubnet = netip.MustParsePrefix("10.201.254.0/30")

// requireIproute2 skips a test when ip or tc is missing (Debian's iproute2 package).
func requireIproute2(t *testing.T) {
	t.Helper()
	for _, name := range []string{"ip", "tc"} {
		if _, err := lookPath(name); err != nil {
			t.Skipf("needs %s: install iproute2", name)
		}
	}
}

func TestNetNS(t *testing.T) {
	RequireRoot(t)
	requireIproute2(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := fmt.Sprintf("p2p-netns-test-%d", os.Getpid())
	hostIf := fmt.Sprintf("p2pt%d", os.Getpid())
	n, err := NewNetNS(ctx, name, hostIf, testSubnet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Error(err)
		}
	})
	if n.HostAddr.String() != "10.201.254.1" || n.NSAddr.String() != "10.201.254.2" {
		t.Errorf("addresses %s, %s; want 10.201.254.1, 10.201.254.2", n.HostAddr, n.NSAddr)
	}
	if _, err := NewNetNS(ctx, name+"-b", hostIf+"b", testSubnet); err == nil {
		t.Error("a second namespace on the same subnet was created; want an error")
	}

	// A server on the host's end, a client inside the namespace.
	ln, err := net.Listen("tcp", netip.AddrPortFrom(n.HostAddr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from the host")
	})}
	go srv.Serve(ln)
	defer srv.Close()
	if err := n.LimitRate(ctx, "100mbit"); err != nil {
		t.Fatal(err)
	}
	out, err := n.Command(ctx, "busybox", "wget", "-q", "-O", "-", "http://"+ln.Addr().String()+"/").CombinedOutput()
	if err != nil || string(out) != "hello from the host" {
		t.Fatalf("wget from inside the namespace: %v: %q", err, out)
	}
	for _, argv := range [][]string{
		{"tc", "qdisc", "show", "dev", hostIf},
		{"tc", "-n", name, "qdisc", "show", "dev", "eth0"},
	} {
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "tbf") || !strings.Contains(string(out), "100Mbit") {
			t.Errorf("%s: %v: %s; want a 100Mbit tbf", strings.Join(argv, " "), err, out)
		}
	}
	if rx, tx, err := n.HostIfBytes(); err != nil || rx == 0 || tx == 0 {
		t.Errorf("HostIfBytes() = %d, %d, %v; want traffic both ways", rx, tx, err)
	}

	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", name)); err == nil {
		t.Errorf("namespace %s still there after Close", name)
	}
	if _, err := net.InterfaceByName(hostIf); err == nil {
		t.Errorf("interface %s still there after Close", hostIf)
	}
}

func TestSweepNetNS(t *testing.T) {
	RequireRoot(t)
	requireIproute2(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A pid that is gone: a process that ran and exited.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("p2p-sweep-test-%d-", os.Getpid())
	dead := prefix + fmt.Sprint(cmd.Process.Pid)
	alive := prefix + fmt.Sprint(os.Getpid())
	for _, ns := range []string{dead, alive} {
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", ns, err, out)
		}
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	deleted, err := SweepNetNS(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(deleted) != 1 || deleted[0] != dead {
		t.Errorf("SweepNetNS deleted %v; want [%s]", deleted, dead)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", alive)); err != nil {
		t.Errorf("the namespace of a live process was deleted: %v", err)
	}
}
