package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// newTestCA makes a CA for the federation "fed" or stops the test.
func newTestCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA("fed")
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	return ca
}

// issue makes a key, a CSR for name and a certificate for it signed by ca.
func issue(t *testing.T, ca *CA, name string, role Role, hosts ...string) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csrPEM, err := NewCSR(key, name)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ParseCSR(csrPEM, name)
	if err != nil {
		t.Fatalf("ParseCSR of a fresh CSR: %v", err)
	}
	cert, err := ca.Sign(csr, Request{Name: name, Role: role, Hosts: hosts})
	if err != nil {
		t.Fatalf("Sign %s: %v", name, err)
	}
	return cert, key
}

func TestCAHashIsSHA256OfDERInLowercaseHex(t *testing.T) {
	ca := newTestCA(t)
	h := ca.Hash()
	if !regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).MatchString(h) {
		t.Fatalf("CA hash %q is not sha256: followed by 64 lowercase hex digits", h)
	}
	if h != Hash(ca.Cert.Raw) {
		t.Fatalf("ca.Hash() = %q, Hash(ca.Cert.Raw) = %q", h, Hash(ca.Cert.Raw))
	}
	b, err := ParseHash(h)
	if err != nil {
		t.Fatalf("ParseHash(%q): %v", h, err)
	}
	if "sha256:"+hex.EncodeToString(b) != h {
		t.Fatalf("ParseHash did not return the digest of %q: got %x", h, b)
	}
	other := newTestCA(t)
	if other.Hash() == h {
		t.Fatal("two different CAs have the same hash")
	}
}

func TestParseHashRejectsMalformedHashes(t *testing.T) {
	good := Hash([]byte("x"))
	hexPart := strings.TrimPrefix(good, "sha256:")
	for _, tc := range []struct{ name, in string }{
		{"empty", ""},
		{"prefix only", "sha256:"},
		{"no prefix", hexPart},
		{"other algorithm", "sha1:" + hexPart},
		{"prefix in upper case", "SHA256:" + hexPart},
		{"missing colon", "sha256" + hexPart},
		{"one digit short", good[:len(good)-1]},
		{"one byte short", good[:len(good)-2]},
		{"one byte too many", good + "00"},
		{"not hex", "sha256:" + strings.Repeat("zz", 32)},
		{"trailing newline", good + "\n"},
		{"leading space", " " + good},
		{"colon-separated bytes", "sha256:" + strings.Join(splitPairs(hexPart), ":")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if b, err := ParseHash(tc.in); err == nil {
				t.Fatalf("ParseHash(%q) = %x, want an error", tc.in, b)
			}
		})
	}
}

func splitPairs(s string) []string {
	var out []string
	for i := 0; i+2 <= len(s); i += 2 {
		out = append(out, s[i:i+2])
	}
	return out
}

func TestSignPutsIdentityInCertAndIdentityOfReadsIt(t *testing.T) {
	ca := newTestCA(t)
	for _, tc := range []struct {
		name  string
		role  Role
		hosts []string
	}{
		{"node-1", RoleMember, []string{"node-1.example.org", "192.0.2.7"}},
		{"super-a", RoleSupernode, []string{"127.0.0.1", "localhost", "::1"}},
		{"alice", RoleAdmin, nil},
	} {
		t.Run(string(tc.role), func(t *testing.T) {
			cert, key := issue(t, ca, tc.name, tc.role, tc.hosts...)
			id, err := IdentityOf(cert)
			if err != nil {
				t.Fatalf("IdentityOf: %v", err)
			}
			if id.Name != tc.name || id.Role != tc.role || id.Federation != "fed" {
				t.Fatalf("identity = %+v, want name %q role %q federation fed", id, tc.name, tc.role)
			}
			if id.Serial != SerialHex(cert) || id.Serial == "" {
				t.Fatalf("identity serial %q, cert serial %q", id.Serial, SerialHex(cert))
			}
			if !id.NotAfter.Equal(cert.NotAfter) {
				t.Fatalf("identity NotAfter %v, cert %v", id.NotAfter, cert.NotAfter)
			}
			if !SameKey(cert.PublicKey, key.Public()) {
				t.Fatal("certificate is not for the CSR's key")
			}
			if err := cert.CheckSignatureFrom(ca.Cert); err != nil {
				t.Fatalf("certificate not signed by the CA: %v", err)
			}
			if cert.IsCA {
				t.Fatal("a node certificate must not be a CA")
			}
			var gotHosts []string
			gotHosts = append(gotHosts, cert.DNSNames...)
			for _, ip := range cert.IPAddresses {
				gotHosts = append(gotHosts, ip.String())
			}
			for _, h := range tc.hosts {
				found := false
				for _, g := range gotHosts {
					if g == h || (net.ParseIP(h) != nil && net.ParseIP(h).Equal(net.ParseIP(g))) {
						found = true
					}
				}
				if !found {
					t.Errorf("host %q not in certificate (has %v)", h, gotHosts)
				}
			}
			if len(gotHosts) != len(tc.hosts) {
				t.Errorf("certificate hosts %v, want exactly %v", gotHosts, tc.hosts)
			}
			// Server and client use: every node is both.
			pool := ca.Pool()
			for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
				if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
					t.Errorf("verify for usage %v: %v", usage, err)
				}
			}
		})
	}
}

func TestSignGivesEveryCertificateADistinctSerial(t *testing.T) {
	ca := newTestCA(t)
	seen := map[string]bool{SerialHex(ca.Cert): true}
	for i := 0; i < 20; i++ {
		cert, _ := issue(t, ca, "n", RoleMember)
		s := SerialHex(cert)
		if seen[s] {
			t.Fatalf("serial %s issued twice", s)
		}
		seen[s] = true
	}
}

func TestSignRejectsUnknownRole(t *testing.T) {
	ca := newTestCA(t)
	key, _ := NewKey()
	csrPEM, _ := NewCSR(key, "n")
	csr, err := ParseCSR(csrPEM, "n")
	if err != nil {
		t.Fatal(err)
	}
	for _, role := range []Role{"", "root", "Admin", "standby"} {
		if cert, err := ca.Sign(csr, Request{Name: "n", Role: role}); err == nil {
			t.Errorf("Sign with role %q issued %v, want an error", role, cert.Subject)
		}
	}
}

func TestSignValidityDefaultsAndNeverOutlivesCA(t *testing.T) {
	ca := newTestCA(t)
	key, _ := NewKey()
	csrPEM, _ := NewCSR(key, "n")
	csr, _ := ParseCSR(csrPEM, "n")

	def, err := ca.Sign(csr, Request{Name: "n", Role: RoleMember})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(def.NotAfter); d < CertValidity-time.Hour || d > CertValidity+time.Hour {
		t.Errorf("default validity ends in %v, want about %v", d, CertValidity)
	}
	short, err := ca.Sign(csr, Request{Name: "n", Role: RoleMember, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(short.NotAfter); d < 50*time.Minute || d > 70*time.Minute {
		t.Errorf("1h validity ends in %v", d)
	}
	long, err := ca.Sign(csr, Request{Name: "n", Role: RoleMember, Validity: 2 * CAValidity})
	if err != nil {
		t.Fatal(err)
	}
	if long.NotAfter.After(ca.Cert.NotAfter) {
		t.Errorf("certificate valid until %v, after its CA (%v)", long.NotAfter, ca.Cert.NotAfter)
	}
	if !def.NotBefore.Before(time.Now()) {
		t.Errorf("NotBefore %v is not in the past (no clock skew allowance)", def.NotBefore)
	}
}

func TestSignIgnoresCSRSubjectAndExtensions(t *testing.T) {
	ca := newTestCA(t)
	key, _ := NewKey()
	// A requester that asks for more than it is given: another name,
	// the admin role, another federation, its own host names and CA status.
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{
			CommonName:         "root",
			OrganizationalUnit: []string{string(RoleAdmin)},
			Organization:       []string{"other-federation"},
		},
		DNSNames:    []string{"evil.example"},
		IPAddresses: []net.IP{net.ParseIP("203.0.113.66")},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	csr, err := ParseCSR(csrPEM, "root")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Sign(csr, Request{Name: "node-1", Role: RoleMember, Hosts: []string{"node-1.example.org"}})
	if err != nil {
		t.Fatal(err)
	}
	id, err := IdentityOf(cert)
	if err != nil {
		t.Fatal(err)
	}
	if id.Name != "node-1" || id.Role != RoleMember || id.Federation != "fed" {
		t.Fatalf("identity %+v: the CSR's subject leaked into the certificate", id)
	}
	if got := cert.Subject.OrganizationalUnit; len(got) != 1 || got[0] != string(RoleMember) {
		t.Fatalf("OU = %v", got)
	}
	if len(cert.DNSNames) != 1 || cert.DNSNames[0] != "node-1.example.org" || len(cert.IPAddresses) != 0 {
		t.Fatalf("hosts DNS %v IP %v: the CSR's requested names leaked", cert.DNSNames, cert.IPAddresses)
	}
	if cert.IsCA {
		t.Fatal("certificate is a CA")
	}
}

func TestIdentityOfRejectsCertificatesWithoutAFederationIdentity(t *testing.T) {
	ca := newTestCA(t)
	key, _ := NewKey()
	mk := func(subject pkix.Name) *x509.Certificate {
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
			SerialNumber: big.NewInt(42),
			Subject:      subject,
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
		}, ca.Cert, key.Public(), ca.Key)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, tc := range []struct {
		name    string
		subject pkix.Name
	}{
		{"no role", pkix.Name{CommonName: "n", Organization: []string{"fed"}}},
		{"two roles", pkix.Name{CommonName: "n", OrganizationalUnit: []string{"member", "admin"}, Organization: []string{"fed"}}},
		{"unknown role", pkix.Name{CommonName: "n", OrganizationalUnit: []string{"root"}, Organization: []string{"fed"}}},
		{"no name", pkix.Name{OrganizationalUnit: []string{"member"}, Organization: []string{"fed"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if id, err := IdentityOf(mk(tc.subject)); err == nil {
				t.Fatalf("IdentityOf = %+v, want an error", id)
			}
		})
	}
	// The CA's own certificate is not an identity either.
	if id, err := IdentityOf(ca.Cert); err == nil {
		t.Fatalf("IdentityOf(CA) = %+v, want an error", id)
	}
}

func TestParseCSRAcceptsFreshCSRsOfSeveralKeyTypes(t *testing.T) {
	ecKey, _ := NewKey()
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		key  crypto.Signer
	}{{"P-256", ecKey}, {"P-384", p384}, {"Ed25519", edKey}} {
		t.Run(tc.name, func(t *testing.T) {
			csrPEM, err := NewCSR(tc.key, "node-1")
			if err != nil {
				t.Fatal(err)
			}
			csr, err := ParseCSR(csrPEM, "node-1")
			if err != nil {
				t.Fatalf("ParseCSR: %v", err)
			}
			if !SameKey(csr.PublicKey, tc.key.Public()) {
				t.Fatal("parsed CSR carries another key")
			}
		})
	}
}

func TestParseCSRRejectsGarbageWrongNamesTamperingAndWeakKeys(t *testing.T) {
	key, _ := NewKey()
	good, err := NewCSR(key, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(good)
	der := block.Bytes
	reencode := func(b []byte) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: b})
	}

	// The name changed after signing: the subject no longer matches the
	// signature.
	renamed := bytes.Replace(der, []byte("node-a"), []byte("node-b"), 1)
	if bytes.Equal(renamed, der) {
		t.Fatal("test setup: CSR DER does not contain the name")
	}
	// The signature itself damaged: flip a bit of the last byte, which
	// belongs to the signature's S value.
	badSig := bytes.Clone(der)
	badSig[len(badSig)-1] ^= 0x01

	// Keys weaker than the federation accepts.
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	weakEC, err := NewCSR(p224, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weakRSA, err := NewCSR(rsa1024, "node-a")
	if err != nil {
		t.Fatal(err)
	}

	caCert := newTestCA(t).CertPEM()

	for _, tc := range []struct {
		name string
		pem  []byte
		as   string
	}{
		{"empty", nil, "node-a"},
		{"not PEM", []byte("hello, I am a node"), "node-a"},
		{"DER without PEM", der, "node-a"},
		{"PEM of another type", caCert, "node-a"},
		{"PEM of garbage", reencode([]byte("not a certificate request")), "node-a"},
		{"truncated DER", reencode(der[:len(der)/2]), "node-a"},
		{"names another node", good, "node-b"},
		{"names nobody expected", good, ""},
		{"name in other case", good, "Node-A"},
		{"subject altered after signing", reencode(renamed), "node-b"},
		{"subject altered, asked as original", reencode(renamed), "node-a"},
		{"signature damaged", reencode(badSig), "node-a"},
		{"P-224 key", weakEC, "node-a"},
		{"RSA-1024 key", weakRSA, "node-a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if csr, err := ParseCSR(tc.pem, tc.as); err == nil {
				t.Fatalf("ParseCSR accepted it (subject %v)", csr.Subject)
			}
		})
	}
	// And the untouched request is still fine, so the rejections above are
	// about what was changed.
	if _, err := ParseCSR(good, "node-a"); err != nil {
		t.Fatalf("ParseCSR(good): %v", err)
	}
}

func TestSameKey(t *testing.T) {
	a, _ := NewKey()
	b, _ := NewKey()
	aAgain, err := x509.ParsePKIXPublicKey(mustMarshalPKIX(t, a.Public()))
	if err != nil {
		t.Fatal(err)
	}
	if !SameKey(a.Public(), aAgain) {
		t.Error("a key is not the same as itself after a round trip")
	}
	if SameKey(a.Public(), b.Public()) {
		t.Error("two different keys are the same")
	}
	if SameKey(nil, a.Public()) || SameKey(a.Public(), nil) {
		t.Error("nil is the same as a key")
	}
}

func mustMarshalPKIX(t *testing.T, pub crypto.PublicKey) []byte {
	t.Helper()
	b, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestStoreSubCAKeepsMemberCertificatesOutOfTheStore is the reason NewSubCA
// exists: store peers trust only the sub-CA, so a member's certificate,
// though signed by the same federation root, must not verify there.
func TestStoreSubCAKeepsMemberCertificatesOutOfTheStore(t *testing.T) {
	ca := newTestCA(t)
	storeCA, err := ca.NewSubCA("store")
	if err != nil {
		t.Fatal(err)
	}
	if !storeCA.Cert.IsCA || storeCA.Federation() != "fed" {
		t.Fatalf("sub-CA: IsCA %v federation %q", storeCA.Cert.IsCA, storeCA.Federation())
	}
	if err := storeCA.Cert.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatalf("sub-CA is not signed by the federation CA: %v", err)
	}
	if storeCA.Cert.NotAfter.After(ca.Cert.NotAfter) {
		t.Fatal("sub-CA outlives its parent")
	}
	if storeCA.Hash() == ca.Hash() {
		t.Fatal("sub-CA has the root's hash")
	}

	member, _ := issue(t, ca, "node-1", RoleMember, "127.0.0.1")
	storePeer, _ := issue(t, storeCA, "super-a", RoleSupernode, "127.0.0.1")

	storePool := storeCA.Pool()
	opts := x509.VerifyOptions{Roots: storePool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if _, err := member.Verify(opts); err == nil {
		t.Fatal("a member certificate verifies against the store sub-CA: members could talk to the store")
	}
	if _, err := storePeer.Verify(opts); err != nil {
		t.Fatalf("a store certificate does not verify against the store sub-CA: %v", err)
	}

	// Under the root both chain, the store certificate through the sub-CA.
	inter := x509.NewCertPool()
	inter.AddCert(storeCA.Cert)
	rootOpts := x509.VerifyOptions{Roots: ca.Pool(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
	if _, err := storePeer.Verify(rootOpts); err != nil {
		t.Fatalf("store certificate does not chain to the root: %v", err)
	}
	if _, err := member.Verify(rootOpts); err != nil {
		t.Fatalf("member certificate does not chain to the root: %v", err)
	}

	// The sub-CA may not make CAs of its own: a certificate from a
	// sub-sub-CA does not chain to the root.
	subSub, err := storeCA.NewSubCA("rogue")
	if err != nil {
		t.Fatal(err)
	}
	rogue, _ := issue(t, subSub, "rogue", RoleSupernode)
	inter.AddCert(subSub.Cert)
	if _, err := rogue.Verify(rootOpts); err == nil {
		t.Fatal("a certificate from a CA below the sub-CA chains to the root: path length is not limited")
	}
}

func TestSaveAndLoadKeyPairRoundTripWithPrivateKeyFile(t *testing.T) {
	ca := newTestCA(t)
	cert, key := issue(t, ca, "node-1", RoleMember)
	dir := filepath.Join(t.TempDir(), "not", "yet", "there")
	certFile, keyFile := filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key")
	if err := SaveKeyPair(certFile, keyFile, cert, key); err != nil {
		t.Fatalf("SaveKeyPair: %v", err)
	}
	fi, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode %v, want 0600", perm)
	}
	fi, err = os.Stat(certFile)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o644 {
		t.Errorf("cert file mode %v, want 0644", perm)
	}
	kp, err := LoadKeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("LoadKeyPair: %v", err)
	}
	if !bytes.Equal(kp.Cert.Raw, cert.Raw) {
		t.Error("loaded certificate differs from the saved one")
	}
	if !SameKey(kp.Key.Public(), key.Public()) {
		t.Error("loaded key differs from the saved one")
	}
	// The loaded key signs what the certificate's key verifies.
	digest := make([]byte, 32)
	sig, err := kp.Key.Sign(rand.Reader, digest, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(kp.Cert.PublicKey.(*ecdsa.PublicKey), digest, sig) {
		t.Error("loaded key does not match the certificate")
	}

	// Saving again replaces the files and keeps the key private.
	cert2, key2 := issue(t, ca, "node-1", RoleMember)
	if err := SaveKeyPair(certFile, keyFile, cert2, key2); err != nil {
		t.Fatal(err)
	}
	kp2, err := LoadKeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(kp2.Cert.Raw, cert2.Raw) || !SameKey(kp2.Key.Public(), key2.Public()) {
		t.Error("second save did not replace the pair")
	}
	if fi, _ := os.Stat(keyFile); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode after replace %v, want 0600", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %v, want only the two files (temporary files left behind?)", names)
	}
}

func TestLoadKeyPairErrors(t *testing.T) {
	ca := newTestCA(t)
	cert, key := issue(t, ca, "node-1", RoleMember)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if err := SaveKeyPair(certFile, keyFile, cert, key); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("-----BEGIN NOTHING-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct{ name, cert, key string }{
		{"missing cert", missing, keyFile},
		{"missing key", certFile, missing},
		{"garbage cert", garbage, keyFile},
		{"garbage key", certFile, garbage},
		{"key where cert goes", keyFile, keyFile},
		{"cert where key goes", certFile, certFile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := LoadKeyPair(tc.cert, tc.key); err == nil {
				t.Fatal("LoadKeyPair succeeded")
			}
		})
	}
}

func TestParseKeyAcceptsSEC1ECKeys(t *testing.T) {
	key, _ := NewKey()
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseKey(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	if err != nil {
		t.Fatalf("ParseKey(SEC1): %v", err)
	}
	if !SameKey(got.Public(), key.Public()) {
		t.Fatal("SEC1 key parsed to another key")
	}
}

func TestLoadCARoundTripAndRefusesNonCA(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if err := SaveKeyPair(certFile, keyFile, ca.Cert, ca.Key); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadCA(certFile, keyFile)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	if loaded.Hash() != ca.Hash() || loaded.Federation() != "fed" {
		t.Fatalf("loaded CA hash %s federation %q, want %s fed", loaded.Hash(), loaded.Federation(), ca.Hash())
	}
	// The loaded CA signs certificates the original verifies.
	cert, _ := issue(t, loaded, "node-1", RoleMember)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool()}); err != nil {
		t.Fatalf("certificate from the loaded CA does not verify under the original: %v", err)
	}

	leaf, key := issue(t, ca, "node-1", RoleMember)
	leafCert, leafKey := filepath.Join(dir, "leaf.crt"), filepath.Join(dir, "leaf.key")
	if err := SaveKeyPair(leafCert, leafKey, leaf, key); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(leafCert, leafKey); err == nil {
		t.Fatal("LoadCA accepted a node certificate")
	}
}

func TestRoleValid(t *testing.T) {
	for role, want := range map[Role]bool{
		RoleAdmin: true, RoleSupernode: true, RoleMember: true,
		"": false, "standby": false, "ADMIN": false, "member ": false,
	} {
		if got := role.Valid(); got != want {
			t.Errorf("Role(%q).Valid() = %v, want %v", role, got, want)
		}
	}
}
