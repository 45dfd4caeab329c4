package snapshotter

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/proxy"
	"github.com/containerd/containerd/v2/core/snapshots/testsuite"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestConformanceThroughProxy runs containerd's snapshotter conformance suite against the
// snapshotter as containerd sees it: served on a unix socket and used through containerd's
// own proxy client.
func TestConformanceThroughProxy(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the suite mounts overlayfs")
	}
	// The suite adapts a few checks to the snapshotter's name: ours has overlayfs semantics
	// (renaming a lower directory needs redirect_dir), so it runs under that name.
	testsuite.SnapshotterSuite(t, "overlayfs", func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		sn, err := New(ctx, root)
		if err != nil {
			return nil, nil, err
		}
		client, stop, err := serveForTest(sn, filepath.Join(root, "p2p.sock"))
		if err != nil {
			sn.Close()
			return nil, nil, err
		}
		return client, func() error {
			stop()
			return sn.Close()
		}, nil
	})
}

// serveForTest serves sn on a socket and returns containerd's proxy client for it.
func serveForTest(sn snapshots.Snapshotter, sock string) (snapshots.Snapshotter, func(), error) {
	ln, err := ListenUnix(sock)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, sn, ln) }()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		cancel()
		<-served
		return nil, nil, err
	}
	client := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "p2p")
	return client, func() {
		conn.Close()
		cancel()
		<-served
	}, nil
}

func TestListenUnixRefusesALiveSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := ListenUnix(sock); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("second listener: got %v, want a refusal", err)
	}
	ln.Close()
	// A stale socket file from a dead process is replaced.
	if err := os.WriteFile(sock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ln2, err := ListenUnix(sock)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	ln2.Close()
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, body, wantErr string
		check               func(*testing.T, Config)
	}{
		{"empty file keeps defaults", "", "", func(t *testing.T, c Config) {
			if !reflect.DeepEqual(c, DefaultConfig()) {
				t.Errorf("got %+v, want the defaults", c)
			}
		}},
		{"values", "root = \"/srv/p2p\"\nlog_level = \"debug\"\n[cache]\nsize = \"256MiB\"\nblock_size = \"4MiB\"\n[registry]\ninsecure = [\"reg.local:5000\"]\n[lazy]\ntimeout = \"90s\"\n", "", func(t *testing.T, c Config) {
			if c.Root != "/srv/p2p" || c.LogLevel != "debug" || c.Cache.Size != 256<<20 || c.Cache.BlockSize != 4<<20 ||
				len(c.Registry.Insecure) != 1 || c.Lazy.Timeout != Duration(90*time.Second) || !c.Lazy.Enable {
				t.Errorf("got %+v", c)
			}
			if c.Address != DefaultAddress {
				t.Errorf("unset key lost its default: %q", c.Address)
			}
		}},
		{"p2p", "[p2p]\naddress = \"0.0.0.0:65002\"\nadvertise_address = \"10.0.0.5:65002\"\nschedulers = [\"10.0.0.1:65003\", \"sched.example:65003\"]\nseed = true\nupload_capacity = \"20MiB\"\n", "", func(t *testing.T, c Config) {
			if c.P2P.Address != "0.0.0.0:65002" || len(c.P2P.Schedulers) != 2 || !c.P2P.Seed || c.P2P.UploadCapacity != 20<<20 || c.P2P.UploadSlots != 16 {
				t.Errorf("got %+v", c.P2P)
			}
		}},
		{"p2p on every interface, not advertised", "[p2p]\naddress = \"0.0.0.0:65002\"\n", "advertise_address", nil},
		{"p2p bad scheduler", "[p2p]\naddress = \"10.0.0.5:65002\"\nschedulers = [\"nohost\"]\n", "p2p.schedulers", nil},
		{"unknown key", "root = \"/x\"\nroots = \"/y\"\n", "roots", nil},
		{"relative root", "root = \"rel\"\n", "absolute", nil},
		{"bad mirror", "[mirror]\naddress = \"nohost\"\n", "mirror.address", nil},
		{"relative socket", "address = \"p2p.sock\"\n", "address", nil},
		{"bad log level", "log_level = \"loud\"\n", "log_level", nil},
		{"future version", "version = 2\n", "version", nil},
		{"bad size", "[cache]\nsize = \"lots\"\n", "size", nil},
		{"tiny block", "[cache]\nblock_size = \"1KiB\"\n", "block_size", nil},
		{"bad duration", "[lazy]\ntimeout = \"soon\"\n", ":2:", nil},
		{"syntax", "root = \n", "config", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".toml")
			if err := os.WriteFile(p, []byte(tc.body), 0o644); err != nil {
				t.Fatal(err)
			}
			c, err := LoadConfig(p)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error about %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}
