package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"net"
	"net/url"
	"testing"
)

// plainName tells the names callers pass on: they validate node names as
// DNS labels before a CSR reaches ParseCSR.
func plainName(s string) bool {
	if len(s) < 1 || len(s) > 63 {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// checkSigned signs a CSR that ParseCSR accepted for name and checks that
// the certificate says only what the CA decided: the name, the role, the
// federation and the hosts of the request, never what the CSR asked for.
func checkSigned(t *testing.T, ca *CA, csr *x509.CertificateRequest, name string) {
	t.Helper()
	cert, err := ca.Sign(csr, Request{Name: name, Role: RoleMember, Hosts: []string{"node.example.org", "192.0.2.1"}})
	if err != nil {
		t.Fatalf("Sign of an accepted CSR: %v", err)
	}
	id, err := IdentityOf(cert)
	if err != nil || id.Name != name || id.Role != RoleMember || id.Federation != "fed" {
		t.Fatalf("certificate identity %+v, %v; want %s, member of fed", id, err, name)
	}
	if cert.IsCA || cert.BasicConstraintsValid {
		t.Fatal("a CSR made itself a CA certificate")
	}
	if len(cert.DNSNames) != 1 || cert.DNSNames[0] != "node.example.org" ||
		len(cert.IPAddresses) != 1 || !cert.IPAddresses[0].Equal(net.IPv4(192, 0, 2, 1)) ||
		len(cert.EmailAddresses) != 0 || len(cert.URIs) != 0 {
		t.Fatalf("certificate names %q %v %q %v; want only the requested hosts", cert.DNSNames, cert.IPAddresses, cert.EmailAddresses, cert.URIs)
	}
	if len(cert.Subject.Names) != 3 {
		t.Fatalf("certificate subject %v holds more than the CA put there", cert.Subject)
	}
	if !SameKey(cert.PublicKey, csr.PublicKey) {
		t.Fatal("certificate is for another key than the CSR's")
	}
	if err := cert.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatalf("certificate does not verify under the CA: %v", err)
	}
}

// fuzzAuthority is the CA of the federation "fed" and a joiner's key.
func fuzzAuthority(f *testing.F) (*CA, crypto.Signer) {
	ca, err := NewCA("fed")
	if err != nil {
		f.Fatal(err)
	}
	key, err := NewKey()
	if err != nil {
		f.Fatal(err)
	}
	return ca, key
}

// FuzzParseCSR feeds arbitrary bytes, PEM or bare DER, to ParseCSR: it
// must not panic, and whatever it accepts must name the joiner and sign
// into a certificate that carries nothing from the request but its key.
func FuzzParseCSR(f *testing.F) {
	ca, key := fuzzAuthority(f)
	csr, err := NewCSR(key, "node1")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(csr, "node1")
	f.Add(csr, "node2")
	block, _ := pem.Decode(csr)
	f.Add(block.Bytes, "node1")
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n"), "node1")
	f.Add(ca.CertPEM(), "fed federation CA")
	f.Fuzz(func(t *testing.T, data []byte, name string) {
		for _, in := range [][]byte{data, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: data})} {
			csr, err := ParseCSR(in, name)
			if err != nil {
				continue
			}
			if csr.Subject.CommonName != name {
				t.Fatalf("ParseCSR accepted a CSR for %q as %q", csr.Subject.CommonName, name)
			}
			if err := csr.CheckSignature(); err != nil {
				t.Fatalf("ParseCSR accepted a CSR whose signature fails: %v", err)
			}
			if plainName(name) {
				checkSigned(t, ca, csr, name)
			}
		}
	})
}

// oidBasicConstraints is the extension that makes a CA.
var oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}

// FuzzSignCSR makes well-signed CSRs that ask for more than a joiner may
// have: another name, extra subject fields, alternative names of every
// kind and CA status. ParseCSR must refuse one for another name than the
// joiner's, and a certificate signed from an accepted one must hold none
// of the extras.
func FuzzSignCSR(f *testing.F) {
	ca, key := fuzzAuthority(f)
	f.Add("node1", "node1", "", "", "", "", []byte(nil), false)
	f.Add("node1", "node2", "", "", "", "", []byte(nil), false)
	f.Add("node1", "node1", "admin", "fed", "sn1.example.org", "root@example.org", []byte{192, 0, 2, 53}, true)
	f.Add("admin", "admin", "supernode", "other", "*.example.org", "x", []byte(net.ParseIP("2001:db8::1")), true)
	f.Add("node1", "NODE1", "", "", "node1", "", []byte{}, false)
	f.Add("node1", "node1\x00", "", "", "", "spiffe://fed/node1", []byte{127, 0, 0, 1}, false)
	f.Fuzz(func(t *testing.T, cn, name, ou, org, dnsName, extra string, ip []byte, isCA bool) {
		tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}
		if ou != "" {
			tmpl.Subject.OrganizationalUnit = []string{ou}
		}
		if org != "" {
			tmpl.Subject.Organization = []string{org}
		}
		if dnsName != "" {
			tmpl.DNSNames = []string{dnsName}
		}
		if len(ip) == net.IPv4len || len(ip) == net.IPv6len {
			tmpl.IPAddresses = []net.IP{ip}
		}
		if u, err := url.Parse(extra); err == nil && u.Scheme != "" {
			tmpl.URIs = []*url.URL{u}
		} else if extra != "" {
			tmpl.EmailAddresses = []string{extra}
		}
		if isCA {
			v, _ := asn1.Marshal(struct{ IsCA bool }{true})
			tmpl.ExtraExtensions = []pkix.Extension{{Id: oidBasicConstraints, Critical: true, Value: v}}
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
		if err != nil {
			return
		}
		csr, err := ParseCSR(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), name)
		if cn != name {
			if err == nil {
				t.Fatalf("ParseCSR accepted a CSR for %q as one for %q", cn, name)
			}
			return
		}
		if err != nil {
			t.Fatalf("ParseCSR refused a well-signed CSR for %q: %v", name, err)
		}
		if plainName(name) {
			checkSigned(t, ca, csr, name)
		}
	})
}
