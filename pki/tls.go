package pki

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// TLSCertificate is kp as a TLS certificate chain. The CA certificate rides
// along so that a joiner, who knows only the CA hash, can find and pin it.
func TLSCertificate(kp *KeyPair, ca *x509.Certificate) tls.Certificate {
	return tls.Certificate{
		Certificate: [][]byte{kp.Cert.Raw, ca.Raw},
		PrivateKey:  kp.Key,
		Leaf:        kp.Cert,
	}
}

// ServerTLS is the configuration of a federation server. Client
// certificates are verified against the CA when presented; which endpoints
// demand one is the server's business (joining cannot, having none yet).
func ServerTLS(kp *KeyPair, ca *x509.Certificate) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{TLSCertificate(kp, ca)},
		ClientCAs:    pool,
		ClientAuth:   tls.VerifyClientCertIfGiven,
	}
}

// ClientTLS is the configuration of a client that knows the CA and, unless
// kp is nil, proves its own identity.
func ClientTLS(kp *KeyPair, ca *x509.Certificate) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool}
	if kp != nil {
		cfg.Certificates = []tls.Certificate{TLSCertificate(kp, ca)}
	}
	return cfg
}

// APIClientTLS is ClientTLS for talking to the federation API: the server
// must also prove it is a supernode, so that a member, whose certificate is
// signed by the same CA, cannot pose as one.
func APIClientTLS(kp *KeyPair, ca *x509.Certificate) *tls.Config {
	cfg := ClientTLS(kp, ca)
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return fmt.Errorf("%w: server sent no certificate", ErrUntrustedServer)
		}
		id, err := IdentityOf(cs.PeerCertificates[0])
		if err != nil {
			return fmt.Errorf("%w: %w", ErrUntrustedServer, err)
		}
		if id.Role != RoleSupernode {
			return fmt.Errorf("%w: server %q is a %s, not a supernode", ErrUntrustedServer, id.Name, id.Role)
		}
		return nil
	}
	return cfg
}

// ErrUntrustedServer marks a server that does not prove membership of the
// pinned federation: retrying will not help.
var ErrUntrustedServer = errors.New("untrusted server")

// PinnedTLS is the configuration of a joiner that knows only the CA hash.
// The handshake succeeds only if the server presents a CA certificate with
// exactly that hash and a leaf certificate signed by it: there is no trust
// on first use. found receives the pinned CA. The leaf's name is checked
// against the server name sent in the handshake, which Go leaves empty for
// a server dialled by IP address; so PinnedTLS serves only to learn the
// CA, and everything after is said over APIClientTLS, which checks names
// and addresses.
func PinnedTLS(caHash []byte, found func(*x509.Certificate)) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Verification is done below against the pinned CA instead of the
		// system roots, which know nothing of a federation CA.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("server sent no certificate")
			}
			var ca *x509.Certificate
			for _, c := range cs.PeerCertificates {
				sum := sha256.Sum256(c.Raw)
				if bytes.Equal(sum[:], caHash) && c.IsCA {
					ca = c
					break
				}
			}
			if ca == nil {
				return fmt.Errorf("%w: server's CA does not match the CA hash sha256:%x given to join (wrong federation or an impostor)", ErrUntrustedServer, caHash)
			}
			pool := x509.NewCertPool()
			pool.AddCert(ca)
			if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
				Roots:   pool,
				DNSName: cs.ServerName,
			}); err != nil {
				return fmt.Errorf("%w: server certificate is not valid under the pinned CA: %w", ErrUntrustedServer, err)
			}
			if found != nil {
				found(ca)
			}
			return nil
		},
	}
}
