package blobs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"

	"github.com/p2pimage/p2p-snapshotter/blockcache"
	"github.com/p2pimage/p2p-snapshotter/layer"
)

const blockSize = 64 << 10

// testRegistry is a real registry behind a bearer check that counts the blob bytes it sends
// and can corrupt one byte of them.
type testRegistry struct {
	url       *url.URL
	sent      atomic.Int64
	ranges    atomic.Int64
	corruptAt atomic.Int64 // offset in the blob of a byte to flip; -1 for none
}

func newTestRegistry(t *testing.T) *testRegistry {
	t.Helper()
	inner := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	tr := &testRegistry{}
	tr.corruptAt.Store(-1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.Header.Get("Authorization") != "Bearer good" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="test"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
			return
		}
		if r.Header.Get("Range") != "" {
			tr.ranges.Add(1)
		}
		inner.ServeHTTP(&countingWriter{ResponseWriter: w, tr: tr, start: rangeStart(r)}, r)
	}))
	t.Cleanup(srv.Close)
	tr.url, _ = url.Parse(srv.URL + "/v2")
	return tr
}

func rangeStart(r *http.Request) int64 {
	var start, end int64
	if _, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &start, &end); err != nil {
		return 0
	}
	return start
}

type countingWriter struct {
	http.ResponseWriter
	tr    *testRegistry
	start int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if at := c.tr.corruptAt.Load(); at >= c.start && at < c.start+int64(len(p)) {
		p = bytes.Clone(p)
		p[at-c.start] ^= 0xff
	}
	c.start += int64(len(p))
	c.tr.sent.Add(int64(len(p)))
	return c.ResponseWriter.Write(p)
}

// Upstream reaches the test registry whatever the host.
func (tr *testRegistry) Upstream(context.Context, string) (*url.URL, *http.Client, error) {
	return tr.url, http.DefaultClient, nil
}

func (tr *testRegistry) push(t *testing.T, repo string, blob []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(blob)
	req, _ := http.NewRequest(http.MethodPost, tr.url.String()+"/"+repo+"/blobs/uploads/?digest="+d.String(), bytes.NewReader(blob))
	req.Header.Set("Authorization", "Bearer good")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("push blob: %s", resp.Status)
	}
	tr.sent.Store(0)
	tr.ranges.Store(0)
	return d
}

func randomBlob(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(uint64(n), 1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func newServer(t *testing.T, tr *testRegistry, cacheBytes int64) *Server {
	t.Helper()
	cache, err := blockcache.New(cacheBytes, blockcache.WithBlockSize(blockSize))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })
	return New(cache, tr)
}

var goodAuth = http.Header{"Authorization": {"Bearer good"}}

func TestCopyBlobReadsTheRegistryOnce(t *testing.T) {
	tr := newTestRegistry(t)
	blob := randomBlob(10*blockSize + 123)
	d := tr.push(t, "app", blob)
	s := newServer(t, tr, 32*blockSize)
	for i := range 3 {
		var out bytes.Buffer
		n, err := s.CopyBlob(t.Context(), &out, Request{Host: "example.test", Repository: "app", Digest: d, Size: int64(len(blob)), Header: goodAuth})
		if err != nil {
			t.Fatalf("copy %d: %v", i, err)
		}
		if n != int64(len(blob)) || !bytes.Equal(out.Bytes(), blob) {
			t.Fatalf("copy %d: got %d bytes, want the blob's %d", i, out.Len(), len(blob))
		}
	}
	if got, want := tr.sent.Load(), int64(len(blob)); got != want {
		t.Errorf("registry sent %d bytes for three copies, want %d: one copy", got, want)
	}
	if got, want := tr.ranges.Load(), int64(11); got != want {
		t.Errorf("registry got %d range requests, want %d: one per block", got, want)
	}
}

func TestCopyBlobEvictedBlocksAreReadAgainAndVerified(t *testing.T) {
	tr := newTestRegistry(t)
	blob := randomBlob(12 * blockSize)
	d := tr.push(t, "app", blob)
	s := newServer(t, tr, 4*blockSize) // smaller than the blob: the second copy refetches
	req := Request{Host: "example.test", Repository: "app", Digest: d, Size: int64(len(blob)), Header: goodAuth}
	if _, err := s.CopyBlob(t.Context(), io.Discard, req); err != nil {
		t.Fatal(err)
	}
	// Now the block table is known: a corrupt block is refused on its own, before anything
	// is written past it.
	tr.corruptAt.Store(2*blockSize + 5)
	var out bytes.Buffer
	n, err := s.CopyBlob(t.Context(), &out, req)
	if !errors.Is(err, layer.ErrDigestMismatch) {
		t.Fatalf("got error %v, want one wrapping ErrDigestMismatch", err)
	}
	if n != 2*blockSize || !bytes.Equal(out.Bytes(), blob[:n]) {
		t.Fatalf("wrote %d bytes before the corrupt block, want the %d good ones", n, 2*blockSize)
	}
	tr.corruptAt.Store(-1)
	out.Reset()
	if _, err := s.CopyBlob(t.Context(), &out, req); err != nil || !bytes.Equal(out.Bytes(), blob) {
		t.Fatalf("after the registry healed: err %v, equal %v", err, bytes.Equal(out.Bytes(), blob))
	}
}

func TestCopyBlobWithholdsTheLastBlockOfAWrongBlob(t *testing.T) {
	tr := newTestRegistry(t)
	blob := randomBlob(3*blockSize + 10)
	d := tr.push(t, "app", blob)
	tr.corruptAt.Store(blockSize + 1)
	s := newServer(t, tr, 32*blockSize)
	var out bytes.Buffer
	n, err := s.CopyBlob(t.Context(), &out, Request{Host: "example.test", Repository: "app", Digest: d, Size: int64(len(blob)), Header: goodAuth})
	if !errors.Is(err, layer.ErrDigestMismatch) {
		t.Fatalf("got error %v, want one wrapping ErrDigestMismatch", err)
	}
	if n != 3*blockSize {
		t.Fatalf("wrote %d bytes, want %d: all but the last block", n, 3*blockSize)
	}
	tr.corruptAt.Store(-1)
	out.Reset()
	if _, err := s.CopyBlob(t.Context(), &out, Request{Host: "example.test", Repository: "app", Digest: d, Size: int64(len(blob)), Header: goodAuth}); err != nil || !bytes.Equal(out.Bytes(), blob) {
		t.Fatalf("the corrupt blocks stayed cached: err %v", err)
	}
}

func TestCopyBlobUsesTheCallersCredentials(t *testing.T) {
	tr := newTestRegistry(t)
	blob := randomBlob(blockSize)
	d := tr.push(t, "app", blob)
	s := newServer(t, tr, 8*blockSize)
	var out bytes.Buffer
	n, err := s.CopyBlob(t.Context(), &out, Request{Host: "example.test", Repository: "app", Digest: d, Size: int64(len(blob)), Header: http.Header{"Authorization": {"Bearer bad"}}})
	if err == nil || n != 0 || out.Len() != 0 {
		t.Fatalf("with bad credentials: wrote %d bytes, err %v; want nothing and an error", n, err)
	}
}
