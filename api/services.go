package api

import (
	"context"
	"fmt"
	"net/http"
	"strconv"

	"github.com/fedkeeper/fedkeeper/internal/apijson"
	"github.com/fedkeeper/fedkeeper/pki"
	"github.com/fedkeeper/fedkeeper/services"
)

// ServiceSet is what an agent sends to register its node's services: the
// whole set, which replaces whatever the node had registered.
type ServiceSet struct {
	Services []services.Report `json:"services"`
}

func (s *Server) serviceRoutes(mux *http.ServeMux, any, nodes []pki.Role) {
	mux.Handle("PUT /v1/services/nodes/{node}", s.auth(nodes, s.syncServices))
	mux.Handle("GET /v1/services", s.auth(any, s.listServices))
	mux.Handle("GET /v1/services/{name}", s.auth(any, s.showService))
}

func (s *Server) syncServices(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	name := r.PathValue("node")
	if id.Name != name {
		apijson.Error(w, http.StatusForbidden, "forbidden", "a node registers only its own services")
		return
	}
	var in ServiceSet
	if !decode(w, r, &in) {
		return
	}
	node, err := s.Members.Get(r.Context(), name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	rev, err := s.Services.Sync(r.Context(), node, in.Services)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	apijson.Write(w, http.StatusOK, map[string]int64{"revision": rev})
}

// viewReady answers 503 while the supernode's registry view has not loaded.
func (s *Server) viewReady(w http.ResponseWriter, r *http.Request) bool {
	if !s.ServiceView.Ready() {
		apijson.Error(w, http.StatusServiceUnavailable, "unavailable", "this supernode has not loaded the service registry yet; ask another")
		return false
	}
	return blockingQuery(w, r, func(context.Context) (int64, error) { return s.ServiceView.Revision(), nil }, s.ServiceView.Wait)
}

func (s *Server) listServices(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	if !s.viewReady(w, r) {
		return
	}
	setIndex(w, s.ServiceView.Revision())
	apijson.Write(w, http.StatusOK, s.ServiceView.Summaries(r.URL.Query().Get("project")))
}

func (s *Server) showService(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	if !s.viewReady(w, r) {
		return
	}
	q := r.URL.Query()
	passing, ok := flag(w, q.Get("passing"), "passing")
	if !ok {
		return
	}
	setIndex(w, s.ServiceView.Revision())
	entries, _ := s.ServiceView.Entries(services.Query{
		Name: r.PathValue("name"), Project: q.Get("project"), Tag: q.Get("tag"), Node: q.Get("node"), Serving: passing,
	})
	if entries == nil {
		entries = []services.Entry{}
	}
	apijson.Write(w, http.StatusOK, entries)
}

// flag reads a boolean query parameter; absent or empty is false.
func flag(w http.ResponseWriter, v, name string) (bool, bool) {
	if v == "" {
		return false, true
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		apijson.Error(w, http.StatusBadRequest, "invalid", fmt.Sprintf("%s=%q: want 1, 0, true or false", name, v))
		return false, false
	}
	return b, true
}
