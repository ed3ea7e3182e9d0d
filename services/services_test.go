package services

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedkeeper/fedkeeper/health"
	"github.com/fedkeeper/fedkeeper/internal/storetest"
	"github.com/fedkeeper/fedkeeper/membership"
	"github.com/fedkeeper/fedkeeper/pki"
	"github.com/fedkeeper/fedkeeper/store"
)

func TestRegistrationValidateNamesTheProblem(t *testing.T) {
	good := Registration{Name: "index", Port: 443, Protocol: "https", Path: "/esg-search", Tags: []string{"primary"}}.WithDefaults("CMIP6")
	for _, tc := range []struct {
		name   string
		change func(r *Registration)
		want   string
	}{
		{"valid", func(r *Registration) {}, ""},
		{"upper-case name", func(r *Registration) { r.Name = "Index" }, `name "Index" must be a DNS label`},
		{"id with dot", func(r *Registration) { r.ID = "a.b" }, "id must be a DNS label"},
		{"bad project", func(r *Registration) { r.Project = "a b" }, "project"},
		{"port zero", func(r *Registration) { r.Port = 0 }, "port 0"},
		{"port too high", func(r *Registration) { r.Port = 70000 }, "port 70000"},
		{"unknown protocol", func(r *Registration) { r.Protocol = "gopher" }, `protocol "gopher"`},
		{"relative path", func(r *Registration) { r.Path = "esg-search" }, "path must start with /"},
		{"path with quote", func(r *Registration) { r.Path = `/a"b` }, "path must start with /"},
		{"tag with space", func(r *Registration) { r.Tags = []string{"a b"} }, `tag "a b"`},
		{"address neither IP nor host", func(r *Registration) { r.Address = "bad_host!" }, `address "bad_host!"`},
		{"host name address", func(r *Registration) { r.Address = "esgf-node.llnl.gov" }, ""},
		{"IPv6 address", func(r *Registration) { r.Address = "2001:db8::1" }, ""},
		{"bad check", func(r *Registration) { r.Checks = []health.CheckConfig{{Name: "up", Type: "nope"}} }, `check "up": type`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := good
			tc.change(&r)
			err := r.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want an error containing %q", err, tc.want)
			}
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, health.ErrInvalid) && !errors.Is(err, membership.ErrInvalid) {
				t.Errorf("error %v is not marked invalid", err)
			}
		})
	}
}

func TestValidateSetRefusesDuplicatesAndTooMany(t *testing.T) {
	a := Registration{Name: "index", Port: 443}.WithDefaults("CMIP6")
	if err := ValidateSet([]Registration{a, a}); err == nil || !strings.Contains(err.Error(), `"index" is registered twice`) {
		t.Errorf("duplicate ids: %v", err)
	}
	many := make([]Registration, MaxPerNode+1)
	if err := ValidateSet(many); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Errorf("too many: %v", err)
	}
}

func TestStatusCombinesChecksAndNodeHealth(t *testing.T) {
	for _, tc := range []struct {
		checks, node, want health.Status
	}{
		{health.Passing, "", health.Passing},
		{health.Passing, health.Passing, health.Passing},
		{health.Passing, health.Warning, health.Warning},
		{health.Warning, health.Passing, health.Warning},
		{health.Passing, health.Suspect, health.Critical},
		{health.Passing, health.Critical, health.Critical},
		{health.Critical, health.Passing, health.Critical},
		{"made-up", health.Passing, health.Critical},
	} {
		if got := status(tc.checks, tc.node); got != tc.want {
			t.Errorf("status(%q, %q) = %q, want %q", tc.checks, tc.node, got, tc.want)
		}
	}
}

// env is a membership service and a registry over one embedded store.
type env struct {
	t       *testing.T
	ctx     context.Context
	members *membership.Service
	reg     *Registry
	view    *View
	kv      *clientv3.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	t.Parallel()
	st, ca := storetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	members := membership.New(st.Client, ca)
	if err := members.Bootstrap(ctx, membership.Node{Name: "sn1", Role: membership.RoleSupernode, Address: "192.0.2.100:7420"}); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, ctx: ctx, members: members, reg: NewRegistry(st.Client), kv: st.Client,
		view: NewView(ctx, st.Client, members.Cache(ctx), slog.Default())}
}

// admit joins a member of project at address and opens its session.
func (e *env) admit(name, project, address string) membership.Node {
	e.t.Helper()
	tok, _, err := e.members.CreateToken(e.ctx, project, 1, time.Hour, "test")
	if err != nil {
		e.t.Fatal(err)
	}
	key, err := pki.NewKey()
	if err != nil {
		e.t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, name)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.members.Join(e.ctx, membership.JoinInput{Name: name, Token: tok, CSR: string(csr),
		Profile: membership.Profile{Project: project, Address: address}}); err != nil {
		e.t.Fatalf("join %s: %v", name, err)
	}
	if _, err := e.members.OpenSession(e.ctx, name); err != nil {
		e.t.Fatalf("open session of %s: %v", name, err)
	}
	n, err := e.members.Get(e.ctx, name)
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

// eventually waits until cond holds for the view.
func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("view never showed: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) setHealth(node string, s health.Status) {
	e.t.Helper()
	if _, err := e.kv.Put(e.ctx, store.Root+"health/"+node, store.MustJSON(health.Record{Status: s})); err != nil {
		e.t.Fatal(err)
	}
}

func report(name string, port int, s health.Status, tags ...string) Report {
	return Report{Registration: Registration{Name: name, Port: port, Protocol: ProtocolHTTPS, Path: "/x", Tags: tags}, Status: s}
}

func TestSyncReplacesTheSetAndViewFiltersByHealth(t *testing.T) {
	e := newEnv(t)
	a := e.admit("llnl", "CMIP6", "192.0.2.1:7444")
	b := e.admit("dkrz", "CMIP6", "192.0.2.2:7444")
	if _, err := e.reg.Sync(e.ctx, a, []Report{report("index", 443, health.Passing, "primary"), report("thredds", 8443, health.Passing)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.Sync(e.ctx, b, []Report{report("index", 443, health.Critical)}); err != nil {
		t.Fatal(err)
	}
	e.eventually("three instances", func() bool { es, _ := e.view.Entries(Query{}); return len(es) == 3 })

	serving, found := e.view.Entries(Query{Name: "index", Serving: true})
	if !found || len(serving) != 1 || serving[0].Node != "llnl" || serving[0].Host != "192.0.2.1" || serving[0].URL != "https://192.0.2.1:443/x" {
		t.Fatalf("serving index = %+v (found %v), want only llnl's at 192.0.2.1", serving, found)
	}
	if es, _ := e.view.Entries(Query{Name: "index", Tag: "primary"}); len(es) != 1 || es[0].Node != "llnl" {
		t.Errorf("tag primary = %+v, want llnl's only", es)
	}
	if es, found := e.view.Entries(Query{Name: "index", Project: "CORDEX"}); found || len(es) != 0 {
		t.Errorf("index in CORDEX = %+v, found %v; want nothing", es, found)
	}
	targets, found := e.view.Service("index", "", "")
	if !found || len(targets) != 1 || targets[0].Host != "192.0.2.1" || targets[0].Port != 443 {
		t.Errorf("DNS targets = %+v, found %v", targets, found)
	}
	if ns := e.view.Nameservers(); len(ns) != 1 || ns[0].Node != "sn1" || ns[0].Host != "192.0.2.100" {
		t.Errorf("nameservers = %+v, want sn1 at 192.0.2.100", ns)
	}
	if host, ok := e.view.Node("dkrz"); !ok || host != "192.0.2.2" {
		t.Errorf("node dkrz = %q, %v", host, ok)
	}

	// A suspect node's instances stop being served, a warning does not.
	e.setHealth("llnl", health.Suspect)
	e.eventually("llnl suspect", func() bool { _, ok := e.view.health.Get("llnl"); return ok })
	if targets, found := e.view.Service("index", "", ""); !found || len(targets) != 0 {
		t.Errorf("with llnl suspect and dkrz failing, targets = %+v, found %v; want none but found", targets, found)
	}
	e.setHealth("llnl", health.Warning)
	e.eventually("llnl warning", func() bool { r, _ := e.view.health.Get("llnl"); return r.Status == health.Warning })
	if targets, _ := e.view.Service("index", "", ""); len(targets) != 1 {
		t.Errorf("with llnl in warning, targets = %+v, want llnl's", targets)
	}

	// The whole set is replaced: thredds goes, index stays.
	if _, err := e.reg.Sync(e.ctx, a, []Report{report("index", 443, health.Passing)}); err != nil {
		t.Fatal(err)
	}
	e.eventually("thredds gone", func() bool { es, _ := e.view.Entries(Query{Name: "thredds"}); return len(es) == 0 })
	sums := e.view.Summaries("")
	if len(sums) != 1 || sums[0].Name != "index" || sums[0].Instances != 2 || sums[0].Serving != 1 {
		t.Errorf("summaries = %+v, want index with 2 instances, 1 serving", sums)
	}
}

func TestInstancesLiveAsLongAsTheSession(t *testing.T) {
	e := newEnv(t)
	a := e.admit("ceda", "CMIP6", "192.0.2.3:7444")
	if _, err := e.reg.Sync(e.ctx, a, []Report{report("index", 443, health.Passing)}); err != nil {
		t.Fatal(err)
	}
	e.eventually("index registered", func() bool { _, found := e.view.Service("index", "", ""); return found })
	resp, err := e.kv.Get(e.ctx, membership.AliveKey("ceda"))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("session key: %v", err)
	}
	if _, err := e.kv.Revoke(e.ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	e.eventually("index gone with the session", func() bool { _, found := e.view.Service("index", "", ""); return !found })
	_, err = e.reg.Sync(e.ctx, a, []Report{report("index", 443, health.Passing)})
	if !errors.Is(err, ErrNoSession) {
		t.Fatalf("Sync without a session = %v, want ErrNoSession", err)
	}
}

func TestSyncRefusesBadReportsAndWritesNothing(t *testing.T) {
	e := newEnv(t)
	a := e.admit("ipsl", "CMIP6", "192.0.2.4:7444")
	before, err := e.kv.Get(e.ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		reports []Report
		want    string
	}{
		{"project the node is not in", []Report{{Registration: Registration{Name: "index", Port: 1, Project: "CORDEX"}, Status: health.Passing}}, `project "CORDEX" is not one of`},
		{"unknown status", []Report{{Registration: Registration{Name: "index", Port: 1}, Status: "fine"}}, `status "fine"`},
		{"invalid registration", []Report{{Registration: Registration{Name: "index"}, Status: health.Passing}}, "port 0"},
		{"duplicate", []Report{report("index", 1, health.Passing), report("index", 2, health.Passing)}, "registered twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.reg.Sync(e.ctx, a, tc.reports)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Sync = %v, want invalid: %q", err, tc.want)
			}
		})
	}
	after, err := e.kv.Get(e.ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if after.Count != before.Count {
		t.Errorf("refused syncs wrote %d keys", after.Count-before.Count)
	}
}

func TestAddEndpointsMapsESGFServicesIntoTheNodeMap(t *testing.T) {
	e := newEnv(t)
	a := e.admit("llnl", "CMIP6", "192.0.2.1:7444")
	tcp := Report{Registration: Registration{Name: "gridftp-data", Port: 2811}, Status: health.Passing}
	if _, err := e.reg.Sync(e.ctx, a, []Report{report("index", 443, health.Passing), report("custom", 8080, health.Passing), tcp}); err != nil {
		t.Fatal(err)
	}
	e.eventually("three instances", func() bool { es, _ := e.view.Entries(Query{Node: "llnl"}); return len(es) == 3 })
	m, err := e.members.NodeMap(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	e.view.AddEndpoints(&m)
	var eps map[string]string
	for _, n := range m.Nodes {
		if n.Name == "llnl" {
			eps = n.Endpoints
		}
	}
	if eps["IndexService"] != "https://192.0.2.1:443/x" || eps["custom"] != "https://192.0.2.1:8080/x" || len(eps) != 2 {
		t.Errorf("endpoints = %v, want IndexService and custom (tcp services have no URL)", eps)
	}
	xml, err := m.RegistrationXML("test")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(xml), `<IndexService endpoint="https://192.0.2.1:443/x">`) {
		t.Errorf("registration.xml lacks the index service:\n%s", xml)
	}
}

func TestConcurrentSyncsLeaveExactlyOneWholeSet(t *testing.T) {
	e := newEnv(t)
	a := e.admit("cmcc", "CMIP6", "192.0.2.5:7444")
	sets := make([][]Report, 6)
	for i := range sets {
		// Each set has its own IDs, so a mix of two sets would show.
		for j := range 3 {
			r := report("svc", 1000+j, health.Passing)
			r.ID = fmt.Sprintf("s%d-%d", i, j)
			sets[i] = append(sets[i], r)
		}
	}
	var wg sync.WaitGroup
	for _, set := range sets {
		wg.Go(func() {
			if _, err := e.reg.Sync(e.ctx, a, set); err != nil && !errors.Is(err, ErrConflict) {
				t.Errorf("Sync: %v", err)
			}
		})
	}
	wg.Wait()
	resp, err := e.kv.Get(e.ctx, prefix+"cmcc/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	owners := map[string]bool{}
	for _, kv := range resp.Kvs {
		owners[strings.SplitN(strings.TrimPrefix(string(kv.Key), prefix+"cmcc/"), "-", 2)[0]] = true
	}
	if len(resp.Kvs) != 3 || len(owners) != 1 {
		t.Errorf("after concurrent syncs the node has %d instances from sets %v, want the 3 of one set", len(resp.Kvs), owners)
	}
}
