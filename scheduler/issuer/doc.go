// Package issuer is a scheduler acting as the cluster's certificate authority: it holds the
// CA's key, issues short-lived certificates to hosts that present a bootstrap token
// (schedulerv1.Certificates), renews them for hosts that present the certificate it issued,
// and serves the scheduler's own gRPC address with a certificate it issues itself. Every
// method but IssueCertificate then requires a client certificate of the CA (RequireClientCert).
package issuer
