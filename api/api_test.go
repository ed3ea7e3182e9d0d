package api_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fedkeeper/fedkeeper/api"
	"github.com/fedkeeper/fedkeeper/client"
	"github.com/fedkeeper/fedkeeper/membership"
	"github.com/fedkeeper/fedkeeper/pki"
)

// protectedRoutes is every route that needs a client certificate.
var protectedRoutes = []struct{ method, path string }{
	{"GET", "/v1/whoami"},
	{"POST", "/v1/session"},
	{"POST", "/v1/session/renew"},
	{"GET", "/v1/nodes"},
	{"GET", "/v1/nodes/sn1"},
	{"PATCH", "/v1/nodes/sn1"},
	{"DELETE", "/v1/nodes/sn1"},
	{"POST", "/v1/nodes/sn1/approve"},
	{"POST", "/v1/nodes/sn1/deny"},
	{"POST", "/v1/tokens"},
	{"GET", "/v1/nodemap"},
	{"GET", "/v1/nodemap/registration.xml"},
}

func TestProtectedRoutesWithoutCertificateAre401(t *testing.T) {
	f := newFixture(t)
	before, _ := f.nodes()
	for _, rt := range protectedRoutes {
		t.Run(rt.method+" "+rt.path, func(t *testing.T) {
			// A body that would be valid for the writing routes, so only
			// the missing certificate can be the reason for refusal.
			r := f.call(f.anon, rt.method, rt.path, `{}`)
			r.want(t, http.StatusUnauthorized, "no_certificate")
		})
	}
	if after, _ := f.nodes(); !slices.Equal(names(before), names(after)) {
		t.Errorf("nodes changed by refused requests: %v, then %v", names(before), names(after))
	}
}

func TestOpenRoutesWorkWithoutCertificate(t *testing.T) {
	f := newFixture(t)

	t.Run("live", func(t *testing.T) {
		r := f.call(f.anon, http.MethodGet, "/v1/live", nil)
		r.want(t, http.StatusOK, "")
		var live map[string]string
		r.decode(t, &live)
		if live["status"] != "ok" || live["node"] != "sn1" {
			t.Errorf("live = %v, want status ok from node sn1", live)
		}
	})
	t.Run("ca", func(t *testing.T) {
		r := f.call(f.anon, http.MethodGet, "/v1/ca", nil)
		r.want(t, http.StatusOK, "")
		if string(r.body) != string(f.ca.CertPEM()) {
			t.Errorf("GET /v1/ca is not the federation CA certificate:\n%s", r.body)
		}
	})
	t.Run("join", func(t *testing.T) {
		in, key := joinInput(t, "open-joiner", f.newToken(1))
		r := f.call(f.anon, http.MethodPost, "/v1/join", in)
		r.want(t, http.StatusOK, "")
		f.memberFrom("open-joiner", key, r)
	})
	t.Run("unknown endpoint", func(t *testing.T) {
		f.call(f.anon, http.MethodGet, "/v1/nope", nil).want(t, http.StatusNotFound, "not_found")
	})
}

func TestForeignCACertificateIsRefused(t *testing.T) {
	f := newFixture(t)
	// Same federation name, different key: only the signature tells them
	// apart.
	foreign, err := pki.NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	for _, role := range []pki.Role{pki.RoleAdmin, pki.RoleMember} {
		c := httpClient(t, signedKeyPair(t, foreign, "root", role), f.ca)
		for _, path := range []string{"/v1/whoami", "/v1/nodes"} {
			r, err := f.try(c, http.MethodGet, path, nil)
			if err == nil && r.status != http.StatusUnauthorized {
				t.Errorf("%s certificate of a foreign CA: GET %s answered HTTP %d %s, want a refused handshake or 401",
					role, path, r.status, r.body)
			}
		}
	}
}

func TestCertificateOfNonMemberIsRefused(t *testing.T) {
	f := newFixture(t)
	m := f.join("rotated")
	tests := []struct {
		name string
		kp   *pki.KeyPair
	}{
		// Signed by the federation CA but never admitted.
		{"never joined", signedKeyPair(t, f.ca, "stranger", pki.RoleMember)},
		// The name is a member, but this is not the certificate it was
		// admitted with.
		{"superseded serial", signedKeyPair(t, f.ca, m.name, pki.RoleMember)},
		{"supernode without record", signedKeyPair(t, f.ca, "sn9", pki.RoleSupernode)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := httpClient(t, tc.kp, f.ca)
			f.call(c, http.MethodGet, "/v1/whoami", nil).want(t, http.StatusForbidden, "not_member")
		})
	}
	// The admitted certificate itself still works.
	f.call(m.http, http.MethodGet, "/v1/whoami", nil).want(t, http.StatusOK, "")
}

func TestWhoamiReportsCertificateIdentity(t *testing.T) {
	f := newFixture(t)
	m := f.join("who")
	var got struct {
		Name       string `json:"name"`
		Role       string `json:"role"`
		Federation string `json:"federation"`
		Serial     string `json:"serial"`
	}
	f.call(m.http, http.MethodGet, "/v1/whoami", nil).decode(t, &got)
	if got.Name != "who" || got.Role != "member" || got.Federation != "test" || got.Serial != pki.SerialHex(m.kp.Cert) {
		t.Errorf("whoami = %+v, want member \"who\" of federation test with serial %s", got, pki.SerialHex(m.kp.Cert))
	}
}

func TestRolesDecideWhatCallersMayDo(t *testing.T) {
	f := newFixture(t)
	m := f.join("plain")
	// Waiting join requests for approve and deny to act on: a refused
	// caller must leave them waiting.
	for _, name := range []string{"wait-approve", "wait-deny"} {
		in, _ := joinInput(t, name, "")
		f.call(f.anon, http.MethodPost, "/v1/join", in).want(t, http.StatusAccepted, "")
	}
	token := api.TokenRequest{Uses: 1, TTL: "1h"}
	tests := []struct {
		caller       string
		c            *http.Client
		method, path string
		body         any
		status       int
		code         string
	}{
		{"member", m.http, "GET", "/v1/nodes", nil, 403, "forbidden"},
		{"member", m.http, "POST", "/v1/tokens", token, 403, "forbidden"},
		{"member", m.http, "POST", "/v1/nodes/wait-approve/approve", struct{}{}, 403, "forbidden"},
		{"member", m.http, "POST", "/v1/nodes/wait-deny/deny", map[string]string{"reason": "x"}, 403, "forbidden"},
		{"supernode", f.super, "POST", "/v1/tokens", token, 403, "forbidden"},
		{"supernode", f.super, "POST", "/v1/nodes/wait-approve/approve", struct{}{}, 403, "forbidden"},
		// Supernodes hold sessions like members; administrators are no nodes.
		{"supernode", f.super, "POST", "/v1/session", struct{}{}, 200, ""},
		{"admin", f.admin, "POST", "/v1/session", struct{}{}, 403, "forbidden"},
		{"supernode", f.super, "GET", "/v1/nodes", nil, 200, ""},
		{"admin", f.admin, "GET", "/v1/nodes", nil, 200, ""},
		{"admin", f.admin, "POST", "/v1/tokens", token, 201, ""},
		{"admin", f.admin, "POST", "/v1/nodes/wait-approve/approve", struct{}{}, 200, ""},
		{"admin", f.admin, "POST", "/v1/nodes/wait-deny/deny", map[string]string{"reason": "x"}, 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.caller+" "+tc.method+" "+tc.path, func(t *testing.T) {
			r := f.call(tc.c, tc.method, tc.path, tc.body)
			r.want(t, tc.status, tc.code)
			if tc.status == http.StatusForbidden && !strings.Contains(r.Error, tc.caller) {
				t.Errorf("refusal %q does not say which role was refused", r.Error)
			}
			// Before the admin rows run, the refused calls must have
			// left the join requests waiting.
			if tc.caller != "admin" {
				for _, name := range []string{"wait-approve", "wait-deny"} {
					if st := f.node(name).Status; st != membership.StatusPending {
						t.Errorf("after a refused call, %s is %q, want pending", name, st)
					}
				}
			}
		})
	}
	if st := f.node("wait-approve").Status; st == membership.StatusPending || st == membership.StatusDenied {
		t.Errorf("approved request is still %q", st)
	}
	if st := f.node("wait-deny").Status; st != membership.StatusDenied {
		t.Errorf("denied request is %q, want denied", st)
	}
}

func TestClientPackageSeesAPIErrors(t *testing.T) {
	f := newFixture(t)
	m := f.join("via-client")
	c := client.New([]string{f.url}, pki.ClientTLS(m.kp, f.ca.Cert))
	defer c.CloseIdle()
	err := c.Do(t.Context(), http.MethodGet, "/v1/nodes", nil, nil)
	var apiErr *client.Error
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusForbidden || apiErr.Code != "forbidden" {
		t.Fatalf("member GET /v1/nodes through client: %v, want *client.Error 403 forbidden", err)
	}
	var m2 membership.NodeMap
	if err := c.Do(t.Context(), http.MethodGet, "/v1/nodemap", nil, &m2); err != nil {
		t.Fatalf("member GET /v1/nodemap through client: %v", err)
	}
}

func TestBadBodiesAreRefusedAndChangeNothing(t *testing.T) {
	f := newFixture(t)
	m := f.join("careful")

	valid, _ := joinInput(t, "bad-body", "")
	validJSON, err := json.Marshal(valid)
	if err != nil {
		t.Fatal(err)
	}
	withField := func(field string) string {
		return strings.TrimSuffix(string(validJSON), "}") + `,` + field + `}`
	}
	pad := strings.Repeat("x", api.MaxBody)
	spaces := strings.Repeat(" ", api.MaxBody)
	bodies := []struct {
		name string
		// The same fault in a join request (POST /v1/join without a
		// certificate), a profile (PATCH /v1/nodes/careful as itself) and
		// a token request (POST /v1/tokens as admin).
		join, self, token string
		// want is a fragment the error must contain to name the problem.
		want string
	}{
		{"unknown field", withField(`"tokn":"x"`), `{"site":"New","sitee":"y"}`, `{"uses":1,"ttl":"1h","use":2}`, "unknown field"},
		{"trailing garbage", string(validJSON) + ` xyz`, `{"site":"New"} xyz`, `{"uses":1,"ttl":"1h"} xyz`, "after the JSON value"},
		{"second value", string(validJSON) + `{}`, `{"site":"New"}{}`, `{"uses":1,"ttl":"1h"}{}`, "after the JSON value"},
		{"too large", withField(`"token":"` + pad + `"`), `{"site":"` + pad + `"}`, `{"uses":1,"ttl":"` + pad + `"}`, "larger than"},
		{"too large after a valid value", string(validJSON) + spaces, `{"site":"New"}` + spaces, `{"uses":1,"ttl":"1h"}` + spaces, "larger than"},
		{"malformed", `{"name":`, `{"site":`, `{"uses":`, "unexpected EOF"},
		{"not JSON", `name=bad-body`, `site=New`, `uses=1`, "invalid character"},
		{"empty", ``, ``, ``, "empty"},
		{"wrong type", strings.Replace(string(validJSON), `"name":"bad-body"`, `"name":5`, 1), `{"site":7}`, `{"uses":"1","ttl":"1h"}`, "cannot unmarshal"},
	}
	before, index := f.nodes()
	site := f.node("careful").Site
	for _, b := range bodies {
		t.Run(b.name, func(t *testing.T) {
			for _, tc := range []struct {
				c            *http.Client
				method, path string
				body         string
			}{
				{f.anon, http.MethodPost, "/v1/join", b.join},
				{m.http, http.MethodPatch, "/v1/nodes/careful", b.self},
				{f.admin, http.MethodPost, "/v1/tokens", b.token},
			} {
				r := f.call(tc.c, tc.method, tc.path, tc.body)
				r.want(t, http.StatusBadRequest, "bad_request")
				if !strings.Contains(r.Error, b.want) {
					t.Errorf("%s %s: error %q does not name the problem (want it to contain %q)", tc.method, tc.path, r.Error, b.want)
				}
			}
		})
	}
	after, indexAfter := f.nodes()
	if !slices.Equal(names(before), names(after)) {
		t.Errorf("bad bodies changed the node list: %v, then %v", names(before), names(after))
	}
	if index != indexAfter {
		t.Errorf("bad bodies wrote to the store: index %s, then %s", index, indexAfter)
	}
	if got := f.node("careful").Site; got != site {
		t.Errorf("bad bodies changed the site of careful: %q, then %q", site, got)
	}
}

func TestBlockingQueryOnNodes(t *testing.T) {
	f := newFixture(t)
	token := f.newToken(1) // before the index is read: tokens are not nodes
	_, index := f.nodes()
	if _, err := strconv.ParseInt(index, 10, 64); err != nil {
		t.Fatalf("X-Fedkeeper-Index %q is not a number", index)
	}

	t.Run("returns early on a change", func(t *testing.T) {
		joined := make(chan error, 1)
		go func() {
			time.Sleep(300 * time.Millisecond)
			in, _ := joinInput(t, "late-joiner", token)
			r, err := f.try(f.anon, http.MethodPost, "/v1/join", in)
			if err == nil && r.status != http.StatusOK {
				err = errors.New(string(r.body))
			}
			joined <- err
		}()
		start := time.Now()
		r := f.call(f.admin, http.MethodGet, "/v1/nodes?index="+index+"&wait=5s", nil)
		took := time.Since(start)
		r.want(t, http.StatusOK, "")
		if err := <-joined; err != nil {
			t.Fatalf("join during the query: %v", err)
		}
		if took > 4*time.Second {
			t.Errorf("blocking query took %v although a node joined after 300ms", took)
		}
		var ns []membership.Node
		r.decode(t, &ns)
		if !slices.ContainsFunc(ns, func(n membership.Node) bool { return n.Name == "late-joiner" }) {
			t.Errorf("answer does not list the node that joined: %v", names(ns))
		}
		newIndex, _ := strconv.ParseInt(r.header.Get("X-Fedkeeper-Index"), 10, 64)
		oldIndex, _ := strconv.ParseInt(index, 10, 64)
		if newIndex <= oldIndex {
			t.Errorf("index after the change is %d, want more than %d", newIndex, oldIndex)
		}
	})

	t.Run("waits when nothing changes", func(t *testing.T) {
		_, index := f.nodes()
		for _, path := range []string{"/v1/nodes", "/v1/nodemap"} {
			start := time.Now()
			r := f.call(f.admin, http.MethodGet, path+"?index="+index+"&wait=1s", nil)
			took := time.Since(start)
			r.want(t, http.StatusOK, "")
			if took < 900*time.Millisecond || took > 4*time.Second {
				t.Errorf("GET %s with the current index and wait=1s took %v, want about 1s", path, took)
			}
			if got := r.header.Get("X-Fedkeeper-Index"); got != index {
				t.Errorf("GET %s: index %s after an idle wait, want %s", path, got, index)
			}
		}
	})

	t.Run("old index answers at once", func(t *testing.T) {
		start := time.Now()
		f.call(f.admin, http.MethodGet, "/v1/nodes?index=1&wait=5s", nil).want(t, http.StatusOK, "")
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("query with an index behind the store took %v", took)
		}
	})

	t.Run("bad parameters", func(t *testing.T) {
		for _, q := range []string{"index=abc", "index=-1", "index=1.5", "index=" + index + "&wait=abc", "index=" + index + "&wait=0s", "index=" + index + "&wait=-1s", "index=" + index + "&wait=5"} {
			for _, path := range []string{"/v1/nodes", "/v1/nodemap"} {
				start := time.Now()
				r := f.call(f.admin, http.MethodGet, path+"?"+q, nil)
				r.want(t, http.StatusBadRequest, "invalid")
				if !strings.Contains(r.Error, "index") && !strings.Contains(r.Error, "wait") {
					t.Errorf("GET %s?%s: error %q names neither index nor wait", path, q, r.Error)
				}
				if took := time.Since(start); took > 2*time.Second {
					t.Errorf("GET %s?%s: refusal took %v", path, q, took)
				}
			}
		}
	})
}
