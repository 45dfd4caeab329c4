package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// maxAuthRounds bounds how many 401 challenges one request answers.
const maxAuthRounds = 3

// errRequestTimeout is the cancellation cause set by the per-request timer.
var errRequestTimeout = errors.New("request timeout")

// request describes one registry API call: a GET of
// /v2/<repository>/<kind>/<object> on the registry named host.
type request struct {
	method     string
	host       string // registry host from the reference, e.g. docker.io
	repository string // e.g. library/busybox
	kind       string // "manifests" or "blobs"
	object     string // tag or digest
	header     http.Header
	caps       docker.HostCapabilities // capability an endpoint needs to serve it
	// ownAuthorizer: the request is authorized by an authorizer of its own (an anonymous
	// one), whose failure says nothing of the cached endpoints' authorizers.
	ownAuthorizer bool
}

// do sends r to the endpoints configured for r.host, in order, retrying
// temporary failures on the last endpoint with exponential backoff. It
// returns a 2xx response (body to be closed by the caller) or an error that
// wraps a sentinel where one applies.
func (c *Client) do(ctx context.Context, r request) (*http.Response, error) {
	all, err := c.registryHosts(ctx, r.host)
	if err != nil {
		return nil, err
	}
	var hosts []docker.RegistryHost
	for _, h := range all {
		if h.Capabilities.Has(r.caps) {
			hosts = append(hosts, h)
		}
	}
	if len(hosts) == 0 {
		capability := "pull"
		if r.caps.Has(docker.HostCapabilityResolve) {
			capability = "resolve"
		}
		return nil, fmt.Errorf("no endpoint configured for %s has the %q capability: %w", r.host, capability, ErrNotFound)
	}
	ctx = docker.WithScope(ctx, "repository:"+r.repository+":pull")

	var (
		best     error
		bestRank int
	)
	for i, h := range hosts {
		last := i == len(hosts)-1
		resp, err := c.doWithRetries(ctx, h, r, last)
		if err == nil {
			return resp, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		if rank := errorRank(err); rank > bestRank {
			best, bestRank = err, rank
		}
		if !last {
			log.G(ctx).WithError(err).WithField("host", h.Host).Info("registry endpoint failed, trying next")
		}
	}
	return nil, best
}

// errorRank orders errors from different endpoints by how much they say:
// a definite answer beats "not found", which beats a network failure.
func errorRank(err error) int {
	switch {
	case errors.Is(err, ErrNotFound):
		return 2
	case errors.Is(err, ErrUnauthorized), errors.Is(err, ErrDenied), errors.Is(err, ErrDigestMismatch):
		return 4
	}
	var se *statusError
	if errors.As(err, &se) {
		return 3
	}
	return 1
}

// doWithRetries sends r to one endpoint. Temporary failures are retried only
// when retry is set (the last endpoint); otherwise the caller moves on to the
// next endpoint, as containerd does.
func (c *Client) doWithRetries(ctx context.Context, h docker.RegistryHost, r request, retry bool) (*http.Response, error) {
	attempts := 1
	if retry {
		attempts = c.opts.attempts
	}
	backoff := c.opts.backoff
	for attempt := 1; ; attempt++ {
		resp, err := c.roundTrip(ctx, h, r)
		if err == nil {
			if resp.StatusCode/100 == 2 {
				return resp, nil
			}
			err = newStatusError(resp)
		}
		if attempt >= attempts || !isTemporary(err) {
			if attempt > 1 {
				err = fmt.Errorf("after %d attempts: %w", attempt, err)
			}
			return nil, err
		}
		// After an authorization failure roundTrip dropped the cached
		// endpoints; continue with a fresh authorizer, as the old one
		// remembers the failure.
		if fresh, ferr := c.refreshEndpoint(ctx, r.host, h); ferr == nil {
			h = fresh
		}
		wait := backoff
		var se *statusError
		if errors.As(err, &se) && se.retryAfter != "" {
			if secs, perr := strconv.Atoi(se.retryAfter); perr == nil && time.Duration(secs)*time.Second > wait {
				wait = min(time.Duration(secs)*time.Second, maxRetryWait)
			}
		}
		log.G(ctx).WithError(err).WithField("attempt", attempt).WithField("wait", wait).Debug("registry request failed, retrying")
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting to retry after %w: %w", err, ctx.Err())
		case <-time.After(wait):
		}
		backoff *= 2
	}
}

// refreshEndpoint returns the current configuration of endpoint h of host.
func (c *Client) refreshEndpoint(ctx context.Context, host string, h docker.RegistryHost) (docker.RegistryHost, error) {
	hosts, err := c.registryHosts(ctx, host)
	if err != nil {
		return h, err
	}
	for _, nh := range hosts {
		if nh.Host == h.Host && nh.Scheme == h.Scheme && nh.Path == h.Path {
			return nh, nil
		}
	}
	return h, nil
}

// roundTrip makes one attempt: authorize, send, and answer up to
// maxAuthRounds 401 challenges. The per-request timeout covers everything up
// to the response headers; the body stays readable until closed.
func (c *Client) roundTrip(ctx context.Context, h docker.RegistryHost, r request) (*http.Response, error) {
	u := endpointURL(h, r)
	parent := ctx
	ctx, cancel := context.WithCancelCause(parent)
	var timer *time.Timer
	if c.opts.requestTimeout > 0 {
		timer = time.AfterFunc(c.opts.requestTimeout, func() { cancel(errRequestTimeout) })
	}
	resp, err := c.authorizedDo(ctx, h, r, u)
	timedOut := timer != nil && !timer.Stop()
	if err == nil && timedOut {
		// The timer fired just as the headers arrived; the body is
		// already cancelled, so treat it as a timeout.
		resp.Body.Close()
		err = context.Canceled
	}
	if err != nil {
		timedOut = timedOut || errors.Is(context.Cause(ctx), errRequestTimeout)
		cancel(nil)
		var ae *authError
		authFailed := errors.As(err, &ae)
		if authFailed && !r.ownAuthorizer {
			c.forgetHosts(r.host)
		}
		switch {
		case parent.Err() != nil:
			if errors.Is(parent.Err(), context.DeadlineExceeded) {
				return nil, fmt.Errorf("%s %s: %w: %w", r.method, u, ErrTimeout, parent.Err())
			}
			return nil, fmt.Errorf("%s %s: %w", r.method, u, parent.Err())
		case timedOut:
			return nil, &netError{fmt.Errorf("%s %s: no response within %s: %w", r.method, u, c.opts.requestTimeout, ErrTimeout)}
		}
		if authFailed {
			return nil, err
		}
		if te := asTLSError(h.Host, err); te != nil {
			return nil, te
		}
		if isTimeout(err) {
			return nil, &netError{fmt.Errorf("%s %s: %w: %w", r.method, u, ErrTimeout, err)}
		}
		return nil, &netError{fmt.Errorf("%s %s: %w", r.method, u, err)}
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: func() { cancel(nil) }}
	return resp, nil
}

// authorizedDo sends the request with the endpoint's Authorizer, feeding 401
// responses back to it (which fetches a token as the challenge says).
func (c *Client) authorizedDo(ctx context.Context, h docker.RegistryHost, r request, u string) (*http.Response, error) {
	var responses []*http.Response
	for {
		req, err := http.NewRequestWithContext(ctx, r.method, u, nil)
		if err != nil {
			return nil, fmt.Errorf("build request: %w", err)
		}
		for k, v := range r.header {
			req.Header[k] = append([]string(nil), v...)
		}
		for k, v := range h.Header {
			req.Header[k] = append(req.Header[k], v...)
		}
		if req.Header.Get("User-Agent") == "" && c.opts.userAgent != "" {
			req.Header.Set("User-Agent", c.opts.userAgent)
		}
		if h.Authorizer != nil {
			if err := h.Authorizer.Authorize(ctx, req); err != nil {
				return nil, newAuthError(h.Host, err)
			}
		}
		client := h.Client
		if client == nil {
			client = http.DefaultClient
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusUnauthorized || h.Authorizer == nil || len(responses) >= maxAuthRounds {
			return resp, nil
		}
		responses = append(responses, resp)
		if err := h.Authorizer.AddResponses(ctx, responses); err != nil {
			if errdefs.IsNotImplemented(err) {
				return resp, nil // no usable challenge: report the 401 itself
			}
			resp.Body.Close()
			return nil, newAuthError(h.Host, err)
		}
		drainAndClose(resp.Body)
	}
}

// endpointURL builds the URL of r on endpoint h. Requests to a mirror carry
// the upstream registry in the "ns" query parameter, as containerd does.
func endpointURL(h docker.RegistryHost, r request) string {
	u := url.URL{
		Scheme: h.Scheme,
		Host:   h.Host,
		Path:   path.Join("/", h.Path, r.repository, r.kind, r.object),
	}
	if isMirror(h.Host, r.host) {
		u.RawQuery = url.Values{"ns": {r.host}}.Encode()
	}
	return u.String()
}

func isMirror(endpoint, refHost string) bool {
	if endpoint == refHost {
		return false
	}
	return refHost != "docker.io" || endpoint != "registry-1.docker.io"
}

// newStatusError turns a non-2xx response into a *statusError, reading the
// registry's error body, and closes the response.
func newStatusError(resp *http.Response) error {
	defer drainAndClose(resp.Body)
	se := &statusError{
		method:     resp.Request.Method,
		url:        resp.Request.URL.Redacted(),
		status:     resp.Status,
		code:       resp.StatusCode,
		kind:       kindForStatus(resp.StatusCode),
		retryAfter: resp.Header.Get("Retry-After"),
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
	se.detail = errorDetail(body)
	return se
}

// errorDetail summarises an OCI distribution error body
// ({"errors":[{"code":..., "message":...}]}).
func errorDetail(body []byte) string {
	var eb struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &eb) != nil {
		return ""
	}
	parts := make([]string, 0, len(eb.Errors))
	for _, e := range eb.Errors {
		parts = append(parts, strings.TrimSpace(e.Code+": "+e.Message))
	}
	return strings.Join(parts, "; ")
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

func drainAndClose(rc io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(rc, 64<<10))
	_ = rc.Close()
}

// cancelOnClose releases a request's context once its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel func()
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}
