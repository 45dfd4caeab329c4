package registry

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/opencontainers/go-digest"
)

// Access is what a client learnt of its right to read a blob's repository.
type Access struct {
	// Private is true when the registry refuses to let anyone without credentials read
	// the blob.
	Private bool
	// Authorization, for a private repository, is the Authorization header value (a
	// bearer token) with which the registry let this client read the blob: a proof of
	// access that CheckAuthorization can check. It is empty when the registry takes basic
	// credentials with every request, which this client never hands out.
	Authorization string
	// Expires is when Authorization stops being good: the token's own expiry when it says
	// (a JWT's exp), else DefaultTokenLifetime after it was obtained.
	Expires time.Time
}

// DefaultTokenLifetime is how long a token that does not say when it expires is taken to be
// good: the lifetime the distribution token specification gives a token without expires_in.
const DefaultTokenLifetime = time.Minute

// privacyLifetime is how long Access keeps a repository's privacy before asking again.
const privacyLifetime = 10 * time.Minute

// tokenMargin is how long before its expiry Access asks for a new token; tokenRetry how
// long it then keeps the token it got, which may be the same one (containerd's authorizer
// hands out a token until it expires).
const (
	tokenMargin = 15 * time.Second
	tokenRetry  = 5 * time.Second
)

// failureLifetime is how long Access repeats a registry's failure to answer (not a refusal)
// without asking again: while a registry is down, every layer would otherwise wait for its
// own timeout.
const failureLifetime = 30 * time.Second

type accessKey struct{ host, repository string }

// Access says whether the repository of blob needs credentials, by a HEAD of the blob
// without any (anonymous tokens are taken, as for a public repository of Docker Hub), and
// for a private one proves this client may read it: a HEAD with its credentials, whose
// Authorization header it returns. It asks the registry's own server, not its mirrors.
// Answers are kept per repository: the privacy for 10 minutes, the proof until shortly
// before the token expires, a registry's failure to answer for 30 seconds.
func (c *Client) Access(ctx context.Context, host, repository string, blob digest.Digest) (Access, error) {
	key := accessKey{host, repository}
	now := time.Now()
	c.mu.Lock()
	a, ok := c.access[key]
	c.mu.Unlock()
	if ok && a.err != nil {
		if now.Before(a.checked.Add(failureLifetime)) {
			return Access{}, a.err
		}
		ok = false
	}
	if ok && now.Before(a.checked.Add(privacyLifetime)) && (!a.Private || a.Authorization == "" || now.Before(a.renew)) {
		return a.Access, nil
	}
	if err := blob.Validate(); err != nil {
		return Access{}, fmt.Errorf("access to %s/%s: blob %q: %w", host, repository, blob, err)
	}
	server, err := c.server(ctx, host)
	if err != nil {
		return Access{}, err
	}
	ctx = docker.WithScope(ctx, "repository:"+repository+":pull")
	r := blobRequest(host, repository, blob, nil)
	r.method = http.MethodHead

	if !ok || !now.Before(a.checked.Add(privacyLifetime)) {
		anonymous := server
		anonymous.Authorizer = docker.NewDockerAuthorizer(docker.WithAuthClient(server.Client), docker.WithAuthHeader(server.Header))
		ar := r
		ar.ownAuthorizer = true
		resp, err := c.headOnce(ctx, anonymous, ar)
		switch {
		case err == nil:
			resp.Body.Close()
			a = accessEntry{checked: now}
			c.remember(key, a)
			return a.Access, nil
		case !errors.Is(err, ErrUnauthorized) && !errors.Is(err, ErrDenied):
			err = fmt.Errorf("access to %s/%s: anonymous HEAD of %s: %w", host, repository, blob, err)
			if ctx.Err() == nil {
				c.remember(key, accessEntry{checked: now, err: err})
			}
			return Access{}, err
		}
	}

	resp, err := c.headOnce(ctx, server, r) // the server itself: a mirror's token proves nothing there
	if err != nil {
		return Access{}, fmt.Errorf("access to %s/%s: HEAD of %s with this node's credentials: %w", host, repository, blob, err)
	}
	resp.Body.Close()
	a = accessEntry{checked: now, Access: Access{Private: true}}
	if auth := resp.Request.Header.Get("Authorization"); strings.HasPrefix(auth, "Bearer ") {
		a.Authorization, a.Expires = auth, TokenExpiry(auth, now)
		a.renew = a.Expires.Add(-tokenMargin)
		if a.renew.Before(now.Add(tokenRetry)) {
			a.renew = now.Add(tokenRetry)
		}
	}
	c.remember(key, a)
	return a.Access, nil
}

type accessEntry struct {
	Access
	checked time.Time
	renew   time.Time // a private repository's token is asked for again from then on
	err     error     // the registry did not answer: kept failureLifetime
}

func (c *Client) remember(key accessKey, a accessEntry) {
	c.mu.Lock()
	if c.access == nil {
		c.access = map[accessKey]accessEntry{}
	}
	c.access[key] = a
	c.mu.Unlock()
}

// CheckAuthorization checks another party's proof of access (Access.Authorization): a HEAD
// of blob in repository, at the registry's own server, with authorization and nothing else.
// It returns nil if the registry let it through, else an error wrapping ErrUnauthorized,
// ErrDenied or ErrNotFound for a refusal.
func (c *Client) CheckAuthorization(ctx context.Context, host, repository string, blob digest.Digest, authorization string) error {
	if err := blob.Validate(); err != nil {
		return fmt.Errorf("check access to %s/%s: blob %q: %w", host, repository, blob, err)
	}
	if !strings.HasPrefix(authorization, "Bearer ") {
		return fmt.Errorf("check access to %s/%s: the proof is not a bearer token: %w", host, repository, ErrUnauthorized)
	}
	server, err := c.server(ctx, host)
	if err != nil {
		return err
	}
	server.Authorizer = nil // the proof alone
	r := blobRequest(host, repository, blob, http.Header{"Authorization": {authorization}})
	r.method = http.MethodHead
	resp, err := c.headOnce(ctx, server, r)
	if err != nil {
		return fmt.Errorf("check access to %s/%s: %w", host, repository, err)
	}
	resp.Body.Close()
	return nil
}

// server returns the endpoint of host's own server, as the hosts configuration describes it.
func (c *Client) server(ctx context.Context, host string) (docker.RegistryHost, error) {
	hs, err := c.registryHosts(ctx, host)
	if err != nil {
		return docker.RegistryHost{}, err
	}
	return hs[len(hs)-1], nil // ConfigureHosts lists mirrors first and the server last
}

// headOnce sends r to h once and returns a 2xx response or an error.
func (c *Client) headOnce(ctx context.Context, h docker.RegistryHost, r request) (*http.Response, error) {
	resp, err := c.roundTrip(ctx, h, r)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, newStatusError(resp)
	}
	return resp, nil
}

// TokenExpiry returns when a bearer token (an Authorization header value) expires: its exp claim if it is a JWT, else
// DefaultTokenLifetime after now. The token is not verified: the registry does that; the
// expiry only bounds how long an answer about it is kept.
func TokenExpiry(authorization string, now time.Time) time.Time {
	token := strings.TrimPrefix(authorization, "Bearer ")
	parts := strings.Split(token, ".")
	if len(parts) == 3 {
		if payload, err := base64.RawURLEncoding.DecodeString(parts[1]); err == nil {
			var claims struct {
				Exp int64 `json:"exp"`
			}
			if json.Unmarshal(payload, &claims) == nil && claims.Exp > 0 {
				return time.Unix(claims.Exp, 0)
			}
		}
	}
	return now.Add(DefaultTokenLifetime)
}
