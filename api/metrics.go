package api

import (
	"context"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/fedkeeper/fedkeeper/client"
	"github.com/fedkeeper/fedkeeper/health"
	"github.com/fedkeeper/fedkeeper/internal/apijson"
	"github.com/fedkeeper/fedkeeper/membership"
	"github.com/fedkeeper/fedkeeper/metrics"
	"github.com/fedkeeper/fedkeeper/pki"
)

// ProjectMetrics is the federation-wide aggregate of a project's members'
// metrics: each supernode holds its own members', so the answer merges
// every supernode's part.
type ProjectMetrics struct {
	metrics.ProjectAggregate
	// Missing lists supernodes whose part could not be had; the aggregate
	// leaves their members out.
	Missing []string `json:"missing,omitempty"`
}

func (s *Server) localMetrics(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	apijson.Write(w, http.StatusOK, s.History.Aggregate(r.URL.Query().Get("project")))
}

func (s *Server) projectMetrics(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	project := r.URL.Query().Get("project")
	if project != "" {
		if err := membership.ValidateProject(project); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	supernodes, err := s.Members.Supernodes(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	parts := []metrics.ProjectAggregate{s.History.Aggregate(project)}
	var missing []string
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, sn := range supernodes {
		if sn.Name == s.Name || sn.Address == "" {
			continue
		}
		wg.Go(func() {
			part, err := s.peerAggregate(r.Context(), sn.Address, project)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				s.Log.Debug("metrics of a supernode not had", "supernode", sn.Name, "err", err)
				missing = append(missing, sn.Name)
				return
			}
			parts = append(parts, part)
		})
	}
	wg.Wait()
	agg := metrics.Merge(parts...)
	agg.Project = project
	apijson.Write(w, http.StatusOK, ProjectMetrics{ProjectAggregate: agg, Missing: missing})
}

func (s *Server) peerAggregate(ctx context.Context, addr, project string) (metrics.ProjectAggregate, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var part metrics.ProjectAggregate
	err := client.Call(ctx, s.PeerClient, http.MethodGet, "https://"+addr+"/v1/metrics/local?project="+url.QueryEscape(project), nil, &part)
	return part, err
}

// prometheusSD is a Prometheus HTTP service-discovery target list of the
// healthy nodes, so that an existing Prometheus scrapes the federation
// with no hand-kept target file. Targets speak HTTPS with certificates of
// the federation CA.
func (s *Server) prometheusSD(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	nodes, _, err := s.Members.List(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	recs, err := health.Records(r.Context(), s.Store.Client)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var sd []metrics.SDNode
	for _, n := range nodes {
		rec := recs[n.Name]
		healthy := n.Status == membership.StatusAlive && rec.Status != health.Critical && rec.Status != health.Suspect
		project := ""
		if len(n.Projects) > 0 {
			project = n.Projects[0]
		}
		sd = append(sd, metrics.SDNode{Name: n.Name, Role: string(n.Role), Project: project, Site: n.Site, Address: n.Address, Healthy: healthy})
	}
	targets := metrics.SDTargets(sd)
	for i := range targets {
		targets[i].Labels["__scheme__"] = "https"
	}
	apijson.Write(w, http.StatusOK, targets)
}
