package api_test

import (
	"bytes"
	"encoding/xml"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fedkeeper/fedkeeper/membership"
)

func TestJoinWithTokenIssuesCertificateForCSRKey(t *testing.T) {
	f := newFixture(t)
	in, key := joinInput(t, "token-joiner", f.newToken(1))
	r := f.call(f.anon, http.MethodPost, "/v1/join", in)
	r.want(t, http.StatusOK, "")
	m := f.memberFrom("token-joiner", key, r) // checks the key, CA and identity

	// The certificate works at once, and asking again is idempotent.
	f.call(m.http, http.MethodGet, "/v1/whoami", nil).want(t, http.StatusOK, "")
	again := f.call(f.anon, http.MethodPost, "/v1/join", in)
	again.want(t, http.StatusOK, "")
	var res membership.JoinResult
	again.decode(t, &res)
	if res.CertPEM != r.decodeJoin(t).CertPEM {
		t.Errorf("repeating the join issued a different certificate")
	}
	if n := f.node("token-joiner"); n.Site != in.Profile.Site || !slices.Equal(n.Projects, []string{projectName}) {
		t.Errorf("record = %+v, want site %q in project %s", n, in.Profile.Site, projectName)
	}

	t.Run("used-up token", func(t *testing.T) {
		other, _ := joinInput(t, "second-joiner", in.Token)
		f.call(f.anon, http.MethodPost, "/v1/join", other).want(t, http.StatusForbidden, "token_refused")
	})
	t.Run("unknown token", func(t *testing.T) {
		other, _ := joinInput(t, "third-joiner", "fkt_nonsense")
		f.call(f.anon, http.MethodPost, "/v1/join", other).want(t, http.StatusForbidden, "token_refused")
	})
	t.Run("name taken by another key", func(t *testing.T) {
		other, _ := joinInput(t, "token-joiner", f.newToken(1))
		f.call(f.anon, http.MethodPost, "/v1/join", other).want(t, http.StatusConflict, "conflict")
	})
	t.Run("invalid name", func(t *testing.T) {
		other, _ := joinInput(t, "Bad_Name", f.newToken(1))
		r := f.call(f.anon, http.MethodPost, "/v1/join", other)
		r.want(t, http.StatusBadRequest, "invalid")
		if !strings.Contains(r.Error, "Bad_Name") {
			t.Errorf("error %q does not name the bad name", r.Error)
		}
	})
}

func (r reply) decodeJoin(t testing.TB) membership.JoinResult {
	t.Helper()
	var res membership.JoinResult
	r.decode(t, &res)
	return res
}

func TestJoinWithoutTokenWaitsForApproval(t *testing.T) {
	f := newFixture(t)
	in, key := joinInput(t, "asker", "")
	r := f.call(f.anon, http.MethodPost, "/v1/join", in)
	r.want(t, http.StatusAccepted, "")
	if res := r.decodeJoin(t); res.Status != membership.StatusPending || res.CertPEM != "" {
		t.Fatalf("join without token = %+v, want pending without certificate", res)
	}
	if st := f.node("asker").Status; st != membership.StatusPending {
		t.Fatalf("waiting request is listed as %q, want pending", st)
	}
	// Asking again while waiting is harmless.
	f.call(f.anon, http.MethodPost, "/v1/join", in).want(t, http.StatusAccepted, "")

	a := f.call(f.admin, http.MethodPost, "/v1/nodes/asker/approve", struct{}{})
	a.want(t, http.StatusOK, "")
	var approved membership.Node
	a.decode(t, &approved)
	if approved.Name != "asker" || approved.CertPEM != "" {
		t.Errorf("approve answered %+v, want the node record of asker without certificate", approved)
	}

	r = f.call(f.anon, http.MethodPost, "/v1/join", in)
	r.want(t, http.StatusOK, "")
	m := f.memberFrom("asker", key, r)
	f.call(m.http, http.MethodGet, "/v1/whoami", nil).want(t, http.StatusOK, "")

	// Approving twice finds nothing left to approve.
	f.call(f.admin, http.MethodPost, "/v1/nodes/asker/approve", struct{}{}).want(t, http.StatusNotFound, "not_found")
}

func TestDeniedJoinIsRefused(t *testing.T) {
	f := newFixture(t)
	in, _ := joinInput(t, "unwanted", "")
	f.call(f.anon, http.MethodPost, "/v1/join", in).want(t, http.StatusAccepted, "")
	f.call(f.admin, http.MethodPost, "/v1/nodes/unwanted/deny", map[string]string{"reason": "not our site"}).want(t, http.StatusOK, "")

	r := f.call(f.anon, http.MethodPost, "/v1/join", in)
	r.want(t, http.StatusForbidden, "join_denied")
	if !strings.Contains(r.Error, "not our site") {
		t.Errorf("denial %q does not carry the administrator's reason", r.Error)
	}
	if st := f.node("unwanted").Status; st != membership.StatusDenied {
		t.Errorf("denied request is listed as %q", st)
	}
	f.call(f.admin, http.MethodPost, "/v1/nodes/nobody/deny", map[string]string{}).want(t, http.StatusNotFound, "not_found")
	f.call(f.admin, http.MethodPost, "/v1/nodes/unwanted/deny", map[string]string{"reason": strings.Repeat("r", 513)}).want(t, http.StatusBadRequest, "invalid")
}

func TestJoinWaitBlocksUntilDecision(t *testing.T) {
	f := newFixture(t)

	t.Run("no decision", func(t *testing.T) {
		// A fresh request with ?wait must wait, not wake for its own write.
		in, _ := joinInput(t, "patient", "")
		start := time.Now()
		r := f.call(f.anon, http.MethodPost, "/v1/join?wait=1s", in)
		took := time.Since(start)
		r.want(t, http.StatusAccepted, "")
		if took < 900*time.Millisecond || took > 4*time.Second {
			t.Errorf("first join with wait=1s answered after %v, want about 1s", took)
		}
		start = time.Now()
		f.call(f.anon, http.MethodPost, "/v1/join?wait=1s", in).want(t, http.StatusAccepted, "")
		if took := time.Since(start); took < 900*time.Millisecond || took > 4*time.Second {
			t.Errorf("repeated join with wait=1s answered after %v, want about 1s", took)
		}
	})

	t.Run("approved meanwhile", func(t *testing.T) {
		in, key := joinInput(t, "hopeful", "")
		approved := make(chan reply, 1)
		go func() {
			time.Sleep(500 * time.Millisecond)
			r, _ := f.try(f.admin, http.MethodPost, "/v1/nodes/hopeful/approve", struct{}{})
			approved <- r
		}()
		start := time.Now()
		r := f.call(f.anon, http.MethodPost, "/v1/join?wait=10s", in)
		took := time.Since(start)
		if a := <-approved; a.status != http.StatusOK {
			t.Fatalf("approve: HTTP %d %s", a.status, a.body)
		}
		r.want(t, http.StatusOK, "")
		f.memberFrom("hopeful", key, r)
		if took > 5*time.Second {
			t.Errorf("join answered %v after the request although it was approved after 500ms", took)
		}
	})

	t.Run("bad wait", func(t *testing.T) {
		in, _ := joinInput(t, "hasty", "")
		for _, q := range []string{"wait=soon", "wait=0s", "wait=-1s"} {
			f.call(f.anon, http.MethodPost, "/v1/join?"+q, in).want(t, http.StatusBadRequest, "invalid")
		}
		// Refused before anything was recorded.
		f.call(f.admin, http.MethodGet, "/v1/nodes/hasty", nil).want(t, http.StatusNotFound, "not_found")
	})
}

func TestMemberChangesOnlyItsOwnRecord(t *testing.T) {
	f := newFixture(t)
	a, b := f.join("alpha"), f.join("bravo")
	bBefore := f.node(b.name)

	t.Run("patch other", func(t *testing.T) {
		f.call(a.http, http.MethodPatch, "/v1/nodes/bravo", map[string]string{"site": "Hijacked"}).want(t, http.StatusForbidden, "forbidden")
	})
	t.Run("delete other", func(t *testing.T) {
		f.call(a.http, http.MethodDelete, "/v1/nodes/bravo", nil).want(t, http.StatusForbidden, "forbidden")
	})
	t.Run("delete supernode", func(t *testing.T) {
		f.call(a.http, http.MethodDelete, "/v1/nodes/sn1", nil).want(t, http.StatusForbidden, "forbidden")
	})
	bAfter := f.node(b.name)
	if bAfter.Site != bBefore.Site || bAfter.CertSerial != bBefore.CertSerial || bAfter.Status != bBefore.Status {
		t.Errorf("bravo changed by refused calls: %+v, then %+v", bBefore, bAfter)
	}
	f.call(b.http, http.MethodGet, "/v1/whoami", nil).want(t, http.StatusOK, "")

	t.Run("patch self", func(t *testing.T) {
		r := f.call(a.http, http.MethodPatch, "/v1/nodes/alpha", map[string]string{"site": "New Site", "address": "127.0.0.1:8443"})
		r.want(t, http.StatusOK, "")
		var n membership.Node
		f.call(a.http, http.MethodGet, "/v1/nodes/alpha", nil).decode(t, &n)
		if n.Site != "New Site" || n.Address != "127.0.0.1:8443" {
			t.Errorf("own record after PATCH = site %q address %q, want New Site at 127.0.0.1:8443", n.Site, n.Address)
		}
		if !slices.Equal(n.Projects, []string{projectName}) {
			t.Errorf("PATCH changed the projects to %v", n.Projects)
		}
	})
	t.Run("patch self with bad profile", func(t *testing.T) {
		r := f.call(a.http, http.MethodPatch, "/v1/nodes/alpha", map[string]string{"address": "no-port"})
		r.want(t, http.StatusBadRequest, "invalid")
		if !strings.Contains(r.Error, "address") {
			t.Errorf("error %q does not name the address", r.Error)
		}
		if n := f.node("alpha"); n.Address != "127.0.0.1:8443" {
			t.Errorf("refused PATCH changed the address to %q", n.Address)
		}
	})
	t.Run("admin patches any", func(t *testing.T) {
		f.call(f.admin, http.MethodPatch, "/v1/nodes/bravo", map[string]string{"site": "Fixed by admin"}).want(t, http.StatusOK, "")
		if n := f.node("bravo"); n.Site != "Fixed by admin" {
			t.Errorf("site after admin PATCH = %q", n.Site)
		}
	})
}

func TestMemberReadsOnlyItsOwnRecordButTheNodeMap(t *testing.T) {
	f := newFixture(t)
	a, _ := f.join("reader"), f.join("private")

	r := f.call(a.http, http.MethodGet, "/v1/nodes/private", nil)
	r.want(t, http.StatusForbidden, "forbidden")
	if bytes.Contains(r.body, []byte("Site of private")) {
		t.Errorf("refusal leaks the other record: %s", r.body)
	}
	f.call(a.http, http.MethodGet, "/v1/nodes/sn1", nil).want(t, http.StatusForbidden, "forbidden")

	var own membership.Node
	f.call(a.http, http.MethodGet, "/v1/nodes/reader", nil).decode(t, &own)
	if own.Name != "reader" {
		t.Errorf("own record = %+v", own)
	}

	var m membership.NodeMap
	r = f.call(a.http, http.MethodGet, "/v1/nodemap", nil)
	r.want(t, http.StatusOK, "")
	r.decode(t, &m)
	var got []string
	for _, n := range m.Nodes {
		got = append(got, n.Name)
		if n.CertPEM != "" {
			t.Errorf("node map carries the certificate of %s", n.Name)
		}
	}
	if !slices.Equal(got, []string{"private", "reader", "sn1"}) {
		t.Errorf("node map lists %v, want private, reader, sn1", got)
	}
	if m.Federation != "test" || m.CAHash != f.ca.Hash() || len(m.Supernodes) != 1 || !strings.HasPrefix(f.url, m.Supernodes[0]) {
		t.Errorf("node map = federation %q ca %q supernodes %v; want test, %s, [%s]", m.Federation, m.CAHash, m.Supernodes, f.ca.Hash(), f.url)
	}
	if r.header.Get("X-Fedkeeper-Index") == "" {
		t.Errorf("node map has no X-Fedkeeper-Index")
	}

	// Other nodes are found as supernode too; only members are limited.
	f.call(f.super, http.MethodGet, "/v1/nodes/private", nil).want(t, http.StatusOK, "")
	f.call(f.admin, http.MethodGet, "/v1/nodes/nobody", nil).want(t, http.StatusNotFound, "not_found")
}

func TestRemovedMemberCertificateIsRefused(t *testing.T) {
	f := newFixture(t)
	m := f.join("leaver")
	r := f.call(m.http, http.MethodDelete, "/v1/nodes/leaver", nil)
	r.want(t, http.StatusOK, "")

	for _, rt := range []struct{ method, path string }{
		{"GET", "/v1/whoami"},
		{"GET", "/v1/nodemap"},
		{"POST", "/v1/session"},
		{"PATCH", "/v1/nodes/leaver"},
	} {
		f.call(m.http, rt.method, rt.path, `{"site":"back"}`).want(t, http.StatusForbidden, "not_member")
	}
	f.call(f.admin, http.MethodGet, "/v1/nodes/leaver", nil).want(t, http.StatusNotFound, "not_found")
	f.call(f.admin, http.MethodDelete, "/v1/nodes/leaver", nil).want(t, http.StatusNotFound, "not_found")
	// Supernodes are not removed this way, even by an administrator.
	f.call(f.admin, http.MethodDelete, "/v1/nodes/sn1", nil).want(t, http.StatusForbidden, "forbidden")
	f.call(f.super, http.MethodGet, "/v1/whoami", nil).want(t, http.StatusOK, "")
}

func TestSessionOpenAndRenew(t *testing.T) {
	f := newFixture(t)
	m := f.join("lively")
	if st := f.node("lively").Status; st != membership.StatusGone {
		t.Fatalf("member without session is %q, want gone", st)
	}

	var sess membership.Session
	r := f.call(m.http, http.MethodPost, "/v1/session", nil)
	r.want(t, http.StatusOK, "")
	r.decode(t, &sess)
	if sess.Lease == 0 || sess.TTL <= 0 {
		t.Fatalf("session = %+v, want a lease and a TTL", sess)
	}
	if st := f.node("lively").Status; st != membership.StatusAlive {
		t.Errorf("member with session is %q, want alive", st)
	}

	r = f.call(m.http, http.MethodPost, "/v1/session/renew", map[string]int64{"lease": sess.Lease})
	r.want(t, http.StatusOK, "")
	var renewed map[string]string
	r.decode(t, &renewed)
	if renewed["status"] != "renewed" {
		t.Errorf("renew answered %s", r.body)
	}

	f.call(m.http, http.MethodPost, "/v1/session/renew", map[string]int64{"lease": sess.Lease + 1}).want(t, http.StatusNotFound, "session_expired")
	f.call(m.http, http.MethodPost, "/v1/session/renew", map[string]int64{}).want(t, http.StatusNotFound, "session_expired")

	// Another member cannot renew with the first one's lease.
	other := f.join("sleepy")
	f.call(other.http, http.MethodPost, "/v1/session/renew", map[string]int64{"lease": sess.Lease}).want(t, http.StatusNotFound, "session_expired")

	// A new session replaces the old one; the old lease no longer renews.
	var sess2 membership.Session
	f.call(m.http, http.MethodPost, "/v1/session", nil).decode(t, &sess2)
	if sess2.Lease == sess.Lease {
		t.Fatalf("second session reuses lease %x", sess.Lease)
	}
	f.call(m.http, http.MethodPost, "/v1/session/renew", map[string]int64{"lease": sess.Lease}).want(t, http.StatusNotFound, "session_expired")
	f.call(m.http, http.MethodPost, "/v1/session/renew", map[string]int64{"lease": sess2.Lease}).want(t, http.StatusOK, "")
}

func TestRegistrationXML(t *testing.T) {
	f := newFixture(t)
	m := f.join("esgf-data")
	r := f.call(m.http, http.MethodGet, "/v1/nodemap/registration.xml", nil)
	r.want(t, http.StatusOK, "")
	if ct := r.header.Get("Content-Type"); ct != "application/xml" {
		t.Errorf("Content-Type = %q, want application/xml", ct)
	}
	if r.header.Get("X-Fedkeeper-Index") == "" {
		t.Errorf("registration.xml has no X-Fedkeeper-Index")
	}
	var reg struct {
		XMLName xml.Name
		Nodes   []struct {
			ShortName string `xml:"shortName,attr"`
		} `xml:"Node"`
	}
	if err := xml.Unmarshal(r.body, &reg); err != nil {
		t.Fatalf("registration.xml does not parse: %v\n%s", err, r.body)
	}
	if reg.XMLName.Local != "Registration" || reg.XMLName.Space != membership.RegistryNamespace {
		t.Errorf("root element is {%s}%s, want {%s}Registration", reg.XMLName.Space, reg.XMLName.Local, membership.RegistryNamespace)
	}
	var got []string
	for _, n := range reg.Nodes {
		got = append(got, n.ShortName)
	}
	if !slices.Equal(got, []string{"esgf-data", "sn1"}) {
		t.Errorf("registration.xml nodes = %v, want esgf-data and sn1", got)
	}
}
