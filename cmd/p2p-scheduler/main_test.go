package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/p2pimage/p2p-snapshotter/p2p/tlsfiles"
	"github.com/p2pimage/p2p-snapshotter/p2p/tlsfiles/tlstest"
	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
)

func TestServeAndStop(t *testing.T) {
	// The file says tree and an address; the flags override the address.
	const file = "address = \"127.0.0.1:1\"\nlog_level = \"error\"\n[topology]\nmode = \"tree\"\n"
	tests := []struct {
		name        string
		toml        string
		args        []string
		wantMetrics bool
	}{
		{"--address, no metrics", file, []string{"--address", "127.0.0.1:0"}, false},
		{"--listen and --metrics-address", file, []string{"--listen", "127.0.0.1:0", "--metrics-address", "127.0.0.1:0"}, true},
		{"metrics_address in the file", "metrics_address = \"127.0.0.1:0\"\n" + file, []string{"--listen", "127.0.0.1:0"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.toml")
			if err := os.WriteFile(path, []byte(tt.toml), 0o600); err != nil {
				t.Fatal(err)
			}
			type addrs struct{ grpc, metrics net.Addr }
			listening := make(chan addrs, 1)
			cmd := newCommand(func(g, m net.Addr) { listening <- addrs{g, m} })
			cmd.SetArgs(append([]string{"--config", path}, tt.args...))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- cmd.ExecuteContext(ctx) }()
			var got addrs
			select {
			case got = <-listening:
			case err := <-done:
				t.Fatalf("exited early: %v", err)
			case <-time.After(10 * time.Second):
				t.Fatal("not listening")
			}
			conn, err := grpc.NewClient(got.grpc.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "p2pimage.scheduler.v1.Scheduler"})
			if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("health: got %v, %v; want SERVING", resp, err)
			}
			if (got.metrics != nil) != tt.wantMetrics {
				t.Fatalf("got metrics address %v; want one: %v", got.metrics, tt.wantMetrics)
			}
			if tt.wantMetrics {
				body := get(t, "http://"+got.metrics.String()+"/metrics")
				for _, want := range []string{"\np2p_scheduler_hosts 0\n", "\np2p_scheduler_decisions_total 0\n", "p2p_scheduler_decision_duration_seconds_bucket"} {
					if !strings.Contains(body, want) {
						t.Errorf("/metrics: got no %q in\n%s", want, body)
					}
				}
				if body := get(t, "http://"+got.metrics.String()+"/api/v1/tasks"); strings.TrimSpace(body) != "[]" {
					t.Errorf("/api/v1/tasks: got %q; want no task", body)
				}
				if body := get(t, "http://"+got.metrics.String()+"/"); !strings.Contains(body, "<title>p2p-scheduler</title>") {
					t.Errorf("/: got %.100q; want the status page", body)
				}
			}
			cancel() // as SIGTERM does
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("stop: got %v; want a clean exit", err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("did not stop")
			}
		})
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s, %v", url, resp.Status, err)
	}
	return string(b)
}

func TestBadConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte("[topology]\nmode = \"ring\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := newCommand(nil)
	cmd.SetArgs([]string{"--config", path})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "ring") {
		t.Fatalf("got %v; want an error naming the bad mode", err)
	}
	cmd = newCommand(nil)
	cmd.SetArgs([]string{"--topology", "star"})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "star") {
		t.Fatalf("got %v; want an error naming the bad flag value", err)
	}
	cmd = newCommand(nil)
	cmd.SetArgs([]string{"--metrics-address", "9103"})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "metrics_address") {
		t.Fatalf("got %v; want an error naming metrics_address", err)
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		cmd := newCommand(nil)
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetArgs(args)
		if err := cmd.Execute(); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), version) {
			t.Fatalf("%v: got %q; want the version", args, out.String())
		}
	}
}

// TestServeMutualTLS: with [tls] files the service takes only clients with a certificate of
// the CA, but answers health checks without one (probes make them so).
func TestServeMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewAuthority(t, "cluster CA")
	f := ca.Valid(t, dir, "scheduler")
	path := filepath.Join(dir, "config.toml")
	toml := "version = 1\nlog_level = \"error\"\n[tls]\nca = \"" + f.CA + "\"\ncert = \"" + f.Cert + "\"\nkey = \"" + f.Key + "\"\n"
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	listening := make(chan net.Addr, 1)
	cmd := newCommand(func(g, _ net.Addr) { listening <- g })
	cmd.SetArgs([]string{"--config", path, "--address", "127.0.0.1:0"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	var addr net.Addr
	select {
	case addr = <-listening:
	case err := <-done:
		t.Fatalf("exited early: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not listening")
	}
	dial := func(cfg *tls.Config) *grpc.ClientConn {
		conn, err := grpc.NewClient(addr.String(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	anonymous, err := tlsfiles.ServerOnlyConfig(f.CA)
	if err != nil {
		t.Fatal(err)
	}
	member := tlstest.Load(t, ca.Valid(t, dir, "host")).ClientConfig()
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	defer rcancel()
	if resp, err := healthpb.NewHealthClient(dial(anonymous)).Check(rctx, &healthpb.HealthCheckRequest{}); err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health without a client certificate: %v, %v; want SERVING", resp, err)
	}
	announce := &schedulerv1.AnnounceHostRequest{HostId: "h", BlockAddress: "127.0.0.1:1"}
	if _, err := schedulerv1.NewSchedulerClient(dial(anonymous)).AnnounceHost(rctx, announce); status.Code(err) != codes.Unauthenticated {
		t.Errorf("announce without a client certificate: %v; want Unauthenticated", err)
	}
	if _, err := schedulerv1.NewSchedulerClient(dial(member)).AnnounceHost(rctx, announce); err != nil {
		t.Errorf("announce with a certificate of the CA: %v", err)
	}
}
