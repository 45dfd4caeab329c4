package issuer_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/p2pimage/p2p-snapshotter/p2p/tlsfiles/tlstest"
	schedulerv1 "github.com/p2pimage/p2p-snapshotter/proto/scheduler/v1"
	"github.com/p2pimage/p2p-snapshotter/scheduler/issuer"
)

func csr(t *testing.T, name string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// asClient returns ctx as a call from a client whose verified certificate names name.
func asClient(ctx context.Context, name string) context.Context {
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: name}}
	return peer.NewContext(ctx, &peer.Peer{AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{cert}}}}})
}

func TestIssueCertificate(t *testing.T) {
	dir := t.TempDir()
	caFile, caKey := tlstest.NewAuthority(t, "cluster CA").WriteCA(t, dir)
	is, err := issuer.New(caFile, caKey, []string{"tok"}, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		req  *schedulerv1.IssueCertificateRequest
		code codes.Code
	}{
		{"a bootstrap token", ctx, &schedulerv1.IssueCertificateRequest{Csr: csr(t, "host1"), BootstrapToken: "tok"}, codes.OK},
		{"a wrong token", ctx, &schedulerv1.IssueCertificateRequest{Csr: csr(t, "host1"), BootstrapToken: "tik"}, codes.PermissionDenied},
		{"neither token nor certificate", ctx, &schedulerv1.IssueCertificateRequest{Csr: csr(t, "host1")}, codes.PermissionDenied},
		{"a renewal for the host the certificate names", asClient(ctx, "host1"), &schedulerv1.IssueCertificateRequest{Csr: csr(t, "host1")}, codes.OK},
		{"a renewal for another host", asClient(ctx, "host1"), &schedulerv1.IssueCertificateRequest{Csr: csr(t, "host2")}, codes.PermissionDenied},
		{"no common name", ctx, &schedulerv1.IssueCertificateRequest{Csr: csr(t, ""), BootstrapToken: "tok"}, codes.InvalidArgument},
		{"not a CSR", ctx, &schedulerv1.IssueCertificateRequest{Csr: []byte("junk"), BootstrapToken: "tok"}, codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := is.IssueCertificate(tc.ctx, tc.req)
			if got := status.Code(err); got != tc.code {
				t.Fatalf("got %v (%v); want %v", got, err, tc.code)
			}
			if tc.code != codes.OK {
				return
			}
			block, _ := pem.Decode(resp.Certificate)
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			left := time.Until(cert.NotAfter)
			if cert.Subject.CommonName != "host1" || left < 9*time.Minute || left > 10*time.Minute || time.Unix(resp.NotAfterUnix, 0).Unix() != cert.NotAfter.Unix() {
				t.Errorf("issued %q until %v (%v left); want host1 for 10 minutes", cert.Subject.CommonName, cert.NotAfter, left)
			}
		})
	}
}
