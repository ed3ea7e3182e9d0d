package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/fedkeeper/fedkeeper/events"
	"github.com/fedkeeper/fedkeeper/internal/apijson"
	"github.com/fedkeeper/fedkeeper/pki"
	"github.com/fedkeeper/fedkeeper/quorum"
)

// AddSupernodeRequest is the body of POST /v1/supernodes.
type AddSupernodeRequest struct {
	Name    string `json:"name"`
	PeerURL string `json:"peer_url"`
	Standby bool   `json:"standby,omitempty"`
}

// AddSupernodeResponse carries the token the new supernode joins with.
type AddSupernodeResponse struct {
	Token string `json:"token"`
}

func (s *Server) addSupernode(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	var in AddSupernodeRequest
	if !decode(w, r, &in) {
		return
	}
	token, err := s.Quorum.Add(r.Context(), in.Name, in.PeerURL, in.Standby, id.Name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	apijson.Write(w, http.StatusCreated, AddSupernodeResponse{Token: token})
}

func (s *Server) joinSupernode(w http.ResponseWriter, r *http.Request) {
	var in quorum.JoinRequest
	if !decode(w, r, &in) {
		return
	}
	resp, err := s.Quorum.Join(r.Context(), s.Authority, in)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	apijson.Write(w, http.StatusOK, resp)
}

// RejoinResponse tells a removed supernode how to start its store again.
type RejoinResponse struct {
	InitialCluster string `json:"initial_cluster"`
}

func (s *Server) rejoinSupernode(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	name := r.PathValue("name")
	if name != id.Name {
		apijson.Error(w, http.StatusForbidden, "forbidden", fmt.Sprintf("supernode %q may rejoin only itself", id.Name))
		return
	}
	initial, err := s.Quorum.Rejoin(r.Context(), name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	apijson.Write(w, http.StatusOK, RejoinResponse{InitialCluster: initial})
}

func (s *Server) removeSupernode(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	if err := s.Quorum.Remove(r.Context(), r.PathValue("name")); err != nil {
		s.fail(w, r, err)
		return
	}
	apijson.Write(w, http.StatusOK, map[string]string{"status": "removed", "supernode": r.PathValue("name")})
}

func (s *Server) listSupernodes(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	list, err := s.Quorum.List(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	apijson.Write(w, http.StatusOK, list)
}

func (s *Server) snapshot(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="fedkeeper.snapshot"`)
	n, err := s.Store.SaveSnapshot(r.Context(), w)
	switch {
	case err != nil && n == 0:
		// Nothing sent yet: the client gets a proper error.
		w.Header().Del("Content-Disposition")
		s.fail(w, r, err)
	case err != nil:
		// Streaming had begun with status 200; cutting the body short is
		// all that is left, and the client sees a truncated download.
		s.Log.Error("snapshot cut short", "bytes", n, "err", err)
		panic(http.ErrAbortHandler)
	default:
		s.Log.Info("snapshot taken", "by", id.Name, "bytes", n)
	}
}

func (s *Server) listEvents(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	q := r.URL.Query()
	f := events.Filter{Node: q.Get("node")}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 10000 {
			apijson.Error(w, http.StatusBadRequest, "invalid", "limit must be between 1 and 10000")
			return
		}
		f.Limit = n
	}
	if wantsStream(r) {
		s.streamEvents(w, r, f)
		return
	}
	if !blockingQuery(w, r, s.Events.Revision, s.Events.Wait) {
		return
	}
	if i := q.Get("index"); i != "" {
		f.AfterRevision, _ = strconv.ParseInt(i, 10, 64)
	}
	list, rev, err := s.Events.List(r.Context(), f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if list == nil {
		list = []events.Event{}
	}
	setIndex(w, rev)
	apijson.Write(w, http.StatusOK, list)
}

// streamEvents sends events as Server-Sent Events as they are written,
// starting with the newest f.Limit ones (or after Last-Event-ID, which a
// reconnecting browser sends), until the client goes away.
func (s *Server) streamEvents(w http.ResponseWriter, r *http.Request, f events.Filter) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		apijson.Error(w, http.StatusInternalServerError, "internal", "streaming is not supported here")
		return
	}
	if last := r.Header.Get("Last-Event-ID"); last != "" {
		f.AfterRevision, _ = strconv.ParseInt(last, 10, 64)
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()
	ctx := r.Context()
	for ctx.Err() == nil {
		list, rev, err := s.Events.List(ctx, f)
		if err != nil {
			// The client reconnects with Last-Event-ID and resumes.
			fmt.Fprintf(w, ": error: %s\n\n", strings.ReplaceAll(err.Error(), "\n", " "))
			flusher.Flush()
			return
		}
		for _, e := range list {
			b, _ := json.Marshal(e)
			fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", e.Revision, e.Kind, b)
			f.AfterRevision = max(f.AfterRevision, e.Revision)
		}
		if len(list) == 0 {
			// A comment keeps proxies from closing an idle stream.
			fmt.Fprint(w, ": idle\n\n")
		}
		flusher.Flush()
		f.Limit = 0
		wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		s.Events.Wait(wctx, max(f.AfterRevision, rev))
		cancel()
	}
}

// PutKVRequest is the body of PUT /v1/kv/{key}.
type PutKVRequest struct {
	Value string `json:"value"`
	// PrevRevision, when set, makes the write conditional: 0 means the key
	// must not exist, N that it was last written at revision N.
	PrevRevision *int64 `json:"prev_revision,omitempty"`
}

func (s *Server) getKV(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	e, err := s.KV.Get(r.Context(), r.PathValue("key"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	apijson.Write(w, http.StatusOK, e)
}

func (s *Server) putKV(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	var in PutKVRequest
	if !decode(w, r, &in) {
		return
	}
	prev := int64(-1)
	if in.PrevRevision != nil {
		prev = *in.PrevRevision
	}
	e, err := s.KV.Put(r.Context(), r.PathValue("key"), in.Value, prev)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	apijson.Write(w, http.StatusOK, e)
}

func (s *Server) deleteKV(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	if err := s.KV.Delete(r.Context(), r.PathValue("key")); err != nil {
		s.fail(w, r, err)
		return
	}
	apijson.Write(w, http.StatusOK, map[string]string{"status": "deleted", "key": r.PathValue("key")})
}
