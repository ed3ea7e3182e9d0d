package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// startServer runs an HTTPS server with ServerTLS for kp under caCert. The
// handler answers with the name in the client's certificate, or "anonymous".
func startServer(t *testing.T, kp *KeyPair, caCert *x509.Certificate) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			http.Error(w, "no TLS", http.StatusBadRequest)
			return
		}
		if len(r.TLS.PeerCertificates) == 0 {
			io.WriteString(w, "anonymous")
			return
		}
		id, err := IdentityOf(r.TLS.PeerCertificates[0])
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		io.WriteString(w, id.Name+"/"+string(id.Role))
	}))
	// Refused handshakes are the point of some tests; keep them out of
	// the test output.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.TLS = ServerTLS(kp, caCert)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// get fetches url with cfg and returns the body.
func get(t *testing.T, cfg *tls.Config, url string) (string, error) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: cfg}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), &statusError{resp.StatusCode}
	}
	return string(b), nil
}

type statusError struct{ code int }

func (e *statusError) Error() string { return http.StatusText(e.code) }

// keyPair issues a key pair for name from ca.
func keyPair(t *testing.T, ca *CA, name string, role Role, hosts ...string) *KeyPair {
	t.Helper()
	cert, key := issue(t, ca, name, role, hosts...)
	return &KeyPair{Cert: cert, Key: key}
}

func mustParseHash(t *testing.T, s string) []byte {
	t.Helper()
	b, err := ParseHash(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPinnedTLSHandshakeSucceedsOnlyWithTheRightCAHash(t *testing.T) {
	ca := newTestCA(t)
	srv := startServer(t, keyPair(t, ca, "super-a", RoleSupernode, "127.0.0.1", "localhost"), ca.Cert)

	t.Run("right hash", func(t *testing.T) {
		var found *x509.Certificate
		body, err := get(t, PinnedTLS(mustParseHash(t, ca.Hash()), func(c *x509.Certificate) { found = c }), srv.URL)
		if err != nil {
			t.Fatalf("pinned handshake with the right hash failed: %v", err)
		}
		if body != "anonymous" {
			t.Fatalf("body %q", body)
		}
		if found == nil || Hash(found.Raw) != ca.Hash() {
			t.Fatal("found was not given the pinned CA")
		}
	})

	t.Run("hash of another CA", func(t *testing.T) {
		other := newTestCA(t)
		called := false
		_, err := get(t, PinnedTLS(mustParseHash(t, other.Hash()), func(*x509.Certificate) { called = true }), srv.URL)
		if err == nil {
			t.Fatal("pinned handshake with another CA's hash succeeded")
		}
		if !errors.Is(err, ErrUntrustedServer) {
			t.Fatalf("error %v is not ErrUntrustedServer", err)
		}
		if !strings.Contains(err.Error(), "does not match the CA hash") {
			t.Fatalf("error %q does not say the CA hash did not match", err)
		}
		if called {
			t.Fatal("found was called although the handshake failed")
		}
	})

	t.Run("hash of the server's own certificate", func(t *testing.T) {
		// Pinning the leaf is not pinning a CA: the leaf cannot vouch for
		// itself.
		leaf := srv.TLS.Certificates[0].Leaf
		_, err := get(t, PinnedTLS(mustParseHash(t, Hash(leaf.Raw)), nil), srv.URL)
		if err == nil {
			t.Fatal("pinning the server's leaf certificate was accepted as a CA pin")
		}
		if !errors.Is(err, ErrUntrustedServer) {
			t.Fatalf("error %v is not ErrUntrustedServer", err)
		}
	})

	t.Run("one bit off", func(t *testing.T) {
		h := mustParseHash(t, ca.Hash())
		h[31] ^= 1
		if _, err := get(t, PinnedTLS(h, nil), srv.URL); err == nil {
			t.Fatal("a hash one bit off was accepted")
		}
	})
}

// TestPinnedTLSRefusesImpostorPresentingTheRealCA: the CA certificate is
// public, so an impostor can send it along; the pin must also require the
// server's own certificate to be signed by that CA (no trust on first use).
func TestPinnedTLSRefusesImpostorPresentingTheRealCA(t *testing.T) {
	ca := newTestCA(t)
	evil := newTestCA(t)
	impostor := keyPair(t, evil, "super-a", RoleSupernode, "127.0.0.1")

	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "gotcha")
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.TLS = &tls.Config{
		MinVersion: tls.VersionTLS13,
		// The impostor's leaf followed by the real federation CA.
		Certificates: []tls.Certificate{{
			Certificate: [][]byte{impostor.Cert.Raw, ca.Cert.Raw},
			PrivateKey:  impostor.Key,
		}},
	}
	srv.StartTLS()
	defer srv.Close()

	called := false
	body, err := get(t, PinnedTLS(mustParseHash(t, ca.Hash()), func(*x509.Certificate) { called = true }), srv.URL)
	if err == nil {
		t.Fatalf("impostor accepted (body %q)", body)
	}
	if !errors.Is(err, ErrUntrustedServer) {
		t.Fatalf("error %v is not ErrUntrustedServer", err)
	}
	if !strings.Contains(err.Error(), "not valid under the pinned CA") {
		t.Fatalf("error %q does not say the server certificate is not valid under the pinned CA", err)
	}
	if called {
		t.Fatal("found was called for an impostor")
	}
}

func TestPinnedTLSChecksTheServerName(t *testing.T) {
	ca := newTestCA(t)
	// A genuine federation certificate, but for another host.
	srv := startServer(t, keyPair(t, ca, "super-b", RoleSupernode, "super-b.example.org"), ca.Cert)
	pin := mustParseHash(t, ca.Hash())

	t.Run("joining by host name", func(t *testing.T) {
		url := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
		if _, err := get(t, PinnedTLS(pin, nil), url); err == nil {
			t.Fatal("pinned handshake to localhost accepted a certificate for super-b.example.org")
		}
		// The same server is accepted under the name in its certificate,
		// so the refusal above is about the name.
		tr := &http.Transport{TLSClientConfig: PinnedTLS(pin, nil)}
		tr.TLSClientConfig.ServerName = "super-b.example.org"
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(srv.URL)
		if err != nil {
			t.Fatalf("pinned handshake under the certificate's own name failed: %v", err)
		}
		resp.Body.Close()
	})

	t.Run("ClientTLS by IP address", func(t *testing.T) {
		// Ordinary verification checks IP SANs; PinnedTLS should match it.
		if _, err := get(t, ClientTLS(nil, ca.Cert), srv.URL); err == nil {
			t.Fatal("ClientTLS to 127.0.0.1 accepted a certificate for super-b.example.org")
		}
	})

	t.Run("APIClientTLS by IP address", func(t *testing.T) {
		// Joiners fetch the CA with PinnedTLS and then talk to the
		// federation with APIClientTLS, which checks the address.
		if _, err := get(t, APIClientTLS(nil, ca.Cert), srv.URL); err == nil {
			t.Fatal("APIClientTLS to 127.0.0.1 accepted a certificate for super-b.example.org")
		}
	})
}

func TestPinnedTLSErrorNamesTheExpectedHash(t *testing.T) {
	ca := newTestCA(t)
	srv := startServer(t, keyPair(t, ca, "super-a", RoleSupernode, "127.0.0.1"), ca.Cert)
	want := newTestCA(t).Hash()
	_, err := get(t, PinnedTLS(mustParseHash(t, want), nil), srv.URL)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v does not name the hash %s the joiner gave", err, want)
	}
	if strings.Contains(err.Error(), hex.EncodeToString(mustParseHash(t, ca.Hash()))) {
		t.Fatalf("error %v names the server's CA hash as if it were the expected one", err)
	}
}

func TestClientTLSMutualAuthentication(t *testing.T) {
	ca := newTestCA(t)
	srv := startServer(t, keyPair(t, ca, "super-a", RoleSupernode, "127.0.0.1"), ca.Cert)
	other := newTestCA(t)

	for _, tc := range []struct {
		name    string
		cfg     *tls.Config
		want    string
		wantErr bool
	}{
		{"member certificate", ClientTLS(keyPair(t, ca, "node-1", RoleMember), ca.Cert), "node-1/member", false},
		{"admin certificate", ClientTLS(keyPair(t, ca, "alice", RoleAdmin), ca.Cert), "alice/admin", false},
		{"no certificate is allowed but anonymous", ClientTLS(nil, ca.Cert), "anonymous", false},
		{"client certificate from another CA", ClientTLS(keyPair(t, other, "node-1", RoleMember), ca.Cert), "", true},
		{"client trusts another CA", ClientTLS(keyPair(t, ca, "node-1", RoleMember), other.Cert), "", true},
		{"client trusts only the system roots", &tls.Config{MinVersion: tls.VersionTLS13}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, err := get(t, tc.cfg, srv.URL)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("request succeeded with body %q, want a refused handshake", body)
				}
				return
			}
			if err != nil {
				t.Fatalf("request failed: %v", err)
			}
			if body != tc.want {
				t.Fatalf("server saw %q, want %q", body, tc.want)
			}
		})
	}
}

func TestTLSConfigsRequireTLS13(t *testing.T) {
	ca := newTestCA(t)
	kp := keyPair(t, ca, "n", RoleMember, "127.0.0.1")
	for name, cfg := range map[string]*tls.Config{
		"server": ServerTLS(kp, ca.Cert),
		"client": ClientTLS(kp, ca.Cert),
		"pinned": PinnedTLS(mustParseHash(t, ca.Hash()), nil),
	} {
		if cfg.MinVersion != tls.VersionTLS13 {
			t.Errorf("%s config MinVersion %x, want TLS 1.3", name, cfg.MinVersion)
		}
	}
	// The server sends the CA along so a joiner can find what it pinned.
	chain := ServerTLS(kp, ca.Cert).Certificates[0].Certificate
	if len(chain) != 2 || Hash(chain[1]) != ca.Hash() {
		t.Errorf("server chain has %d certificates, want leaf and CA", len(chain))
	}

	// A TLS 1.2-only client is refused.
	srv := startServer(t, kp, ca.Cert)
	old := ClientTLS(nil, ca.Cert)
	old.MinVersion, old.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	if _, err := get(t, old, srv.URL); err == nil {
		t.Error("a TLS 1.2 client was served")
	}
}
