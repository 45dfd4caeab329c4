package tlsfiles_test

import (
	"crypto/tls"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/p2pimage/p2p-snapshotter/p2p/tlsfiles"
	"github.com/p2pimage/p2p-snapshotter/p2p/tlsfiles/tlstest"
)

func load(t *testing.T, f tlsfiles.Files) *tlsfiles.Identity {
	t.Helper()
	id, err := tlsfiles.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// serve answers every TLS connection on a loopback listener with "ok".
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Write([]byte("ok"))
			}()
		}
	}()
	return ln.Addr().String()
}

// dial reports whether a client with cfg gets "ok" from addr.
func dial(addr string, cfg *tls.Config) error {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	b, err := io.ReadAll(c)
	if err == nil && string(b) != "ok" {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	ca, other := tlstest.NewAuthority(t, "cluster CA"), tlstest.NewAuthority(t, "another CA")
	server := load(t, ca.Issue(t, dir, "server", now.Add(-time.Hour), now.Add(time.Hour)))
	addr := serve(t, server.ServerConfig())

	for _, tc := range []struct {
		name   string
		client *tls.Config
		ok     bool
	}{
		{"a client the CA signed", load(t, ca.Issue(t, dir, "good", now.Add(-time.Hour), now.Add(time.Hour))).ClientConfig(), true},
		{"no certificate", &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}, false},
		{"a certificate of another CA", load(t, other.Issue(t, dir, "rogue", now.Add(-time.Hour), now.Add(time.Hour))).ClientConfig(), false},
		{"an expired certificate", load(t, ca.Issue(t, dir, "expired", now.Add(-2*time.Hour), now.Add(-time.Hour))).ClientConfig(), false},
		{"a certificate not valid yet", load(t, ca.Issue(t, dir, "early", now.Add(time.Hour), now.Add(2*time.Hour))).ClientConfig(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := dial(addr, tc.client)
			if tc.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.ok && err == nil {
				t.Fatal("accepted")
			}
		})
	}

	// A client of the cluster does not accept a server of another CA, or an expired one.
	client := load(t, ca.Issue(t, dir, "client", now.Add(-time.Hour), now.Add(time.Hour))).ClientConfig()
	for name, f := range map[string]tlsfiles.Files{
		"another CA's": other.Issue(t, dir, "imposter", now.Add(-time.Hour), now.Add(time.Hour)),
		"expired":      ca.Issue(t, dir, "stale", now.Add(-2*time.Hour), now.Add(-time.Hour)),
	} {
		if err := dial(serve(t, load(t, f).ServerConfig()), client); err == nil {
			t.Errorf("the client accepted a server with %s certificate", name)
		}
	}
}

// TestRotationWithoutRestart: the cluster moves to a new CA by replacing the files; the
// server and the client use the new ones at their next handshakes, and the old CA's
// certificates stop working, all without a new Identity.
func TestRotationWithoutRestart(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	old, next := tlstest.NewAuthority(t, "old CA"), tlstest.NewAuthority(t, "new CA")
	serverFiles := old.Issue(t, dir, "server", now.Add(-time.Hour), now.Add(time.Hour))
	clientFiles := old.Issue(t, dir, "client", now.Add(-time.Hour), now.Add(time.Hour))
	server, client := load(t, serverFiles), load(t, clientFiles)
	addr := serve(t, server.ServerConfig())
	if err := dial(addr, client.ClientConfig()); err != nil {
		t.Fatalf("before the rotation: %v", err)
	}
	stale := load(t, old.Issue(t, dir, "stale", now.Add(-time.Hour), now.Add(time.Hour))) // keeps the old files

	// Rotate: the same paths, new contents, newer modification times.
	next.Issue(t, dir, "server", now.Add(-time.Hour), now.Add(time.Hour))
	next.Issue(t, dir, "client", now.Add(-time.Hour), now.Add(time.Hour))
	later := time.Now().Add(2 * time.Second)
	for _, f := range []tlsfiles.Files{serverFiles, clientFiles} {
		for _, p := range []string{f.CA, f.Cert, f.Key} {
			if err := os.Chtimes(p, later, later); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, id := range []*tlsfiles.Identity{server, client} { // the next check is due
		tlsfiles.ExpireCheck(id)
	}
	if err := dial(addr, client.ClientConfig()); err != nil {
		t.Fatalf("after the rotation: %v", err)
	}
	if err := dial(addr, stale.ClientConfig()); err == nil {
		t.Error("after the rotation a client of the old CA was accepted")
	}
}
