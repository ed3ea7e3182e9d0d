package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/fedkeeper/fedkeeper/api"
	"github.com/fedkeeper/fedkeeper/client"
	"github.com/fedkeeper/fedkeeper/health"
	"github.com/fedkeeper/fedkeeper/internal/apijson"
	"github.com/fedkeeper/fedkeeper/services"
)

var quiet = slog.New(slog.DiscardHandler)

// shortDir is a data directory whose socket path fits a Unix socket
// whatever the test's name.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "fk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startTable opens the service table of dir, runs its checks and serves
// its local API on the socket, until the test ends.
func startTable(t *testing.T, dir string, declared ...services.Registration) *serviceTable {
	t.Helper()
	tab, err := openServiceTable(dir, "CMIP6", declared, quiet)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tab.start(ctx)
	ln, err := listenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: tab.handler()}
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Close()
		cancel()
	})
	return tab
}

// localDo sends a raw request to the local API of dir.
func localDo(t *testing.T, dir, method, path, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://agent"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	hc := localClient(dir)
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp.StatusCode, b.Bytes()
}

// kept reads services.json: the port of each registration by ID.
func kept(t *testing.T, dir string) map[string]int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, servicesFile))
	if os.IsNotExist(err) {
		return map[string]int{}
	}
	if err != nil {
		t.Fatal(err)
	}
	var regs []services.Registration
	if err := json.Unmarshal(b, &regs); err != nil {
		t.Fatalf("services.json: %v\n%s", err, b)
	}
	out := map[string]int{}
	for _, r := range regs {
		out[r.ID] = r.Port
	}
	return out
}

var declaredIndex = services.Registration{ID: "index", Name: "index", Project: "CMIP6", Port: 8000, Protocol: services.ProtocolHTTP}

func TestLocalAPIRegistersReplacesDeletesAndRefuses(t *testing.T) {
	web := services.Registration{Name: "web", Port: 8080}
	many := make([]services.Registration, services.MaxPerNode-1)
	for i := range many {
		many[i] = services.Registration{Name: fmt.Sprintf("s%d", i), Port: 1000 + i}
	}
	for _, tc := range []struct {
		name               string
		before             []services.Registration // registered through the API first
		method, path, body string
		status             int
		want               string         // in the answer (the error message for a refusal)
		kept               map[string]int // services.json afterwards, ID to port
	}{
		{name: "a new service is registered and kept", method: http.MethodPut, path: "/v1/agent/services/web",
			body: `{"name":"web","port":8080,"tags":["a"]}`, status: 200, want: `"source": "api"`, kept: map[string]int{"web": 8080}},
		{name: "the path fills in the id", method: http.MethodPut, path: "/v1/agent/services/web-2",
			body: `{"name":"web","port":8081}`, status: 200, want: `"id": "web-2"`, kept: map[string]int{"web-2": 8081}},
		{name: "registering an id again replaces it", before: []services.Registration{web}, method: http.MethodPut, path: "/v1/agent/services/web",
			body: `{"id":"web","name":"web","port":9090}`, status: 200, want: `"port": 9090`, kept: map[string]int{"web": 9090}},
		{name: "deregistering forgets it", before: []services.Registration{web}, method: http.MethodDelete, path: "/v1/agent/services/web",
			status: 204, kept: map[string]int{}},
		{name: "deregistering an unknown id is not found", before: []services.Registration{web}, method: http.MethodDelete, path: "/v1/agent/services/nope",
			status: 404, want: `no service "nope"`, kept: map[string]int{"web": 8080}},
		{name: "a declared service cannot be replaced", method: http.MethodPut, path: "/v1/agent/services/index",
			body: `{"name":"index","port":9000}`, status: 409, want: configFile + ": edit that file", kept: map[string]int{}},
		{name: "a declared service cannot be deleted", method: http.MethodDelete, path: "/v1/agent/services/index",
			status: 409, want: "edit that file", kept: map[string]int{}},
		{name: "malformed JSON is refused", before: []services.Registration{web}, method: http.MethodPut, path: "/v1/agent/services/web",
			body: `{"name":`, status: 400, want: "request body: unexpected EOF", kept: map[string]int{"web": 8080}},
		{name: "an unknown field is refused", method: http.MethodPut, path: "/v1/agent/services/web",
			body: `{"name":"web","port":8080,"colour":"red"}`, status: 400, want: `unknown field "colour"`, kept: map[string]int{}},
		{name: "data after the JSON value is refused", method: http.MethodPut, path: "/v1/agent/services/web",
			body: `{"name":"web","port":8080} {}`, status: 400, want: "unexpected data after the JSON value", kept: map[string]int{}},
		{name: "an empty body is refused", method: http.MethodPut, path: "/v1/agent/services/web",
			status: 400, want: "request body is empty", kept: map[string]int{}},
		{name: "a body over 1 MiB is refused", method: http.MethodPut, path: "/v1/agent/services/web",
			body: `{"name":"web","port":8080,"path":"/` + strings.Repeat("a", maxLocalBody) + `"}`, status: 400, want: "larger than 1048576 bytes", kept: map[string]int{}},
		{name: "an id in the body must match the path", method: http.MethodPut, path: "/v1/agent/services/web",
			body: `{"id":"other","name":"web","port":8080}`, status: 400, want: `id "other" in the body differs from "web"`, kept: map[string]int{}},
		{name: "an invalid registration is refused and the old one kept", before: []services.Registration{web}, method: http.MethodPut, path: "/v1/agent/services/web",
			body: `{"name":"web","port":0}`, status: 400, want: `service "web": port 0 must be between 1 and 65535`, kept: map[string]int{"web": 8080}},
		{name: "an invalid check is refused", method: http.MethodPut, path: "/v1/agent/services/web",
			body: `{"name":"web","port":8080,"checks":[{"name":"h","type":"http"}]}`, status: 400, want: `check "h": url: required`, kept: map[string]int{}},
		{name: "a node's services are limited", before: many, method: http.MethodPut, path: "/v1/agent/services/web",
			body: `{"name":"web","port":8080}`, status: 400, want: fmt.Sprintf("at most %d services", services.MaxPerNode), kept: keptPorts(many)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := shortDir(t)
			tab := startTable(t, dir, declaredIndex)
			for _, r := range tc.before {
				if err := CallLocal(context.Background(), dir, http.MethodPut, "/v1/agent/services/"+r.Name, r, nil); err != nil {
					t.Fatal(err)
				}
			}
			fileBefore, _ := os.ReadFile(filepath.Join(dir, servicesFile))
			status, body := localDo(t, dir, tc.method, tc.path, tc.body)
			if status != tc.status {
				t.Fatalf("HTTP %d, want %d: %s", status, tc.status, body)
			}
			got := string(body)
			if status >= 400 {
				var e client.Error
				if err := json.Unmarshal(body, &e); err != nil || e.Code == "" {
					t.Fatalf("refusal is not in the API's error shape: %s", body)
				}
				got = e.Message
				if fileAfter, _ := os.ReadFile(filepath.Join(dir, servicesFile)); !bytes.Equal(fileBefore, fileAfter) {
					t.Errorf("a refused request changed %s:\n%s\nto\n%s", servicesFile, fileBefore, fileAfter)
				}
			}
			if !strings.Contains(got, tc.want) {
				t.Errorf("answer %s, want it to contain %q", got, tc.want)
			}
			if k := kept(t, dir); !maps.Equal(k, tc.kept) {
				t.Errorf("%s holds %v, want %v", servicesFile, k, tc.kept)
			}
			var ids []string
			for _, s := range tab.list() {
				ids = append(ids, s.ID)
			}
			want := append(slices.Collect(maps.Keys(tc.kept)), declaredIndex.ID)
			slices.Sort(want)
			if !slices.Equal(ids, want) {
				t.Errorf("the agent serves %v, want %v", ids, want)
			}
		})
	}
}

func keptPorts(regs []services.Registration) map[string]int {
	out := map[string]int{}
	for _, r := range regs {
		out[r.Name] = r.Port
	}
	return out
}

func TestListShowsSourceStatusAndDefaults(t *testing.T) {
	dir := shortDir(t)
	startTable(t, dir, declaredIndex)
	if err := CallLocal(context.Background(), dir, http.MethodPut, "/v1/agent/services/web", services.Registration{Name: "web", Port: 8080}, nil); err != nil {
		t.Fatal(err)
	}
	var list []Service
	if err := CallLocal(context.Background(), dir, http.MethodGet, "/v1/agent/services", nil, &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 {
		t.Fatalf("want index and web, got %+v", list)
	}
	for i, want := range []Service{
		{Report: services.Report{Registration: declaredIndex, Status: health.Passing}, Source: SourceConfig},
		{Report: services.Report{Registration: services.Registration{ID: "web", Name: "web", Project: "CMIP6", Port: 8080, Protocol: services.ProtocolTCP}, Status: health.Passing}, Source: SourceAPI},
	} {
		got := list[i]
		if len(got.Results) > 0 {
			t.Errorf("%s: results of checks it does not have: %+v", got.ID, got.Results)
		}
		got.Results = nil
		if !reflect.DeepEqual(got, want) {
			t.Errorf("service %d:\n got %+v\nwant %+v", i, got, want)
		}
	}
}

func TestSocketIsTheUsersAloneAndGoesWithTheAgent(t *testing.T) {
	dir := shortDir(t)
	path := filepath.Join(dir, socketFile)
	// A socket left behind by a killed agent does not stop the next one.
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := listenLocal(dir)
	if err != nil {
		t.Fatalf("a stale socket stopped the agent: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}
	if _, err := listenLocal(dir); err == nil || !strings.Contains(err.Error(), "another agent is running") {
		t.Errorf("a second agent on the same data directory: want refused, got %v", err)
	}
	ln.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket still there after close: %v", err)
	}
	if _, err := listenLocal(filepath.Join(dir, strings.Repeat("d", maxSocketPath))); err == nil || !strings.Contains(err.Error(), "shorter --data-dir") {
		t.Errorf("an overlong socket path: want a clear error, got %v", err)
	}
}

func TestRegistrationsSurviveARestart(t *testing.T) {
	dir := shortDir(t)
	ctx := context.Background()
	first, err := openServiceTable(dir, "CMIP6", []services.Registration{declaredIndex}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	first.start(runCtx)
	for _, r := range []services.Registration{{Name: "web", Port: 8080}, {Name: "thredds", Port: 8443, Protocol: "https", Tags: []string{"v5"}}} {
		if _, err := first.register(r.WithDefaults("CMIP6")); err != nil {
			t.Fatal(err)
		}
	}
	stop()

	sources := func(tab *serviceTable) map[string]string {
		m := map[string]string{}
		for _, s := range tab.list() {
			m[s.ID] = s.Source
		}
		return m
	}
	second := startTable(t, dir, declaredIndex)
	if got, want := sources(second), map[string]string{"index": SourceConfig, "web": SourceAPI, "thredds": SourceAPI}; !maps.Equal(got, want) {
		t.Fatalf("after a restart: %v, want %v", got, want)
	}

	// Moved into the configuration file, a registration is the file's.
	dir2 := shortDir(t)
	b, _ := os.ReadFile(filepath.Join(dir, servicesFile))
	os.WriteFile(filepath.Join(dir2, servicesFile), b, 0o600)
	web := services.Registration{ID: "web", Name: "web", Project: "CMIP6", Port: 9090, Protocol: services.ProtocolTCP}
	third := startTable(t, dir2, declaredIndex, web)
	if got, want := sources(third), map[string]string{"index": SourceConfig, "web": SourceConfig, "thredds": SourceAPI}; !maps.Equal(got, want) {
		t.Fatalf("with web declared: %v, want %v", got, want)
	}
	if got := kept(t, dir2); !maps.Equal(got, map[string]int{"thredds": 8443}) {
		t.Fatalf("%s still holds what the configuration declares: %v", servicesFile, got)
	}
}

func TestABadServicesFileStopsTheAgentAndNamesIt(t *testing.T) {
	for _, tc := range []struct {
		name, file, want string
	}{
		{"not JSON", `[{"name":`, "unexpected EOF"},
		{"an unknown field", `[{"name":"web","port":1,"colour":"red"}]`, `unknown field "colour"`},
		{"data after the list", `[{"name":"web","port":1}] x`, "unexpected data after the JSON value"},
		{"an invalid registration", `[{"name":"web","port":0}]`, "port 0"},
		{"one id twice", `[{"name":"web","port":1},{"name":"web","port":2}]`, `service id "web" is registered twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := shortDir(t)
			path := filepath.Join(dir, servicesFile)
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := Start(ctx, dir, validConfig(), "")
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error naming %s and saying %q, got %v", path, tc.want, err)
			}
		})
	}
}

func TestServiceStatusIsCriticalUntilEveryCheckRanThenTheWorst(t *testing.T) {
	ran := time.Now()
	res := func(name string, st health.Status, out string) health.Result {
		return health.Result{Name: name, Status: st, Output: out, Time: ran}
	}
	notRun := health.Result{Name: "slow", Status: health.Warning, Output: "not run yet"}
	long := strings.Repeat("é", health.MaxOutput)
	for _, tc := range []struct {
		name    string
		results []health.Result
		status  health.Status
		output  string
	}{
		{"no checks is passing", nil, health.Passing, ""},
		{"a check not run yet is critical", []health.Result{notRun}, health.Critical, "waiting for the first run of slow"},
		{"one check run is not enough", []health.Result{res("http", health.Passing, "GET /: 200 OK"), notRun}, health.Critical, "waiting for the first run of slow"},
		{"all passing is passing", []health.Result{res("http", health.Passing, "GET /: 200 OK"), res("tcp", health.Passing, "connected")}, health.Passing, ""},
		{"a warning makes a warning", []health.Result{res("http", health.Passing, "ok"), res("disk", health.Warning, "9% free")}, health.Warning, "disk warning: 9% free"},
		{"a failure names its check and the first line of its output", []health.Result{res("http", health.Critical, "GET /: 500 Internal Server Error, expected 200\n<html>"), res("disk", health.Warning, "9% free")},
			health.Critical, "http critical: GET /: 500 Internal Server Error, expected 200; disk warning: 9% free"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, output := serviceStatus(tc.results)
			if status != tc.status || output != tc.output {
				t.Fatalf("got %s %q, want %s %q", status, output, tc.status, tc.output)
			}
		})
	}
	t.Run("the output is bounded", func(t *testing.T) {
		status, output := serviceStatus([]health.Result{res("a", health.Critical, long), res("b", health.Critical, long)})
		if status != health.Critical || len(output) > health.MaxOutput || !utf8.ValidString(output) || !strings.HasPrefix(output, "a critical: é") {
			t.Fatalf("got %s, %d bytes, valid UTF-8 %v", status, len(output), utf8.ValidString(output))
		}
	})
}

func TestConfigValidateNamesTheBadService(t *testing.T) {
	for _, tc := range []struct {
		name     string
		services []services.Registration
		want     string
	}{
		{"no port", []services.Registration{{Name: "web"}}, `services: invalid: service "web": port 0`},
		{"a bad protocol", []services.Registration{{Name: "web", Port: 80, Protocol: "ftp"}}, `service "web": protocol "ftp"`},
		{"a bad check", []services.Registration{{Name: "web", Port: 80, Checks: []health.CheckConfig{{Name: "h", Type: "http"}}}}, `service "web": checks[0]: invalid: check "h": url: required`},
		{"one id twice", []services.Registration{{Name: "web", Port: 80}, {Name: "web", Port: 81}}, `service id "web" is registered twice`},
		{"a bad project", []services.Registration{{Name: "web", Port: 80, Project: "no_such"}}, `service "web": invalid: project "no_such"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := validConfig()
			cfg.Services = tc.services
			if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error containing %q, got %v", tc.want, err)
			}
		})
	}
	cfg := validConfig()
	cfg.Services = []services.Registration{{Name: "web", Port: 80}, {ID: "web-2", Name: "web", Port: 81}}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("valid services refused: %v", err)
	}
}

// fakeFed is the federation as a session and the sync loop see it: it
// opens sessions, renews them until told they expired, and records every
// service set it is sent.
type fakeFed struct {
	srv  *httptest.Server
	c    *client.Client
	puts chan api.ServiceSet

	mu      sync.Mutex
	lease   int64
	expired bool
	n       int
	// answer says how to answer the nth PUT (from 0); nil or 0 is 200.
	answer func(n int) (status int, code string)
}

func newFakeFed(t *testing.T) *fakeFed {
	t.Helper()
	f := &fakeFed{puts: make(chan api.ServiceSet, 100)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/session", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.lease++
		f.expired = false
		lease := f.lease
		f.mu.Unlock()
		apijson.Write(w, http.StatusOK, map[string]int64{"lease": lease, "ttl_s": 1})
	})
	mux.HandleFunc("POST /v1/session/renew", func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Lease int64 }
		json.NewDecoder(r.Body).Decode(&in)
		f.mu.Lock()
		ok := in.Lease == f.lease && !f.expired
		f.mu.Unlock()
		if !ok {
			apijson.Error(w, http.StatusNotFound, "session_expired", "no such session")
			return
		}
		apijson.Write(w, http.StatusOK, struct{}{})
	})
	mux.HandleFunc("PUT /v1/services/nodes/node1", func(w http.ResponseWriter, r *http.Request) {
		var set api.ServiceSet
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&set); err != nil {
			apijson.Error(w, http.StatusBadRequest, "bad_request", err.Error())
			return
		}
		f.mu.Lock()
		n, answer := f.n, f.answer
		f.n++
		f.mu.Unlock()
		f.puts <- set
		status, code := 0, ""
		if answer != nil {
			status, code = answer(n)
		}
		if status == 0 {
			apijson.Write(w, http.StatusOK, map[string]int64{"revision": int64(n + 1)})
			return
		}
		apijson.Error(w, status, code, "refused by the test")
	})
	f.srv = httptest.NewTLSServer(mux)
	t.Cleanup(f.srv.Close)
	f.c = client.New([]string{f.srv.URL}, f.srv.Client().Transport.(*http.Transport).TLSClientConfig)
	t.Cleanup(f.c.CloseIdle)
	return f
}

func (f *fakeFed) setAnswer(fn func(n int) (int, string)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answer = fn
}

// expire makes the current session lapse.
func (f *fakeFed) expire() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.expired = true
}

// next waits for the next PUT.
func (f *fakeFed) next(t *testing.T, timeout time.Duration) api.ServiceSet {
	t.Helper()
	select {
	case set := <-f.puts:
		return set
	case <-time.After(timeout):
		t.Fatalf("no service set sent within %v", timeout)
		return api.ServiceSet{}
	}
}

// none asserts that nothing is sent for d.
func (f *fakeFed) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case set := <-f.puts:
		t.Fatalf("unexpected service set sent: %+v", set)
	case <-time.After(d):
	}
}

// syncTable runs the sync loop of tab against f until the test ends.
func syncTable(t *testing.T, tab *serviceTable, f *fakeFed) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tab.syncTo(ctx, f.c, "node1")
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

func ids(set api.ServiceSet) []string {
	var out []string
	for _, r := range set.Services {
		out = append(out, r.ID)
	}
	return out
}

func TestSyncSendsOnlyChanges(t *testing.T) {
	f := newFakeFed(t)
	dir := shortDir(t)
	tab := startTable(t, dir)
	syncTable(t, tab, f)
	// A node without services has nothing to tell a new session.
	f.none(t, 500*time.Millisecond)

	if _, err := tab.register(services.Registration{Name: "web", Port: 8080}.WithDefaults("CMIP6")); err != nil {
		t.Fatal(err)
	}
	set := f.next(t, 5*time.Second)
	want := services.Report{Registration: services.Registration{ID: "web", Name: "web", Project: "CMIP6", Port: 8080, Protocol: "tcp"}, Status: health.Passing}
	if len(set.Services) != 1 || !reflect.DeepEqual(set.Services[0], want) {
		t.Fatalf("sent %+v, want %+v", set.Services, want)
	}
	// The same registration again changes nothing.
	if _, err := tab.register(services.Registration{Name: "web", Port: 8080}.WithDefaults("CMIP6")); err != nil {
		t.Fatal(err)
	}
	f.none(t, 500*time.Millisecond)

	if err := tab.deregister("web"); err != nil {
		t.Fatal(err)
	}
	if set := f.next(t, 5*time.Second); len(set.Services) != 0 || set.Services == nil {
		t.Fatalf("after the last service went: sent %+v, want an empty list", set)
	}
}

func TestSyncFollowsTheStatusOfTheChecks(t *testing.T) {
	f := newFakeFed(t)
	dir := shortDir(t)
	// The check's exit status is read from a file: 0 passing, 2 critical.
	// Its first run waits for the file, so the test sees the time before.
	state := filepath.Join(dir, "state")
	setState := func(code string) {
		if err := os.WriteFile(state, []byte(code), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	web := services.Registration{ID: "web", Name: "web", Project: "CMIP6", Port: 8080, Protocol: "tcp", Checks: []health.CheckConfig{
		{Name: "state", Type: health.TypeScript, Command: []string{"sh", "-c", `until [ -s "$0" ]; do sleep 0.05; done; exit "$(cat "$0")"`, state}, Interval: 3 * time.Second},
	}}
	tab := startTable(t, dir, web)
	syncTable(t, tab, f)

	// Until the check has run once the instance is not served.
	set := f.next(t, 5*time.Second)
	if got := set.Services[0]; got.Status != health.Critical || got.Output != "waiting for the first run of state" {
		t.Fatalf("first set: %+v, want critical until the check ran", got)
	}
	if set.Services[0].Checks != nil {
		t.Fatalf("the checks left the node: %+v", set.Services[0].Checks)
	}
	setState("2")
	set = f.next(t, 5*time.Second)
	if got := set.Services[0]; got.Status != health.Critical || !strings.Contains(got.Output, "state critical: exit status 2") {
		t.Fatalf("after the first run: %+v, want critical with the check's output", got)
	}
	setState("0")
	set = f.next(t, 5*time.Second)
	if got := set.Services[0]; got.Status != health.Passing || got.Output != "" {
		t.Fatalf("after recovery: %+v, want passing", got)
	}
	// Passing again and again is no change.
	f.none(t, 2500*time.Millisecond)
}

func TestSyncCoalescesChangesMadeWhileAPutIsUnderWay(t *testing.T) {
	f := newFakeFed(t)
	release := make(chan struct{})
	f.setAnswer(func(n int) (int, string) {
		if n == 0 {
			<-release
		}
		return 0, ""
	})
	tab := startTable(t, shortDir(t), declaredIndex)
	syncTable(t, tab, f)
	if got := ids(f.next(t, 5*time.Second)); !slices.Equal(got, []string{"index"}) {
		t.Fatalf("first set %v, want [index]", got)
	}
	for _, name := range []string{"a", "b", "c"} {
		if _, err := tab.register(services.Registration{Name: name, Port: 80}.WithDefaults("CMIP6")); err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	if got := ids(f.next(t, 5*time.Second)); !slices.Equal(got, []string{"a", "b", "c", "index"}) {
		t.Fatalf("second set %v, want every registration at once", got)
	}
	f.none(t, time.Second)
}

func TestSyncRetriesUntilTheFederationTakesTheSet(t *testing.T) {
	f := newFakeFed(t)
	f.setAnswer(func(n int) (int, string) {
		switch n {
		case 0:
			return http.StatusConflict, "no_session"
		case 1:
			return http.StatusServiceUnavailable, "unavailable"
		}
		return 0, ""
	})
	tab := startTable(t, shortDir(t), declaredIndex)
	syncTable(t, tab, f)
	start := time.Now()
	for i := range 3 {
		if got := ids(f.next(t, 15*time.Second)); !slices.Equal(got, []string{"index"}) {
			t.Fatalf("attempt %d sent %v, want [index]", i, got)
		}
	}
	// One second, then two, between the attempts.
	if took := time.Since(start); took < 2500*time.Millisecond {
		t.Errorf("three attempts within %v: no backoff", took)
	}
	f.none(t, 1500*time.Millisecond)
}

func TestSyncWaitsForAChangeAfterARefusal(t *testing.T) {
	f := newFakeFed(t)
	f.setAnswer(func(n int) (int, string) {
		if n == 0 {
			return http.StatusBadRequest, "invalid"
		}
		return 0, ""
	})
	tab := startTable(t, shortDir(t), declaredIndex)
	syncTable(t, tab, f)
	f.next(t, 5*time.Second)
	// Sending the same set again would be refused again.
	f.none(t, 2500*time.Millisecond)
	if _, err := tab.register(services.Registration{Name: "web", Port: 80}.WithDefaults("CMIP6")); err != nil {
		t.Fatal(err)
	}
	if got := ids(f.next(t, 5*time.Second)); !slices.Equal(got, []string{"index", "web"}) {
		t.Fatalf("after a change: sent %v, want [index web]", got)
	}
}

func TestSyncSendsTheSetAgainOnANewSession(t *testing.T) {
	f := newFakeFed(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := client.OpenSession(ctx, f.c, quiet)
	if err != nil {
		t.Fatal(err)
	}
	tab := startTable(t, shortDir(t), declaredIndex)
	s.OnOpen = tab.sessionOpened
	kept := make(chan error, 1)
	go func() { kept <- s.Keep(ctx) }()
	defer func() {
		cancel()
		if err := <-kept; err != nil {
			t.Errorf("Keep: %v", err)
		}
	}()
	syncTable(t, tab, f)
	first := f.next(t, 5*time.Second)
	f.none(t, 1500*time.Millisecond)

	// The supernodes drop the services with the lapsed session; the
	// agent registers them again on the new one.
	f.expire()
	again := f.next(t, 5*time.Second)
	if !reflect.DeepEqual(again, first) {
		t.Fatalf("sent %+v on the new session, want %+v again", again, first)
	}
	f.mu.Lock()
	lease := f.lease
	f.mu.Unlock()
	if lease != 2 {
		t.Fatalf("%d sessions opened, want 2", lease)
	}
}
