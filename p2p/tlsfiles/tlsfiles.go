package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// Files names the PEM files of a mutual-TLS identity.
type Files struct {
	// CA holds the certificates that sign every party's certificate.
	CA string
	// Cert and Key are this party's certificate (with its chain) and private key.
	Cert, Key string
}

// Enabled reports whether any file is named; a configuration names all three or none.
func (f Files) Enabled() bool { return f.CA != "" || f.Cert != "" || f.Key != "" }

// checkInterval is how often, at most, the files are checked for a change.
const checkInterval = time.Second

// Identity is this party's certificate and the CA it trusts, read from Files and read again
// when they change. It is safe for concurrent use.
type Identity struct {
	files Files
	now   func() time.Time

	mu      sync.Mutex
	cert    *tls.Certificate
	pool    *x509.CertPool
	mtimes  [3]time.Time
	checked time.Time
}

// Load reads f. All three files are required.
func Load(f Files) (*Identity, error) {
	if f.CA == "" || f.Cert == "" || f.Key == "" {
		return nil, fmt.Errorf("tls: ca, cert and key are all required (ca %q, cert %q, key %q)", f.CA, f.Cert, f.Key)
	}
	id := &Identity{files: f, now: time.Now}
	if err := id.reload(); err != nil {
		return nil, err
	}
	return id, nil
}

// reload reads the files if any changed since they were last read.
func (id *Identity) reload() error {
	var mtimes [3]time.Time
	for i, path := range []string{id.files.CA, id.files.Cert, id.files.Key} {
		fi, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		mtimes[i] = fi.ModTime()
	}
	id.mu.Lock()
	same := id.cert != nil && mtimes == id.mtimes
	id.mu.Unlock()
	if same {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(id.files.Cert, id.files.Key)
	if err != nil {
		return fmt.Errorf("tls: certificate %s, key %s: %w", id.files.Cert, id.files.Key, err)
	}
	caPEM, err := os.ReadFile(id.files.CA)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("tls: CA %s: no PEM certificate in it", id.files.CA)
	}
	id.mu.Lock()
	id.cert, id.pool, id.mtimes = &cert, pool, mtimes
	id.mu.Unlock()
	return nil
}

// current returns the certificate and CA pool, reading the files again if it is time to
// check them and they changed. A failed reload keeps the last good identity: a rotation
// caught half-written is tried again at the next check.
func (id *Identity) current() (*tls.Certificate, *x509.CertPool) {
	id.mu.Lock()
	due := id.now().Sub(id.checked) >= checkInterval
	if due {
		id.checked = id.now()
	}
	id.mu.Unlock()
	if due {
		_ = id.reload()
	}
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.cert, id.pool
}

// ValidFor reports whether the certificate is valid now and for d more.
func (id *Identity) ValidFor(d time.Duration) bool {
	cert, _ := id.current()
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return false
	}
	now := id.now()
	return !now.Before(leaf.NotBefore) && now.Add(d).Before(leaf.NotAfter)
}

// ServerConfig returns the configuration of a server that requires a client certificate the
// CA signed.
func (id *Identity) ServerConfig() *tls.Config {
	return id.serverConfig(tls.RequireAndVerifyClientCert)
}

// ServerConfigVerifyIfGiven is ServerConfig for a server that checks a client certificate
// when one is given and lets the caller require it per request (a gRPC service whose health
// checks need none: issuer.RequireClientCert).
func (id *Identity) ServerConfigVerifyIfGiven() *tls.Config {
	return id.serverConfig(tls.VerifyClientCertIfGiven)
}

func (id *Identity) serverConfig(auth tls.ClientAuthType) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, pool := id.current()
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{*cert},
				ClientAuth:   auth,
				ClientCAs:    pool,
			}, nil
		},
	}
}

// ClientConfig returns the configuration of a client that presents its certificate and
// accepts a server whose certificate the CA signed. Peers are dialled by address and their
// certificates name hosts, not addresses, so the server's name is not checked: the CA's
// signature is what makes it one of the cluster's.
func (id *Identity) ClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, _ := id.current()
			return cert, nil
		},
		// The chain is checked in VerifyConnection against the current CA instead.
		InsecureSkipVerify: true, //nolint:gosec // verified below
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, pool := id.current()
			return verify(cs.PeerCertificates, pool, x509.ExtKeyUsageServerAuth, id.now())
		},
	}
}

// ServerOnlyConfig returns the configuration of a client with no certificate yet, that
// accepts a server whose certificate the CA in the PEM file caFile signed: how a host asks a
// scheduler for its first certificate.
func ServerOnlyConfig(caFile string) (*tls.Config, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("tls: CA %s: no PEM certificate in it", caFile)
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, //nolint:gosec // verified below, against the CA
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verify(cs.PeerCertificates, pool, x509.ExtKeyUsageServerAuth, time.Now())
		},
	}, nil
}

// verify checks that chain, leaf first, leads to pool's CA and is valid now for usage.
func verify(chain []*x509.Certificate, pool *x509.CertPool, usage x509.ExtKeyUsage, now time.Time) error {
	if len(chain) == 0 {
		return errors.New("tls: the server presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return fmt.Errorf("tls: the server's certificate: %w", err)
	}
	return nil
}
