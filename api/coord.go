package api

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/fedkeeper/fedkeeper/coord"
	"github.com/fedkeeper/fedkeeper/events"
	"github.com/fedkeeper/fedkeeper/internal/apijson"
	"github.com/fedkeeper/fedkeeper/pki"
	"github.com/fedkeeper/fedkeeper/store"
)

// LeaseRequest asks for a lease.
type LeaseRequest struct {
	TTL time.Duration `json:"ttl"`
}

// LeaseBody names the caller's lease in a coordination request.
type LeaseBody struct {
	Lease string `json:"lease"`
}

// StandRequest is a candidacy.
type StandRequest struct {
	Lease string `json:"lease"`
	Rank  int    `json:"rank"`
	State string `json:"state"`
}

// AskRequest is a takeover or give-up request; Node names who should
// take over.
type AskRequest struct {
	Node string `json:"node,omitempty"`
}

// EnqueueRequest queues the caller's lease for a lock.
type EnqueueRequest struct {
	Lease string `json:"lease"`
	Limit int    `json:"limit"`
}

func (s *Server) coordRoutes(mux *http.ServeMux, any []pki.Role) {
	mux.Handle("POST /v1/leases", s.auth(any, s.grantLease))
	mux.Handle("POST /v1/leases/{id}/renew", s.auth(any, s.onLease(leaseInPath("id"), s.renewLease)))
	mux.Handle("DELETE /v1/leases/{id}", s.auth(any, s.onLease(leaseInPath("id"), s.revokeLease)))
	mux.Handle("GET /v1/elections/{kind}", s.auth(any, s.listElections))
	mux.Handle("GET /v1/elections/{kind}/{name}", s.auth(any, s.showElection))
	mux.Handle("PUT /v1/elections/{kind}/{name}/candidates/{node}", s.auth(any, s.stand))
	mux.Handle("POST /v1/elections/{kind}/{name}/acquire", s.auth(any, s.onLease(leaseInBody, s.acquire)))
	mux.Handle("POST /v1/elections/{kind}/{name}/resign", s.auth(any, s.onLease(leaseInBody, s.resign)))
	mux.Handle("POST /v1/elections/{kind}/{name}/takeover", s.auth(any, s.ask(coord.RequestTakeover)))
	mux.Handle("POST /v1/elections/{kind}/{name}/giveup", s.auth(any, s.ask(coord.RequestGiveup)))
	mux.Handle("DELETE /v1/elections/{kind}/{name}/request", s.auth(any, s.clearRequest))
	mux.Handle("GET /v1/locks/{name}", s.auth(any, s.showLock))
	mux.Handle("POST /v1/locks/{name}", s.auth(any, s.enqueue))
	mux.Handle("DELETE /v1/locks/{name}/{lease}", s.auth(any, s.onLease(leaseInPath("lease"), s.release)))
}

// parseLease reads a lease ID as the API shows it (hex); it answers a bad
// one itself.
func parseLease(w http.ResponseWriter, s string) (int64, bool) {
	id, err := strconv.ParseInt(s, 16, 64)
	if err != nil || id <= 0 {
		apijson.Error(w, http.StatusBadRequest, "invalid", fmt.Sprintf("lease %q must be a lease ID in hex", s))
		return 0, false
	}
	return id, true
}

// leaseOp acts on the caller's lease and returns what to answer.
type leaseOp func(r *http.Request, id pki.Identity, lease int64) (any, error)

// leaseFrom finds the lease a request names; it answers a bad request
// itself and then reports false.
type leaseFrom func(w http.ResponseWriter, r *http.Request) (int64, bool)

func leaseInPath(key string) leaseFrom {
	return func(w http.ResponseWriter, r *http.Request) (int64, bool) { return parseLease(w, r.PathValue(key)) }
}

func leaseInBody(w http.ResponseWriter, r *http.Request) (int64, bool) {
	var in LeaseBody
	if !decode(w, r, &in) {
		return 0, false
	}
	return parseLease(w, in.Lease)
}

// onLease serves the requests that name one of the caller's leases and
// nothing else.
func (s *Server) onLease(from leaseFrom, op leaseOp) handler {
	return func(w http.ResponseWriter, r *http.Request, id pki.Identity) {
		lease, ok := from(w, r)
		if !ok {
			return
		}
		out, err := op(r, id, lease)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		apijson.Write(w, http.StatusOK, out)
	}
}

func (s *Server) renewLease(r *http.Request, id pki.Identity, lease int64) (any, error) {
	return struct{}{}, s.Coord.Renew(r.Context(), id.Name, lease)
}

func (s *Server) revokeLease(r *http.Request, id pki.Identity, lease int64) (any, error) {
	return struct{}{}, s.Coord.Revoke(r.Context(), id.Name, lease)
}

func (s *Server) acquire(r *http.Request, id pki.Identity, lease int64) (any, error) {
	kind, name := r.PathValue("kind"), r.PathValue("name")
	m, err := s.Coord.Acquire(r.Context(), id.Name, kind, name, lease)
	if err != nil {
		return nil, err
	}
	s.event(r, events.Event{Node: id.Name, Kind: kind + "-elected", New: strconv.FormatInt(m.Token, 10), By: id.Name,
		Message: fmt.Sprintf("%s %s: %s elected, fencing token %d", kind, name, id.Name, m.Token)})
	return m, nil
}

func (s *Server) resign(r *http.Request, id pki.Identity, lease int64) (any, error) {
	kind, name := r.PathValue("kind"), r.PathValue("name")
	resigned, err := s.Coord.Resign(r.Context(), id.Name, kind, name, lease)
	if err != nil || !resigned {
		return struct{}{}, err
	}
	s.event(r, events.Event{Node: id.Name, Kind: kind + "-resigned", By: id.Name, Message: fmt.Sprintf("%s %s: %s resigned", kind, name, id.Name)})
	return struct{}{}, nil
}

func (s *Server) release(r *http.Request, id pki.Identity, lease int64) (any, error) {
	name := r.PathValue("name")
	released, err := s.Coord.Release(r.Context(), id.Name, name, lease)
	if err != nil {
		return nil, err
	}
	if released {
		s.event(r, events.Event{Node: id.Name, Kind: "lock-released", By: id.Name,
			Message: fmt.Sprintf("lock %s: %s released it (lease %s)", name, id.Name, coord.LeaseID(lease))})
	}
	return struct{}{}, nil
}

func (s *Server) grantLease(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	var in LeaseRequest
	if !decode(w, r, &in) {
		return
	}
	l, err := s.Coord.Grant(r.Context(), id.Name, in.TTL)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	apijson.Write(w, http.StatusCreated, map[string]any{"id": coord.LeaseID(l.ID), "ttl_s": l.TTL})
}

// waitOn answers a blocking query on the keys under prefix. The index is
// a store revision, which moves with every write anywhere; whether the
// keys under prefix changed since is for store.Wait to tell, so no
// revision short-cuts the wait here.
func (s *Server) waitOn(w http.ResponseWriter, r *http.Request, prefix string) bool {
	return blockingQuery(w, r, func(context.Context) (int64, error) { return 0, nil }, func(ctx context.Context, after int64) {
		store.Wait(ctx, s.Store.Client, after, prefix)
	})
}

func (s *Server) listElections(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	names, rev, err := s.Coord.Elections(r.Context(), r.PathValue("kind"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if names == nil {
		names = []string{}
	}
	setIndex(w, rev)
	apijson.Write(w, http.StatusOK, names)
}

func (s *Server) showElection(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	kind, name := r.PathValue("kind"), r.PathValue("name")
	if !s.waitOn(w, r, coord.ElectionPrefix(kind, name)) {
		return
	}
	e, err := s.Coord.Election(r.Context(), kind, name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	setIndex(w, e.Revision)
	apijson.Write(w, http.StatusOK, e)
}

func (s *Server) stand(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	kind, name := r.PathValue("kind"), r.PathValue("name")
	if r.PathValue("node") != id.Name {
		apijson.Error(w, http.StatusForbidden, "forbidden", "a node stands only for itself")
		return
	}
	var in StandRequest
	if !decode(w, r, &in) {
		return
	}
	lease, ok := parseLease(w, in.Lease)
	if !ok {
		return
	}
	prev, err := s.Coord.Stand(r.Context(), id.Name, kind, name, coord.Candidate{Rank: in.Rank, State: in.State}, lease)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if prev != in.State {
		s.event(r, events.Event{Node: id.Name, Kind: kind + "-" + in.State, Old: prev, New: in.State, By: id.Name,
			Message: fmt.Sprintf("%s %s: %s is %s (rank %d)", kind, name, id.Name, in.State, in.Rank)})
	}
	apijson.Write(w, http.StatusOK, struct{}{})
}

// ask records a takeover or give-up. An administrator may ask for any
// node; a node may ask only for itself (to take over) or, as master, to
// give up.
func (s *Server) ask(kind string) handler {
	return func(w http.ResponseWriter, r *http.Request, id pki.Identity) {
		ekind, name := r.PathValue("kind"), r.PathValue("name")
		var in AskRequest
		if !decode(w, r, &in) {
			return
		}
		if in.Node == "" {
			in.Node = id.Name
		}
		if id.Role != pki.RoleAdmin && (kind == coord.RequestTakeover && in.Node != id.Name) {
			apijson.Error(w, http.StatusForbidden, "forbidden", "a node asks to take over only for itself")
			return
		}
		if id.Role != pki.RoleAdmin && kind == coord.RequestGiveup {
			e, err := s.Coord.Election(r.Context(), ekind, name)
			if err != nil {
				s.fail(w, r, err)
				return
			}
			if e.Master == nil || e.Master.Node != id.Name {
				apijson.Error(w, http.StatusForbidden, "forbidden", "only the master or an administrator gives a mastership up")
				return
			}
		}
		req, err := s.Coord.Ask(r.Context(), ekind, name, coord.Request{Kind: kind, Node: in.Node, By: id.Name})
		if err != nil {
			s.fail(w, r, err)
			return
		}
		s.event(r, events.Event{Node: req.Node, Kind: ekind + "-" + kind + "-asked", By: id.Name,
			Message: fmt.Sprintf("%s %s: %s asked by %s", ekind, name, kind, id.Name)})
		apijson.Write(w, http.StatusAccepted, req)
	}
}

func (s *Server) clearRequest(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	if err := s.Coord.ClearRequest(r.Context(), id.Name, r.PathValue("kind"), r.PathValue("name")); err != nil {
		s.fail(w, r, err)
		return
	}
	apijson.Write(w, http.StatusOK, struct{}{})
}

func (s *Server) showLock(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	name := r.PathValue("name")
	if !s.waitOn(w, r, coord.LockPrefix(name)) {
		return
	}
	l, err := s.Coord.Lock(r.Context(), name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	setIndex(w, l.Revision)
	apijson.Write(w, http.StatusOK, l)
}

func (s *Server) enqueue(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	var in EnqueueRequest
	if !decode(w, r, &in) {
		return
	}
	lease, ok := parseLease(w, in.Lease)
	if !ok {
		return
	}
	name := r.PathValue("name")
	queued, err := s.Coord.Enqueue(r.Context(), id.Name, name, in.Limit, lease)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	l, err := s.Coord.Lock(r.Context(), name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// A waiter posts again once its turn has come (a repeat keeps its
	// place), so that its acquisition is an event like any other.
	i := slices.IndexFunc(l.Holders, func(h coord.Holder) bool { return h.Lease == coord.LeaseID(lease) })
	switch {
	case i >= 0:
		h := l.Holders[i]
		s.event(r, events.Event{Node: id.Name, Kind: "lock-acquired", New: strconv.FormatInt(h.Token, 10), By: id.Name,
			Message: fmt.Sprintf("lock %s: %s holds it (limit %d), fencing token %d", name, id.Name, h.Limit, h.Token)})
	case queued:
		s.event(r, events.Event{Node: id.Name, Kind: "lock-waiting", By: id.Name,
			Message: fmt.Sprintf("lock %s: %s waits behind %d holder(s)", name, id.Name, len(l.Holders))})
	}
	setIndex(w, l.Revision)
	apijson.Write(w, http.StatusOK, l)
}
