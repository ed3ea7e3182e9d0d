package api

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"

	"github.com/fedkeeper/fedkeeper/configsync"
	"github.com/fedkeeper/fedkeeper/internal/apijson"
	"github.com/fedkeeper/fedkeeper/pki"
)

// configRoutes serves distributed configuration: administrators publish,
// supernodes and administrators read, agents read their own node's
// effective configuration and report what they applied.
func (s *Server) configRoutes(mux *http.ServeMux, admin, staff, any []pki.Role) {
	mux.Handle("POST /v1/config/{project}/publish", s.auth(admin, s.publishConfig))
	mux.Handle("POST /v1/config/{project}/rollback", s.auth(admin, s.rollbackConfig))
	mux.Handle("GET /v1/config/{project}/commits", s.auth(staff, s.configHistory))
	mux.Handle("GET /v1/config/{project}/commits/{seq}", s.auth(staff, s.configCommit))
	mux.Handle("GET /v1/config/{project}/diff", s.auth(staff, s.configDiff))
	mux.Handle("GET /v1/config/{project}/status", s.auth(staff, s.configStatus))
	mux.Handle("GET /v1/config/{project}/components/{component}/effective", s.auth(any, s.effectiveConfig))
	mux.Handle("PUT /v1/config/{project}/components/{component}/status", s.auth([]pki.Role{pki.RoleMember, pki.RoleSupernode}, s.reportConfig))
}

// layerOf reads the layer a request is about: the project from the path,
// component and node from the query.
func layerOf(r *http.Request) configsync.Layer {
	q := r.URL.Query()
	return configsync.Layer{Project: r.PathValue("project"), Component: q.Get("component"), Node: q.Get("node")}
}

// PublishFile is one file of a publish; Content is base64 in JSON.
type PublishFile struct {
	Path    string `json:"path"`
	Content []byte `json:"content"`
}

// PublishRequest is the body of POST /v1/config/{project}/publish. An
// empty file list clears the layer.
type PublishRequest struct {
	Component string        `json:"component,omitempty"`
	Node      string        `json:"node,omitempty"`
	Files     []PublishFile `json:"files"`
	Message   string        `json:"message,omitempty"`
	// ExpectSeq, when set, refuses the publish unless the layer's newest
	// commit is this one (0: none yet).
	ExpectSeq *int64 `json:"expect_seq,omitempty"`
}

func (s *Server) publishConfig(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	var in PublishRequest
	// Files travel as base64: a third more than the commit's limit, and
	// room for the names.
	if !decodeLimit(w, r, &in, configsync.MaxCommitBytes*4/3+MaxBody) {
		return
	}
	files := map[string][]byte{}
	for _, f := range in.Files {
		if _, dup := files[f.Path]; dup {
			apijson.Error(w, http.StatusBadRequest, "invalid", fmt.Sprintf("%s is given twice", f.Path))
			return
		}
		files[f.Path] = f.Content
	}
	l := configsync.Layer{Project: r.PathValue("project"), Component: in.Component, Node: in.Node}
	c, err := s.Config.Publish(r.Context(), l, files, in.Message, id.Name, in.ExpectSeq)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	apijson.Write(w, http.StatusCreated, c)
}

// RollbackRequest is the body of POST /v1/config/{project}/rollback.
type RollbackRequest struct {
	Component string `json:"component,omitempty"`
	Node      string `json:"node,omitempty"`
	Seq       int64  `json:"seq"`
}

func (s *Server) rollbackConfig(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	var in RollbackRequest
	if !decode(w, r, &in) {
		return
	}
	if in.Seq < 1 {
		apijson.Error(w, http.StatusBadRequest, "invalid", "seq must be a commit number, 1 or more")
		return
	}
	l := configsync.Layer{Project: r.PathValue("project"), Component: in.Component, Node: in.Node}
	c, err := s.Config.Rollback(r.Context(), l, in.Seq, id.Name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	apijson.Write(w, http.StatusCreated, c)
}

func (s *Server) configHistory(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	limit, err := intParam(r, "limit", 100)
	if err != nil {
		apijson.Error(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	list, err := s.Config.History(r.Context(), layerOf(r), int(limit))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	apijson.Write(w, http.StatusOK, list)
}

// CommitWithFiles is a commit with its files' bytes.
type CommitWithFiles struct {
	configsync.Commit
	Contents []configsync.File `json:"contents,omitempty"`
}

func (s *Server) configCommit(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	seq, err := strconv.ParseInt(r.PathValue("seq"), 10, 64)
	if err != nil || seq < 0 {
		apijson.Error(w, http.StatusBadRequest, "invalid", "commit number must be 0 (the newest) or more")
		return
	}
	c, err := s.Config.Commit(r.Context(), layerOf(r), seq)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := CommitWithFiles{Commit: c}
	if r.URL.Query().Get("files") == "1" {
		if out.Contents, err = s.Config.Files(r.Context(), c); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	apijson.Write(w, http.StatusOK, out)
}

func (s *Server) configDiff(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	from, err1 := intParam(r, "from", -1)
	to, err2 := intParam(r, "to", -1)
	if err1 != nil || err2 != nil || from < 0 || to < 0 {
		apijson.Error(w, http.StatusBadRequest, "invalid", "from and to must be commit numbers")
		return
	}
	changes, err := s.Config.Diff(r.Context(), layerOf(r), from, to)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	apijson.Write(w, http.StatusOK, changes)
}

func (s *Server) configStatus(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	list, err := s.Config.Statuses(r.Context(), r.PathValue("project"), r.URL.Query().Get("component"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	apijson.Write(w, http.StatusOK, list)
}

// effectiveConfig is what an agent applies; it is a blocking query on the
// three layers. A member reads only its own node's, in its own projects.
func (s *Server) effectiveConfig(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	project, component, node := r.PathValue("project"), r.PathValue("component"), r.URL.Query().Get("node")
	if id.Role == pki.RoleMember {
		if node != id.Name {
			apijson.Error(w, http.StatusForbidden, "forbidden", fmt.Sprintf("member %q may read only its own configuration (node=%s)", id.Name, id.Name))
			return
		}
		n, err := s.Members.Get(r.Context(), id.Name)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if !slices.Contains(n.Projects, project) {
			apijson.Error(w, http.StatusForbidden, "forbidden", fmt.Sprintf("member %q is not in project %s", id.Name, project))
			return
		}
	}
	if !blockingQuery(w, r, func(ctx context.Context) (int64, error) {
		eff, err := s.Config.Effective(ctx, project, component, node)
		return eff.Revision, err
	}, func(ctx context.Context, after int64) {
		s.Config.WaitEffective(ctx, project, component, node, after)
	}) {
		return
	}
	eff, err := s.Config.Effective(r.Context(), project, component, node)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	setIndex(w, eff.Revision)
	apijson.Write(w, http.StatusOK, eff)
}

// ReportRequest is the body of PUT .../components/{component}/status.
type ReportRequest struct {
	Version string `json:"version"`
	Error   string `json:"error,omitempty"`
	Failed  string `json:"failed,omitempty"`
}

func (s *Server) reportConfig(w http.ResponseWriter, r *http.Request, id pki.Identity) {
	var in ReportRequest
	if !decode(w, r, &in) {
		return
	}
	if id.Role == pki.RoleMember {
		n, err := s.Members.Get(r.Context(), id.Name)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if !slices.Contains(n.Projects, r.PathValue("project")) {
			apijson.Error(w, http.StatusForbidden, "forbidden", fmt.Sprintf("member %q is not in project %s", id.Name, r.PathValue("project")))
			return
		}
	}
	st := configsync.Status{Node: id.Name, Project: r.PathValue("project"), Component: r.PathValue("component"), Version: in.Version, Error: in.Error, Failed: in.Failed}
	if err := s.Config.PutStatus(r.Context(), st); err != nil {
		s.fail(w, r, err)
		return
	}
	apijson.Write(w, http.StatusOK, map[string]string{"status": "recorded"})
}

// intParam reads an integer query parameter, def when absent.
func intParam(r *http.Request, name string, def int64) (int64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s must be an integer", name)
	}
	return n, nil
}
