// Package tlsfiles makes mutual-TLS configurations from a CA, a certificate and a key given
// as PEM files, for the peer protocol, the schedulers' gRPC service and p2pctl. Both ends of
// every connection present a certificate that the CA signed and check the other's: a peer
// or a client without one is refused at the handshake, and so is one whose certificate has
// expired or is not yet valid.
//
// The files are read again when they change (checked at most once a second, at a
// handshake), so certificates are rotated by replacing the files, with no restart:
// connections open stay as they are, new ones use the new certificate and CA.
package tlsfiles
