package mirror

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/p2pimage/p2p-snapshotter/p2p/blobs"
	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
)

// Blobs copies whole blobs to the mirror's callers through the node's block cache.
// blobs.Server satisfies it.
type Blobs interface {
	// CopyBlob writes the blob to w; it writes nothing before it has the first block, so
	// an error with 0 bytes written leaves the response to the mirror.
	CopyBlob(ctx context.Context, w io.Writer, req blobs.Request) (int64, error)
}

// Upstreams tells how to reach a registry's own server. registry.Client satisfies it.
type Upstreams interface {
	Upstream(ctx context.Context, host string) (*url.URL, *http.Client, error)
}

// maxConfigSize bounds an image config the mirror reads to learn from.
const maxConfigSize = 8 << 20

// maxPending bounds the manifests whose config the mirror waits to see.
const maxPending = 1024

// Mirror is an http.Handler serving the registry API as a pull-through mirror.
type Mirror struct {
	upstreams Upstreams
	store     *Store
	onImage   func(ctx context.Context, layers []seed.Source)
	blobs     Blobs

	mu      sync.Mutex
	pending map[digest.Digest]pendingManifest // by config digest
}

type pendingManifest struct {
	host, repository string
	layers           []ocispec.Descriptor
}

// Option configures a Mirror.
type Option func(*Mirror)

// WithImageSeen calls fn with the layers of every image config the mirror passes on, base
// layer first, once they are recorded: containerd fetches the config before it unpacks, so fn
// can start fetching the layers then. fn must not block.
func WithImageSeen(fn func(ctx context.Context, layers []seed.Source)) Option {
	return func(m *Mirror) { m.onImage = fn }
}

// WithBlobs serves whole blobs (other than the configs the mirror learns from) through b,
// and so through the node's block cache, instead of passing them through.
func WithBlobs(b Blobs) Option {
	return func(m *Mirror) { m.blobs = b }
}

// New returns a mirror reaching registries through upstreams and recording what it learns
// in store.
func New(upstreams Upstreams, store *Store, opts ...Option) *Mirror {
	m := &Mirror{upstreams: upstreams, store: store, pending: make(map[digest.Digest]pendingManifest)}
	for _, o := range opts {
		o(m)
	}
	return m
}

// hopHeaders are not forwarded in either direction.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Host"}

func (m *Mirror) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if r.URL.Path == "/v2" || r.URL.Path == "/v2/" {
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		w.WriteHeader(http.StatusOK)
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v2/")
	if !ok || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		http.Error(w, "this mirror serves pulls only: GET and HEAD under /v2/", http.StatusMethodNotAllowed)
		return
	}
	host := r.URL.Query().Get("ns")
	if host == "" {
		http.Error(w, `missing "ns" query parameter: point containerd at this mirror with hosts.toml`, http.StatusBadRequest)
		return
	}
	base, client, err := m.upstreams.Upstream(ctx, host)
	if err != nil {
		http.Error(w, fmt.Sprintf("registry %s: %v", host, err), http.StatusBadGateway)
		return
	}
	target := *base
	target.Path = strings.TrimSuffix(base.Path, "/") + "/" + rest
	q := r.URL.Query()
	q.Del("ns")
	target.RawQuery = q.Encode()

	if m.blobs != nil && r.Method == http.MethodGet && r.Header.Get("Range") == "" && m.serveBlob(ctx, w, r, host, rest, target, client) {
		return
	}
	m.forward(ctx, w, r, host, rest, target, client)
}

// forward passes r on to the upstream target and its response back to w, learning from what
// it passes.
func (m *Mirror) forward(ctx context.Context, w http.ResponseWriter, r *http.Request, host, rest string, target url.URL, client *http.Client) {
	resp, err := m.roundTrip(ctx, r, r.Method, target, client)
	if err != nil {
		log.G(ctx).WithError(err).WithFields(log.Fields{"host": host, "path": rest}).Warn("mirror: upstream request failed")
		http.Error(w, fmt.Sprintf("registry %s: %v", host, err), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()

	var body io.Reader = resp.Body
	learn := func() {}
	if r.Method == http.MethodGet && resp.StatusCode == http.StatusOK {
		body, learn = m.observe(ctx, host, rest, resp)
	}
	copyHeader(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	if _, err := io.Copy(w, body); err != nil {
		log.G(ctx).WithError(err).WithField("path", rest).Debug("mirror: client went away")
		return
	}
	learn()
}

// roundTrip sends the upstream target a request with r's headers.
func (m *Mirror) roundTrip(ctx context.Context, r *http.Request, method string, target url.URL, client *http.Client) (*http.Response, error) {
	out, err := http.NewRequestWithContext(ctx, method, target.String(), nil)
	if err != nil {
		return nil, err
	}
	out.Header = r.Header.Clone()
	for _, h := range hopHeaders {
		out.Header.Del(h)
	}
	return client.Do(out)
}

func copyHeader(dst, src http.Header) {
	for k, v := range src {
		dst[k] = v
	}
	for _, h := range hopHeaders {
		dst.Del(h)
	}
}

// serveBlob answers a GET of a whole blob through the node's block cache and reports whether
// it answered. It first asks the registry (HEAD, with the caller's credentials) whether the
// caller may read the blob and how long it is: a refusal or anything unusual is left to
// forward, which passes the registry's own answer (an auth challenge, say) to the caller.
func (m *Mirror) serveBlob(ctx context.Context, w http.ResponseWriter, r *http.Request, host, rest string, target url.URL, client *http.Client) bool {
	repo, kind, ref, ok := splitPath(rest)
	if !ok || kind != "blobs" {
		return false
	}
	dgst, err := digest.Parse(ref)
	if err != nil {
		return false
	}
	m.mu.Lock()
	_, isConfig := m.pending[dgst]
	m.mu.Unlock()
	if isConfig {
		return false // forward learns from it
	}
	head, err := m.roundTrip(ctx, r, http.MethodHead, target, client)
	if err != nil {
		return false
	}
	head.Body.Close()
	if head.StatusCode != http.StatusOK || head.ContentLength < 0 {
		return false
	}
	bw := &blobWriter{w: w, header: head.Header}
	req := blobs.Request{Host: host, Repository: repo, Digest: dgst, Size: head.ContentLength, Header: r.Header.Clone()}
	for _, h := range hopHeaders {
		req.Header.Del(h)
	}
	n, err := m.blobs.CopyBlob(ctx, bw, req)
	switch {
	case err == nil:
		return true
	case n == 0 && !bw.started:
		log.G(ctx).WithError(err).WithFields(log.Fields{"host": host, "repository": repo, "digest": dgst}).Warn("mirror: cannot serve blob through the block cache; passing it through")
		return false
	default:
		log.G(ctx).WithError(err).WithFields(log.Fields{"host": host, "repository": repo, "digest": dgst, "sent": n}).Warn("mirror: blob failed mid-stream")
		panic(http.ErrAbortHandler) // the caller must see a broken response, not a short one
	}
}

// blobWriter sends the registry's headers with the first bytes of a blob.
type blobWriter struct {
	w       http.ResponseWriter
	header  http.Header
	started bool
}

func (b *blobWriter) Write(p []byte) (int, error) {
	if !b.started {
		b.started = true
		copyHeader(b.w.Header(), b.header)
		b.w.WriteHeader(http.StatusOK)
	}
	return b.w.Write(p)
}

// observe returns the body to send, and a function to call once it was sent whole that learns
// from it: image manifests and the configs they name.
func (m *Mirror) observe(ctx context.Context, host, rest string, resp *http.Response) (io.Reader, func()) {
	repo, kind, ref, ok := splitPath(rest)
	if !ok {
		return resp.Body, func() {}
	}
	switch kind {
	case "manifests":
		if !isManifestType(resp.Header.Get("Content-Type")) || resp.ContentLength > maxConfigSize {
			return resp.Body, func() {}
		}
	case "blobs":
		m.mu.Lock()
		_, wanted := m.pending[digest.Digest(ref)]
		m.mu.Unlock()
		if !wanted || resp.ContentLength > maxConfigSize {
			return resp.Body, func() {}
		}
	}
	var buf bytes.Buffer
	tee := io.TeeReader(io.LimitReader(resp.Body, maxConfigSize+1), &buf)
	return io.MultiReader(tee, resp.Body), func() {
		if buf.Len() > maxConfigSize {
			return
		}
		var err error
		if kind == "manifests" {
			err = m.learnManifest(host, repo, buf.Bytes())
		} else {
			err = m.learnConfig(ctx, digest.Digest(ref), buf.Bytes())
		}
		if err != nil {
			log.G(ctx).WithError(err).WithFields(log.Fields{"host": host, "repository": repo, "ref": ref}).Warn("mirror: cannot learn from response")
		}
	}
}

// splitPath splits "<repository>/manifests/<ref>" or "<repository>/blobs/<digest>".
func splitPath(rest string) (repo, kind, ref string, ok bool) {
	for _, k := range []string{"/manifests/", "/blobs/"} {
		if i := strings.LastIndex(rest, k); i > 0 {
			return rest[:i], strings.Trim(k, "/"), rest[i+len(k):], true
		}
	}
	return "", "", "", false
}

func isManifestType(ct string) bool {
	switch strings.TrimSpace(strings.Split(ct, ";")[0]) {
	case ocispec.MediaTypeImageManifest, "application/vnd.docker.distribution.manifest.v2+json":
		return true
	}
	return false
}

func (m *Mirror) learnManifest(host, repo string, body []byte) error {
	var mf ocispec.Manifest
	if err := json.Unmarshal(body, &mf); err != nil {
		return fmt.Errorf("parse manifest: %w", err)
	}
	if err := mf.Config.Digest.Validate(); err != nil {
		return fmt.Errorf("manifest config digest: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.pending) >= maxPending {
		clear(m.pending)
	}
	m.pending[mf.Config.Digest] = pendingManifest{host: host, repository: repo, layers: mf.Layers}
	return nil
}

func (m *Mirror) learnConfig(ctx context.Context, dgst digest.Digest, body []byte) error {
	m.mu.Lock()
	p, ok := m.pending[dgst]
	delete(m.pending, dgst)
	m.mu.Unlock()
	if !ok {
		return nil
	}
	if digest.FromBytes(body) != dgst {
		return fmt.Errorf("config %s: content does not match its digest", dgst)
	}
	var img ocispec.Image
	if err := json.Unmarshal(body, &img); err != nil {
		return fmt.Errorf("parse config %s: %w", dgst, err)
	}
	diffIDs := img.RootFS.DiffIDs
	if len(diffIDs) != len(p.layers) {
		return fmt.Errorf("config %s lists %d diffIDs for %d layers", dgst, len(diffIDs), len(p.layers))
	}
	chains := identity.ChainIDs(append([]digest.Digest(nil), diffIDs...))
	srcs := make([]seed.Source, len(chains))
	for i, chain := range chains {
		srcs[i] = seed.Source{Host: p.host, Repository: p.repository, Blob: p.layers[i], DiffID: diffIDs[i]}
		if err := m.store.Put(chain, srcs[i]); err != nil {
			return err
		}
	}
	if m.onImage != nil {
		m.onImage(ctx, srcs)
	}
	log.G(ctx).WithFields(log.Fields{"host": p.host, "repository": p.repository, "layers": len(chains)}).Debug("mirror: learned image layers")
	return nil
}
