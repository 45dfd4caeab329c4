package registry

import (
	"net/http"
	"time"
)

// Defaults for the retry and timeout options.
const (
	DefaultRetryAttempts  = 3
	DefaultInitialBackoff = 200 * time.Millisecond
	DefaultRequestTimeout = 30 * time.Second

	// maxRetryWait caps how long a Retry-After header may make us wait.
	maxRetryWait = 30 * time.Second
)

// Option configures a Client.
type Option func(*options)

type options struct {
	hostsDir        string
	insecure        []string
	dockerConfigDir string
	credentials     func(host string) (string, string, error)
	httpClient      *http.Client
	attempts        int
	backoff         time.Duration
	requestTimeout  time.Duration
	userAgent       string
}

func defaultOptions() options {
	return options{
		attempts:       DefaultRetryAttempts,
		backoff:        DefaultInitialBackoff,
		requestTimeout: DefaultRequestTimeout,
		userAgent:      "p2p-snapshotter",
	}
}

// WithHostsDir sets the root of a containerd-style registry configuration
// directory (e.g. /etc/containerd/certs.d). For a registry host H the file
// <dir>/H/hosts.toml (or <dir>/_default/hosts.toml) is honoured exactly as
// containerd does: server, [host."..."] mirrors, capabilities, ca, client,
// skip_verify, header, override_path, dial_timeout.
func WithHostsDir(dir string) Option {
	return func(o *options) { o.hostsDir = dir }
}

// WithInsecureRegistries makes the client talk plain HTTP to the given
// registries (like nerdctl --insecure-registry). Each entry is "host" or
// "host:port"; an entry without a port matches the host on any port. A
// hosts.toml server setting for the same host takes precedence.
func WithInsecureRegistries(hosts ...string) Option {
	return func(o *options) { o.insecure = append(o.insecure, hosts...) }
}

// WithDockerConfig sets the directory holding the docker config.json used for
// credentials. The default is $DOCKER_CONFIG, else ~/.docker.
func WithDockerConfig(dir string) Option {
	return func(o *options) { o.dockerConfigDir = dir }
}

// WithCredentials sets a credentials callback consulted before the docker
// config file. It receives the registry host being contacted (for Docker Hub
// "registry-1.docker.io") and returns a username and secret; an empty
// username with a non-empty secret is an identity (refresh) token. When it
// returns two empty strings the docker config file is used.
func WithCredentials(fn func(host string) (username, secret string, err error)) Option {
	return func(o *options) { o.credentials = fn }
}

// WithHTTPClient sets the base HTTP client. Its Timeout, Jar and
// CheckRedirect are used for every request. Its Transport replaces the
// transport containerd would build, except for hosts whose hosts.toml sets
// TLS options (ca, client, skip_verify): those keep containerd's transport so
// that the settings are honoured.
func WithHTTPClient(c *http.Client) Option {
	return func(o *options) { o.httpClient = c }
}

// WithRetry sets how many times a request is attempted (at least 1) when it
// fails temporarily (network error, 408, 429, 5xx), and the backoff before
// the first retry; the backoff doubles after every retry. The default is 3
// attempts starting at 200ms.
func WithRetry(attempts int, initialBackoff time.Duration) Option {
	return func(o *options) {
		o.attempts = max(attempts, 1)
		o.backoff = max(initialBackoff, 0)
	}
}

// WithRequestTimeout bounds how long one request may take until the response
// headers arrive (including obtaining a token). It does not bound reading a
// response body: a large blob may stream for as long as the caller's context
// allows. Zero disables the limit. The default is 30s.
func WithRequestTimeout(d time.Duration) Option {
	return func(o *options) { o.requestTimeout = max(d, 0) }
}

// WithUserAgent sets the User-Agent header sent to registries.
func WithUserAgent(ua string) Option {
	return func(o *options) { o.userAgent = ua }
}
