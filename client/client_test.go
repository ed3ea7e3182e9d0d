package client

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/fedkeeper/fedkeeper/pki"
)

// testServer is a federation-like HTTPS server presenting a supernode
// certificate of ca.
func testServer(t *testing.T, ca *pki.CA, role pki.Role, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	key, _ := pki.NewKey()
	csrPEM, _ := pki.NewCSR(key, "sn")
	csr, err := pki.ParseCSR(csrPEM, "sn")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Sign(csr, pki.Request{Name: "sn", Role: role, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = pki.ServerTLS(&pki.KeyPair{Cert: cert, Key: key}, ca.Cert)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func TestClientFailsOverOnUnreachableAndUnavailableServers(t *testing.T) {
	ca, err := pki.NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	unavailable := testServer(t, ca, pki.RoleSupernode, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"error":"no leader","code":"unavailable"}`))
	})
	forbidden := testServer(t, ca, pki.RoleSupernode, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte(`{"error":"no","code":"forbidden"}`))
	})
	hanging := testServer(t, ca, pki.RoleSupernode, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	ok := testServer(t, ca, pki.RoleSupernode, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"answer":42}`))
	})
	impostor := testServer(t, ca, pki.RoleMember, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"answer":666}`))
	})
	closed := testServer(t, ca, pki.RoleSupernode, nil)
	closed.Close()

	for _, tc := range []struct {
		name     string
		servers  []string
		deadline time.Duration
		want     int
		wantCode string
	}{
		{"a closed server is skipped", []string{closed.URL, ok.URL}, 0, 42, ""},
		{"a 503 answer is skipped", []string{unavailable.URL, ok.URL}, 0, 42, ""},
		{"a server posing as a supernode with a member certificate is skipped", []string{impostor.URL, ok.URL}, 0, 42, ""},
		{"a hanging server gets only its share of the deadline", []string{hanging.URL, ok.URL}, 2 * time.Second, 42, ""},
		{"any other error answer is final", []string{forbidden.URL, ok.URL}, 0, 0, "forbidden"},
		{"nobody answering is an error", []string{closed.URL, unavailable.URL}, 0, 0, "no server"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := New(tc.servers, pki.APIClientTLS(nil, ca.Cert))
			defer c.CloseIdle()
			ctx := context.Background()
			if tc.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.deadline)
				defer cancel()
			}
			var out struct{ Answer int }
			err := c.Do(ctx, http.MethodGet, "/v1/x", nil, &out)
			var apiErr *Error
			switch {
			case tc.wantCode == "forbidden":
				if !errors.As(err, &apiErr) || apiErr.Code != "forbidden" || apiErr.Status != 403 {
					t.Fatalf("want the forbidden answer, got %v", err)
				}
			case tc.wantCode == "no server":
				if err == nil || errors.As(err, &apiErr) && apiErr.Status != 503 {
					t.Fatalf("want an error saying nobody answered, got %v", err)
				}
			case err != nil || out.Answer != tc.want:
				t.Fatalf("got %+v, %v; want answer %d", out, err, tc.want)
			}
		})
	}
}

func TestClientSticksToTheServerThatAnswered(t *testing.T) {
	ca, _ := pki.NewCA("test")
	hits := map[string]int{}
	mk := func(name string) *httptest.Server {
		return testServer(t, ca, pki.RoleSupernode, func(w http.ResponseWriter, r *http.Request) {
			hits[name]++
			w.Write([]byte(`{}`))
		})
	}
	a, b := mk("a"), mk("b")
	closed := testServer(t, ca, pki.RoleSupernode, nil)
	closed.Close()
	c := New([]string{closed.URL, a.URL, b.URL, a.URL}, pki.APIClientTLS(nil, ca.Cert))
	if got := c.Servers(); len(got) != 3 {
		t.Fatalf("servers %v: duplicates should be dropped", got)
	}
	for range 5 {
		if err := c.Do(context.Background(), http.MethodGet, "/", nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if hits["a"] != 5 || hits["b"] != 0 {
		t.Fatalf("hits %v: the client should stay with the first server that answered", hits)
	}
	c.SetServers([]string{b.URL, a.URL})
	c.Do(context.Background(), http.MethodGet, "/", nil, nil)
	if hits["a"] != 6 {
		t.Fatalf("hits %v: a new server list should keep the current server first", hits)
	}
}
