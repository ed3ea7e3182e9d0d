// Package pki is the federation's certificate authority: it makes the CA,
// signs certificate requests from nodes and administrators, and builds the
// TLS configurations every connection in the federation uses.
//
// A certificate carries the whole identity of its holder: the common name is
// the node (or administrator) name, the organizational unit its role, and the
// organization the federation. Private keys are made where they are used and
// never travel: nodes send certificate requests.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fedkeeper/fedkeeper/internal/atomicfile"
)

// Role is what a certificate's holder may do in the federation.
type Role string

// The roles a certificate can carry.
const (
	RoleAdmin     Role = "admin"
	RoleSupernode Role = "supernode"
	RoleMember    Role = "member"
)

// Valid reports whether r is one of the known roles.
func (r Role) Valid() bool {
	return r == RoleAdmin || r == RoleSupernode || r == RoleMember
}

// Validity periods. Node certificates are short enough that a lost key
// stops mattering within a year even if nobody revokes it.
const (
	CAValidity   = 10 * 365 * 24 * time.Hour
	CertValidity = 365 * 24 * time.Hour
)

// Identity is who a certificate says its holder is.
type Identity struct {
	Name       string
	Role       Role
	Federation string
	// Serial is the certificate's serial number in hex; the store records
	// the serial a node was admitted with so that a superseded or removed
	// node's certificate stops working at once.
	Serial   string
	NotAfter time.Time
}

// IdentityOf reads the identity out of a certificate signed by the
// federation CA. It does not verify the signature: callers get the
// certificate from a verified TLS handshake or from their own files.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	if len(cert.Subject.OrganizationalUnit) != 1 {
		return Identity{}, errors.New("certificate has no single role (organizational unit)")
	}
	role := Role(cert.Subject.OrganizationalUnit[0])
	if !role.Valid() {
		return Identity{}, fmt.Errorf("certificate has unknown role %q", role)
	}
	if cert.Subject.CommonName == "" {
		return Identity{}, errors.New("certificate has no name (common name)")
	}
	fed := ""
	if len(cert.Subject.Organization) == 1 {
		fed = cert.Subject.Organization[0]
	}
	return Identity{
		Name:       cert.Subject.CommonName,
		Role:       role,
		Federation: fed,
		Serial:     SerialHex(cert),
		NotAfter:   cert.NotAfter,
	}, nil
}

// SerialHex is the canonical text form of a certificate's serial number.
func SerialHex(cert *x509.Certificate) string {
	return hex.EncodeToString(cert.SerialNumber.Bytes())
}

// Hash is the fingerprint joiners use to recognise the federation CA:
// "sha256:" and the hex SHA-256 of the certificate's DER bytes.
func Hash(der []byte) string {
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ParseHash checks that s is a CA hash as printed by Hash and returns the
// digest bytes.
func ParseHash(s string) ([]byte, error) {
	hexPart, ok := strings.CutPrefix(s, "sha256:")
	if !ok {
		return nil, fmt.Errorf("CA hash %q must start with sha256:", s)
	}
	b, err := hex.DecodeString(hexPart)
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("CA hash %q must be sha256: followed by 64 hex digits", s)
	}
	return b, nil
}

// CA is the federation's certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewCA makes a fresh self-signed CA for the named federation.
func NewCA(federation string) (*CA, error) {
	// One level below it: the store CA (see NewSubCA).
	return newCA(pkix.Name{CommonName: federation + " federation CA", Organization: []string{federation}}, nil, 1)
}

// NewSubCA makes a CA signed by ca for one purpose. The store uses one: its
// peers trust only the sub-CA, so a member's certificate, signed by the
// federation CA itself, cannot open a connection to the store even though
// both chain to the same root.
func (ca *CA) NewSubCA(purpose string) (*CA, error) {
	fed := ca.Federation()
	return newCA(pkix.Name{CommonName: fed + " " + purpose + " CA", Organization: []string{fed}}, ca, 0)
}

// newCA makes a CA certificate, self-signed when parent is nil.
func newCA(subject pkix.Name, parent *CA, maxPathLen int) (*CA, error) {
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            maxPathLen,
		MaxPathLenZero:        maxPathLen == 0,
	}
	signerCert, signerKey := tmpl, crypto.Signer(key)
	if parent != nil {
		signerCert, signerKey = parent.Cert, parent.Key
		tmpl.NotAfter = parent.Cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, key.Public(), signerKey)
	if err != nil {
		return nil, fmt.Errorf("sign CA certificate %q: %w", subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse new CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Federation is the federation name the CA was made for.
func (ca *CA) Federation() string {
	if len(ca.Cert.Subject.Organization) == 1 {
		return ca.Cert.Subject.Organization[0]
	}
	return ""
}

// Hash is the CA's fingerprint (see Hash).
func (ca *CA) Hash() string { return Hash(ca.Cert.Raw) }

// CertPEM is the CA certificate in PEM form.
func (ca *CA) CertPEM() []byte { return EncodeCert(ca.Cert.Raw) }

// Pool is a certificate pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Request says what certificate to issue.
type Request struct {
	Name string
	Role Role
	// Hosts are DNS names or IP addresses the certificate is valid for as
	// a server; empty for a pure client such as an administrator.
	Hosts    []string
	Validity time.Duration
}

// Sign issues a certificate for the public key in csr with the identity in
// req. The subject of the request itself is ignored: the CA, not the
// requester, decides who the holder is.
func (ca *CA) Sign(csr *x509.CertificateRequest, req Request) (*x509.Certificate, error) {
	if !req.Role.Valid() {
		return nil, fmt.Errorf("sign certificate: unknown role %q", req.Role)
	}
	if req.Validity <= 0 {
		req.Validity = CertValidity
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	notAfter := now.Add(req.Validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:         req.Name,
			OrganizationalUnit: []string{string(req.Role)},
			Organization:       []string{ca.Federation()},
		},
		NotBefore:   now.Add(-5 * time.Minute), // tolerate small clock skew between sites
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	for _, h := range req.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %s: %w", req.Name, err)
	}
	return x509.ParseCertificate(der)
}

// Issue makes a key and a certificate for it. Only a supernode does this,
// for itself and for administrators; nodes make their keys themselves and
// send requests.
func (ca *CA) Issue(req Request) (*KeyPair, error) {
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	csrPEM, err := NewCSR(key, req.Name)
	if err != nil {
		return nil, err
	}
	csr, err := ParseCSR(csrPEM, req.Name)
	if err != nil {
		return nil, err
	}
	cert, err := ca.Sign(csr, req)
	if err != nil {
		return nil, err
	}
	return &KeyPair{Cert: cert, Key: key}, nil
}

// NewKey makes a private key of the kind the federation uses (ECDSA P-256).
func NewKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return k, nil
}

// NewCSR makes a PEM certificate request for name signed by key.
func NewCSR(key crypto.Signer, name string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: name},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("create certificate request: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// ParseCSR decodes a PEM certificate request, checks its self-signature
// (proof that the requester holds the key) and that it names name.
func ParseCSR(pemBytes []byte, name string) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("csr is not a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("csr does not parse: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("csr signature is invalid: %w", err)
	}
	if csr.Subject.CommonName != name {
		return nil, fmt.Errorf("csr names %q, not %q", csr.Subject.CommonName, name)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve.Params().BitSize < 256 {
			return nil, errors.New("csr key is weaker than ECDSA P-256")
		}
	default:
		// RSA and Ed25519 keys made by other tools are fine; only tiny
		// RSA keys are refused.
		if rk, ok := csr.PublicKey.(interface{ Size() int }); ok && rk.Size() < 256 {
			return nil, errors.New("csr RSA key is shorter than 2048 bits")
		}
	}
	return csr, nil
}

// SameKey reports whether two public keys are the same key.
func SameKey(a, b crypto.PublicKey) bool {
	ak, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ak.Equal(b)
}

// EncodeCert wraps DER certificate bytes in PEM.
func EncodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// ParseCert decodes the first PEM certificate in b.
func ParseCert(b []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM CERTIFICATE")
	}
	return x509.ParseCertificate(block.Bytes)
}

// EncodeKey wraps a private key in PEM (PKCS#8).
func EncodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKey decodes a PEM private key (PKCS#8, or SEC1 EC).
func ParseKey(b []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("not a PEM private key")
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, errors.New("private key cannot sign")
		}
		return s, nil
	}
	k, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	return k, nil
}

// KeyPair is a certificate with its private key, as kept in files.
type KeyPair struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// SaveKeyPair writes the certificate and key files (the key readable by its
// owner only).
func SaveKeyPair(certFile, keyFile string, cert *x509.Certificate, key crypto.Signer) error {
	keyPEM, err := EncodeKey(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(keyFile), 0o700); err != nil {
		return fmt.Errorf("create key directory: %w", err)
	}
	if err := atomicfile.Write(keyFile, keyPEM, 0o600); err != nil {
		return err
	}
	return atomicfile.Write(certFile, EncodeCert(cert.Raw), 0o644)
}

// LoadKeyPair reads files written by SaveKeyPair.
func LoadKeyPair(certFile, keyFile string) (*KeyPair, error) {
	cb, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	cert, err := ParseCert(cb)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w", certFile, err)
	}
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	key, err := ParseKey(kb)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", keyFile, err)
	}
	return &KeyPair{Cert: cert, Key: key}, nil
}

// LoadCA reads a CA saved with SaveKeyPair.
func LoadCA(certFile, keyFile string) (*CA, error) {
	kp, err := LoadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	if !kp.Cert.IsCA {
		return nil, fmt.Errorf("load CA: %s is not a CA certificate", certFile)
	}
	return &CA{Cert: kp.Cert, Key: kp.Key}, nil
}

func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("random serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}
