package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// serveRegistryCommand is the hidden first argument with which lazybench runs itself as the
// registry, inside the registry's network namespace.
const serveRegistryCommand = "serve-registry"

// serveRegistry is lazybench serve-registry -listen ADDR [-listen-fd N]: go-containerregistry's
// registry with blobs in memory, logging one "served" line per request to stdout with the
// bytes of the response body, which the benchmark adds up per contender. -listen-fd serves the
// same registry on a listening socket inherited as descriptor N as well: one made in another
// network namespace (p2p-peer's lab), so that both networks see the same contents and every
// byte sent is in the one log.
func serveRegistry(args []string) error {
	fs := flag.NewFlagSet(serveRegistryCommand, flag.ContinueOnError)
	listen := fs.String("listen", "", "address to listen on")
	listenFD := fs.Int("listen-fd", 0, "also serve on this inherited listening socket (0: none)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	lns := make([]net.Listener, 0, 2)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	lns = append(lns, ln)
	if *listenFD > 0 {
		f := os.NewFile(uintptr(*listenFD), "inherited listener")
		ln, err := net.FileListener(f)
		f.Close() // FileListener has its own copy
		if err != nil {
			return fmt.Errorf("listener %d: %w", *listenFD, err)
		}
		lns = append(lns, ln)
	}
	out := bufio.NewWriter(os.Stdout)
	srv := &http.Server{ReadHeaderTimeout: 30 * time.Second, Handler: registryHandler(out)}
	for _, ln := range lns {
		fmt.Fprintf(out, "listening %s\n", ln.Addr())
	}
	out.Flush()
	errs := make(chan error, len(lns))
	for _, ln := range lns {
		go func() { errs <- srv.Serve(ln) }()
	}
	return <-errs
}

// registryHandler is the registry, writing a "served" line per request to out:
//
//	served START_UNIX_NANO METHOD STATUS BODY_BYTES DURATION RANGE PATH
func registryHandler(out *bufio.Writer) http.Handler {
	reg := ggcrregistry.New(
		ggcrregistry.WithBlobHandler(newMemBlobs()),
		ggcrregistry.Logger(log.New(io.Discard, "", 0)),
	)
	var mu sync.Mutex
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		cw := &countingWriter{ResponseWriter: w, status: http.StatusOK}
		reg.ServeHTTP(cw, r)
		rng := r.Header.Get("Range")
		if rng == "" {
			rng = "-"
		}
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, "served %d %s %d %d %s %s %s\n", start.UnixNano(), r.Method, cw.status, cw.n,
			time.Since(start).Round(time.Microsecond), strings.ReplaceAll(rng, " ", ""), r.URL.Path)
		out.Flush()
	})
}

// countingWriter counts the bytes of a response body.
type countingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (c *countingWriter) WriteHeader(code int) {
	c.status = code
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n += int64(n)
	return n, err
}

// memBlobs keeps blobs in memory and serves them by reference, so that a range request
// costs only its range. (go-containerregistry's own in-memory handler copies the whole blob
// for every request, and its disk handler hashes the whole file: either would make the many
// small range reads of a lazy snapshotter expensive on the registry's side.)
type memBlobs struct {
	mu    sync.Mutex
	blobs map[v1.Hash][]byte
}

func newMemBlobs() *memBlobs { return &memBlobs{blobs: map[v1.Hash][]byte{}} }

type blobReader struct{ *bytes.Reader }

func (blobReader) Close() error { return nil }

func (m *memBlobs) Get(_ context.Context, _ string, h v1.Hash) (io.ReadCloser, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.blobs[h]
	if !ok {
		return nil, ggcrregistry.ErrNotFound
	}
	return blobReader{bytes.NewReader(b)}, nil
}

func (m *memBlobs) Stat(_ context.Context, _ string, h v1.Hash) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.blobs[h]
	if !ok {
		return 0, ggcrregistry.ErrNotFound
	}
	return int64(len(b)), nil
}

// Put stores a blob; the registry checks its digest while Put reads it.
func (m *memBlobs) Put(_ context.Context, _ string, h v1.Hash, rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.blobs[h] = b
	return nil
}

// registryLog reads the "served" lines the registry process writes.
type registryLog struct {
	path   string
	offset int64
}

// servedSince adds up the response bytes of the requests logged since the last call, and
// counts the requests.
func (l *registryLog) servedSince() (bytes int64, requests int, lines []string, err error) {
	f, err := os.Open(l.path)
	if err != nil {
		return 0, 0, nil, err
	}
	defer f.Close()
	if _, err := f.Seek(l.offset, io.SeekStart); err != nil {
		return 0, 0, nil, err
	}
	rd := bufio.NewReader(f)
	for {
		line, err := rd.ReadString('\n')
		if errors.Is(err, io.EOF) {
			break // a partial line is read next time
		} else if err != nil {
			return 0, 0, nil, err
		}
		l.offset += int64(len(line))
		fields := strings.Fields(line)
		if len(fields) < 8 || fields[0] != "served" {
			continue
		}
		n, err := strconv.ParseInt(fields[4], 10, 64)
		if err != nil {
			continue
		}
		bytes += n
		requests++
		lines = append(lines, strings.TrimSpace(line))
	}
	return bytes, requests, lines, nil
}
