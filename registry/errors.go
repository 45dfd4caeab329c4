package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	remoteerrors "github.com/containerd/containerd/v2/core/remotes/errors"
	"github.com/containerd/errdefs"
)

// Sentinel errors. Errors returned by the Client wrap the one that applies,
// with context (operation, reference, URL, status), so callers test with
// errors.Is. Each also wraps the matching containerd errdefs class
// (ErrNotFound satisfies errdefs.IsNotFound, and so on).
var (
	// ErrUnauthorized means the registry or its token service rejected the
	// credentials, or credentials are required and none were configured.
	ErrUnauthorized error = &sentinel{"unauthorized", errdefs.ErrUnauthenticated}
	// ErrDenied means the credentials were accepted but do not grant access.
	ErrDenied error = &sentinel{"access denied", errdefs.ErrPermissionDenied}
	// ErrNotFound means the repository, tag, manifest or blob does not exist,
	// or no manifest in an index matches the requested platform.
	ErrNotFound error = &sentinel{"not found", errdefs.ErrNotFound}
	// ErrDigestMismatch means content did not match its digest or size.
	ErrDigestMismatch error = &sentinel{"digest mismatch", errdefs.ErrDataLoss}
	// ErrTimeout means the registry did not answer in time. It wraps
	// context.DeadlineExceeded, so errdefs.IsDeadlineExceeded holds.
	ErrTimeout error = &sentinel{"timeout", context.DeadlineExceeded}
	// ErrManifestTooLarge means a manifest or image config exceeded the size
	// limit (MaxManifestSize or MaxConfigSize).
	ErrManifestTooLarge error = &sentinel{"manifest too large", errdefs.ErrFailedPrecondition}
	// ErrUnsupportedMediaType means a manifest or config has a media type
	// that this package cannot interpret (for example Docker schema 1).
	ErrUnsupportedMediaType error = &sentinel{"unsupported media type", errdefs.ErrNotImplemented}
)

type sentinel struct {
	msg   string
	class error
}

func (e *sentinel) Error() string { return e.msg }
func (e *sentinel) Unwrap() error { return e.class }

// statusError is a non-2xx answer from a registry endpoint.
type statusError struct {
	method     string
	url        string
	status     string
	code       int
	detail     string // registry error codes and messages from the body
	kind       error  // sentinel, or nil
	retryAfter string // Retry-After header value, if any
}

func (e *statusError) Error() string {
	msg := fmt.Sprintf("%s %s: %s", e.method, e.url, e.status)
	if e.detail != "" {
		msg += " (" + e.detail + ")"
	}
	if e.kind != nil {
		msg += ": " + e.kind.Error()
	}
	return msg
}

func (e *statusError) Unwrap() error { return e.kind }

// temporary reports whether retrying the request may succeed.
func (e *statusError) temporary() bool {
	switch e.code {
	case http.StatusRequestTimeout, http.StatusTooManyRequests:
		return true
	case http.StatusNotImplemented, http.StatusHTTPVersionNotSupported:
		return false
	}
	return e.code >= 500
}

// kindForStatus maps an HTTP status to a sentinel error (or nil).
func kindForStatus(code int) error {
	switch code {
	case http.StatusUnauthorized:
		return ErrUnauthorized
	case http.StatusForbidden:
		return ErrDenied
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusGatewayTimeout, http.StatusRequestTimeout:
		return ErrTimeout
	}
	return nil
}

// authError is a failure of the authorizer: fetching a token from the token
// service or handling a challenge.
type authError struct {
	host string
	err  error
	kind error
	temp bool
}

func (e *authError) Error() string {
	msg := fmt.Sprintf("authorize with %s: %v", e.host, e.err)
	if e.kind != nil {
		msg += ": " + e.kind.Error()
	}
	return msg
}

func (e *authError) Unwrap() []error {
	if e.kind == nil {
		return []error{e.err}
	}
	return []error{e.err, e.kind}
}

func newAuthError(host string, err error) error {
	ae := &authError{host: host, err: err}
	var st remoteerrors.ErrUnexpectedStatus
	switch {
	case errors.As(err, &st):
		switch {
		case st.StatusCode == http.StatusUnauthorized:
			ae.kind = ErrUnauthorized
		case st.StatusCode == http.StatusForbidden:
			ae.kind = ErrDenied
		case st.StatusCode == http.StatusTooManyRequests || st.StatusCode >= 500:
			ae.temp = true
		}
	case errors.Is(err, docker.ErrInvalidAuthorization):
		ae.kind = ErrUnauthorized
	case errors.Is(err, ErrTimeout):
		ae.temp = true
	default:
		// Network failures talking to the token service (http.Client
		// errors are *url.Error) are worth retrying; TLS problems,
		// cancellation and credential-loading errors are not.
		var uerr *url.Error
		ae.temp = errors.As(err, &uerr) && asTLSError(host, err) == nil && !errors.Is(err, context.Canceled)
	}
	return ae
}

// tlsError marks transport errors caused by TLS setup, which retrying cannot fix.
type tlsError struct {
	host string
	err  error
}

func (e *tlsError) Error() string {
	return fmt.Sprintf("TLS connection to %s failed (for a private CA set `ca` in the host's hosts.toml; "+
		"for a plain-HTTP registry use `server = \"http://...\"` or the insecure registries list): %v", e.host, e.err)
}

func (e *tlsError) Unwrap() error { return e.err }

// asTLSError returns a *tlsError when err is a TLS/certificate failure.
func asTLSError(host string, err error) error {
	var (
		verr  *tls.CertificateVerificationError
		uaerr x509.UnknownAuthorityError
		herr  x509.HostnameError
		cierr x509.CertificateInvalidError
		rherr tls.RecordHeaderError
	)
	if errors.As(err, &verr) || errors.As(err, &uaerr) || errors.As(err, &herr) ||
		errors.As(err, &cierr) || errors.As(err, &rherr) ||
		strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return &tlsError{host: host, err: err}
	}
	return nil
}

// netError is a transport-level failure of one request: connection refused
// or reset, EOF before the response headers, a timeout. Retrying may help.
type netError struct {
	err error
}

func (e *netError) Error() string { return e.err.Error() }
func (e *netError) Unwrap() error { return e.err }

// isTemporary reports whether err, from one attempt, may go away on retry.
func isTemporary(err error) bool {
	var (
		se *statusError
		ae *authError
		ne *netError
	)
	switch {
	case errors.As(err, &se):
		return se.temporary()
	case errors.As(err, &ae):
		return ae.temp
	case errors.As(err, &ne):
		return true
	}
	return false
}
