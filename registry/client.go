package registry

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
)

// Client reads images and blobs from OCI/Docker registries. Create it with
// New. Safe for concurrent use.
type Client struct {
	opts options

	mu sync.Mutex
	// hosts caches the endpoints (and with them the authorizers, which
	// cache tokens) per registry host named in references.
	hosts map[string][]docker.RegistryHost
	// access caches what Access learnt, per repository.
	access map[accessKey]accessEntry
}

// New returns a Client configured by opts.
func New(opts ...Option) *Client {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	return &Client{opts: o, hosts: map[string][]docker.RegistryHost{}}
}

// registryHosts returns the endpoints to try, in order, for the registry host
// named in a reference (e.g. "docker.io" or "127.0.0.1:5000"): mirrors from
// hosts.toml first, then the server itself.
func (c *Client) registryHosts(ctx context.Context, host string) ([]docker.RegistryHost, error) {
	c.mu.Lock()
	hs, ok := c.hosts[host]
	c.mu.Unlock()
	if ok {
		return hs, nil
	}

	scheme := "https"
	if c.isInsecure(host) {
		scheme = "http"
	}
	ho := config.HostOptions{
		Credentials:   c.lookupCredentials,
		DefaultScheme: scheme,
		UpdateClient:  c.updateClient,
	}
	if c.opts.hostsDir != "" {
		ho.HostDir = config.HostDirFromRoot(c.opts.hostsDir)
	}
	hs, err := config.ConfigureHosts(ctx, ho)(host)
	if err != nil {
		return nil, fmt.Errorf("configure registry %s: %w", host, err)
	}
	if len(hs) == 0 {
		return nil, fmt.Errorf("configure registry %s: hosts.toml lists no endpoints: %w", host, ErrNotFound)
	}

	c.mu.Lock()
	if c.hosts == nil {
		c.hosts = map[string][]docker.RegistryHost{}
	}
	c.hosts[host] = hs
	c.mu.Unlock()
	return hs, nil
}

// forgetHosts drops the cached endpoints of host. containerd's authorizer
// caches failed token fetches forever, so after an authorization failure we
// start over with a fresh one (this also picks up changed credentials).
func (c *Client) forgetHosts(host string) {
	c.mu.Lock()
	delete(c.hosts, host)
	c.mu.Unlock()
}

// isInsecure reports whether host is in the insecure registries list.
func (c *Client) isInsecure(host string) bool {
	hostname := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		hostname = h
	}
	for _, e := range c.opts.insecure {
		e = strings.TrimPrefix(strings.TrimPrefix(e, "http://"), "https://")
		e = strings.TrimSuffix(e, "/")
		if e == host {
			return true
		}
		if _, _, err := net.SplitHostPort(e); err != nil && strings.Trim(e, "[]") == hostname {
			return true // entry without port matches any port
		}
	}
	return false
}

// updateClient applies WithHTTPClient to a client built by ConfigureHosts.
func (c *Client) updateClient(hc *http.Client) error {
	base := c.opts.httpClient
	if base == nil {
		return nil
	}
	built := hc.Transport
	*hc = *base
	if base.Transport == nil || hasHostTLS(built) {
		hc.Transport = built
	}
	return nil
}

// hasHostTLS reports whether a transport built by ConfigureHosts carries TLS
// settings from hosts.toml.
func hasHostTLS(rt http.RoundTripper) bool {
	tr, ok := rt.(*http.Transport)
	if !ok || tr.TLSClientConfig == nil {
		return false
	}
	return hasTLSSettings(tr.TLSClientConfig)
}

func hasTLSSettings(cfg *tls.Config) bool {
	return cfg.RootCAs != nil || len(cfg.Certificates) > 0 || cfg.InsecureSkipVerify
}

// Upstream returns the base URL (ending in /v2) and the HTTP client of host's own server,
// skipping its mirrors, as the hosts configuration says (scheme, TLS): how a registry mirror
// reaches the registry it stands in for.
func (c *Client) Upstream(ctx context.Context, host string) (*url.URL, *http.Client, error) {
	server, err := c.server(ctx, host)
	if err != nil {
		return nil, nil, err
	}
	client := server.Client
	if client == nil {
		client = http.DefaultClient
	}
	return &url.URL{Scheme: server.Scheme, Host: server.Host, Path: server.Path}, client, nil
}
