package registry

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// rangeRecorder records the Range headers of blob requests and can make the
// registry ignore them (answer 200 with the whole blob).
type rangeRecorder struct {
	mu     sync.Mutex
	seen   []string
	ignore bool
}

func (rr *rangeRecorder) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := r.Header.Get("Range"); h != "" {
			rr.mu.Lock()
			rr.seen = append(rr.seen, h)
			ignore := rr.ignore
			rr.mu.Unlock()
			if ignore {
				r = r.Clone(r.Context())
				r.Header.Del("Range")
			}
		}
		next.ServeHTTP(w, r)
	})
}

func (rr *rangeRecorder) take() []string {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	s := rr.seen
	rr.seen = nil
	return s
}

func TestReadBlobRange(t *testing.T) {
	rr := &rangeRecorder{}
	reg := newTestRegistry(t, rr.middleware)
	f := pushFixtures(t, reg)
	c := testClient(t, reg)
	ctx := context.Background()

	layers, err := f.Single.Layers()
	if err != nil {
		t.Fatal(err)
	}
	l := layers[2]
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	blob, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	h, _ := l.Digest()
	dgst := digest.Digest(h.String())
	size := int64(len(blob))

	tests := []struct {
		name           string
		offset, length int64
		ignoreRange    bool
		wantHeader     string
		wantErr        error // matched with errors.Is; nil means success
		wantAnyErr     bool
	}{
		{name: "head", offset: 0, length: 10, wantHeader: "bytes=0-9"},
		{name: "middle", offset: 100, length: 200, wantHeader: "bytes=100-299"},
		{name: "tail", offset: size - 7, length: 7},
		{name: "whole", offset: 0, length: size},
		{name: "server ignores range", offset: 50, length: 30, ignoreRange: true, wantHeader: "bytes=50-79"},
		{name: "beyond end, server ignores range", offset: size - 5, length: 10, ignoreRange: true, wantErr: io.ErrUnexpectedEOF},
		{name: "beyond end", offset: size + 10, length: 10, wantAnyErr: true},
		{name: "zero length", offset: 5, length: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rr.mu.Lock()
			rr.ignore = tt.ignoreRange
			rr.mu.Unlock()
			rr.take()

			rc, err := c.ReadBlobRange(ctx, reg.Host, "app/single", dgst, tt.offset, tt.length)
			var got []byte
			if err == nil {
				got, err = readAllClose(t, rc)
			}
			if tt.wantAnyErr {
				if err == nil {
					t.Fatal("no error")
				}
				t.Logf("error: %v", err)
				return
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadBlobRange: %v", err)
			}
			if want := blob[tt.offset : tt.offset+tt.length]; !bytes.Equal(got, want) {
				t.Errorf("got %d bytes that differ from blob[%d:%d]", len(got), tt.offset, tt.offset+tt.length)
			}
			seen := rr.take()
			if tt.length > 0 && len(seen) != 1 {
				t.Fatalf("server saw Range headers %q, want one", seen)
			}
			if tt.wantHeader != "" && seen[0] != tt.wantHeader {
				t.Errorf("Range = %q, want %q", seen[0], tt.wantHeader)
			}
		})
	}

	t.Run("invalid arguments", func(t *testing.T) {
		if _, err := c.ReadBlobRange(ctx, reg.Host, "app/single", dgst, -1, 5); err == nil {
			t.Error("negative offset accepted")
		}
		if _, err := c.ReadBlobRange(ctx, reg.Host, "app/single", "sha256:nope", 0, 5); err == nil {
			t.Error("invalid digest accepted")
		}
	})
}

// breakingMiddleware serves the first n blob GETs (full or range) only
// halfway, then aborts the connection.
func breakingMiddleware(n int64, ranges *rangeRecorder) middleware {
	var count atomic.Int64
	return func(next http.Handler) http.Handler {
		next = ranges.middleware(next)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !strings.Contains(r.URL.Path, "/blobs/") || count.Add(1) > n {
				next.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, r)
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			body := rec.Body.Bytes()
			_, _ = w.Write(body[:len(body)/2])
			_ = http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler)
		})
	}
}

func TestOpenBlobResumes(t *testing.T) {
	f := newFixture(t)
	layers, err := f.Single.Layers()
	if err != nil {
		t.Fatal(err)
	}
	h, _ := layers[1].Digest()
	size, _ := layers[1].Size()
	desc := ocispec.Descriptor{Digest: digest.Digest(h.String()), Size: size}

	tests := []struct {
		name     string
		breaks   int64
		attempts int
		wantErr  bool
	}{
		{name: "one break", breaks: 1, attempts: 3},
		{name: "two breaks", breaks: 2, attempts: 3},
		{name: "more breaks than attempts", breaks: 5, attempts: 2, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rr := &rangeRecorder{}
			reg := newTestRegistry(t, breakingMiddleware(tt.breaks, rr))
			f.push(t, reg)
			c := testClient(t, reg, WithRetry(tt.attempts, time.Millisecond))
			rc, err := c.OpenBlob(context.Background(), reg.Host, "app/single", desc)
			if err != nil {
				t.Fatalf("OpenBlob: %v", err)
			}
			got, err := readAllClose(t, rc)
			if tt.wantErr {
				if err == nil {
					t.Fatal("no error")
				}
				t.Logf("error: %v", err)
				return
			}
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if int64(len(got)) != size {
				t.Errorf("got %d bytes, want %d", len(got), size)
			}
			if seen := rr.take(); int64(len(seen)) != tt.breaks {
				t.Errorf("saw Range requests %q, want %d resumes", seen, tt.breaks)
			}
		})
	}
}
