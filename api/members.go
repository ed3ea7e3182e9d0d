package api

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/fedkeeper/fedkeeper/events"
	"github.com/fedkeeper/fedkeeper/internal/apijson"
	"github.com/fedkeeper/fedkeeper/internal/version"
	"github.com/fedkeeper/fedkeeper/membership"
	"github.com/fedkeeper/fedkeeper/pki"
)

// event records what an administrator or a node did, if the server keeps
// an event log; the change has happened either way.
func (s *Server) event(r *http.Request, e events.Event) {
	if s.Events == nil {
		return
	}
	if err := s.Events.Record(r.Context(), e); err != nil {
		s.Log.Warn("event not recorded", "kind", e.Kind, "node", e.Node, "err", err)
	}
}

// join admits a node (200 with its certificate) or records its request
// (202). With ?wait=D a pending request waits up to D for a decision.
func (s *Server) join(w http.ResponseWriter, r *http.Request) {
	var in membership.JoinInput
	if !decode(w, r, &in) {
		return
	}
	in.From = r.RemoteAddr
	var wait time.Duration
	if ws := r.URL.Query().Get("wait"); ws != "" {
		var err error
		if wait, err = time.ParseDuration(ws); err != nil || wait <= 0 {
			apijson.Error(w, http.StatusBadRequest, "invalid", "wait must be a positive duration such as 30s")
			return
		}
	}
	res, err := s.Members.Join(r.Context(), in)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if res.Status == membership.StatusPending && wait > 0 {
		// The revision is read after Join, which may itself have written
		// the request: waiting from before it would wake at once for our
		// own write. A decision between Join and this read is caught by
		// asking once more before waiting.
		rev, err := s.Members.Revision(r.Context())
		if err == nil {
			res, err = s.Members.Join(r.Context(), in)
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if res.Status == membership.StatusPending {
			ctx, cancel := context.WithTimeout(r.Context(), min(wait, maxWait))
			s.Members.WaitJoin(ctx, in.Name, rev)
			cancel()
			if res, err = s.Members.Join(r.Context(), in); err != nil {
				s.fail(w, r, err)
				return
			}
		}
	}
	status := http.StatusOK
	if res.Status == membership.StatusPending {
		status = http.StatusAccepted
	}
	apijson.Write(w, status, res)
}

func (s *Server) openSession(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	sess, err := s.Members.OpenSession(r.Context(), id.Name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	apijson.Write(w, http.StatusOK, sess)
}

func (s *Server) renewSession(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	var in struct {
		Lease int64 `json:"lease"`
	}
	if !decode(w, r, &in) {
		return
	}
	if err := s.Members.RenewSession(r.Context(), id.Name, in.Lease); err != nil {
		s.fail(w, r, err)
		return
	}
	apijson.Write(w, http.StatusOK, map[string]string{"status": "renewed"})
}

func (s *Server) listNodes(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	if !blockingQuery(w, r, s.Members.Revision, s.Members.WaitList) {
		return
	}
	nodes, rev, err := s.Members.List(r.Context())
	if err == nil {
		err = s.withHealth(r, nodes)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	setIndex(w, rev)
	apijson.Write(w, http.StatusOK, nodes)
}

func (s *Server) showNode(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	name := r.PathValue("name")
	// Members see only their own record: another node's detailed status is
	// not theirs to query (the node map has what they need).
	if id.Role == pki.RoleMember && id.Name != name {
		apijson.Error(w, http.StatusForbidden, "forbidden", fmt.Sprintf("member %q may read only its own record", id.Name))
		return
	}
	n, err := s.Members.Get(r.Context(), name)
	if err == nil {
		one := []membership.Node{n}
		err = s.withHealth(r, one)
		n = one[0]
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	apijson.Write(w, http.StatusOK, n)
}

func (s *Server) updateNode(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	name := r.PathValue("name")
	if !mayActOn(id, name) {
		apijson.Error(w, http.StatusForbidden, "forbidden", fmt.Sprintf("%s %q may not change the record of %q", id.Role, id.Name, name))
		return
	}
	var p membership.Profile
	if !decode(w, r, &p) {
		return
	}
	n, err := s.Members.Update(r.Context(), name, p)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	apijson.Write(w, http.StatusOK, n)
}

func (s *Server) removeNode(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	name := r.PathValue("name")
	if !mayActOn(id, name) {
		apijson.Error(w, http.StatusForbidden, "forbidden", fmt.Sprintf("%s %q may not remove %q", id.Role, id.Name, name))
		return
	}
	if err := s.Members.Remove(r.Context(), name); err != nil {
		s.fail(w, r, err)
		return
	}
	kind := "removed"
	if id.Name == name {
		kind = "left"
	}
	if s.Config != nil {
		if err := s.Config.ForgetNode(r.Context(), name); err != nil {
			s.Log.Warn("configuration status of a removed node not dropped", "node", name, "err", err)
		}
	}
	s.event(r, events.Event{Node: name, Kind: kind, By: id.Name})
	apijson.Write(w, http.StatusOK, map[string]string{"status": "removed", "node": name})
}

func (s *Server) approve(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	n, err := s.Members.Approve(r.Context(), r.PathValue("name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.event(r, events.Event{Node: n.Name, Kind: "approved", Old: string(membership.StatusPending), New: string(membership.RoleMember), By: id.Name})
	n.CertPEM = ""
	apijson.Write(w, http.StatusOK, n)
}

func (s *Server) deny(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	var in struct {
		Reason string `json:"reason"`
	}
	if !decode(w, r, &in) {
		return
	}
	if err := s.Members.Deny(r.Context(), r.PathValue("name"), in.Reason); err != nil {
		s.fail(w, r, err)
		return
	}
	s.event(r, events.Event{Node: r.PathValue("name"), Kind: "denied", Old: string(membership.StatusPending), New: string(membership.StatusDenied), By: id.Name, Message: in.Reason})
	apijson.Write(w, http.StatusOK, map[string]string{"status": "denied", "node": r.PathValue("name")})
}

// TokenRequest is the body of POST /v1/tokens.
type TokenRequest struct {
	Project string `json:"project,omitempty"`
	Uses    int    `json:"uses"`
	// TTL is a Go duration such as "24h".
	TTL string `json:"ttl"`
}

// TokenResponse carries a new token: the only time it is ever shown.
type TokenResponse struct {
	Token     string    `json:"token"`
	Project   string    `json:"project,omitempty"`
	Uses      int       `json:"uses"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	var in TokenRequest
	if !decode(w, r, &in) {
		return
	}
	ttl, err := time.ParseDuration(in.TTL)
	if err != nil {
		apijson.Error(w, http.StatusBadRequest, "invalid", fmt.Sprintf("ttl %q must be a duration such as 24h", in.TTL))
		return
	}
	token, tok, err := s.Members.CreateToken(r.Context(), in.Project, in.Uses, ttl, id.Name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	apijson.Write(w, http.StatusCreated, TokenResponse{Token: token, Project: tok.Project, Uses: tok.UsesLeft, ExpiresAt: tok.ExpiresAt})
}

func (s *Server) nodemap(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	if !blockingQuery(w, r, s.Members.Revision, s.Members.WaitList) {
		return
	}
	m, err := s.nodeMap(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	setIndex(w, m.Revision)
	apijson.Write(w, http.StatusOK, m)
}

func (s *Server) registrationXML(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	m, err := s.nodeMap(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	b, err := m.RegistrationXML(version.Version)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	setIndex(w, m.Revision)
	w.Header().Set("Content-Type", "application/xml")
	w.Write(b)
}

// nodeMap is the node map with each node's registered services among its
// endpoints.
func (s *Server) nodeMap(ctx context.Context) (membership.NodeMap, error) {
	m, err := s.Members.NodeMap(ctx)
	if err == nil && s.ServiceView != nil {
		s.ServiceView.AddEndpoints(&m)
	}
	return m, err
}
