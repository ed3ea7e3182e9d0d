package api_test

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/fedkeeper/fedkeeper/api"
	"github.com/fedkeeper/fedkeeper/coord"
	"github.com/fedkeeper/fedkeeper/events"
	"github.com/fedkeeper/fedkeeper/pki"
	"github.com/fedkeeper/fedkeeper/store"
)

// coordFixture is a supernode's API serving the coordination routes and
// the event log, with two administrators as callers: root (the fixture's
// admin) and ops, who own different leases.
type coordFixture struct {
	*fixture
	ops *http.Client
}

// newCoordFixture is newFixture with the store behind the API, which the
// coordination routes need.
func newCoordFixture(t *testing.T) *coordFixture {
	t.Helper()
	f := newFixture(t, func(srv *api.Server, st *store.Store) {
		srv.Store, srv.Coord, srv.Events = st, coord.New(st.Client), events.New(st.Client)
	})
	ca := f.ca
	return &coordFixture{fixture: f, ops: httpClient(t, signedKeyPair(t, ca, "ops", pki.RoleAdmin), ca)}
}

// lease grants the caller c a lease of the shortest TTL.
func (f *coordFixture) lease(c *http.Client) string {
	f.t.Helper()
	var l struct {
		ID  string `json:"id"`
		TTL int64  `json:"ttl_s"`
	}
	r := f.call(c, http.MethodPost, "/v1/leases", api.LeaseRequest{TTL: coord.MinTTL})
	r.want(f.t, http.StatusCreated, "")
	r.decode(f.t, &l)
	if _, err := strconv.ParseInt(l.ID, 16, 64); err != nil || l.TTL != int64(coord.MinTTL/time.Second) {
		f.t.Fatalf("grant answered %s, want a hex id and ttl_s %d", r.body, coord.MinTTL/time.Second)
	}
	return l.ID
}

// eventKinds lists the kinds of the events about node, oldest first.
func (f *coordFixture) eventKinds(node string) []string {
	f.t.Helper()
	var evs []events.Event
	r := f.call(f.admin, http.MethodGet, "/v1/events?node="+node, nil)
	r.want(f.t, http.StatusOK, "")
	r.decode(f.t, &evs)
	var kinds []string
	for _, e := range evs {
		kinds = append(kinds, e.Kind)
	}
	return kinds
}

// blockUntil starts a blocking query on path after its current index and
// returns its answer, and how long it took, once change has run.
func (f *coordFixture) blockUntil(path string, change func()) (reply, time.Duration) {
	f.t.Helper()
	index := f.call(f.admin, http.MethodGet, path, nil).header.Get("X-Fedkeeper-Index")
	type answer struct {
		r    reply
		took time.Duration
		err  error
	}
	done := make(chan answer, 1)
	go func() {
		start := time.Now()
		r, err := f.try(f.admin, http.MethodGet, path+"?index="+index+"&wait=10s", nil)
		done <- answer{r, time.Since(start), err}
	}()
	time.Sleep(300 * time.Millisecond)
	change()
	a := <-done
	if a.err != nil {
		f.t.Fatalf("blocking query on %s: %v", path, a.err)
	}
	a.r.want(f.t, http.StatusOK, "")
	return a.r, a.took
}

func TestLeaseRoutesAnswerOnlyTheOwner(t *testing.T) {
	f := newCoordFixture(t)
	id := f.lease(f.admin)
	tests := []struct {
		name         string
		c            *http.Client
		method, path string
		body         any
		status       int
		code         string
	}{
		{"grant below the minimum TTL", f.admin, http.MethodPost, "/v1/leases", api.LeaseRequest{TTL: time.Second}, http.StatusBadRequest, "invalid"},
		{"grant of a fraction of seconds", f.admin, http.MethodPost, "/v1/leases", api.LeaseRequest{TTL: 2500 * time.Millisecond}, http.StatusBadRequest, "invalid"},
		{"renew by the owner", f.admin, http.MethodPost, "/v1/leases/" + id + "/renew", nil, http.StatusOK, ""},
		{"renew by another", f.ops, http.MethodPost, "/v1/leases/" + id + "/renew", nil, http.StatusForbidden, "forbidden"},
		{"revoke by another", f.ops, http.MethodDelete, "/v1/leases/" + id, nil, http.StatusForbidden, "forbidden"},
		{"renew of a lease id that is not hex", f.admin, http.MethodPost, "/v1/leases/xyz/renew", nil, http.StatusBadRequest, "invalid"},
		{"revoke of a negative lease id", f.admin, http.MethodDelete, "/v1/leases/-1", nil, http.StatusBadRequest, "invalid"},
		{"revoke by the owner", f.admin, http.MethodDelete, "/v1/leases/" + id, nil, http.StatusOK, ""},
		{"renew once revoked", f.admin, http.MethodPost, "/v1/leases/" + id + "/renew", nil, http.StatusGone, "lease_expired"},
		{"revoke once revoked", f.admin, http.MethodDelete, "/v1/leases/" + id, nil, http.StatusGone, "lease_expired"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f.call(tc.c, tc.method, tc.path, tc.body).want(t, tc.status, tc.code)
		})
	}
}

func TestElectionRoutes(t *testing.T) {
	f := newCoordFixture(t)
	root, ops := f.lease(f.admin), f.lease(f.ops)
	gone := f.lease(f.admin)
	f.call(f.admin, http.MethodDelete, "/v1/leases/"+gone, nil).want(t, http.StatusOK, "")
	const base = "/v1/elections/role/cron"
	stand := func(lease string) api.StandRequest { return api.StandRequest{Lease: lease, State: "standby"} }

	f.call(f.admin, http.MethodPut, base+"/candidates/root", stand(root)).want(t, http.StatusOK, "")
	f.call(f.ops, http.MethodPut, base+"/candidates/ops", stand(ops)).want(t, http.StatusOK, "")
	var m coord.Master
	r := f.call(f.admin, http.MethodPost, base+"/acquire", api.LeaseBody{Lease: root})
	r.want(t, http.StatusOK, "")
	r.decode(t, &m)
	if m.Node != "root" || m.Token <= 0 || m.Lease != root {
		t.Fatalf("acquire answered %s, want root's mastership with a token", r.body)
	}

	tests := []struct {
		name         string
		c            *http.Client
		method, path string
		body         any
		status       int
		code         string
	}{
		{"stand for another node", f.admin, http.MethodPut, base + "/candidates/ops", stand(root), http.StatusForbidden, "forbidden"},
		{"stand on another's lease", f.admin, http.MethodPut, base + "/candidates/root", stand(ops), http.StatusForbidden, "forbidden"},
		{"stand on a lease gone", f.admin, http.MethodPut, base + "/candidates/root", stand(gone), http.StatusGone, "lease_expired"},
		{"stand on a lease id that is not hex", f.admin, http.MethodPut, base + "/candidates/root", stand("nothex"), http.StatusBadRequest, "invalid"},
		{"stand of an unknown kind", f.admin, http.MethodPut, "/v1/elections/vote/cron/candidates/root", stand(root), http.StatusBadRequest, "invalid"},
		{"acquire when taken", f.ops, http.MethodPost, base + "/acquire", api.LeaseBody{Lease: ops}, http.StatusConflict, "taken"},
		{"acquire on a lease gone", f.admin, http.MethodPost, base + "/acquire", api.LeaseBody{Lease: gone}, http.StatusGone, "lease_expired"},
		{"acquire on another's lease", f.ops, http.MethodPost, base + "/acquire", api.LeaseBody{Lease: root}, http.StatusForbidden, "forbidden"},
		{"resign on another's lease", f.ops, http.MethodPost, base + "/resign", api.LeaseBody{Lease: root}, http.StatusForbidden, "forbidden"},
		{"read an invalid name", f.admin, http.MethodGet, "/v1/elections/role/Cron", nil, http.StatusBadRequest, "invalid"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f.call(tc.c, tc.method, tc.path, tc.body).want(t, tc.status, tc.code)
		})
	}

	t.Run("blocking query returns on a change of master", func(t *testing.T) {
		r, took := f.blockUntil(base, func() {
			f.call(f.admin, http.MethodPost, base+"/resign", api.LeaseBody{Lease: root}).want(t, http.StatusOK, "")
			f.call(f.ops, http.MethodPost, base+"/acquire", api.LeaseBody{Lease: ops}).want(t, http.StatusOK, "")
		})
		if took > 5*time.Second {
			t.Errorf("blocking query took %s although the master changed after 300ms", took)
		}
		var e coord.Election
		r.decode(t, &e)
		if e.Master == nil {
			// The query may answer between the two changes: the next one
			// shows the new master.
			r = f.call(f.admin, http.MethodGet, base, nil)
			r.decode(t, &e)
		}
		if e.Master == nil || e.Master.Node != "ops" || e.Master.Token <= m.Token {
			t.Errorf("election after the change: master %+v, want ops with a token above %d", e.Master, m.Token)
		}
		if got := r.header.Get("X-Fedkeeper-Index"); got != strconv.FormatInt(e.Revision, 10) {
			t.Errorf("index %s, revision %d", got, e.Revision)
		}
	})

	t.Run("every change is an event", func(t *testing.T) {
		for node, want := range map[string][]string{
			"root": {"role-standby", "role-elected", "role-resigned"},
			"ops":  {"role-standby", "role-elected"},
		} {
			if got := f.eventKinds(node); !slices.Equal(got, want) {
				t.Errorf("events of %s: %v, want %v", node, got, want)
			}
		}
	})
}

func TestLockRoutes(t *testing.T) {
	f := newCoordFixture(t)
	root, ops := f.lease(f.admin), f.lease(f.ops)
	gone := f.lease(f.admin)
	f.call(f.admin, http.MethodDelete, "/v1/leases/"+gone, nil).want(t, http.StatusOK, "")
	const path = "/v1/locks/scan"
	enqueue := func(c *http.Client, lease string) coord.Lock {
		t.Helper()
		var l coord.Lock
		r := f.call(c, http.MethodPost, path, api.EnqueueRequest{Lease: lease, Limit: 1})
		r.want(t, http.StatusOK, "")
		r.decode(t, &l)
		return l
	}

	l := enqueue(f.admin, root)
	if len(l.Holders) != 1 || l.Holders[0].Lease != root || l.Holders[0].Holder != "root" || l.Holders[0].Token <= 0 {
		t.Fatalf("first in the queue: %+v, want root holding with a token", l)
	}
	l = enqueue(f.ops, ops)
	if len(l.Holders) != 1 || len(l.Waiting) != 1 || l.Waiting[0].Lease != ops || l.Waiting[0].Token <= l.Holders[0].Token {
		t.Fatalf("second in the queue: %+v, want ops waiting with a larger token", l)
	}

	tests := []struct {
		name   string
		c      *http.Client
		method string
		path   string
		body   any
		status int
		code   string
	}{
		{"queue with limit 0", f.admin, http.MethodPost, path, api.EnqueueRequest{Lease: root, Limit: 0}, http.StatusBadRequest, "invalid"},
		{"queue on a lease id that is not hex", f.admin, http.MethodPost, path, api.EnqueueRequest{Lease: "-", Limit: 1}, http.StatusBadRequest, "invalid"},
		{"queue on a lease gone", f.admin, http.MethodPost, path, api.EnqueueRequest{Lease: gone, Limit: 1}, http.StatusGone, "lease_expired"},
		{"queue on another's lease", f.ops, http.MethodPost, path, api.EnqueueRequest{Lease: root, Limit: 1}, http.StatusForbidden, "forbidden"},
		{"queue for an invalid name", f.admin, http.MethodPost, "/v1/locks/a_", api.EnqueueRequest{Lease: root, Limit: 1}, http.StatusBadRequest, "invalid"},
		{"release of another's lease", f.ops, http.MethodDelete, path + "/" + root, nil, http.StatusForbidden, "forbidden"},
		{"release of a lease id that is not hex", f.admin, http.MethodDelete, path + "/zz", nil, http.StatusBadRequest, "invalid"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f.call(tc.c, tc.method, tc.path, tc.body).want(t, tc.status, tc.code)
		})
	}

	t.Run("blocking query returns on a release", func(t *testing.T) {
		r, took := f.blockUntil(path, func() {
			f.call(f.admin, http.MethodDelete, path+"/"+root, nil).want(t, http.StatusOK, "")
		})
		if took > 5*time.Second {
			t.Errorf("blocking query took %s although the lock was released after 300ms", took)
		}
		var after coord.Lock
		r.decode(t, &after)
		if len(after.Holders) != 1 || after.Holders[0].Lease != ops || len(after.Waiting) != 0 {
			t.Errorf("after root released: %+v, want ops holding", after)
		}
	})

	t.Run("every change is an event", func(t *testing.T) {
		// The waiter queues again once its turn has come.
		if l := enqueue(f.ops, ops); len(l.Holders) != 1 || l.Holders[0].Lease != ops {
			t.Fatalf("repeat of the new holder: %+v", l)
		}
		f.call(f.ops, http.MethodDelete, path+"/"+ops, nil).want(t, http.StatusOK, "")
		// Releasing again changes nothing, and is no event.
		f.call(f.ops, http.MethodDelete, path+"/"+ops, nil).want(t, http.StatusOK, "")
		for node, want := range map[string][]string{
			"root": {"lock-acquired", "lock-released"},
			"ops":  {"lock-waiting", "lock-acquired", "lock-released"},
		} {
			if got := f.eventKinds(node); !slices.Equal(got, want) {
				t.Errorf("events of %s: %v, want %v", node, got, want)
			}
		}
	})
}

func TestCoordinationRoutesNeedACertificate(t *testing.T) {
	f := newCoordFixture(t)
	for _, rt := range []struct{ method, path string }{
		{"POST", "/v1/leases"},
		{"POST", "/v1/leases/1/renew"},
		{"DELETE", "/v1/leases/1"},
		{"GET", "/v1/elections/role"},
		{"GET", "/v1/elections/role/cron"},
		{"PUT", "/v1/elections/role/cron/candidates/root"},
		{"POST", "/v1/elections/role/cron/acquire"},
		{"POST", "/v1/elections/role/cron/resign"},
		{"GET", "/v1/locks/scan"},
		{"POST", "/v1/locks/scan"},
		{"DELETE", "/v1/locks/scan/1"},
	} {
		t.Run(fmt.Sprintf("%s %s", rt.method, rt.path), func(t *testing.T) {
			f.call(f.anon, rt.method, rt.path, `{}`).want(t, http.StatusUnauthorized, "no_certificate")
		})
	}
}
