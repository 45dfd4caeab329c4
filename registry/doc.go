// Package registry is the OCI/Docker registry client of the snapshotter: it
// resolves image references to a platform manifest and config, and reads
// blobs whole (verified) or by byte range.
//
// # What it does
//
//   - Resolve follows index (OCI image index or Docker manifest list) →
//     platform manifest → config, choosing the platform with
//     github.com/containerd/platforms, and returns the layers with their
//     diffIDs and chain IDs. FetchManifest returns raw manifest bytes for a
//     reference (for a registry mirror). Every manifest and config is checked
//     against its digest, and rejected above MaxManifestSize/MaxConfigSize.
//   - OpenBlob streams a blob and verifies size and digest at EOF; if the
//     connection breaks mid-stream it resumes with a Range request.
//     ReadBlobRange reads [offset, offset+length) with an HTTP Range request
//     (tolerating registries that ignore Range by skipping to the offset).
//   - Errors wrap sentinels (ErrUnauthorized, ErrDenied, ErrNotFound,
//     ErrDigestMismatch, ErrTimeout, ...) which in turn wrap containerd's
//     errdefs classes, and carry the method, URL, status and the registry's
//     error codes.
//
// # Design choices
//
// Host configuration and authentication come from containerd, so that the
// snapshotter behaves exactly like containerd's own pulls:
//
//   - Endpoints are built by containerd's
//     core/remotes/docker/config.ConfigureHosts from a hosts directory in the
//     certs.d layout (<dir>/<host>/hosts.toml or <dir>/_default): server,
//     [host."..."] mirrors tried in order, capabilities, ca, client,
//     skip_verify, header, override_path. The scheme always comes from that
//     configuration, never from the address: go-containerregistry's name
//     package forces http for loopback addresses, which would make https +
//     ca unusable on 127.0.0.1, so it is used only in tests.
//   - Without configuration a host is reached over https. Plain http is used
//     only when hosts.toml says so or the host is in WithInsecureRegistries
//     (passed to ConfigureHosts as the default scheme); there is no silent
//     http fallback for localhost.
//   - Authentication is containerd's docker authorizer (anonymous and bearer
//     tokens from the WWW-Authenticate challenge, OAuth or basic token
//     requests, identity tokens, token caching). Credentials are read from the
//     docker config.json with the docker CLI's own loader
//     (github.com/docker/cli/cli/config), which handles "auth",
//     "username"/"password", "identitytoken" and credential helpers.
//
// The requests themselves (GET of a manifest or blob) are issued here over
// the endpoint's http.Client and Authorizer rather than through containerd's
// resolver/fetcher, because the fetcher does not fit this package's needs:
// it hides HTTP status codes behind its own errors, retries internally
// without backoff (which makes an attempt count meaningless), offers only
// open-ended ranges, opens bodies lazily and has no per-request header
// timeout. The request loop is small: authorize, send, answer up to three
// 401 challenges via Authorizer.AddResponses, classify the status. Mirrors
// get the "ns" query parameter as in containerd.
//
// Retries: temporary failures (network errors, timeouts, 408, 429, 5xx
// other than 501/505, and token-service failures of those kinds) are retried
// with exponential backoff (WithRetry; Retry-After is honoured up to 30s).
// As in containerd, only the last endpoint is retried; a failing mirror
// makes the client move on to the next endpoint instead. TLS errors, 4xx
// and digest mismatches are not retried. After an authorization failure
// the cached endpoints of that host are dropped, since containerd's
// authorizer caches failed token fetches.
//
// Timeouts: WithRequestTimeout bounds each request until its response
// headers arrive (including fetching a token) but not the body, so large
// blobs can stream for as long as the caller's context allows.
package registry
