package scheduling

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/p2pimage/p2p-snapshotter/p2p/tlsfiles"
	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
)

// ObtainCertificate asks the scheduler at addr, which must present a certificate of the CA
// in files.CA, for a certificate naming host, presenting the bootstrap token, and writes it
// and its new key to files.Cert and files.Key (each replaced by a rename). It returns when
// the certificate expires.
func ObtainCertificate(ctx context.Context, addr, token, host string, files tlsfiles.Files) (time.Time, error) {
	cfg, err := tlsfiles.ServerOnlyConfig(files.CA)
	if err != nil {
		return time.Time{}, err
	}
	return requestCertificate(ctx, addr, cfg, token, host, files)
}

// RenewCertificates keeps the certificate in files fresh while ctx lasts: when a third of
// its life is left, it asks the scheduler at addr for a new one over mutual TLS with id (the
// identity those files make, which picks the new ones up at its next handshake), and writes
// it. A failed renewal is tried again, sooner and sooner, until the certificate expires,
// then once a minute.
func RenewCertificates(ctx context.Context, addr, host string, id *tlsfiles.Identity, files tlsfiles.Files) {
	for {
		notBefore, notAfter, err := certificateLife(files.Cert)
		wait := time.Minute
		if err == nil {
			wait = time.Until(notAfter.Add(-notAfter.Sub(notBefore) / 3))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(max(wait, 0)):
		}
		if _, err := requestCertificate(ctx, addr, id.ClientConfig(), "", host, files); err != nil {
			retry := max(time.Until(notAfter)/10, time.Second)
			entry := log.G(ctx).WithError(err).WithField("scheduler", addr)
			if !time.Now().Before(notAfter) {
				// Renewal needs the certificate it renews: only new files (or a restart,
				// which presents the bootstrap token again) help now.
				retry = time.Minute
				entry.Error("this node's certificate expired before it could be renewed; restart the daemon to get a new one with its bootstrap token")
			} else {
				entry.Warn("cannot renew this node's certificate; trying again")
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry):
			}
		}
	}
}

func requestCertificate(ctx context.Context, addr string, cfg *tls.Config, token, host string, files tlsfiles.Files) (time.Time, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return time.Time{}, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: host}}, key)
	if err != nil {
		return time.Time{}, err
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return time.Time{}, fmt.Errorf("certificate from %s: %w", addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := schedulerv1.NewCertificatesClient(conn).IssueCertificate(ctx, &schedulerv1.IssueCertificateRequest{Csr: csr, BootstrapToken: token})
	if err != nil {
		return time.Time{}, fmt.Errorf("certificate from %s: %w", addr, err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return time.Time{}, err
	}
	// The key first: a reader that sees the new certificate with the old key fails its load
	// and keeps the identity it has until both are in place.
	if err := replaceFile(files.Key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return time.Time{}, err
	}
	if err := replaceFile(files.Cert, resp.GetCertificate(), 0o644); err != nil {
		return time.Time{}, err
	}
	return time.Unix(resp.GetNotAfterUnix(), 0), nil
}

// certificateLife returns when the certificate in the PEM file path begins and ends.
func certificateLife(path string) (time.Time, time.Time, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, time.Time{}, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return time.Time{}, time.Time{}, fmt.Errorf("%s: no PEM certificate", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return time.Time{}, time.Time{}, err
	}
	return c.NotBefore, c.NotAfter, nil
}

// replaceFile writes data to path through a temporary file renamed over it.
func replaceFile(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
