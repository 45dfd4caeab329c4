package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// OpenBlob streams the blob desc from repository on the registry host (as in
// Image.Host). The reader verifies size (when desc.Size > 0) and digest as it
// reaches EOF and then returns an error wrapping ErrDigestMismatch instead of
// io.EOF if they do not match; callers must read to EOF to get that check,
// and must Close the reader. If the connection breaks mid-stream, the reader
// resumes with a Range request from where it stopped (up to the configured
// retry attempts minus one times).
func (c *Client) OpenBlob(ctx context.Context, host, repository string, desc ocispec.Descriptor) (io.ReadCloser, error) {
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("open blob %q: %w: %w", desc.Digest, err, errdefs.ErrInvalidArgument)
	}
	resp, err := c.do(ctx, blobRequest(host, repository, desc.Digest, nil))
	if err != nil {
		return nil, fmt.Errorf("open blob %s in %s/%s: %w", desc.Digest, host, repository, err)
	}
	if desc.Size > 0 && resp.ContentLength >= 0 && resp.ContentLength != desc.Size {
		resp.Body.Close()
		return nil, fmt.Errorf("open blob %s in %s/%s: registry announced %d bytes, descriptor says %d: %w",
			desc.Digest, host, repository, resp.ContentLength, desc.Size, ErrDigestMismatch)
	}
	return &verifyingReader{
		ctx:      ctx,
		rc:       resp.Body,
		desc:     desc,
		verifier: desc.Digest.Verifier(),
		what:     fmt.Sprintf("blob %s in %s/%s", desc.Digest, host, repository),
		resume: func(offset int64) (io.ReadCloser, error) {
			return c.openBlobAt(ctx, host, repository, desc, offset)
		},
		resumesLeft: c.opts.attempts - 1,
	}, nil
}

// openBlobAt reopens a blob at offset with a Range request to resume a
// transfer that broke off. The range is closed when the size is known, as
// some registries do not understand open-ended ranges.
func (c *Client) openBlobAt(ctx context.Context, host, repository string, desc ocispec.Descriptor, offset int64) (io.ReadCloser, error) {
	rng := fmt.Sprintf("bytes=%d-", offset)
	if desc.Size > offset {
		rng += strconv.FormatInt(desc.Size-1, 10)
	}
	resp, err := c.do(ctx, blobRequest(host, repository, desc.Digest, http.Header{"Range": {rng}}))
	if err != nil {
		return nil, err
	}
	body, err := rangeBody(ctx, resp, offset)
	if err != nil {
		resp.Body.Close()
		return nil, err
	}
	return readCloser{body, resp.Body}, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// ReadBlobRange reads bytes [offset, offset+length) of blob dgst with an HTTP
// Range request. A registry that answers 206 must start the range at offset;
// one that ignores Range (200 with the whole blob) is tolerated by skipping
// to offset. The reader returns exactly length bytes, or an error wrapping
// io.ErrUnexpectedEOF if the blob ends early. Range data cannot be checked
// against the blob digest.
func (c *Client) ReadBlobRange(ctx context.Context, host, repository string, dgst digest.Digest, offset, length int64) (io.ReadCloser, error) {
	if err := dgst.Validate(); err != nil {
		return nil, fmt.Errorf("read blob range %q: %w: %w", dgst, err, errdefs.ErrInvalidArgument)
	}
	if offset < 0 || length < 0 {
		return nil, fmt.Errorf("read blob %s: invalid range offset %d length %d: %w", dgst, offset, length, errdefs.ErrInvalidArgument)
	}
	if length == 0 {
		return io.NopCloser(strings.NewReader("")), nil
	}
	end := offset + length - 1
	hdr := http.Header{"Range": {fmt.Sprintf("bytes=%d-%d", offset, end)}}
	resp, err := c.do(ctx, blobRequest(host, repository, dgst, hdr))
	if err != nil {
		return nil, fmt.Errorf("read blob %s in %s/%s range %d-%d: %w", dgst, host, repository, offset, end, err)
	}
	body, err := rangeBody(ctx, resp, offset)
	if err != nil {
		resp.Body.Close()
		return nil, fmt.Errorf("read blob %s in %s/%s range %d-%d: %w", dgst, host, repository, offset, end, err)
	}
	return &exactReader{rc: resp.Body, r: body, remaining: length, what: fmt.Sprintf("blob %s range %d-%d", dgst, offset, end)}, nil
}

func blobRequest(host, repository string, dgst digest.Digest, hdr http.Header) request {
	return request{
		method:     http.MethodGet,
		host:       host,
		repository: repository,
		kind:       "blobs",
		object:     dgst.String(),
		header:     hdr,
		caps:       docker.HostCapabilityPull,
	}
}

// rangeBody positions a range response at offset.
func rangeBody(ctx context.Context, resp *http.Response, offset int64) (io.Reader, error) {
	switch resp.StatusCode {
	case http.StatusPartialContent:
		start, err := contentRangeStart(resp.Header.Get("Content-Range"))
		if err != nil {
			return nil, err
		}
		if start != offset {
			return nil, fmt.Errorf("registry returned range starting at %d, asked for %d", start, offset)
		}
		return resp.Body, nil
	case http.StatusOK:
		log.G(ctx).WithField("url", resp.Request.URL.Redacted()).Warn("registry ignored Range header; skipping to offset")
		n, err := io.CopyN(io.Discard, resp.Body, offset)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("blob has only %d bytes, offset %d: %w", n, offset, io.ErrUnexpectedEOF)
			}
			return nil, fmt.Errorf("skip to offset %d: %w", offset, err)
		}
		return resp.Body, nil
	}
	return nil, fmt.Errorf("unexpected status %s for a range request", resp.Status)
}

// contentRangeStart parses the first byte position of "bytes a-b/size".
func contentRangeStart(v string) (int64, error) {
	rest, ok := strings.CutPrefix(v, "bytes ")
	startStr, _, ok2 := strings.Cut(rest, "-")
	if !ok || !ok2 {
		return 0, fmt.Errorf("invalid Content-Range %q", v)
	}
	start, err := strconv.ParseInt(strings.TrimSpace(startStr), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid Content-Range %q: %w", v, err)
	}
	return start, nil
}

// verifyingReader checks size and digest of a blob stream at EOF. When the
// connection breaks mid-stream it resumes with a Range request from the
// current offset, up to resumesLeft times.
type verifyingReader struct {
	ctx         context.Context
	rc          io.ReadCloser
	resume      func(offset int64) (io.ReadCloser, error)
	resumesLeft int

	desc     ocispec.Descriptor
	verifier digest.Verifier
	what     string
	n        int64
	err      error // sticky terminal error (io.EOF or a failure)
}

func (r *verifyingReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.rc.Read(p)
	if n > 0 {
		_, _ = r.verifier.Write(p[:n])
		r.n += int64(n)
		if r.desc.Size > 0 && r.n > r.desc.Size {
			r.err = fmt.Errorf("%s: more than the expected %d bytes: %w", r.what, r.desc.Size, ErrDigestMismatch)
			return n, r.err
		}
	}
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, io.EOF), r.desc.Size > 0 && r.n == r.desc.Size:
		// A failure after the last byte (e.g. a connection reset
		// instead of a clean close) does not matter once the whole
		// content is there and verified.
		r.err = r.check()
	default:
		rerr := r.tryResume(err)
		switch {
		case rerr == nil:
			return n, nil
		case rerr == err:
			r.err = fmt.Errorf("read %s after %d bytes: %w", r.what, r.n, err)
		default:
			r.err = fmt.Errorf("read %s after %d bytes: %w (resuming failed: %w)", r.what, r.n, err, rerr)
		}
	}
	return n, r.err
}

// tryResume replaces the broken body with one reopened at the current offset.
func (r *verifyingReader) tryResume(cause error) error {
	if r.resume == nil || r.resumesLeft <= 0 || r.ctx.Err() != nil {
		return cause
	}
	r.resumesLeft--
	_ = r.rc.Close()
	log.G(r.ctx).WithError(cause).WithField("offset", r.n).Debug("blob transfer broke off, resuming")
	rc, err := r.resume(r.n)
	if err != nil {
		r.rc = io.NopCloser(strings.NewReader(""))
		return err
	}
	r.rc = rc
	return nil
}

func (r *verifyingReader) check() error {
	if r.desc.Size > 0 && r.n != r.desc.Size {
		return fmt.Errorf("%s: got %d bytes, expected %d: %w", r.what, r.n, r.desc.Size, ErrDigestMismatch)
	}
	if !r.verifier.Verified() {
		return fmt.Errorf("%s: content does not match its digest: %w", r.what, ErrDigestMismatch)
	}
	return io.EOF
}

func (r *verifyingReader) Close() error { return r.rc.Close() }

// exactReader yields exactly remaining bytes from r.
type exactReader struct {
	rc        io.Closer
	r         io.Reader
	remaining int64
	what      string
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.remaining <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.remaining {
		p = p[:e.remaining]
	}
	n, err := e.r.Read(p)
	e.remaining -= int64(n)
	switch {
	case e.remaining == 0:
		return n, io.EOF
	case errors.Is(err, io.EOF):
		return n, fmt.Errorf("%s: ended %d bytes early: %w", e.what, e.remaining, io.ErrUnexpectedEOF)
	case err != nil:
		return n, fmt.Errorf("%s: %w", e.what, err)
	}
	return n, nil
}

func (e *exactReader) Close() error { return e.rc.Close() }

// ReadRange reads bytes [offset, offset+length) of the blob at u with client, sending header
// (e.g. the Authorization a mirror's caller sent) and a Range header. A server that ignores
// Range is tolerated by skipping to offset. The reader returns exactly length bytes, or an
// error wrapping io.ErrUnexpectedEOF if the blob ends early; an error status is classified as
// the other calls of this package classify it. Range data cannot be checked against the
// blob digest: the caller verifies it.
func ReadRange(ctx context.Context, client *http.Client, u *url.URL, header http.Header, offset, length int64) (io.ReadCloser, error) {
	if offset < 0 || length <= 0 {
		return nil, fmt.Errorf("read range of %s: invalid offset %d length %d: %w", u.Redacted(), offset, length, errdefs.ErrInvalidArgument)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("read range of %s: %w", u.Redacted(), err)
	}
	req.Header = header.Clone()
	if req.Header == nil {
		req.Header = http.Header{}
	}
	end := offset + length - 1
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", offset, end))
	resp, err := client.Do(req)
	if err != nil {
		if isTimeout(err) {
			err = fmt.Errorf("%w: %w", ErrTimeout, err)
		}
		return nil, fmt.Errorf("read range %d-%d of %s: %w", offset, end, u.Redacted(), err)
	}
	if resp.StatusCode != http.StatusPartialContent && resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("read range %d-%d of %s: %w", offset, end, u.Redacted(), newStatusError(resp))
	}
	body, err := rangeBody(ctx, resp, offset)
	if err != nil {
		resp.Body.Close()
		return nil, fmt.Errorf("read range %d-%d of %s: %w", offset, end, u.Redacted(), err)
	}
	return &exactReader{rc: resp.Body, r: body, remaining: length, what: fmt.Sprintf("%s range %d-%d", u.Redacted(), offset, end)}, nil
}
