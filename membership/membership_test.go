package membership

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedkeeper/fedkeeper/internal/storetest"
	"github.com/fedkeeper/fedkeeper/pki"
	"github.com/fedkeeper/fedkeeper/store"
)

// env is one test's membership service over its own embedded store.
type env struct {
	t   *testing.T
	ctx context.Context
	svc *Service
	ca  *pki.CA
	kv  *clientv3.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	t.Parallel()
	st, ca := storetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return &env{t: t, ctx: ctx, svc: New(st.Client, ca), ca: ca, kv: st.Client}
}

// joiner is a would-be node: its key and a join input with a CSR for it.
type joiner struct {
	key crypto.Signer
	in  JoinInput
}

func (e *env) joiner(name, project string) joiner {
	e.t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		e.t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, name)
	if err != nil {
		e.t.Fatal(err)
	}
	return joiner{key: key, in: JoinInput{
		Name:    name,
		Profile: Profile{Project: project, Site: "DKRZ", Address: "192.0.2.10:7444"},
		CSR:     string(csr),
		From:    "192.0.2.10:51234",
	}}
}

func (e *env) parseCert(certPEM string) *x509.Certificate {
	e.t.Helper()
	cert, err := pki.ParseCert([]byte(certPEM))
	if err != nil {
		e.t.Fatalf("certificate in join result: %v", err)
	}
	return cert
}

func (e *env) token(project string, uses int) string {
	e.t.Helper()
	tok, _, err := e.svc.CreateToken(e.ctx, project, uses, time.Hour, "test")
	if err != nil {
		e.t.Fatalf("CreateToken: %v", err)
	}
	return tok
}

// admit joins name with a fresh single-use token and returns the joiner
// and its certificate.
func (e *env) admit(name string) (joiner, *x509.Certificate) {
	e.t.Helper()
	j := e.joiner(name, "CMIP6")
	j.in.Token = e.token("", 1)
	res, err := e.svc.Join(e.ctx, j.in)
	if err != nil {
		e.t.Fatalf("Join %s: %v", name, err)
	}
	return j, e.parseCert(res.CertPEM)
}

// dump is every key of the federation with its modification revision and
// value: two equal dumps mean nothing was written in between.
func (e *env) dump() map[string]string {
	e.t.Helper()
	resp, err := e.kv.Get(e.ctx, store.Root, clientv3.WithPrefix())
	if err != nil {
		e.t.Fatal(err)
	}
	m := map[string]string{}
	for _, kv := range resp.Kvs {
		m[string(kv.Key)] = fmt.Sprintf("%d %s", kv.ModRevision, kv.Value)
	}
	return m
}

func (e *env) assertUnchanged(before map[string]string, what string) {
	e.t.Helper()
	after := e.dump()
	for k, v := range after {
		if before[k] != v {
			e.t.Errorf("%s wrote %s = %s", what, k, v)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			e.t.Errorf("%s deleted %s", what, k)
		}
	}
}

// statuses is the node list as "name=status" strings.
func (e *env) statuses() []string {
	e.t.Helper()
	nodes, _, err := e.svc.List(e.ctx)
	if err != nil {
		e.t.Fatalf("List: %v", err)
	}
	var out []string
	for _, n := range nodes {
		out = append(out, n.Name+"="+string(n.Status))
	}
	return out
}

func (e *env) tokenRecord(token string) Token {
	e.t.Helper()
	var tok Token
	if _, err := store.GetJSON(e.ctx, e.kv, prefixTokens+TokenHash(token), &tok); err != nil {
		e.t.Fatalf("read token record: %v", err)
	}
	return tok
}

func TestJoinWithTokenAdmitsAtOnceWithCertificateForTheCSRKey(t *testing.T) {
	e := newEnv(t)
	j := e.joiner("node-1", "CMIP6")
	j.in.Token = e.token("CMIP6", 1)

	res, err := e.svc.Join(e.ctx, j.in)
	if err != nil {
		t.Fatalf("Join: %v", err)
	}
	if res.Status != StatusAlive {
		t.Fatalf("status %q, want %q", res.Status, StatusAlive)
	}
	if res.CAPEM != string(e.ca.CertPEM()) {
		t.Fatal("join result does not carry the federation CA")
	}
	cert := e.parseCert(res.CertPEM)
	if !pki.SameKey(cert.PublicKey, j.key.Public()) {
		t.Fatal("certificate is not for the key in the CSR")
	}
	id, err := pki.IdentityOf(cert)
	if err != nil {
		t.Fatal(err)
	}
	if id.Name != "node-1" || id.Role != pki.RoleMember || id.Federation != e.ca.Federation() {
		t.Fatalf("identity %+v", id)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: e.ca.Pool()}); err != nil {
		t.Fatalf("certificate does not verify under the federation CA: %v", err)
	}
	if len(cert.IPAddresses) != 1 || cert.IPAddresses[0].String() != "192.0.2.10" {
		t.Fatalf("certificate IPs %v, want the host of the node's address", cert.IPAddresses)
	}

	n, err := e.svc.Get(e.ctx, "node-1")
	if err != nil {
		t.Fatal(err)
	}
	if n.Role != RoleMember || !slices.Equal(n.Projects, []string{"CMIP6"}) || n.Site != "DKRZ" || n.Address != "192.0.2.10:7444" {
		t.Fatalf("node record %+v", n)
	}
	if n.CertSerial != id.Serial || n.CertPEM != res.CertPEM {
		t.Fatalf("node record serial %s, certificate %s", n.CertSerial, id.Serial)
	}
	// Admitted but not yet holding a session.
	if n.Status != StatusGone {
		t.Fatalf("status before any session %q, want %q", n.Status, StatusGone)
	}
	if got := e.tokenRecord(j.in.Token).UsesLeft; got != 0 {
		t.Fatalf("token uses left %d, want 0", got)
	}
}

func TestTokenIsStoredOnlyByItsHash(t *testing.T) {
	e := newEnv(t)
	tok, rec, err := e.svc.CreateToken(e.ctx, "CORDEX", 3, time.Hour, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, "fkt_") || len(tok) < 30 {
		t.Fatalf("token %q does not look like a fedkeeper token", tok)
	}
	if rec.Project != "CORDEX" || rec.UsesLeft != 3 || rec.CreatedBy != "alice" {
		t.Fatalf("token record %+v", rec)
	}
	if d := time.Until(rec.ExpiresAt); d < 50*time.Minute || d > 70*time.Minute {
		t.Fatalf("token expires in %v, want about an hour", d)
	}
	found := false
	for k, v := range e.dump() {
		if strings.Contains(k, tok) || strings.Contains(v, tok) || strings.Contains(v, strings.TrimPrefix(tok, "fkt_")) {
			t.Fatalf("the token secret is in the store at %s", k)
		}
		if k == prefixTokens+TokenHash(tok) {
			found = true
		}
	}
	if !found {
		t.Fatal("no token record under its hash")
	}
	other, _, err := e.svc.CreateToken(e.ctx, "", 1, time.Hour, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if other == tok {
		t.Fatal("two tokens are the same")
	}
}

func TestCreateTokenRejectsBadParameters(t *testing.T) {
	e := newEnv(t)
	before := e.dump()
	for _, tc := range []struct {
		name    string
		project string
		uses    int
		ttl     time.Duration
	}{
		{"zero uses", "", 0, time.Hour},
		{"negative uses", "", -1, time.Hour},
		{"too many uses", "", 100001, time.Hour},
		{"ttl under a minute", "", 1, 30 * time.Second},
		{"ttl over a year", "", 1, 366 * 24 * time.Hour},
		{"bad project", "CMIP 6", 1, time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := e.svc.CreateToken(e.ctx, tc.project, tc.uses, tc.ttl, "alice"); !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
	e.assertUnchanged(before, "refused CreateToken")
}

// TestTokenUsesAreCountedUnderConcurrentJoins: ten nodes join at once with
// a two-use token, through two services standing for two supernodes
// (each has its own lock, so only the store transaction keeps count).
func TestTokenUsesAreCountedUnderConcurrentJoins(t *testing.T) {
	e := newEnv(t)
	other := New(e.kv, e.ca)
	tok := e.token("CMIP6", 2)

	const n = 10
	joiners := make([]joiner, n)
	for i := range joiners {
		joiners[i] = e.joiner(fmt.Sprintf("node-%d", i), "CMIP6")
		joiners[i].in.Token = tok
	}
	errs := make([]error, n)
	results := make([]JoinResult, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range joiners {
		svc := e.svc
		if i%2 == 1 {
			svc = other
		}
		wg.Go(func() {
			<-start
			results[i], errs[i] = svc.Join(e.ctx, joiners[i].in)
		})
	}
	close(start)
	wg.Wait()

	var admitted []string
	for i, err := range errs {
		switch {
		case err == nil:
			if results[i].Status != StatusAlive || results[i].CertPEM == "" {
				t.Errorf("node-%d: result %+v", i, results[i])
			}
			admitted = append(admitted, joiners[i].in.Name)
		case errors.Is(err, ErrToken):
		default:
			t.Errorf("node-%d: err = %v, want nil or ErrToken", i, err)
		}
	}
	if len(admitted) != 2 {
		t.Fatalf("%d nodes admitted with a two-use token: %v", len(admitted), admitted)
	}
	slices.Sort(admitted)
	var listed []string
	for _, s := range e.statuses() {
		listed = append(listed, strings.Split(s, "=")[0])
	}
	if !slices.Equal(listed, admitted) {
		t.Fatalf("List shows %v, want exactly the admitted %v", listed, admitted)
	}
	if got := e.tokenRecord(tok).UsesLeft; got != 0 {
		t.Fatalf("token uses left %d, want 0", got)
	}
}

func TestJoinWithRefusedTokenFailsAndWritesNothing(t *testing.T) {
	e := newEnv(t)
	// An expired token: CreateToken will not make one, so write its record
	// as CreateToken would have an hour ago.
	expired := "fkt_expired-token-for-the-test"
	if _, err := e.kv.Put(e.ctx, prefixTokens+TokenHash(expired), store.MustJSON(Token{
		UsesLeft: 5, ExpiresAt: time.Now().Add(-time.Minute), CreatedBy: "test", CreatedAt: time.Now().Add(-time.Hour),
	})); err != nil {
		t.Fatal(err)
	}
	cordex := e.token("CORDEX", 5)
	usedUp := e.token("", 1)
	if _, err := e.svc.Join(e.ctx, func() JoinInput { j := e.joiner("first", "CMIP6"); j.in.Token = usedUp; return j.in }()); err != nil {
		t.Fatalf("first use of a single-use token: %v", err)
	}

	for _, tc := range []struct{ name, token, project string }{
		{"expired token", expired, "CMIP6"},
		{"unknown token", "fkt_no-such-token", "CMIP6"},
		{"token of another federation's shape", "not even a token", "CMIP6"},
		{"token for another project", cordex, "CMIP6"},
		{"token for another project, other case", cordex, "cordex"},
		{"used-up token", usedUp, "CMIP6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, list := e.dump(), e.statuses()
			j := e.joiner("node-1", tc.project)
			j.in.Token = tc.token
			res, err := e.svc.Join(e.ctx, j.in)
			if !errors.Is(err, ErrToken) {
				t.Fatalf("Join = %+v, %v; want ErrToken", res, err)
			}
			if res.CertPEM != "" {
				t.Fatal("a refused join returned a certificate")
			}
			e.assertUnchanged(before, "refused join")
			if got := e.statuses(); !slices.Equal(got, list) {
				t.Fatalf("List changed from %v to %v", list, got)
			}
		})
	}
	if got := e.tokenRecord(expired).UsesLeft; got != 5 {
		t.Errorf("expired token uses left %d, want 5", got)
	}
	if got := e.tokenRecord(cordex).UsesLeft; got != 5 {
		t.Errorf("project token uses left %d after refused joins, want 5", got)
	}
	// The project token does admit a node of its project.
	j := e.joiner("node-2", "CORDEX")
	j.in.Token = cordex
	if _, err := e.svc.Join(e.ctx, j.in); err != nil {
		t.Fatalf("Join with the project's own token: %v", err)
	}
}

func TestJoinWithTakenNameAndAnotherKeyConflicts(t *testing.T) {
	e := newEnv(t)
	e.admit("node-1")
	pending := e.joiner("node-2", "CMIP6")
	if res, err := e.svc.Join(e.ctx, pending.in); err != nil || res.Status != StatusPending {
		t.Fatalf("Join without token = %+v, %v", res, err)
	}

	for _, tc := range []struct {
		name      string
		withToken bool
	}{
		{"node-1", false}, {"node-1", true}, {"node-2", false}, {"node-2", true},
	} {
		t.Run(fmt.Sprintf("%s token=%v", tc.name, tc.withToken), func(t *testing.T) {
			var tok string
			if tc.withToken {
				tok = e.token("", 1)
			}
			before := e.dump()
			j := e.joiner(tc.name, "CMIP6")
			j.in.Token = tok
			res, err := e.svc.Join(e.ctx, j.in)
			if !errors.Is(err, ErrConflict) {
				t.Fatalf("Join with another key = %+v, %v; want ErrConflict", res, err)
			}
			e.assertUnchanged(before, "conflicting join")
			if tc.withToken {
				if got := e.tokenRecord(tok).UsesLeft; got != 1 {
					t.Fatalf("conflicting join spent the token (uses left %d)", got)
				}
			}
		})
	}
}

func TestRepeatedJoinWithSameKeyIsIdempotent(t *testing.T) {
	e := newEnv(t)

	t.Run("admitted", func(t *testing.T) {
		j := e.joiner("node-1", "CMIP6")
		j.in.Token = e.token("", 1)
		first, err := e.svc.Join(e.ctx, j.in)
		if err != nil {
			t.Fatal(err)
		}
		before := e.dump()
		// The same request again, the single-use token included: the
		// node is answered from its record and the token is not asked.
		for i := 0; i < 3; i++ {
			again, err := e.svc.Join(e.ctx, j.in)
			if err != nil {
				t.Fatalf("repeat %d: %v", i, err)
			}
			if again != first {
				t.Fatalf("repeat %d returned %+v, want the first result", i, again)
			}
		}
		// Without the token too.
		j.in.Token = ""
		again, err := e.svc.Join(e.ctx, j.in)
		if err != nil || again != first {
			t.Fatalf("repeat without token = %+v, %v", again, err)
		}
		// And with a fresh CSR for the same key.
		csr, _ := pki.NewCSR(j.key, "node-1")
		j.in.CSR = string(csr)
		again, err = e.svc.Join(e.ctx, j.in)
		if err != nil || again.CertPEM != first.CertPEM {
			t.Fatalf("repeat with a new CSR for the same key = %+v, %v", again, err)
		}
		e.assertUnchanged(before, "repeated join")
	})

	t.Run("pending", func(t *testing.T) {
		j := e.joiner("node-2", "CMIP6")
		if res, err := e.svc.Join(e.ctx, j.in); err != nil || res.Status != StatusPending {
			t.Fatalf("first join = %+v, %v", res, err)
		}
		before := e.dump()
		for i := 0; i < 3; i++ {
			res, err := e.svc.Join(e.ctx, j.in)
			if err != nil || res.Status != StatusPending || res.CertPEM != "" {
				t.Fatalf("repeat %d = %+v, %v", i, res, err)
			}
		}
		e.assertUnchanged(before, "repeated pending join")
		// A node that first asked without a token may come back with one:
		// it is admitted and its waiting request goes.
		j.in.Token = e.token("", 1)
		res, err := e.svc.Join(e.ctx, j.in)
		if err != nil || res.Status != StatusAlive || res.CertPEM == "" {
			t.Fatalf("repeat with a token = %+v, %v", res, err)
		}
		if got := e.statuses(); !slices.Contains(got, "node-2=gone") || slices.Contains(got, "node-2=pending") {
			t.Fatalf("after joining with a token: %v, want node-2 admitted and no request waiting", got)
		}
	})
}

func TestJoinWithoutTokenWaitsForApproval(t *testing.T) {
	e := newEnv(t)
	j := e.joiner("node-1", "CMIP6")
	res, err := e.svc.Join(e.ctx, j.in)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != StatusPending || res.CertPEM != "" {
		t.Fatalf("join without token = %+v, want pending without certificate", res)
	}
	if got := e.statuses(); !slices.Equal(got, []string{"node-1=pending"}) {
		t.Fatalf("List = %v", got)
	}
	if err := e.svc.Authorize(e.ctx, pki.Identity{Name: "node-1", Role: pki.RoleMember, Federation: e.ca.Federation()}); !errors.Is(err, ErrNotMember) {
		t.Fatalf("Authorize of a pending node = %v, want ErrNotMember", err)
	}
	if _, err := e.svc.OpenSession(e.ctx, "node-1"); !errors.Is(err, ErrNotMember) {
		t.Fatalf("OpenSession of a pending node = %v, want ErrNotMember", err)
	}

	node, err := e.svc.Approve(e.ctx, "node-1")
	if err != nil {
		t.Fatalf("Approve: %v", err)
	}
	if node.Name != "node-1" || node.Role != RoleMember || !slices.Equal(node.Projects, []string{"CMIP6"}) {
		t.Fatalf("approved node %+v", node)
	}
	if got := e.statuses(); !slices.Equal(got, []string{"node-1=gone"}) {
		t.Fatalf("List after approval = %v, want the admitted node only", got)
	}

	// The waiting joiner asks again and collects its certificate.
	res, err = e.svc.Join(e.ctx, j.in)
	if err != nil || res.Status != StatusAlive {
		t.Fatalf("join after approval = %+v, %v", res, err)
	}
	cert := e.parseCert(res.CertPEM)
	if !pki.SameKey(cert.PublicKey, j.key.Public()) || pki.SerialHex(cert) != node.CertSerial {
		t.Fatal("certificate collected after approval is not the approved one for the joiner's key")
	}

	if _, err := e.svc.Approve(e.ctx, "node-1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Approve = %v, want ErrNotFound", err)
	}
	if _, err := e.svc.Approve(e.ctx, "nobody"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Approve of nobody = %v, want ErrNotFound", err)
	}
}

func TestDeniedJoinIsToldSoAndAdminMayReconsider(t *testing.T) {
	e := newEnv(t)
	j := e.joiner("node-1", "CMIP6")
	if _, err := e.svc.Join(e.ctx, j.in); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Deny(e.ctx, "node-1", strings.Repeat("x", 513)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Deny with a 513-character reason = %v, want ErrInvalid", err)
	}
	if err := e.svc.Deny(e.ctx, "node-1", "unknown site"); err != nil {
		t.Fatalf("Deny: %v", err)
	}
	if got := e.statuses(); !slices.Equal(got, []string{"node-1=denied"}) {
		t.Fatalf("List = %v", got)
	}

	tok := e.token("", 1)
	before := e.dump()
	_, err := e.svc.Join(e.ctx, j.in)
	if !errors.Is(err, ErrDenied) {
		t.Fatalf("join after denial = %v, want ErrDenied", err)
	}
	if !strings.Contains(err.Error(), "unknown site") {
		t.Fatalf("denial %q does not give the reason", err)
	}
	// A token does not override an administrator's denial.
	j.in.Token = tok
	if _, err := e.svc.Join(e.ctx, j.in); !errors.Is(err, ErrDenied) {
		t.Fatalf("join with token after denial = %v, want ErrDenied", err)
	}
	// Nor may another key take the name meanwhile.
	other := e.joiner("node-1", "CMIP6")
	if _, err := e.svc.Join(e.ctx, other.in); !errors.Is(err, ErrConflict) {
		t.Fatalf("join from another key after denial = %v, want ErrConflict", err)
	}
	e.assertUnchanged(before, "join after denial")

	if err := e.svc.Deny(e.ctx, "nobody", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Deny of nobody = %v, want ErrNotFound", err)
	}

	// The administrator changes their mind.
	if _, err := e.svc.Approve(e.ctx, "node-1"); err != nil {
		t.Fatalf("Approve after Deny: %v", err)
	}
	j.in.Token = ""
	if res, err := e.svc.Join(e.ctx, j.in); err != nil || res.Status != StatusAlive {
		t.Fatalf("join after approval = %+v, %v", res, err)
	}
}

func TestInvalidJoinIsRejectedAndWritesNothing(t *testing.T) {
	e := newEnv(t)
	f := func(v float64) *float64 { return &v }
	nan := math.NaN()
	long := strings.Repeat("a", 64)
	manyEndpoints := map[string]string{}
	for i := 0; i < 33; i++ {
		manyEndpoints[fmt.Sprintf("Kind%d", i)] = "https://x.example/"
	}
	tok := e.token("", 1)
	before, list := e.dump(), e.statuses()

	for _, tc := range []struct {
		name   string
		modify func(in *JoinInput)
	}{
		{"empty name", func(in *JoinInput) { in.Name = "" }},
		{"upper-case name", func(in *JoinInput) { in.Name = "Node-1" }},
		{"name with leading hyphen", func(in *JoinInput) { in.Name = "-node" }},
		{"name with trailing hyphen", func(in *JoinInput) { in.Name = "node-" }},
		{"name with dot", func(in *JoinInput) { in.Name = "node.example" }},
		{"name with underscore", func(in *JoinInput) { in.Name = "node_1" }},
		{"name with slash", func(in *JoinInput) { in.Name = "../etc" }},
		{"name of 64 characters", func(in *JoinInput) { in.Name = long }},
		{"empty project", func(in *JoinInput) { in.Profile.Project = "" }},
		{"project with space", func(in *JoinInput) { in.Profile.Project = "CMIP 6" }},
		{"project with slash", func(in *JoinInput) { in.Profile.Project = "CMIP6/x" }},
		{"project of 64 characters", func(in *JoinInput) { in.Profile.Project = long }},
		{"site of 129 characters", func(in *JoinInput) { in.Profile.Site = strings.Repeat("s", 129) }},
		{"site with newline", func(in *JoinInput) { in.Profile.Site = "DKRZ\nevil" }},
		{"site with DEL", func(in *JoinInput) { in.Profile.Site = "DKRZ\x7f" }},
		{"address without port", func(in *JoinInput) { in.Profile.Address = "node.example.org" }},
		{"address without host", func(in *JoinInput) { in.Profile.Address = ":7444" }},
		{"address with port 0", func(in *JoinInput) { in.Profile.Address = "node.example.org:0" }},
		{"address with port 65536", func(in *JoinInput) { in.Profile.Address = "node.example.org:65536" }},
		{"address with named port", func(in *JoinInput) { in.Profile.Address = "node.example.org:https" }},
		{"lat without lon", func(in *JoinInput) { in.Profile.Lat = f(53.5) }},
		{"lon without lat", func(in *JoinInput) { in.Profile.Lon = f(10) }},
		{"lat above 90", func(in *JoinInput) { in.Profile.Lat, in.Profile.Lon = f(90.01), f(10) }},
		{"lat below -90", func(in *JoinInput) { in.Profile.Lat, in.Profile.Lon = f(-91), f(10) }},
		{"lon above 180", func(in *JoinInput) { in.Profile.Lat, in.Profile.Lon = f(53), f(180.5) }},
		{"lon below -180", func(in *JoinInput) { in.Profile.Lat, in.Profile.Lon = f(53), f(-181) }},
		{"lat NaN", func(in *JoinInput) { in.Profile.Lat, in.Profile.Lon = f(nan), f(10) }},
		{"lon NaN", func(in *JoinInput) { in.Profile.Lat, in.Profile.Lon = f(53), f(nan) }},
		{"lat infinite", func(in *JoinInput) { in.Profile.Lat, in.Profile.Lon = f(math.Inf(1)), f(10) }},
		{"endpoint kind starting with digit", func(in *JoinInput) { in.Profile.Endpoints = map[string]string{"1Index": "https://x/"} }},
		{"endpoint kind with space", func(in *JoinInput) { in.Profile.Endpoints = map[string]string{"Index Service": "https://x/"} }},
		{"endpoint kind empty", func(in *JoinInput) { in.Profile.Endpoints = map[string]string{"": "https://x/"} }},
		{"endpoint URL empty", func(in *JoinInput) { in.Profile.Endpoints = map[string]string{"IndexService": ""} }},
		{"endpoint URL with space", func(in *JoinInput) { in.Profile.Endpoints = map[string]string{"IndexService": "https://x/a b"} }},
		{"endpoint URL with quote", func(in *JoinInput) { in.Profile.Endpoints = map[string]string{"IndexService": `https://x/"`} }},
		{"endpoint URL with angle bracket", func(in *JoinInput) { in.Profile.Endpoints = map[string]string{"IndexService": "https://x/<a>"} }},
		{"endpoint URL of 513 characters", func(in *JoinInput) {
			in.Profile.Endpoints = map[string]string{"IndexService": "https://" + strings.Repeat("x", 505)}
		}},
		{"33 endpoints", func(in *JoinInput) { in.Profile.Endpoints = manyEndpoints }},
		{"CSR garbage", func(in *JoinInput) { in.CSR = "not a CSR" }},
		{"CSR empty", func(in *JoinInput) { in.CSR = "" }},
		{"CSR for another name", func(in *JoinInput) {
			key, _ := pki.NewKey()
			csr, _ := pki.NewCSR(key, "node-2")
			in.CSR = string(csr)
		}},
	} {
		for _, withToken := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s token=%v", tc.name, withToken), func(t *testing.T) {
				j := e.joiner("node-1", "CMIP6")
				if withToken {
					j.in.Token = tok
				}
				tc.modify(&j.in)
				res, err := e.svc.Join(e.ctx, j.in)
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("Join = %+v, %v; want ErrInvalid", res, err)
				}
			})
		}
	}
	e.assertUnchanged(before, "invalid joins")
	if got := e.statuses(); !slices.Equal(got, list) {
		t.Fatalf("List changed from %v to %v", list, got)
	}
	if got := e.tokenRecord(tok).UsesLeft; got != 1 {
		t.Fatalf("invalid joins spent the token: %d uses left", got)
	}
	// The valid request the cases were made from is admitted, so the
	// rejections were about what each case changed.
	j := e.joiner("node-1", "CMIP6")
	j.in.Token = tok
	j.in.Profile.Lat, j.in.Profile.Lon = f(-90), f(180)
	j.in.Profile.Endpoints = map[string]string{"IndexService": "https://node-1.example.org/esg-search"}
	if _, err := e.svc.Join(e.ctx, j.in); err != nil {
		t.Fatalf("valid join: %v", err)
	}
}

func TestAuthorizeAcceptsOnlyTheCurrentCertificateOfAMember(t *testing.T) {
	e := newEnv(t)
	j, cert := e.admit("node-1")
	id, err := pki.IdentityOf(cert)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Authorize(e.ctx, id); err != nil {
		t.Fatalf("Authorize of the current certificate: %v", err)
	}

	for _, tc := range []struct {
		name string
		id   pki.Identity
	}{
		{"other serial", pki.Identity{Name: id.Name, Role: id.Role, Federation: id.Federation, Serial: "01"}},
		{"no serial", pki.Identity{Name: id.Name, Role: id.Role, Federation: id.Federation}},
		{"other federation", pki.Identity{Name: id.Name, Role: id.Role, Federation: "elsewhere", Serial: id.Serial}},
		{"unknown node", pki.Identity{Name: "node-9", Role: pki.RoleMember, Federation: id.Federation, Serial: id.Serial}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := e.svc.Authorize(e.ctx, tc.id); !errors.Is(err, ErrNotMember) {
				t.Fatalf("Authorize = %v, want ErrNotMember", err)
			}
		})
	}
	// Administrators are not node records; their certificate is enough.
	if err := e.svc.Authorize(e.ctx, pki.Identity{Name: "alice", Role: pki.RoleAdmin, Federation: e.ca.Federation()}); err != nil {
		t.Fatalf("Authorize of an admin: %v", err)
	}

	// Removed: the certificate stops working at once.
	if err := e.svc.Remove(e.ctx, "node-1"); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Authorize(e.ctx, id); !errors.Is(err, ErrNotMember) {
		t.Fatalf("Authorize after Remove = %v, want ErrNotMember", err)
	}

	// Rejoined with a new key: the old certificate stays dead, the new
	// one works.
	_, newCert := e.admit("node-1")
	newID, _ := pki.IdentityOf(newCert)
	if newID.Serial == id.Serial || pki.SameKey(newCert.PublicKey, j.key.Public()) {
		t.Fatal("rejoin did not issue a new certificate for the new key")
	}
	if err := e.svc.Authorize(e.ctx, id); !errors.Is(err, ErrNotMember) {
		t.Fatalf("Authorize of the old serial after rejoin = %v, want ErrNotMember", err)
	}
	if err := e.svc.Authorize(e.ctx, newID); err != nil {
		t.Fatalf("Authorize of the new certificate: %v", err)
	}
}

func TestSessionsMakeNodesAliveAndLapseToGone(t *testing.T) {
	e := newEnv(t)
	e.svc.SessionTTL = 2 * time.Second
	e.admit("node-1")
	e.admit("node-2")

	if _, err := e.svc.OpenSession(e.ctx, "nobody"); !errors.Is(err, ErrNotMember) {
		t.Fatalf("OpenSession of a non-member = %v, want ErrNotMember", err)
	}
	if err := e.svc.RenewSession(e.ctx, "node-1", 12345); !errors.Is(err, ErrSessionExpired) {
		t.Fatalf("RenewSession without a session = %v, want ErrSessionExpired", err)
	}

	sess, err := e.svc.OpenSession(e.ctx, "node-1")
	if err != nil {
		t.Fatalf("OpenSession: %v", err)
	}
	if sess.TTL != 2 || sess.Lease == 0 {
		t.Fatalf("session %+v, want a lease with TTL 2s", sess)
	}
	if got := e.statuses(); !slices.Equal(got, []string{"node-1=alive", "node-2=gone"}) {
		t.Fatalf("List = %v", got)
	}
	if err := e.svc.RenewSession(e.ctx, "node-1", sess.Lease); err != nil {
		t.Fatalf("RenewSession: %v", err)
	}
	if err := e.svc.RenewSession(e.ctx, "node-1", sess.Lease+1); !errors.Is(err, ErrSessionExpired) {
		t.Fatalf("RenewSession with the wrong lease = %v, want ErrSessionExpired", err)
	}
	if err := e.svc.RenewSession(e.ctx, "node-2", sess.Lease); !errors.Is(err, ErrSessionExpired) {
		t.Fatalf("RenewSession of another node's lease = %v, want ErrSessionExpired", err)
	}

	// A restarted node opens a new session; the old lease no longer renews.
	sess2, err := e.svc.OpenSession(e.ctx, "node-1")
	if err != nil {
		t.Fatal(err)
	}
	if sess2.Lease == sess.Lease {
		t.Fatal("new session reuses the old lease")
	}
	if err := e.svc.RenewSession(e.ctx, "node-1", sess.Lease); !errors.Is(err, ErrSessionExpired) {
		t.Fatalf("RenewSession with the superseded lease = %v, want ErrSessionExpired", err)
	}

	// Not renewed, the session lapses and the node is gone.
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, err := e.svc.Get(e.ctx, "node-1")
		if err != nil {
			t.Fatal(err)
		}
		if n.Status == StatusGone {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node-1 still %s 20s after its 2s session stopped being renewed", n.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := e.svc.RenewSession(e.ctx, "node-1", sess2.Lease); !errors.Is(err, ErrSessionExpired) {
		t.Fatalf("RenewSession after the lapse = %v, want ErrSessionExpired", err)
	}
	// The record itself stays: gone is not removed.
	if got := e.statuses(); !slices.Equal(got, []string{"node-1=gone", "node-2=gone"}) {
		t.Fatalf("List after lapse = %v", got)
	}
	// And the node can come back.
	if _, err := e.svc.OpenSession(e.ctx, "node-1"); err != nil {
		t.Fatal(err)
	}
	if n, _ := e.svc.Get(e.ctx, "node-1"); n.Status != StatusAlive {
		t.Fatalf("status after a new session %q, want alive", n.Status)
	}
}

func TestRemove(t *testing.T) {
	e := newEnv(t)
	super := Node{Name: "super-a", Role: RoleSupernode, Projects: []string{"CMIP6"}, Address: "127.0.0.1:7443"}
	if err := e.svc.Bootstrap(e.ctx, super); err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	e.admit("node-1")
	if _, err := e.svc.OpenSession(e.ctx, "node-1"); err != nil {
		t.Fatal(err)
	}
	pending := e.joiner("node-2", "CMIP6")
	if _, err := e.svc.Join(e.ctx, pending.in); err != nil {
		t.Fatal(err)
	}

	before := e.dump()
	if err := e.svc.Remove(e.ctx, "super-a"); !errors.Is(err, ErrForbidden) {
		t.Fatalf("Remove of a supernode = %v, want ErrForbidden", err)
	}
	e.assertUnchanged(before, "refused Remove")

	if err := e.svc.Remove(e.ctx, "node-1"); err != nil {
		t.Fatalf("Remove of a live member: %v", err)
	}
	if err := e.svc.Remove(e.ctx, "node-2"); err != nil {
		t.Fatalf("Remove of a join request: %v", err)
	}
	if got := e.statuses(); !slices.Equal(got, []string{"super-a=gone"}) {
		t.Fatalf("List after removals = %v", got)
	}
	for k := range e.dump() {
		if strings.HasSuffix(k, "/node-1") || strings.HasSuffix(k, "/node-2") {
			t.Errorf("%s left behind by Remove", k)
		}
	}
	if err := e.svc.Remove(e.ctx, "node-1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Remove = %v, want ErrNotFound", err)
	}
	if _, err := e.svc.Get(e.ctx, "node-1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Remove = %v, want ErrNotFound", err)
	}
	// The name is free again, for any key.
	if _, err := e.svc.Join(e.ctx, e.joiner("node-2", "CMIP6").in); err != nil {
		t.Fatalf("join with a removed name: %v", err)
	}
}

func TestUpdateChangesProfileButNotProjectsOrCertificate(t *testing.T) {
	e := newEnv(t)
	e.admit("node-1")
	old, _ := e.svc.Get(e.ctx, "node-1")
	lat, lon := 53.55, 9.99
	n, err := e.svc.Update(e.ctx, "node-1", Profile{
		Project: "CORDEX", Site: "DKRZ Hamburg", Address: "node-1.dkrz.de:443",
		Endpoints: map[string]string{"ThreddsService": "https://node-1.dkrz.de/thredds"},
		Lat:       &lat, Lon: &lon,
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	got, _ := e.svc.Get(e.ctx, "node-1")
	for _, m := range []Node{n, got} {
		if m.Site != "DKRZ Hamburg" || m.Address != "node-1.dkrz.de:443" || *m.Lat != lat || *m.Lon != lon ||
			m.Endpoints["ThreddsService"] != "https://node-1.dkrz.de/thredds" {
			t.Fatalf("updated node %+v", m)
		}
		if !slices.Equal(m.Projects, []string{"CMIP6"}) {
			t.Fatalf("Update changed the projects to %v", m.Projects)
		}
		if m.CertSerial != old.CertSerial || m.CertPEM != old.CertPEM || !m.JoinedAt.Equal(old.JoinedAt) {
			t.Fatal("Update changed the certificate or join time")
		}
	}

	before := e.dump()
	if _, err := e.svc.Update(e.ctx, "node-1", Profile{Address: "no-port"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Update with a bad address = %v, want ErrInvalid", err)
	}
	if _, err := e.svc.Update(e.ctx, "nobody", Profile{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Update of nobody = %v, want ErrNotFound", err)
	}
	e.assertUnchanged(before, "refused Update")
}

func TestBootstrapRecordsFederationAndKeepsJoinTime(t *testing.T) {
	e := newEnv(t)
	if _, err := e.svc.Federation(e.ctx); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Federation before Bootstrap = %v, want not found", err)
	}
	self := Node{Name: "super-a", Role: RoleSupernode, Projects: []string{"CMIP6"}, Address: "127.0.0.1:7443", Status: StatusAlive}
	if err := e.svc.Bootstrap(e.ctx, self); err != nil {
		t.Fatal(err)
	}
	fed, err := e.svc.Federation(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fed.Name != e.ca.Federation() || fed.CAHash != e.ca.Hash() || fed.CreatedAt.IsZero() {
		t.Fatalf("federation record %+v", fed)
	}
	first, _ := e.svc.Get(e.ctx, "super-a")

	// A restart with a new address keeps the federation record and the
	// join time.
	self.Address = "127.0.0.1:8443"
	if err := e.svc.Bootstrap(e.ctx, self); err != nil {
		t.Fatal(err)
	}
	fed2, _ := e.svc.Federation(e.ctx)
	if !fed2.CreatedAt.Equal(fed.CreatedAt) {
		t.Fatal("second Bootstrap rewrote the federation record")
	}
	again, _ := e.svc.Get(e.ctx, "super-a")
	if again.Address != "127.0.0.1:8443" || !again.JoinedAt.Equal(first.JoinedAt) {
		t.Fatalf("after restart: address %s joined %v (first joined %v)", again.Address, again.JoinedAt, first.JoinedAt)
	}
	// The status passed in is not stored: without a session it is gone.
	if again.Status != StatusGone {
		t.Fatalf("status %q, want gone", again.Status)
	}
}

func TestWaitListReturnsOnChangeAndBlocksOtherwise(t *testing.T) {
	e := newEnv(t)
	_, rev, err := e.svc.List(e.ctx)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("nothing changes", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(e.ctx, 500*time.Millisecond)
		defer cancel()
		start := time.Now()
		e.svc.WaitList(ctx, rev)
		if ctx.Err() == nil {
			t.Fatalf("WaitList returned after %v with no change and its context still live", time.Since(start))
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("WaitList took %v to notice its context ended", d)
		}
	})

	t.Run("a change wakes it", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
		defer cancel()
		done := make(chan struct{})
		go func() {
			e.svc.WaitList(ctx, rev)
			close(done)
		}()
		// Give the watch a moment to be waiting; the change is caught even
		// if it is not, because the watch starts after rev.
		time.Sleep(100 * time.Millisecond)
		select {
		case <-done:
			t.Fatal("WaitList returned before anything changed")
		default:
		}
		if _, err := e.svc.Join(e.ctx, e.joiner("node-1", "CMIP6").in); err != nil {
			t.Fatal(err)
		}
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("WaitList did not return within 10s of a join request")
		}
		if ctx.Err() != nil {
			t.Fatal("WaitList returned only because its context ended")
		}
	})

	t.Run("a change before the wait", func(t *testing.T) {
		// rev is now behind the join above: the wait returns at once.
		ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
		defer cancel()
		e.svc.WaitList(ctx, rev)
		if ctx.Err() != nil {
			t.Fatal("WaitList with a stale revision waited for its context to end")
		}
	})
}
