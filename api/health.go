package api

import (
	"net/http"

	"github.com/fedkeeper/fedkeeper/health"
	"github.com/fedkeeper/fedkeeper/internal/apijson"
	"github.com/fedkeeper/fedkeeper/membership"
	"github.com/fedkeeper/fedkeeper/pki"
)

// ConfirmRequest is the body of POST /v1/health/confirm.
type ConfirmRequest struct {
	Node string `json:"node"`
}

// confirmHealth probes a member for another supernode that cannot reach it.
func (s *Server) confirmHealth(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	var in ConfirmRequest
	if !decode(w, r, &in) {
		return
	}
	v, err := s.Prober.Confirm(r.Context(), in.Node)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	apijson.Write(w, http.StatusOK, v)
}

func (s *Server) healthRecords(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	recs, err := health.Records(r.Context(), s.Store.Client)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	apijson.Write(w, http.StatusOK, recs)
}

// withHealth fills in the nodes' health from their records, when this
// server probes members.
func (s *Server) withHealth(r *http.Request, nodes []membership.Node) error {
	if s.Prober == nil {
		return nil
	}
	var names []string
	if len(nodes) == 1 {
		// One node shown: its record, not all of them.
		names = []string{nodes[0].Name}
	}
	recs, err := health.Records(r.Context(), s.Store.Client, names...)
	if err != nil {
		return err
	}
	for i := range nodes {
		if rec, ok := recs[nodes[i].Name]; ok {
			nodes[i].Health, nodes[i].HealthReason = string(rec.Status), rec.Reason
		}
	}
	return nil
}
