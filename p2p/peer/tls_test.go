package peer

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/p2pimage/p2p-snapshotter/layer"
	"github.com/p2pimage/p2p-snapshotter/p2p/tlsfiles"
	"github.com/p2pimage/p2p-snapshotter/p2p/tlsfiles/tlstest"
)

// TestBlocksOverMutualTLS: a block server behind mutual TLS serves a peer whose certificate
// the cluster's CA signed, and refuses one of another CA, one whose certificate expired, and
// one speaking plain TCP.
func TestBlocksOverMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, other := tlstest.NewAuthority(t, "cluster"), tlstest.NewAuthority(t, "other")
	identity := func(f tlsfiles.Files) *tlsfiles.Identity { return tlstest.Load(t, f) }
	addr := serveTLS(t, identity(ca.Valid(t, dir, "server")))

	for _, tc := range []struct {
		name   string
		client *Client
		ok     bool
	}{
		{"a peer of the cluster", NewClient(WithClientTLS(identity(ca.Valid(t, dir, "peer")).ClientConfig())), true},
		{"a peer of another CA", NewClient(WithClientTLS(identity(other.Valid(t, dir, "rogue")).ClientConfig())), false},
		{"an expired certificate", NewClient(WithClientTLS(identity(ca.Issue(t, dir, "expired", time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))).ClientConfig())), false},
		{"plain TCP", NewClient(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer tc.client.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			buf := make([]byte, 4096)
			n, _, err := tc.client.Block(ctx, addr, task, 7, time.Second, buf)
			if tc.ok && (err != nil || !bytes.Equal(buf[:n], []byte{7, 1, 2, 3})) {
				t.Fatalf("refused: %v, %x", err, buf[:n])
			}
			if !tc.ok && err == nil {
				t.Fatal("served")
			}
		})
	}
}

// gateFor admits the peers whose certificates name one of names; to "later" it does not
// hold the task yet.
type gateFor []string

func (g gateFor) Admit(_ context.Context, identity string, _ layer.TaskID) error {
	switch {
	case slices.Contains(g, identity):
		return nil
	case identity == "later":
		return fmt.Errorf("not classified yet: %w", ErrNotHeld)
	}
	return fmt.Errorf("%q may not read the task: %w", identity, ErrForbidden)
}

// TestGateSeesCertificateNames: a gate learns each peer by the name its verified
// certificate carries; what it refuses is answered "forbidden", which the client reports as
// ErrForbidden, and what it does not hold yet "not found"; the connection stays usable.
func TestGateSeesCertificateNames(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewAuthority(t, "cluster")
	identity := func(f tlsfiles.Files) *tlsfiles.Identity { return tlstest.Load(t, f) }
	addr := serveTLS(t, identity(ca.Valid(t, dir, "server")), WithGate(gateFor{"alice"}))

	for _, tc := range []struct {
		name string
		want error
	}{{"alice", nil}, {"mallory", ErrForbidden}, {"later", ErrNotFound}} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewClient(WithClientTLS(identity(ca.Valid(t, dir, tc.name)).ClientConfig()))
			defer c.Close()
			for range 2 { // the second request goes over the same connection
				buf := make([]byte, 4096)
				_, _, err := c.Block(t.Context(), addr, task, 7, time.Second, buf)
				switch {
				case tc.want == nil && err != nil:
					t.Fatalf("refused: %v", err)
				case tc.want != nil && !errors.Is(err, tc.want):
					t.Fatalf("got %v; want %v", err, tc.want)
				}
			}
		})
	}
}

// serveTLS serves a holder of every block over mutual TLS as id, on loopback, until the
// test ends, and returns its address.
func serveTLS(t *testing.T, id *tlsfiles.Identity, opts ...ServerOption) string {
	t.Helper()
	h := newHolder(t)
	close(h.gate)
	s := NewServer(h, opts...)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(context.Background(), tls.NewListener(ln, id.ServerConfig()))
	t.Cleanup(func() { s.Close() })
	return ln.Addr().String()
}
