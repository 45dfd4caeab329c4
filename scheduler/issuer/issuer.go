package issuer

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
	"github.com/p2pimage/p2p-snapshotter/scheduler"
)

// Issuer issues the cluster's certificates. It is safe for concurrent use.
type Issuer struct {
	schedulerv1.UnimplementedCertificatesServer
	ca     *x509.Certificate
	caPEM  []byte
	key    crypto.Signer
	tokens []string
	ttl    time.Duration
	now    func() time.Time

	mu   sync.Mutex
	self *tls.Certificate // the scheduler's own serving certificate
}

// New returns an issuer with the CA certificate and key in the PEM files caFile and keyFile,
// issuing certificates valid for ttl to hosts that present one of tokens.
func New(caFile, keyFile string, tokens []string, ttl time.Duration) (*Issuer, error) {
	pair, err := tls.LoadX509KeyPair(caFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("issuer: CA %s, key %s: %w", caFile, keyFile, err)
	}
	ca, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("issuer: CA %s: %w", caFile, err)
	}
	if !ca.IsCA {
		return nil, fmt.Errorf("issuer: %s is not a CA certificate", caFile)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("issuer: key %s cannot sign", keyFile)
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("issuer: certificate TTL %v: want a positive one", ttl)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	return &Issuer{ca: ca, caPEM: caPEM, key: signer, tokens: tokens, ttl: ttl, now: time.Now}, nil
}

// IssueCertificate implements the RPC.
func (is *Issuer) IssueCertificate(ctx context.Context, req *schedulerv1.IssueCertificateRequest) (*schedulerv1.IssueCertificateResponse, error) {
	csr, err := x509.ParseCertificateRequest(req.GetCsr())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "certificate request: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "certificate request: %v", err)
	}
	name := csr.Subject.CommonName
	if name == "" {
		return nil, status.Error(codes.InvalidArgument, "certificate request: no common name")
	}
	if tok := req.GetBootstrapToken(); tok != "" {
		if !is.validToken(tok) {
			return nil, status.Error(codes.PermissionDenied, "bootstrap token refused")
		}
	} else {
		// A renewal: the caller's own certificate, which the TLS handshake verified against
		// the CA, must name the same host.
		cn, ok := scheduler.CallerName(ctx)
		if !ok {
			return nil, status.Error(codes.PermissionDenied, "no bootstrap token and no client certificate")
		}
		if cn != name {
			return nil, status.Errorf(codes.PermissionDenied, "a certificate of %q cannot renew one for %q", cn, name)
		}
	}
	der, notAfter, err := is.issue(name, csr.PublicKey)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &schedulerv1.IssueCertificateResponse{
		Certificate:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Ca:           is.caPEM,
		NotAfterUnix: notAfter.Unix(),
	}, nil
}

func (is *Issuer) validToken(tok string) bool {
	ok := false
	for _, t := range is.tokens {
		if t != "" && subtle.ConstantTimeCompare([]byte(t), []byte(tok)) == 1 {
			ok = true
		}
	}
	return ok
}

// issue signs a certificate for name and pub, valid for the issuer's TTL.
func (is *Issuer) issue(name string, pub any) ([]byte, time.Time, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return nil, time.Time{}, err
	}
	now := is.now()
	notAfter := now.Add(is.ttl)
	if notAfter.After(is.ca.NotAfter) {
		notAfter = is.ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: now.Add(-min(time.Minute, is.ttl/4)), NotAfter: notAfter, // a little slack for clocks
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, is.ca, pub, is.key)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("issue a certificate for %s: %w", name, err)
	}
	return der, notAfter, nil
}

// ServerConfig returns the TLS configuration of the scheduler's gRPC address: a certificate
// for name the issuer issues itself (again when a third of its life is left), client
// certificates of the CA verified when given. RequireClientCert makes them required for
// every method but IssueCertificate.
func (is *Issuer) ServerConfig(name string) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(is.ca)
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  pool,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return is.selfCertificate(name)
		},
	}
}

func (is *Issuer) selfCertificate(name string) (*tls.Certificate, error) {
	is.mu.Lock()
	defer is.mu.Unlock()
	if c := is.self; c != nil && is.now().Before(c.Leaf.NotAfter.Add(-is.ttl/3)) {
		return c, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, _, err := is.issue(name, &key.PublicKey)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	is.self = &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	return is.self, nil
}

// RequireClientCert returns interceptors that refuse every call without a verified client
// certificate, but those to IssueCertificate and to the gRPC health service.
func RequireClientCert() []grpc.ServerOption {
	check := func(ctx context.Context, method string) error {
		if method == schedulerv1.Certificates_IssueCertificate_FullMethodName || strings.HasPrefix(method, "/grpc.health.v1.Health/") {
			return nil // how a host gets its first certificate; and health probes
		}
		if _, ok := scheduler.CallerName(ctx); !ok {
			return status.Errorf(codes.Unauthenticated, "%s needs a client certificate of the cluster's CA", method)
		}
		return nil
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := check(ctx, info.FullMethod); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := check(ss.Context(), info.FullMethod); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	}
}
