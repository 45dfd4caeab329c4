package registry

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// flaky fails the first n requests whose path ends with suffix (n < 0: all of
// them) with status, or by dropping the connection when status is 0.
type flaky struct {
	suffix string
	n      int64
	status int
	seen   atomic.Int64
}

func (f *flaky) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, f.suffix) {
			next.ServeHTTP(w, r)
			return
		}
		if seen := f.seen.Add(1); f.n >= 0 && seen > f.n {
			next.ServeHTTP(w, r)
			return
		}
		if f.status == 0 {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		writeRegistryError(w, f.status, "UNAVAILABLE", "try again")
	})
}

func TestRetries(t *testing.T) {
	tests := []struct {
		name      string
		n         int64
		status    int
		attempts  int
		wantErr   bool
		wantSeen  int64
		wantInErr string
	}{
		{name: "503 twice then ok", n: 2, status: http.StatusServiceUnavailable, attempts: 3, wantSeen: 3},
		{name: "429 twice then ok", n: 2, status: http.StatusTooManyRequests, attempts: 3, wantSeen: 3},
		{name: "500 once then ok", n: 1, status: http.StatusInternalServerError, attempts: 3, wantSeen: 2},
		{name: "connection dropped twice then ok", n: 2, status: 0, attempts: 3, wantSeen: 3},
		{name: "always 503", n: -1, status: http.StatusServiceUnavailable, attempts: 3, wantErr: true, wantSeen: 3, wantInErr: "503"},
		{name: "always 503, 5 attempts", n: -1, status: http.StatusServiceUnavailable, attempts: 5, wantErr: true, wantSeen: 5, wantInErr: "after 5 attempts"},
		{name: "400 is not retried", n: -1, status: http.StatusBadRequest, attempts: 3, wantErr: true, wantSeen: 1, wantInErr: "400"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fl := &flaky{suffix: "/manifests/v1", n: tt.n, status: tt.status}
			reg := newTestRegistry(t, fl.middleware)
			pushFixtures(t, reg)
			c := testClient(t, reg, WithRetry(tt.attempts, 5*time.Millisecond))
			_, _, err := c.FetchManifest(context.Background(), reg.Host+"/app/single:v1")
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), tt.wantInErr) {
					t.Fatalf("err = %v, want an error mentioning %q", err, tt.wantInErr)
				}
				t.Logf("error: %v", err)
			} else if err != nil {
				t.Fatalf("FetchManifest: %v", err)
			}
			if got := fl.seen.Load(); got != tt.wantSeen {
				t.Errorf("server saw %d requests, want %d", got, tt.wantSeen)
			}
		})
	}
}

func TestRetryBackoff(t *testing.T) {
	fl := &flaky{suffix: "/manifests/v1", n: -1, status: http.StatusServiceUnavailable}
	reg := newTestRegistry(t, fl.middleware)
	pushFixtures(t, reg)
	c := testClient(t, reg, WithRetry(3, 50*time.Millisecond))
	start := time.Now()
	if _, _, err := c.FetchManifest(context.Background(), reg.Host+"/app/single:v1"); err == nil {
		t.Fatal("no error")
	}
	// 50ms + 100ms of backoff between the three attempts.
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("failed after %v, want at least 150ms of backoff", d)
	}
}

// hangingHandler never answers requests whose path ends with suffix until
// the client goes away (or 10s pass).
func hangingMiddleware(suffix string) middleware {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, suffix) {
				select {
				case <-r.Context().Done():
				case <-time.After(10 * time.Second):
				}
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

func TestTimeout(t *testing.T) {
	reg := newTestRegistry(t, hangingMiddleware("/manifests/v1"))
	pushFixtures(t, reg)

	t.Run("request timeout", func(t *testing.T) {
		c := testClient(t, reg, WithRequestTimeout(100*time.Millisecond), WithRetry(2, 5*time.Millisecond))
		start := time.Now()
		_, err := c.Resolve(context.Background(), reg.Host+"/app/single:v1", ocispec.Platform{OS: "linux", Architecture: "amd64"})
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("err = %v, want ErrTimeout", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("took %v", d)
		}
		t.Logf("error: %v", err)
	})
	t.Run("context deadline", func(t *testing.T) {
		c := testClient(t, reg)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, _, err := c.FetchManifest(ctx, reg.Host+"/app/single:v1")
		if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want ErrTimeout and context.DeadlineExceeded", err)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		c := testClient(t, reg)
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		_, _, err := c.FetchManifest(ctx, reg.Host+"/app/single:v1")
		if !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	})
}

// slowBodyMiddleware sends the headers of the blob whose path ends with
// suffix at once, then its body in two halves with a pause in between.
func slowBodyMiddleware(suffix string, pause time.Duration) middleware {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !strings.HasSuffix(r.URL.Path, suffix) {
				next.ServeHTTP(w, r)
				return
			}
			pr, pw := io.Pipe()
			rec := &pipeResponseWriter{header: http.Header{}, w: pw}
			go func() {
				next.ServeHTTP(rec, r)
				pw.Close()
			}()
			body, err := io.ReadAll(pr)
			if err != nil {
				return
			}
			for k, v := range rec.header {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.code)
			half := len(body) / 2
			_, _ = w.Write(body[:half])
			http.NewResponseController(w).Flush()
			time.Sleep(pause)
			_, _ = w.Write(body[half:])
		})
	}
}

type pipeResponseWriter struct {
	header http.Header
	code   int
	w      io.Writer
}

func (p *pipeResponseWriter) Header() http.Header { return p.header }
func (p *pipeResponseWriter) WriteHeader(code int) {
	if p.code == 0 {
		p.code = code
	}
}
func (p *pipeResponseWriter) Write(b []byte) (int, error) {
	p.WriteHeader(http.StatusOK)
	return p.w.Write(b)
}

// The request timeout bounds the wait for headers, not the body transfer.
func TestTimeoutDoesNotLimitBody(t *testing.T) {
	f := newFixture(t)
	layers, err := f.Single.Layers()
	if err != nil {
		t.Fatal(err)
	}
	h, _ := layers[0].Digest()
	size, _ := layers[0].Size()
	reg := newTestRegistry(t, slowBodyMiddleware(h.String(), 900*time.Millisecond))
	f.push(t, reg)
	c := testClient(t, reg, WithRequestTimeout(300*time.Millisecond))
	rc, err := c.OpenBlob(context.Background(), reg.Host, "app/single", ocispec.Descriptor{Digest: digest.Digest(h.String()), Size: size})
	if err != nil {
		t.Fatalf("OpenBlob: %v", err)
	}
	start := time.Now()
	if _, err := readAllClose(t, rc); err != nil {
		t.Fatalf("read: %v", err)
	}
	if d := time.Since(start); d < 600*time.Millisecond {
		t.Errorf("body took only %v; the slow middleware was not exercised", d)
	}
}
