package api_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/fedkeeper/fedkeeper/api"
	"github.com/fedkeeper/fedkeeper/internal/storetest"
	"github.com/fedkeeper/fedkeeper/membership"
	"github.com/fedkeeper/fedkeeper/pki"
	"github.com/fedkeeper/fedkeeper/store"
)

// fixture is one supernode's API over a real embedded store, with an
// administrator and the supernode itself as ready-made callers.
type fixture struct {
	t       *testing.T
	ca      *pki.CA
	members *membership.Service
	url     string
	// anon has no client certificate; admin and super carry the
	// certificates of an administrator and of the supernode "sn1".
	anon, admin, super *http.Client
}

const projectName = "CMIP6"

// newFixture starts the fixture; wire, if given, sets more of the API's
// services on the store before it serves.
func newFixture(t *testing.T, wire ...func(*api.Server, *store.Store)) *fixture {
	t.Helper()
	st, ca := storetest.Start(t)
	members := membership.New(st.Client, ca)

	srv := httptest.NewUnstartedServer(nil)
	serverKP := signedKeyPair(t, ca, "sn1", pki.RoleSupernode)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := members.Bootstrap(ctx, membership.Node{
		Name:         "sn1",
		Role:         membership.RoleSupernode,
		Projects:     []string{},
		Site:         "Supernode Site",
		Address:      srv.Listener.Addr().String(),
		CertSerial:   pki.SerialHex(serverKP.Cert),
		CertNotAfter: serverKP.Cert.NotAfter.UTC(),
		CertPEM:      string(pki.EncodeCert(serverKP.Cert.Raw)),
	})
	if err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	server := &api.Server{
		Name:    "sn1",
		Members: members,
		CA:      ca,
		Log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, w := range wire {
		w(server, st)
	}
	srv.Config.Handler = server.Handler()
	// Refused handshakes are expected in some tests; keep them off stderr.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.TLS = pki.ServerTLS(serverKP, ca.Cert)
	srv.StartTLS()
	t.Cleanup(srv.Close)

	return &fixture{
		t:       t,
		ca:      ca,
		members: members,
		url:     srv.URL,
		anon:    httpClient(t, nil, ca),
		admin:   httpClient(t, signedKeyPair(t, ca, "root", pki.RoleAdmin), ca),
		super:   httpClient(t, serverKP, ca),
	}
}

// signedKeyPair makes a key and has the CA sign a certificate for it the
// way the federation does, through a CSR.
func signedKeyPair(t testing.TB, ca *pki.CA, name string, role pki.Role) *pki.KeyPair {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csrPEM, err := pki.NewCSR(key, name)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.ParseCSR(csrPEM, name)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Sign(csr, pki.Request{Name: name, Role: role, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	return &pki.KeyPair{Cert: cert, Key: key}
}

// httpClient trusts ca and, unless kp is nil, presents kp.
func httpClient(t testing.TB, kp *pki.KeyPair, ca *pki.CA) *http.Client {
	tr := &http.Transport{TLSClientConfig: pki.ClientTLS(kp, ca.Cert)}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// reply is an API answer.
type reply struct {
	status int
	header http.Header
	body   []byte
	// Error and Code are set when the answer is an API error.
	Error string `json:"error"`
	Code  string `json:"code"`
}

// call sends body (nil: none; string or []byte: as is; anything else as
// JSON) and returns the answer. A transport error fails the test.
func (f *fixture) call(c *http.Client, method, path string, body any) reply {
	f.t.Helper()
	r, err := f.try(c, method, path, body)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

// try is call that returns transport errors.
func (f *fixture) try(c *http.Client, method, path string, body any) (reply, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewReader([]byte(b))
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return reply{}, err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, f.url+path, rd)
	if err != nil {
		return reply{}, err
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	r := reply{status: resp.StatusCode, header: resp.Header, body: data}
	if resp.StatusCode >= 400 {
		if err := json.Unmarshal(data, &r); err != nil || r.Code == "" || r.Error == "" {
			f.t.Errorf("%s %s: error answer %d is not {\"error\", \"code\"} JSON: %q", method, path, resp.StatusCode, data)
		}
	}
	return r, nil
}

// want fails the test unless r has the status and, for errors, the code.
func (r reply) want(t testing.TB, status int, code string) {
	t.Helper()
	if r.status != status || r.Code != code {
		t.Fatalf("got HTTP %d code %q (%s), want HTTP %d code %q", r.status, r.Code, bytes.TrimSpace(r.body), status, code)
	}
}

// decode decodes a successful answer into v.
func (r reply) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode answer %q: %v", r.body, err)
	}
}

// member is a node that joined through the API.
type member struct {
	name string
	key  *ecdsa.PrivateKey
	kp   *pki.KeyPair
	http *http.Client
}

// newToken has the administrator make a join token.
func (f *fixture) newToken(uses int) string {
	f.t.Helper()
	var tok api.TokenResponse
	r := f.call(f.admin, http.MethodPost, "/v1/tokens", api.TokenRequest{Uses: uses, TTL: "1h"})
	r.want(f.t, http.StatusCreated, "")
	r.decode(f.t, &tok)
	if tok.Token == "" {
		f.t.Fatalf("token answer without a token: %s", r.body)
	}
	return tok.Token
}

// joinInput builds a join request for name with a fresh key.
func joinInput(t testing.TB, name, token string) (membership.JoinInput, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, name)
	if err != nil {
		t.Fatal(err)
	}
	return membership.JoinInput{
		Name:    name,
		Profile: membership.Profile{Project: projectName, Site: "Site of " + name},
		CSR:     string(csr),
		Token:   token,
	}, key
}

// join admits name with a fresh token and returns it as a caller.
func (f *fixture) join(name string) *member {
	f.t.Helper()
	in, key := joinInput(f.t, name, f.newToken(1))
	r := f.call(f.anon, http.MethodPost, "/v1/join", in)
	r.want(f.t, http.StatusOK, "")
	return f.memberFrom(name, key, r)
}

// memberFrom checks a 200 join answer and makes a caller of it.
func (f *fixture) memberFrom(name string, key *ecdsa.PrivateKey, r reply) *member {
	f.t.Helper()
	var res membership.JoinResult
	r.decode(f.t, &res)
	if res.Status != membership.StatusAlive {
		f.t.Fatalf("join of %s: status %q, want %q", name, res.Status, membership.StatusAlive)
	}
	cert, err := pki.ParseCert([]byte(res.CertPEM))
	if err != nil {
		f.t.Fatalf("join of %s: cert_pem: %v", name, err)
	}
	if !pki.SameKey(cert.PublicKey, key.Public()) {
		f.t.Fatalf("join of %s: certificate is not for the key in the CSR", name)
	}
	if res.CAPEM != string(f.ca.CertPEM()) {
		f.t.Fatalf("join of %s: ca_pem is not the federation CA", name)
	}
	id, err := pki.IdentityOf(cert)
	if err != nil {
		f.t.Fatal(err)
	}
	if id.Name != name || id.Role != pki.RoleMember {
		f.t.Fatalf("join of %s: certificate is for %s %q", name, id.Role, id.Name)
	}
	kp := &pki.KeyPair{Cert: cert, Key: key}
	return &member{name: name, key: key, kp: kp, http: httpClient(f.t, kp, f.ca)}
}

// node reads one node record as the administrator.
func (f *fixture) node(name string) membership.Node {
	f.t.Helper()
	var n membership.Node
	r := f.call(f.admin, http.MethodGet, "/v1/nodes/"+url.PathEscape(name), nil)
	r.want(f.t, http.StatusOK, "")
	r.decode(f.t, &n)
	return n
}

// nodes lists the nodes as the administrator, with the index.
func (f *fixture) nodes() ([]membership.Node, string) {
	f.t.Helper()
	var ns []membership.Node
	r := f.call(f.admin, http.MethodGet, "/v1/nodes", nil)
	r.want(f.t, http.StatusOK, "")
	r.decode(f.t, &ns)
	return ns, r.header.Get("X-Fedkeeper-Index")
}

func names(ns []membership.Node) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.Name+":"+string(n.Status))
	}
	return out
}
