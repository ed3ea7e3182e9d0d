package main

// Integration test of the service registry: a real supernode and agent,
// services declared in the agent's configuration and registered with
// `fedkeeper service register`, read back with `service list` and `service
// show` as an administrator sees them.

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fedkeeper/fedkeeper/agent"
	"github.com/fedkeeper/fedkeeper/health"
	"github.com/fedkeeper/fedkeeper/internal/testcluster"
	"github.com/fedkeeper/fedkeeper/membership"
	"github.com/fedkeeper/fedkeeper/services"
)

// svcSessionTTL is the supernode's session TTL in this test: short, so
// that a killed agent's services go within seconds.
const svcSessionTTL = 3 * time.Second

// svcShow reads `service show -o json` with extra arguments.
func svcShow(sn *testcluster.Supernode, name string, extra ...string) ([]services.Entry, error) {
	out, err := sn.Admin(append([]string{"service", "show", name, "-o", "json"}, extra...)...)
	if err != nil {
		return nil, err
	}
	var entries []services.Entry
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		return nil, fmt.Errorf("service show -o json: %v\n%s", err, out)
	}
	return entries, nil
}

// svcStatuses sums up entries as ID=status, sorted.
func svcStatuses(entries []services.Entry) string {
	var out []string
	for _, e := range entries {
		out = append(out, e.ID+"="+string(e.Status))
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

// svcWaitShow waits until `service show NAME extra...` lists the wanted
// ID=status pairs (as svcStatuses writes them) and returns its entries.
func svcWaitShow(t *testing.T, sn *testcluster.Supernode, timeout time.Duration, want, name string, extra ...string) []services.Entry {
	t.Helper()
	var entries []services.Entry
	testcluster.Eventually(t, timeout, func() error {
		var err error
		if entries, err = svcShow(sn, name, extra...); err != nil {
			return err
		}
		if got := svcStatuses(entries); got != want {
			return fmt.Errorf("service show %s %v: %q, want %q", name, extra, got, want)
		}
		return nil
	})
	return entries
}

func TestServicesAreRegisteredCheckedAndGoWithTheSession(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	t.Parallel()
	c := testcluster.New(t)
	sn := c.InitSupernode("sn1", "--session-ttl", svcSessionTTL.String())
	token, err := sn.Admin("token", "create")
	if err != nil {
		t.Fatal(err)
	}

	// What the services' checks look at: /ok answers 200, /fail 500.
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ok" {
			http.Error(w, "broken on purpose", http.StatusInternalServerError)
		}
	}))
	t.Cleanup(web.Close)
	_, portText, _ := net.SplitHostPort(web.Listener.Addr().String())
	port, _ := strconv.Atoi(portText)
	okCheck := func(name string) health.CheckConfig {
		return health.CheckConfig{Name: name, Type: health.TypeHTTP, URL: web.URL + "/ok", Interval: time.Second}
	}

	host := testcluster.NewHost()
	addr := net.JoinHostPort(host, "7430")
	dir := c.Dir("a1")
	cfg := agent.Config{
		Name:    "a1",
		Join:    []string{sn.URL},
		CAHash:  sn.CAHash,
		Profile: membership.Profile{Project: "CMIP6", Address: addr},
		Listen:  addr,
		Services: []services.Registration{{
			Name: "index", Port: port, Protocol: services.ProtocolHTTP, Path: "/esg-search", Tags: []string{"primary"},
			Checks: []health.CheckConfig{okCheck("search")},
		}},
	}
	if err := agent.SaveConfig(dir, cfg); err != nil {
		t.Fatal(err)
	}
	a1 := c.Start("a1", "agent", "--data-dir", dir, "--token", strings.TrimSpace(token))
	a1.Args = []string{"agent", "--data-dir", dir}
	waitStatus(t, sn, map[string]membership.Status{"a1": membership.StatusAlive})

	register := func(args ...string) (string, error) {
		return c.Run(append([]string{"service", "register", "--data-dir", dir}, args...)...)
	}
	if _, err := register("--name", "thredds", "--port", portText, "--protocol", "http", "--path", "/thredds",
		"--tag", "v5", "--tag", "tds", "--check-http", web.URL+"/ok", "--check-interval", "1s"); err != nil {
		t.Fatal(err)
	}
	if _, err := register("--name", "thredds", "--id", "thredds-broken", "--port", portText, "--protocol", "http",
		"--check-http", web.URL+"/fail", "--check-interval", "1s"); err != nil {
		t.Fatal(err)
	}

	t.Run("show lists declared and registered instances with their status", func(t *testing.T) {
		entries := svcWaitShow(t, sn, 30*time.Second, "index=passing", "index")
		e := entries[0]
		wantURL := fmt.Sprintf("http://%s/esg-search", net.JoinHostPort(host, portText))
		if e.Node != "a1" || e.Host != host || e.URL != wantURL || !slices.Equal(e.Tags, []string{"primary"}) || e.Project != "CMIP6" {
			t.Errorf("index: %+v, want on a1 at %s with tag primary", e, wantURL)
		}
		entries = svcWaitShow(t, sn, 30*time.Second, "thredds-broken=critical,thredds=passing", "thredds")
		for _, e := range entries {
			if e.ID == "thredds-broken" && !strings.Contains(e.Output, "500") {
				t.Errorf("thredds-broken: output %q does not say what fails", e.Output)
			}
			if e.ID == "thredds" && !slices.Equal(e.Tags, []string{"v5", "tds"}) {
				t.Errorf("thredds: tags %v, want [v5 tds]", e.Tags)
			}
		}
	})

	t.Run("an instance carries its node's health", func(t *testing.T) {
		testcluster.Eventually(t, 30*time.Second, func() error {
			entries, err := svcShow(sn, "index")
			if err != nil {
				return err
			}
			if len(entries) != 1 || entries[0].NodeHealth != health.Passing {
				return fmt.Errorf("index: %+v, want the node's health passing", entries)
			}
			return nil
		})
	})

	t.Run("passing leaves out the failing instance", func(t *testing.T) {
		svcWaitShow(t, sn, 10*time.Second, "thredds=passing", "thredds", "--passing")
		svcWaitShow(t, sn, 10*time.Second, "thredds=passing", "thredds", "--tag", "v5")
		out, err := sn.Admin("service", "show", "thredds")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"NODE", "HOST:PORT", "thredds-broken", "critical", net.JoinHostPort(host, portText)} {
			if !strings.Contains(out, want) {
				t.Errorf("service show table lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("list counts instances and those serving", func(t *testing.T) {
		out, err := sn.Admin("service", "list", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var sums []services.Summary
		if err := json.Unmarshal([]byte(out), &sums); err != nil {
			t.Fatalf("service list -o json: %v\n%s", err, out)
		}
		want := []services.Summary{
			{Name: "index", Project: "CMIP6", Instances: 1, Serving: 1, Nodes: []string{"a1"}},
			{Name: "thredds", Project: "CMIP6", Instances: 2, Serving: 1, Nodes: []string{"a1"}},
		}
		if fmt.Sprint(sums) != fmt.Sprint(want) {
			t.Errorf("service list: %+v, want %+v", sums, want)
		}
		if out, err := sn.Admin("service", "list", "--project", "other"); err != nil || strings.Contains(out, "thredds") {
			t.Errorf("service list --project other: %v\n%s", err, out)
		}
	})

	t.Run("the agent refuses what it must not register", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"service", "deregister", "--data-dir", dir, "index"}, "agent.yaml: edit that file"},
			{[]string{"service", "register", "--data-dir", dir, "--name", "index", "--port", "1"}, "agent.yaml: edit that file"},
			{[]string{"service", "register", "--data-dir", dir, "--name", "web", "--port", "70000"}, "port 70000 must be between 1 and 65535"},
			{[]string{"service", "register", "--data-dir", dir, "--name", "web", "--port", "80", "--protocol", "ftp"}, `protocol "ftp" must be one of`},
			{[]string{"service", "register", "--data-dir", dir, "--name", "web", "--port", "80", "--check-tcp", "nohost"}, `check "tcp": address`},
			{[]string{"service", "register", "--data-dir", dir, "--name", "web"}, `"port" not set`},
			{[]string{"service", "deregister", "--data-dir", dir, "nope"}, `no service "nope"`},
			{[]string{"service", "deregister", "--data-dir", c.Dir("nobody"), "web"}, "no agent is running with data directory"},
		} {
			code, _, stderr := cfgCLI(t, tc.args...)
			if code == 0 || !strings.Contains(stderr, tc.want) {
				t.Errorf("fedkeeper %s: exit %d, stderr %q, want it to contain %q", strings.Join(tc.args, " "), code, stderr, tc.want)
			}
		}
	})

	t.Run("a deregistered instance goes", func(t *testing.T) {
		if _, err := c.Run("service", "deregister", "--data-dir", dir, "thredds-broken"); err != nil {
			t.Fatal(err)
		}
		svcWaitShow(t, sn, 10*time.Second, "thredds=passing", "thredds")
	})

	t.Run("a restarted agent registers its services again", func(t *testing.T) {
		a1.Kill()
		restarted := time.Now()
		a1.Restart()
		// The instances of the old session may show until its lease is
		// revoked: only those registered since the restart count.
		testcluster.Eventually(t, 30*time.Second, func() error {
			for _, name := range []string{"thredds", "index"} {
				entries, err := svcShow(sn, name)
				if err != nil {
					return err
				}
				if len(entries) != 1 || entries[0].Status != health.Passing || !entries[0].Since.After(restarted) {
					return fmt.Errorf("%s: %+v, want one passing instance registered after the restart", name, entries)
				}
			}
			return nil
		})
	})

	t.Run("a killed agent's services go within the session TTL", func(t *testing.T) {
		a1.Kill()
		killed := time.Now()
		// The lease expires after the TTL; the rest covers the store's
		// expiry tick, the view catching up and the CLI's own start.
		svcWaitShow(t, sn, svcSessionTTL+5*time.Second, "", "thredds")
		t.Logf("services gone %v after kill -9", time.Since(killed).Round(100*time.Millisecond))
		svcWaitShow(t, sn, time.Second, "", "index")
		out, err := sn.Admin("service", "list", "-o", "json")
		if err != nil || strings.TrimSpace(out) != "[]" {
			t.Fatalf("service list after the agent died: %v\n%s", err, out)
		}
	})
}
