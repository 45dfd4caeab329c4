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

	"github.com/p2pimage/p2p-snapshotter/p2p/seed"
)

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

	out, err := http.NewRequestWithContext(ctx, r.Method, target.String(), nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	out.Header = r.Header.Clone()
	for _, h := range hopHeaders {
		out.Header.Del(h)
	}
	resp, err := client.Do(out)
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
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	for _, h := range hopHeaders {
		w.Header().Del(h)
	}
	w.WriteHeader(resp.StatusCode)
	if _, err := io.Copy(w, body); err != nil {
		log.G(ctx).WithError(err).WithField("path", rest).Debug("mirror: client went away")
		return
	}
	learn()
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
