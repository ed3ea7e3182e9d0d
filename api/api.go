// Package api is the federation's HTTP API under /v1/: thin handlers that
// authenticate the caller by its client certificate, check what its role
// allows, and call the packages that own the state.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedkeeper/fedkeeper/configsync"
	"github.com/fedkeeper/fedkeeper/coord"
	"github.com/fedkeeper/fedkeeper/events"
	"github.com/fedkeeper/fedkeeper/health"
	"github.com/fedkeeper/fedkeeper/internal/apijson"
	"github.com/fedkeeper/fedkeeper/internal/version"
	"github.com/fedkeeper/fedkeeper/kv"
	"github.com/fedkeeper/fedkeeper/membership"
	"github.com/fedkeeper/fedkeeper/metrics"
	"github.com/fedkeeper/fedkeeper/pki"
	"github.com/fedkeeper/fedkeeper/quorum"
	"github.com/fedkeeper/fedkeeper/services"
	"github.com/fedkeeper/fedkeeper/store"
)

// Server serves the API of one supernode. Members, CA and Log are
// required; the routes of the other services are served when they are set.
type Server struct {
	Name    string
	Members *membership.Service
	CA      *pki.CA
	Log     *slog.Logger

	// RequestTimeout bounds each request that is not a blocking query, so
	// that a request caught by the death of the store's leader fails over
	// to another supernode instead of waiting for the store's own timeout;
	// zero means DefaultRequestTimeout.
	RequestTimeout time.Duration

	Quorum    *quorum.Service
	Prober    *health.Prober
	Authority quorum.Authority
	Store     *store.Store
	Events    *events.Log
	KV        *kv.Store
	// Metrics serves the supernode's own metrics; History holds what it
	// scraped from its members; PeerClient asks the other supernodes for
	// theirs.
	Metrics    http.Handler
	History    *metrics.History
	PeerClient *http.Client
	Config     *configsync.Store
	// Services takes nodes' registrations; ServiceView answers look-ups.
	Services    *services.Registry
	ServiceView *services.View
	// Coord serves leases, elections and locks; it needs Store.
	Coord *coord.Service
}

// DefaultRequestTimeout suits supernodes on one continent; across oceans
// give a few round trips more (see docs/operations.md).
const DefaultRequestTimeout = 3 * time.Second

// MaxBody bounds every request body; nothing the API takes is larger.
const MaxBody = 1 << 20

// Blocking queries wait at most this long, whatever the caller asks.
const maxWait = 5 * time.Minute

// Handler returns the API's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	// Open to anyone: a liveness probe, and what a joiner needs before it
	// has a certificate.
	mux.HandleFunc("GET /v1/live", s.live)
	mux.HandleFunc("GET /v1/ca", s.caCert)
	mux.HandleFunc("POST /v1/join", s.join)

	any := []pki.Role{pki.RoleAdmin, pki.RoleSupernode, pki.RoleMember}
	admin := []pki.Role{pki.RoleAdmin}
	staff := []pki.Role{pki.RoleAdmin, pki.RoleSupernode}
	nodes := []pki.Role{pki.RoleSupernode, pki.RoleMember}
	mux.Handle("GET /v1/whoami", s.auth(any, s.whoami))
	mux.Handle("POST /v1/session", s.auth(nodes, s.openSession))
	mux.Handle("POST /v1/session/renew", s.auth(nodes, s.renewSession))
	mux.Handle("GET /v1/nodes", s.auth(staff, s.listNodes))
	mux.Handle("GET /v1/nodes/{name}", s.auth(any, s.showNode))
	mux.Handle("PATCH /v1/nodes/{name}", s.auth(any, s.updateNode))
	mux.Handle("DELETE /v1/nodes/{name}", s.auth(any, s.removeNode))
	mux.Handle("POST /v1/nodes/{name}/approve", s.auth(admin, s.approve))
	mux.Handle("POST /v1/nodes/{name}/deny", s.auth(admin, s.deny))
	mux.Handle("POST /v1/tokens", s.auth(admin, s.createToken))
	mux.Handle("GET /v1/nodemap", s.auth(any, s.nodemap))
	mux.Handle("GET /v1/nodemap/registration.xml", s.auth(any, s.registrationXML))
	if s.Quorum != nil {
		mux.HandleFunc("POST /v1/supernodes/join", s.joinSupernode)
		mux.Handle("GET /v1/supernodes", s.auth(staff, s.listSupernodes))
		mux.Handle("POST /v1/supernodes", s.auth(admin, s.addSupernode))
		mux.Handle("POST /v1/supernodes/{name}/rejoin", s.auth([]pki.Role{pki.RoleSupernode}, s.rejoinSupernode))
		mux.Handle("DELETE /v1/supernodes/{name}", s.auth(admin, s.removeSupernode))
	}
	if s.Store != nil {
		mux.Handle("GET /v1/snapshot", s.auth(admin, s.snapshot))
	}
	if s.Prober != nil {
		mux.Handle("POST /v1/health/confirm", s.auth([]pki.Role{pki.RoleSupernode}, s.confirmHealth))
		mux.Handle("GET /v1/health", s.auth(staff, s.healthRecords))
	}
	if s.Events != nil {
		mux.Handle("GET /v1/events", s.auth(staff, s.listEvents))
	}
	if s.Metrics != nil {
		// Open like any exporter's: a supernode's figures are its own.
		mux.Handle("GET /metrics", s.Metrics)
	}
	if s.Config != nil {
		s.configRoutes(mux, admin, staff, any)
	}
	if s.History != nil {
		mux.Handle("GET /v1/metrics", s.auth(staff, s.projectMetrics))
		mux.Handle("GET /v1/metrics/local", s.auth(staff, s.localMetrics))
		mux.Handle("GET /v1/sd/prometheus", s.auth(any, s.prometheusSD))
	}
	if s.Services != nil && s.ServiceView != nil {
		s.serviceRoutes(mux, any, nodes)
	}
	if s.Coord != nil && s.Store != nil {
		s.coordRoutes(mux, any)
	}
	if s.KV != nil {
		mux.Handle("GET /v1/kv/{key...}", s.auth(staff, s.getKV))
		mux.Handle("PUT /v1/kv/{key...}", s.auth(staff, s.putKV))
		mux.Handle("DELETE /v1/kv/{key...}", s.auth(staff, s.deleteKV))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		apijson.Error(w, http.StatusNotFound, "not_found", fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	// Every store request of the API fails fast, rather than hangs, on a
	// supernode that has lost the store's leader: the client then tries
	// another supernode.
	timeout := s.RequestTimeout
	if timeout <= 0 {
		timeout = DefaultRequestTimeout
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The in-process store client does not honour WithRequireLeader,
		// so a supernode that knows it has no leader says so itself at
		// once: the client asks another supernode.
		if s.Store != nil && r.URL.Path != "/v1/live" && r.URL.Path != "/v1/ca" && r.URL.Path != "/metrics" && s.Store.Status().LeaderID == 0 {
			apijson.Error(w, http.StatusServiceUnavailable, "unavailable", "this supernode has lost the store's quorum; ask another")
			return
		}
		ctx := clientv3.WithRequireLeader(r.Context())
		q := r.URL.Query()
		if !q.Has("wait") && !q.Has("index") && r.URL.Path != "/v1/snapshot" && !wantsStream(r) {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		mux.ServeHTTP(w, r.WithContext(ctx))
	})
}

type handler func(w http.ResponseWriter, r *http.Request, id pki.Identity)

// auth admits a request only with a client certificate of one of roles
// that still speaks for its holder.
func (s *Server) auth(roles []pki.Role, h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			apijson.Error(w, http.StatusUnauthorized, "no_certificate", "this endpoint needs a client certificate issued by the federation")
			return
		}
		id, err := pki.IdentityOf(r.TLS.PeerCertificates[0])
		if err != nil {
			apijson.Error(w, http.StatusUnauthorized, "bad_certificate", err.Error())
			return
		}
		if err := s.Members.Authorize(r.Context(), id); err != nil {
			s.fail(w, r, err)
			return
		}
		allowed := false
		for _, role := range roles {
			allowed = allowed || role == id.Role
		}
		if !allowed {
			apijson.Error(w, http.StatusForbidden, "forbidden", fmt.Sprintf("%s %q may not %s %s", id.Role, id.Name, r.Method, r.URL.Path))
			return
		}
		h(w, r, id)
	})
}

// mayActOn is the rule "a member can change only its own records".
func mayActOn(id pki.Identity, name string) bool {
	return id.Role == pki.RoleAdmin || id.Name == name
}

// fail answers err with the status its class calls for.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	for _, c := range []struct {
		err    error
		status int
		code   string
	}{
		{membership.ErrInvalid, http.StatusBadRequest, "invalid"},
		{membership.ErrNotFound, http.StatusNotFound, "not_found"},
		{membership.ErrConflict, http.StatusConflict, "conflict"},
		{membership.ErrDenied, http.StatusForbidden, "join_denied"},
		{membership.ErrToken, http.StatusForbidden, "token_refused"},
		{membership.ErrNotMember, http.StatusForbidden, "not_member"},
		{membership.ErrForbidden, http.StatusForbidden, "forbidden"},
		{membership.ErrSessionExpired, http.StatusNotFound, "session_expired"},
		{store.ErrNotFound, http.StatusNotFound, "not_found"},
		{kv.ErrInvalid, http.StatusBadRequest, "invalid"},
		{kv.ErrNotFound, http.StatusNotFound, "not_found"},
		{kv.ErrConflict, http.StatusConflict, "conflict"},
		{configsync.ErrInvalid, http.StatusBadRequest, "invalid"},
		{configsync.ErrTooLarge, http.StatusRequestEntityTooLarge, "too_large"},
		{configsync.ErrNotFound, http.StatusNotFound, "not_found"},
		{configsync.ErrConflict, http.StatusConflict, "conflict"},
		{services.ErrInvalid, http.StatusBadRequest, "invalid"},
		{services.ErrNoSession, http.StatusConflict, "no_session"},
		{services.ErrConflict, http.StatusConflict, "conflict"},
		{coord.ErrInvalid, http.StatusBadRequest, "invalid"},
		{coord.ErrNotFound, http.StatusNotFound, "not_found"},
		{coord.ErrExpired, http.StatusGone, "lease_expired"},
		{coord.ErrForbidden, http.StatusForbidden, "forbidden"},
		{coord.ErrTaken, http.StatusConflict, "taken"},
	} {
		if errors.Is(err, c.err) {
			apijson.Error(w, c.status, c.code, err.Error())
			return
		}
	}
	if status, code, ok := storeTrouble(err); ok {
		apijson.Error(w, status, code, "this supernode's store did not serve the request: "+err.Error())
		return
	}
	s.Log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	apijson.Error(w, http.StatusInternalServerError, "internal", err.Error())
}

// wantsStream tells a request for Server-Sent Events.
func wantsStream(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/event-stream")
}

// storeTrouble sorts errors that another supernode may not have. Those
// that show the request was not taken (no leader, a standby, a store that
// refuses members for a moment) are "unavailable", 503: a client may ask
// another supernode. A timeout is "timeout", 504: the store may still
// apply the request, so a client must not blindly send a write again.
func storeTrouble(err error) (status int, code string, ok bool) {
	for e := err; e != nil; e = errors.Unwrap(e) {
		switch rpctypes.Error(e) {
		case rpctypes.ErrNoLeader, rpctypes.ErrNotCapable,
			rpctypes.ErrGRPCNotSupportedForLearner, rpctypes.ErrTooManyRequests, rpctypes.ErrUnhealthy:
			return http.StatusServiceUnavailable, "unavailable", true
		// A stopping store may already have proposed the request.
		case rpctypes.ErrTimeout, rpctypes.ErrTimeoutDueToLeaderFail, rpctypes.ErrTimeoutDueToConnectionLost,
			rpctypes.ErrLeaderChanged, rpctypes.ErrStopped:
			return http.StatusGatewayTimeout, "timeout", true
		}
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "no leader") || strings.Contains(msg, "not supported for learner"):
		return http.StatusServiceUnavailable, "unavailable", true
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || strings.Contains(msg, "server stopped") || strings.Contains(msg, "request canceled"):
		return http.StatusGatewayTimeout, "timeout", true
	}
	return 0, "", false
}

// decode reads a JSON request body strictly: unknown fields and trailing
// data are errors, so a typo does not silently do something else.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	return decodeLimit(w, r, v, MaxBody)
}

// decodeLimit is decode for a body of up to limit bytes.
func decodeLimit(w http.ResponseWriter, r *http.Request, v any, limit int64) bool {
	if err := apijson.Decode(w, r, v, limit); err != nil {
		apijson.Error(w, http.StatusBadRequest, "bad_request", err.Error())
		return false
	}
	return true
}

// blockingQuery handles ?index=N&wait=D: when index is given the request
// waits (at most wait, default 30s) until the store moves past index. It
// reports false after it has answered a bad query itself.
func blockingQuery(w http.ResponseWriter, r *http.Request, current func(context.Context) (int64, error), waitFn func(ctx context.Context, after int64)) bool {
	q := r.URL.Query()
	if q.Get("index") == "" {
		return true
	}
	index, err := strconv.ParseInt(q.Get("index"), 10, 64)
	if err != nil || index < 0 {
		apijson.Error(w, http.StatusBadRequest, "invalid", "index must be a non-negative integer")
		return false
	}
	wait := 30 * time.Second
	if ws := q.Get("wait"); ws != "" {
		if wait, err = time.ParseDuration(ws); err != nil || wait <= 0 {
			apijson.Error(w, http.StatusBadRequest, "invalid", "wait must be a positive duration such as 30s")
			return false
		}
	}
	wait = min(wait, maxWait)
	rev, err := current(r.Context())
	if err != nil || rev > index {
		return true
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	waitFn(ctx, index)
	return true
}

func setIndex(w http.ResponseWriter, rev int64) {
	w.Header().Set("X-Fedkeeper-Index", strconv.FormatInt(rev, 10))
}

func (s *Server) live(w http.ResponseWriter, r *http.Request) {
	if s.Quorum != nil {
		apijson.Write(w, http.StatusOK, s.Quorum.Health())
		return
	}
	apijson.Write(w, http.StatusOK, map[string]string{"status": "ok", "node": s.Name, "version": version.Version})
}

func (s *Server) caCert(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Write(s.CA.CertPEM())
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	apijson.Write(w, http.StatusOK, map[string]any{"name": id.Name, "role": id.Role, "federation": id.Federation, "serial": id.Serial, "not_after": id.NotAfter})
}
