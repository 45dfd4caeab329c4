package fusemanager

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/p2pimage/p2p-snapshotter/p2p"
	"github.com/p2pimage/p2p-snapshotter/p2p/blobs"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
)

// Client talks to a FUSE manager process. It is safe for concurrent use.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client of the manager listening on the unix socket at socket.
func NewClient(socket string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
	return &Client{socket: socket, http: &http.Client{Transport: tr}}
}

// Mount asks the manager to mount the layer src names at dir, over lowerDirs.
func (c *Client) Mount(ctx context.Context, dir string, src seed.Source, lowerDirs []string) error {
	return c.call(ctx, "mount", mountRequest{Dir: dir, Source: &src, LowerDirs: lowerDirs})
}

// Restore asks the manager to make sure the stored layer diffID is mounted at dir.
func (c *Client) Restore(ctx context.Context, dir string, diffID digest.Digest, lowerDirs []string) error {
	return c.call(ctx, "restore", mountRequest{Dir: dir, DiffID: diffID, LowerDirs: lowerDirs})
}

// Prefetch asks the manager to start fetching the layer src names in the background.
func (c *Client) Prefetch(ctx context.Context, src seed.Source) error {
	return c.call(ctx, "prefetch", mountRequest{Source: &src})
}

// Warm asks the manager to fetch the whole layer src names and returns when it is held and
// verified.
func (c *Client) Warm(ctx context.Context, src seed.Source) error {
	return c.call(ctx, "warm", mountRequest{Source: &src})
}

// PrefetchBlocks asks the manager to warm the blocks of the layer src names that sel
// selects (p2p.Node.Prefetch), calling progress as they arrive, and returns when they are
// warm or the prefetch failed.
func (c *Client) PrefetchBlocks(ctx context.Context, src seed.Source, sel p2p.Selection, progress func(warmed, total int64)) error {
	b, err := json.Marshal(prefetchRequest{Source: &src, Files: sel.Files, All: sel.All})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://fuse-manager/prefetch-blocks", bytes.NewReader(b))
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("prefetch %s: %w", src.Blob.Digest, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("prefetch %s: %s", src.Blob.Digest, responseError(resp))
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var pp PrefetchProgress
		if err := dec.Decode(&pp); err != nil {
			return fmt.Errorf("prefetch %s: the manager's answer ended early: %w", src.Blob.Digest, err)
		}
		if progress != nil {
			progress(pp.Warmed, pp.Total)
		}
		if pp.Done {
			if pp.Error != "" {
				return fmt.Errorf("prefetch %s: %s", src.Blob.Digest, pp.Error)
			}
			return nil
		}
	}
}

// Metrics returns the manager's data-plane metrics in the Prometheus text format; the caller
// closes them.
func (c *Client) Metrics(ctx context.Context) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://fuse-manager/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("FUSE manager metrics: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, fmt.Errorf("FUSE manager metrics: %s", responseError(resp))
	}
	return resp.Body, nil
}

// Unmount asks the manager to unmount the layer at dir.
func (c *Client) Unmount(ctx context.Context, dir string) error {
	return c.call(ctx, "unmount", mountRequest{Dir: dir})
}

// CopyBlob asks the manager to write the blob req names to w through its block cache, and
// returns the bytes written. An error with 0 bytes written means the manager wrote nothing.
func (c *Client) CopyBlob(ctx context.Context, w io.Writer, req blobs.Request) (int64, error) {
	n, err := c.stream(ctx, "blob", req, w)
	if err != nil {
		return n, fmt.Errorf("FUSE manager blob %s: %w", req.Digest, err)
	}
	if n != req.Size {
		return n, fmt.Errorf("FUSE manager blob %s: got %d bytes, want %d: %w", req.Digest, n, req.Size, io.ErrUnexpectedEOF)
	}
	return n, nil
}

// Stream asks the manager for the uncompressed stream of the layer src names and writes it
// to w. The manager checks it against the diffID before it sends the last block, so a
// stream that ends without an error is the layer.
func (c *Client) Stream(ctx context.Context, w io.Writer, src seed.Source) (int64, error) {
	n, err := c.stream(ctx, "stream", mountRequest{Source: &src}, w)
	if err != nil {
		return n, fmt.Errorf("stream layer %s: %w", src.DiffID, err)
	}
	return n, nil
}

// stream posts body to the manager's op and copies its answer to w.
func (c *Client) stream(ctx context.Context, op string, body any, w io.Writer) (int64, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://fuse-manager/"+op, bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, errors.New(responseError(resp))
	}
	return io.Copy(w, resp.Body)
}

// Ping reports whether the manager answers.
func (c *Client) Ping(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://fuse-manager/ping", nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("FUSE manager at %s: %w", c.socket, err)
	}
	resp.Body.Close()
	return nil
}

func (c *Client) call(ctx context.Context, op string, body mountRequest) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://fuse-manager/"+op, bytes.NewReader(b))
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("FUSE manager %s: %w", what(op, body), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent {
		return nil
	}
	return fmt.Errorf("FUSE manager %s: %s", what(op, body), responseError(resp))
}

// what names a request in errors: the operation and its directory or layer.
func what(op string, body mountRequest) string {
	switch {
	case body.Dir != "":
		return op + " " + body.Dir
	case body.Source != nil:
		return op + " layer " + body.Source.DiffID.String()
	}
	return op
}

// responseError is the error a manager's response carries.
func responseError(resp *http.Response) string {
	var e errorResponse
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(data, &e) != nil || e.Error == "" {
		e.Error = fmt.Sprintf("status %s: %s", resp.Status, data)
	}
	return e.Error
}

// Start makes sure a manager answers on c's socket: if none does, it starts argv (the
// manager's command line) in a session of its own, so that it outlives the caller, with its
// output appended to logPath, and waits up to timeout for it to answer.
func (c *Client) Start(ctx context.Context, argv []string, logPath string, timeout time.Duration) error {
	if c.Ping(ctx) == nil {
		return nil
	}
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("FUSE manager log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start FUSE manager: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // reaps it if it dies while we still run
	deadline := time.Now().Add(timeout)
	for {
		if c.Ping(ctx) == nil {
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("FUSE manager exited at start (%v); see %s", err, logPath)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return errors.New("FUSE manager did not answer in time; see " + logPath)
		}
	}
}
