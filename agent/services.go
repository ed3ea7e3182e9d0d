package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fedkeeper/fedkeeper/api"
	"github.com/fedkeeper/fedkeeper/client"
	"github.com/fedkeeper/fedkeeper/health"
	"github.com/fedkeeper/fedkeeper/internal/apijson"
	"github.com/fedkeeper/fedkeeper/internal/atomicfile"
	"github.com/fedkeeper/fedkeeper/internal/wait"
	"github.com/fedkeeper/fedkeeper/services"
)

// File names in the data directory of the node's services.
const (
	// servicesFile keeps the registrations made through the local API, so
	// that a restarted agent registers them again.
	servicesFile = "services.json"
	// socketFile is the local API's Unix socket.
	socketFile = "agent.sock"
)

// Sources of a registration.
const (
	// SourceConfig is a service declared in agent.yaml: only an edit of
	// that file changes it.
	SourceConfig = "config"
	// SourceAPI is a service registered through the local API.
	SourceAPI = "api"
)

// Service is a registration as the agent's local API shows it: with its
// status, where it comes from and the latest result of each of its checks.
type Service struct {
	services.Report
	Source  string          `json:"source"`
	Results []health.Result `json:"results"`
}

// serviceStatus is the status of a service whose checks' latest results
// are results: critical until each check has run once, so that no client
// is sent to an instance before it is known to work, then the worst of
// them. The output names the checks that are waiting or not passing.
func serviceStatus(results []health.Result) (health.Status, string) {
	var waiting, failing []string
	for _, r := range results {
		switch {
		case r.Time.IsZero():
			waiting = append(waiting, r.Name)
		case r.Status != health.Passing:
			first, _, _ := strings.Cut(strings.TrimSpace(r.Output), "\n")
			failing = append(failing, fmt.Sprintf("%s %s: %s", r.Name, r.Status, first))
		}
	}
	status := health.Overall(results)
	if len(waiting) > 0 {
		status = health.Critical
		failing = append([]string{"waiting for the first run of " + strings.Join(waiting, ", ")}, failing...)
	}
	return status, health.CutOutput(strings.Join(failing, "; "))
}

// localService is one registered service and the runner of its checks.
type localService struct {
	reg      services.Registration
	declared bool
	checks   *health.Runner
	// stop ends the checks' runs once they have started.
	stop context.CancelFunc
}

func newLocalService(reg services.Registration, declared bool, log *slog.Logger) *localService {
	return &localService{reg: reg, declared: declared, checks: health.NewRunner(reg.Checks, log.With("service", reg.ID))}
}

func (s *localService) halt() {
	if s.stop != nil {
		s.stop()
	}
}

// serviceTable holds the node's services: those declared in agent.yaml and
// those registered through the local API. Its methods are safe for
// concurrent use.
type serviceTable struct {
	dir     string
	project string
	log     *slog.Logger

	mu   sync.Mutex
	byID map[string]*localService
	// run is what the services' checks run under: set by start, it ends
	// when the agent stops.
	run context.Context
	// reopened says a new session was opened since the last sync: the
	// federation holds none of the node's services any more.
	reopened bool
	// changed wakes the sync loop; one pending wake-up stands for any
	// number of changes, which is how changes coalesce.
	changed chan struct{}
}

// openServiceTable loads the registrations of the node whose data
// directory is dir: declared ones (with their defaults filled in) and those
// kept in services.json. A registration kept there under the ID of a
// declared one gives way to it: the configuration file is the operator's
// last word.
func openServiceTable(dir, project string, declared []services.Registration, log *slog.Logger) (*serviceTable, error) {
	t := &serviceTable{dir: dir, project: project, log: log, byID: map[string]*localService{}, changed: make(chan struct{}, 1)}
	for _, reg := range declared {
		t.byID[reg.ID] = newLocalService(reg, true, log)
	}
	path := filepath.Join(dir, servicesFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return t, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read registered services: %w", err)
	}
	var kept []services.Registration
	if err := apijson.Unmarshal(bytes.NewReader(b), &kept); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var regs []services.Registration
	for _, reg := range kept {
		reg = reg.WithDefaults(project)
		if s := t.byID[reg.ID]; s != nil && s.declared {
			log.Warn("a registered service is now declared in the configuration file; the declaration wins", "service", reg.ID, "file", path)
			continue
		}
		regs = append(regs, reg)
	}
	if err := services.ValidateSet(slices.Concat(declared, regs)); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, reg := range regs {
		t.byID[reg.ID] = newLocalService(reg, false, log)
	}
	if len(regs) < len(kept) {
		if err := t.save(); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// registrations lists every registration, sorted by ID. t.mu must be held
// once the table is shared.
func (t *serviceTable) registrations() []services.Registration {
	var regs []services.Registration
	for _, id := range slices.Sorted(maps.Keys(t.byID)) {
		regs = append(regs, t.byID[id].reg)
	}
	return regs
}

// save writes the registrations made through the local API to
// services.json. t.mu must be held once the table is shared.
func (t *serviceTable) save() error {
	kept := []services.Registration{}
	for _, reg := range t.registrations() {
		if !t.byID[reg.ID].declared {
			kept = append(kept, reg)
		}
	}
	b, err := json.MarshalIndent(kept, "", "  ")
	if err != nil {
		return fmt.Errorf("encode registered services: %w", err)
	}
	return atomicfile.Write(filepath.Join(t.dir, servicesFile), append(b, '\n'), 0o600)
}

// start runs every service's checks until ctx ends.
func (t *serviceTable) start(ctx context.Context) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.run = ctx
	for _, s := range t.byID {
		t.runChecks(s)
	}
}

// runChecks starts the checks of s. t.mu must be held.
func (t *serviceTable) runChecks(s *localService) {
	ctx, stop := context.WithCancel(t.run)
	s.stop = stop
	s.checks.OnChange(func(health.Result) { t.notify() })
	go s.checks.Run(ctx)
}

func (s *localService) view() Service {
	results := s.checks.Results()
	status, output := serviceStatus(results)
	source := SourceAPI
	if s.declared {
		source = SourceConfig
	}
	return Service{Report: services.Report{Registration: s.reg, Status: status, Output: output}, Source: source, Results: results}
}

// list returns every service with its current status, sorted by ID.
func (t *serviceTable) list() []Service {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Service, 0, len(t.byID))
	for _, reg := range t.registrations() {
		out = append(out, t.byID[reg.ID].view())
	}
	return out
}

// reports is the set of services as the federation is told of it. The
// checks themselves stay on the node: only their status leaves it.
func (t *serviceTable) reports() []services.Report {
	list := t.list()
	out := make([]services.Report, len(list))
	for i, s := range list {
		out[i] = s.Report
		out[i].Checks = nil
	}
	return out
}

// localError is a refusal of the local API.
type localError struct {
	status int
	code   string
	msg    string
}

func (e *localError) Error() string { return e.msg }

func (t *serviceTable) configConflict(id string) error {
	return &localError{http.StatusConflict, "conflict",
		fmt.Sprintf("service %q is declared in %s: edit that file and restart the agent to change or remove it", id, filepath.Join(t.dir, configFile))}
}

// register adds reg, which has its defaults filled in, or replaces the
// registration with its ID; it is kept in services.json before it takes
// effect.
func (t *serviceTable) register(reg services.Registration) (Service, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.byID[reg.ID]
	switch {
	case old != nil && old.declared:
		return Service{}, t.configConflict(reg.ID)
	case old != nil && reflect.DeepEqual(old.reg, reg):
		// Registering again what is registered keeps the checks' results,
		// so a start-up script that always registers does not make a
		// working instance critical until its checks run again.
		return old.view(), nil
	}
	s := newLocalService(reg, false, t.log)
	t.byID[reg.ID] = s
	err := services.ValidateSet(t.registrations())
	if err != nil {
		err = &localError{http.StatusBadRequest, "invalid", err.Error()}
	} else {
		err = t.save()
	}
	if err != nil {
		if old == nil {
			delete(t.byID, reg.ID)
		} else {
			t.byID[reg.ID] = old
		}
		return Service{}, err
	}
	if old != nil {
		old.halt()
	}
	t.runChecks(s)
	t.log.Info("service registered", "service", reg.ID, "name", reg.Name, "port", reg.Port)
	t.notify()
	return s.view(), nil
}

// deregister removes the registration with the given ID.
func (t *serviceTable) deregister(id string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.byID[id]
	switch {
	case s == nil:
		return &localError{http.StatusNotFound, "not_found", fmt.Sprintf("no service %q is registered on this node", id)}
	case s.declared:
		return t.configConflict(id)
	}
	delete(t.byID, id)
	if err := t.save(); err != nil {
		t.byID[id] = s
		return err
	}
	s.halt()
	t.log.Info("service deregistered", "service", id)
	t.notify()
	return nil
}

// notify wakes the sync loop.
func (t *serviceTable) notify() {
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// sessionOpened tells the table that the node has a new session: the
// services bound to the old one are gone and are registered again.
func (t *serviceTable) sessionOpened() {
	t.mu.Lock()
	t.reopened = true
	t.mu.Unlock()
	t.notify()
}

func (t *serviceTable) takeReopened() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.reopened
	t.reopened = false
	return r
}

// Timing of the sync loop.
const (
	syncTimeout    = 15 * time.Second
	syncMinBackoff = time.Second
	syncMaxBackoff = 10 * time.Second
)

// syncTo keeps the federation's copy of node's services equal to the
// table until ctx ends: it sends the whole set after every change, and
// again after a new session is opened. A set that cannot be sent yet is
// retried with backoff; changes made meanwhile join it, so only the
// latest set goes out.
func (t *serviceTable) syncTo(ctx context.Context, c *client.Client, node string) {
	path := "/v1/services/nodes/" + url.PathEscape(node)
	// held is what the federation holds, when known: nothing at first,
	// since the agent starts with a new session.
	var held []services.Report
	known := true
	backoff := syncMinBackoff
	t.notify()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.changed:
		}
		if t.takeReopened() {
			held, known = nil, true
		}
		set := t.reports()
		if known && slices.EqualFunc(set, held, func(a, b services.Report) bool { return reflect.DeepEqual(a, b) }) {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, syncTimeout)
		// The set replaces whatever was there, so sending it twice is
		// harmless.
		err := c.DoIdempotent(pctx, http.MethodPut, path, api.ServiceSet{Services: set}, nil)
		cancel()
		if err == nil {
			held, known, backoff = set, true, syncMinBackoff
			t.log.Debug("services synced", "count", len(set))
			continue
		}
		if ctx.Err() != nil {
			return
		}
		known = false
		if !retryable(err) {
			t.log.Error("the federation refused the node's services; they are sent again after the next change", "err", err)
			continue
		}
		// Once per outage is enough to tell the operator.
		level := slog.LevelDebug
		if backoff == syncMinBackoff {
			level = slog.LevelWarn
		}
		t.log.Log(ctx, level, "services not synced; retrying until the federation takes them", "err", err, "retry_in", backoff)
		if !wait.Sleep(ctx, backoff) {
			return
		}
		backoff = min(2*backoff, syncMaxBackoff)
		t.notify()
	}
}

// retryable tells a failed sync that may succeed unchanged: the node has
// no session yet (one is being opened), or no supernode could take it.
func retryable(err error) bool {
	var apiErr *client.Error
	if !errors.As(err, &apiErr) {
		return true
	}
	return apiErr.Code == "no_session" || apiErr.Status >= http.StatusInternalServerError
}

// The local API serves the node's own user on a Unix socket: reaching it
// takes access to the data directory, so it needs no other
// authentication.

// maxLocalBody bounds a request body of the local API.
const maxLocalBody = 1 << 20

func (t *serviceTable) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/agent/services", func(w http.ResponseWriter, r *http.Request) {
		apijson.Write(w, http.StatusOK, t.list())
	})
	mux.HandleFunc("PUT /v1/agent/services/{id}", func(w http.ResponseWriter, r *http.Request) {
		var reg services.Registration
		if err := apijson.Decode(w, r, &reg, maxLocalBody); err != nil {
			apijson.Error(w, http.StatusBadRequest, "bad_request", err.Error())
			return
		}
		id := r.PathValue("id")
		switch {
		case reg.ID == "":
			reg.ID = id
		case reg.ID != id:
			apijson.Error(w, http.StatusBadRequest, "invalid", fmt.Sprintf("id %q in the body differs from %q in the path", reg.ID, id))
			return
		}
		s, err := t.register(reg.WithDefaults(t.project))
		if err != nil {
			writeFailure(w, err)
			return
		}
		apijson.Write(w, http.StatusOK, s)
	})
	mux.HandleFunc("DELETE /v1/agent/services/{id}", func(w http.ResponseWriter, r *http.Request) {
		if err := t.deregister(r.PathValue("id")); err != nil {
			writeFailure(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

func writeFailure(w http.ResponseWriter, err error) {
	var le *localError
	if errors.As(err, &le) {
		apijson.Error(w, le.status, le.code, le.msg)
		return
	}
	apijson.Error(w, http.StatusInternalServerError, "internal", err.Error())
}

// maxSocketPath is the longest path a Unix socket may have on Linux.
const maxSocketPath = 107

// listenLocal opens the local API's socket in dir, readable and writable
// by the agent's user only.
func listenLocal(dir string) (net.Listener, error) {
	path := filepath.Join(dir, socketFile)
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("local API socket %s: longer than the %d bytes a Unix socket path may have; use a shorter --data-dir", path, maxSocketPath)
	}
	// A socket left by a killed agent is in the way; one that an agent
	// still answers on belongs to that agent.
	if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
		conn.Close()
		return nil, fmt.Errorf("another agent is running with data directory %s: it answers on %s", dir, path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale local API socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen for the local API on %s: %w", path, err)
	}
	// Connecting takes write permission on the socket, which the usual
	// umask already withholds from others until this chmod.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("restrict the local API socket: %w", err)
	}
	return ln, nil
}

// localClient reaches the local API of the agent whose data directory is
// dir, whatever host a request's URL names.
func localClient(dir string) *http.Client {
	path := filepath.Join(dir, socketFile)
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

// CallLocal makes one JSON exchange with the local API of the agent whose
// data directory is dir, path being for instance /v1/agent/services. An
// error answer is a *client.Error.
func CallLocal(ctx context.Context, dir, method, path string, in, out any) error {
	hc := localClient(dir)
	defer hc.CloseIdleConnections()
	err := client.Call(ctx, hc, method, "http://agent"+path, in, out)
	var apiErr *client.Error
	var opErr *net.OpError
	switch {
	case err == nil, errors.As(err, &apiErr):
		return err
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return fmt.Errorf("no agent is running with data directory %s: %w", dir, opErr)
	}
	return fmt.Errorf("local API of the agent in %s: %w", dir, err)
}
