package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestServeAndStop(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.toml")
	// The file says tree and an address; the flag overrides the address.
	if err := os.WriteFile(path, []byte("address = \"127.0.0.1:1\"\nlog_level = \"error\"\n[topology]\nmode = \"tree\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addrs := make(chan net.Addr, 1)
	cmd := newCommand(func(a net.Addr) { addrs <- a })
	cmd.SetArgs([]string{"--config", path, "--address", "127.0.0.1:0"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	var addr net.Addr
	select {
	case addr = <-addrs:
	case err := <-done:
		t.Fatalf("exited early: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not listening")
	}
	conn, err := grpc.NewClient(addr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "p2pimage.scheduler.v1.Scheduler"})
	if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: got %v, %v; want SERVING", resp, err)
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
