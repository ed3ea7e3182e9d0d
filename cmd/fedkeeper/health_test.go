package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fedkeeper/fedkeeper/agent"
	"github.com/fedkeeper/fedkeeper/events"
	"github.com/fedkeeper/fedkeeper/health"
	"github.com/fedkeeper/fedkeeper/internal/testcluster"
	"github.com/fedkeeper/fedkeeper/membership"
)

// Health tests: real supernodes probe real agents, and the tests kill,
// freeze and break those agents (and a supernode) and read what the
// federation makes of it through the CLI: `nodes list` for the current
// health and `events` for the history.

// The probe timing of these tests: short, so that faults show within
// seconds. The timeout is left to its default, min(1s, interval).
const (
	hcInterval  = 500 * time.Millisecond
	hcTimeout   = hcInterval
	hcThreshold = 3
)

// hcHealthBlock is appended to every supernode's supernode.yaml.
var hcHealthBlock = fmt.Sprintf("health:\n  interval: %s\n  failure_threshold: %d\n", hcInterval, hcThreshold)

// hcSlack covers what the bounds below do not model: CLI start-up and
// polling, the store's write latency, scheduling on a loaded machine.
const hcSlack = 3 * time.Second

// hcConfirmWait is the longest a prober waits for a second supernode's
// verdict (Prober.askConfirm).
const hcConfirmWait = 2*hcTimeout + time.Second

// hcDetectBound is how long after a member stops answering its health may
// take to become critical. A round lasts at most max(interval, timeout)
// plus the wait for a verdict; the first failed probe comes at most one
// round after the fault. With a second supernode, threshold failures make
// the member suspect and the verdict makes it critical; alone, a
// supernode waits for twice the threshold.
func hcDetectBound(supernodes int) time.Duration {
	round := max(hcInterval, hcTimeout)
	if supernodes < 2 {
		return time.Duration(2*hcThreshold+1)*round + hcSlack
	}
	return time.Duration(hcThreshold+1)*round + hcConfirmWait + hcSlack
}

// hcRecoverBound is how long after a member answers again its health may
// take to be passing: the next round, plus slack.
const hcRecoverBound = 2*hcInterval + hcTimeout + hcSlack

// hcFed is a federation of these tests: supernodes with the short probe
// timing, agents, and credentials that fail over between the supernodes.
type hcFed struct {
	c     *testcluster.Cluster
	sns   []*testcluster.Supernode
	creds string
}

func (f *hcFed) names() []string {
	var out []string
	for _, sn := range f.sns {
		out = append(out, sn.Proc.Name)
	}
	return out
}

// newHCFed starts a federation of n supernodes on loopback with the
// test's probe timing.
func newHCFed(t *testing.T, n int) *hcFed {
	t.Helper()
	c := testcluster.New(t)
	sns := []*testcluster.Supernode{c.InitSupernode("sn1")}
	for i := 2; i <= n; i++ {
		sns = append(sns, c.JoinSupernode(sns[0], fmt.Sprintf("sn%d", i), false))
	}
	f := &hcFed{c: c, sns: sns, creds: c.Credentials(sns...)}
	hcConfigure(t, sns)
	f.waitVoters(t)
	return f
}

// hcConfigure gives running supernodes the test's probe timing: the
// harness starts them as it creates them, and supernode.yaml is read only
// at start, so each is stopped, configured and started again.
func hcConfigure(t *testing.T, sns []*testcluster.Supernode) {
	t.Helper()
	for _, sn := range sns {
		sn.Signal(syscall.SIGTERM)
	}
	for _, sn := range sns {
		if err := sn.Wait(30 * time.Second); err != nil {
			t.Fatalf("stop %s to configure it: %v", sn.Proc.Name, err)
		}
		path := filepath.Join(sn.Dir, "supernode.yaml")
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "\nhealth:") {
			t.Fatalf("%s already has a health block:\n%s", path, b)
		}
		if err := os.WriteFile(path, append(b, hcHealthBlock...), 0o600); err != nil {
			t.Fatal(err)
		}
		sn.Restart()
	}
	for _, sn := range sns {
		sn.WaitLive(t)
	}
}

// waitVoters waits until every supernode is a healthy voter.
func (f *hcFed) waitVoters(t *testing.T) {
	t.Helper()
	want := map[string]string{}
	for _, name := range f.names() {
		want[name] = "voter"
	}
	eventually(t, 60*time.Second, wantSupernodes(f.c, f.creds, want))
}

// startAgent starts an agent with the given self-checks, joined with a
// token of its own. It writes agent.yaml first, since checks have no
// flags.
func (f *hcFed) startAgent(t *testing.T, name string, checks []health.CheckConfig) *testcluster.Agent {
	t.Helper()
	return hcStartAgent(t, f.sns[0], f.creds, name, testcluster.NewHost(), f.c.Dir(name), f.c.Start, checks)
}

// hcStartAgent starts an agent named name listening on host:7430 with its
// data in dir, through start (Cluster.Start or Host.Start).
func hcStartAgent(t *testing.T, first *testcluster.Supernode, creds, name, host, dir string,
	start func(name string, args ...string) *testcluster.Proc, checks []health.CheckConfig) *testcluster.Agent {
	t.Helper()
	return testcluster.StartAgent(t, first, creds, name, host, dir, start, func(cfg *agent.Config) { cfg.Checks = checks })
}

// nodes lists the federation's nodes with their health.
func (f *hcFed) nodes(t *testing.T) map[string]membership.Node {
	t.Helper()
	return hcNodes(t, f.c, f.creds)
}

func hcNodes(t *testing.T, c *testcluster.Cluster, creds string) map[string]membership.Node {
	t.Helper()
	m, err := hcTryNodes(c, creds)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// hcTryNodes is hcNodes for loops that retry or sample: a supernode
// killed a moment ago may cost one request its answer.
func hcTryNodes(c *testcluster.Cluster, creds string) (map[string]membership.Node, error) {
	out, err := c.Run("nodes", "list", "-o", "json", "--credentials", creds)
	if err != nil {
		return nil, err
	}
	var list []membership.Node
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("nodes list -o json: %v\n%s", err, out)
	}
	m := map[string]membership.Node{}
	for _, n := range list {
		m[n.Name] = n
	}
	return m, nil
}

// events returns the events about node (every node if empty), oldest
// first.
func (f *hcFed) events(t *testing.T, node string) []events.Event {
	t.Helper()
	return hcEvents(t, f.c, f.creds, node)
}

func hcEvents(t *testing.T, c *testcluster.Cluster, creds, node string) []events.Event {
	t.Helper()
	evs, err := hcTryEvents(c, creds, node)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func hcTryEvents(c *testcluster.Cluster, creds, node string) ([]events.Event, error) {
	args := []string{"events", "-o", "json", "--limit", "1000", "--credentials", creds}
	if node != "" {
		args = append(args, "--node", node)
	}
	out, err := c.Run(args...)
	if err != nil {
		return nil, err
	}
	var evs []events.Event
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var e events.Event
		if err := dec.Decode(&e); err != nil {
			return nil, fmt.Errorf("events -o json: %v\n%s", err, out)
		}
		evs = append(evs, e)
	}
	slices.SortStableFunc(evs, func(a, b events.Event) int { return int(a.Revision - b.Revision) })
	return evs, nil
}

// hcHealthKinds are the event kinds the prober records.
var hcHealthKinds = []string{"passing", "warning", "suspect", "critical", "recovered"}

func hcHealthEvents(evs []events.Event) []events.Event {
	var out []events.Event
	for _, e := range evs {
		if slices.Contains(hcHealthKinds, e.Kind) {
			out = append(out, e)
		}
	}
	return out
}

func hcFormat(evs []events.Event) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "  rev %d %s %s %s: %s -> %s by %s: %s\n", e.Revision, e.Time.Format("15:04:05.000"), e.Node, e.Kind, e.Old, e.New, e.By, e.Message)
	}
	return b.String()
}

// waitHealth waits up to timeout for the named nodes to have the given
// health and returns how long it took.
func (f *hcFed) waitHealth(t *testing.T, timeout time.Duration, want map[string]health.Status) time.Duration {
	t.Helper()
	return hcWaitHealth(t, f.c, f.creds, timeout, want)
}

func hcWaitHealth(t *testing.T, c *testcluster.Cluster, creds string, timeout time.Duration, want map[string]health.Status) time.Duration {
	t.Helper()
	start := time.Now()
	testcluster.Eventually(t, timeout, func() error {
		got, err := hcTryNodes(c, creds)
		if err != nil {
			return err
		}
		for name, st := range want {
			if n := got[name]; n.Health != string(st) {
				return fmt.Errorf("%s has health %q (%s), want %q", name, n.Health, n.HealthReason, st)
			}
		}
		return nil
	})
	return time.Since(start)
}

// waitAllPassing waits until every agent is alive and passing.
func (f *hcFed) waitAllPassing(t *testing.T, agents []*testcluster.Agent) {
	t.Helper()
	want := map[string]health.Status{}
	for _, a := range agents {
		want[a.Name] = health.Passing
	}
	f.waitHealth(t, 60*time.Second, want)
}

// hcFindEvent returns the first event about node of the given kind after
// revision after.
func hcFindEvent(evs []events.Event, node, kind string, after int64) (events.Event, bool) {
	for _, e := range evs {
		if e.Node == node && e.Kind == kind && e.Revision > after {
			return e, true
		}
	}
	return events.Event{}, false
}

// hcWaitEvent waits for an event about node of the given kind after
// revision after: the status is written before its event, so the event
// may trail the status by a moment.
func (f *hcFed) waitEvent(t *testing.T, node, kind string, after int64) events.Event {
	t.Helper()
	return hcWaitEvent(t, f.c, f.creds, node, kind, after)
}

func hcWaitEvent(t *testing.T, c *testcluster.Cluster, creds, node, kind string, after int64) events.Event {
	t.Helper()
	var found events.Event
	testcluster.Eventually(t, 10*time.Second, func() error {
		evs, err := hcTryEvents(c, creds, node)
		if err != nil {
			return err
		}
		e, ok := hcFindEvent(evs, node, kind, after)
		if !ok {
			return fmt.Errorf("no %q event for %s after revision %d; events:\n%s", kind, node, after, hcFormat(hcHealthEvents(evs)))
		}
		found = e
		return nil
	})
	return found
}

// hcLastRevision is the revision of the newest event about node, 0 if none.
func hcLastRevision(evs []events.Event) int64 {
	var rev int64
	for _, e := range evs {
		rev = max(rev, e.Revision)
	}
	return rev
}

// hcProbers returns who probes member and who confirms, by rendezvous
// hashing over the healthy supernodes.
func hcProbers(member string, healthy []string) (prober, confirmer string) {
	rank := health.Rank(member, healthy)
	if len(rank) > 1 {
		confirmer = rank[1]
	}
	return rank[0], confirmer
}

func TestHealthDetectsDeadAndFrozenMembers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	for _, tc := range []struct {
		name       string
		supernodes int
		// freeze also pauses a second member and resumes it.
		freeze bool
	}{
		{name: "one supernode waits twice the threshold", supernodes: 1},
		{name: "two supernodes confirm", supernodes: 2, freeze: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newHCFed(t, tc.supernodes)
			agents := []*testcluster.Agent{f.startAgent(t, "m-kill", nil)}
			if tc.freeze {
				agents = append(agents, f.startAgent(t, "m-freeze", nil))
			}
			f.waitAllPassing(t, agents)
			bound := hcDetectBound(tc.supernodes)
			before := hcLastRevision(f.events(t, ""))

			faulted := time.Now()
			agents[0].Kill()
			if tc.freeze {
				agents[1].Pause()
			}
			want := map[string]health.Status{}
			for _, a := range agents {
				want[a.Name] = health.Critical
			}
			took := f.waitHealth(t, bound, want)
			t.Logf("critical %s after the fault (bound %s)", took.Round(time.Millisecond), bound)

			for _, a := range agents {
				prober, confirmer := hcProbers(a.Name, f.names())
				crit := f.waitEvent(t, a.Name, "critical", before)
				evs := hcHealthEvents(f.events(t, a.Name))
				suspect, ok := hcFindEvent(evs, a.Name, "suspect", before)
				switch {
				case !ok || suspect.Revision > crit.Revision:
					t.Errorf("%s: no suspect event before the critical one:\n%s", a.Name, hcFormat(evs))
				case crit.By != prober || crit.Old != string(health.Suspect) || crit.New != string(health.Critical):
					t.Errorf("%s: critical event %+v, want suspect -> critical by %s", a.Name, crit, prober)
				case !strings.Contains(crit.Message, "unreachable from "+prober):
					t.Errorf("%s: critical event's message %q does not say it is unreachable from %s", a.Name, crit.Message, prober)
				case confirmer != "" && !strings.Contains(crit.Message, "(confirmed by "+confirmer+")"):
					t.Errorf("%s: critical event's message %q does not say it was confirmed by %s", a.Name, crit.Message, confirmer)
				case confirmer == "" && strings.Contains(crit.Message, "confirmed by"):
					t.Errorf("%s: critical event's message %q names a confirmation with one supernode", a.Name, crit.Message)
				}
				if d := crit.Time.Sub(faulted); d > bound {
					t.Errorf("%s: critical event %s after the fault, bound %s", a.Name, d.Round(time.Millisecond), bound)
				}
				n := f.nodes(t)[a.Name]
				if !strings.Contains(n.HealthReason, "unreachable from "+prober) {
					t.Errorf("%s: health_reason %q does not say it is unreachable from %s", a.Name, n.HealthReason, prober)
				}
			}

			// Back: a frozen member that is resumed and a killed one that
			// is restarted are passing again, with a recovered event.
			before = hcLastRevision(f.events(t, ""))
			if tc.freeze {
				agents[1].Resume()
			}
			agents[0].Restart()
			want = map[string]health.Status{}
			for _, a := range agents {
				want[a.Name] = health.Passing
			}
			// A restarted agent first joins again and opens a session.
			took = f.waitHealth(t, hcRecoverBound+10*time.Second, want)
			t.Logf("passing %s after resume/restart", took.Round(time.Millisecond))
			for _, a := range agents {
				e := f.waitEvent(t, a.Name, "recovered", before)
				if e.Old != string(health.Critical) || e.New != string(health.Passing) {
					t.Errorf("%s: recovered event %+v, want critical -> passing", a.Name, e)
				}
				if n := f.nodes(t)[a.Name]; n.HealthReason != "" {
					t.Errorf("%s is passing with health_reason %q", a.Name, n.HealthReason)
				}
			}
			if tc.freeze {
				// Resumed within its session's lifetime, the agent lived on.
				select {
				case <-agents[1].Done():
					t.Errorf("m-freeze exited after SIGCONT:\n%s", agents[1].Log())
				default:
				}
			}
		})
	}
}

func TestHealthShowsSelfChecks(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	t.Parallel()
	f := newHCFed(t, 1)

	// A tcp check of a port nobody listens on yet.
	svc := net.JoinHostPort(testcluster.NewHost(), "7440")
	// A script check whose exit status is read from a file: Nagios
	// plugin codes, 0 passing, 1 warning, 2 critical.
	state := filepath.Join(t.TempDir(), "state")
	setState := func(code int) {
		if err := os.WriteFile(state, []byte(strconv.Itoa(code)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	setState(2)
	script := fmt.Sprintf(`read s < %s; echo "replication state $s"; exit $s`, state)
	agents := []*testcluster.Agent{
		f.startAgent(t, "m-tcp", []health.CheckConfig{{Name: "svc", Type: health.TypeTCP, Address: svc, Interval: time.Second}}),
		f.startAgent(t, "m-script", []health.CheckConfig{{Name: "replication", Type: health.TypeScript, Command: []string{"sh", "-c", script}, Interval: time.Second}}),
	}
	waitStatus(t, &testcluster.Supernode{Proc: f.sns[0].Proc, Credentials: f.creds},
		map[string]membership.Status{"m-tcp": membership.StatusAlive, "m-script": membership.StatusAlive})

	var ln net.Listener
	t.Cleanup(func() {
		if ln != nil {
			ln.Close()
		}
	})
	// Each step changes a check (or nothing, for the first ones) and
	// waits for the node's health, its reason and an event of the kind.
	for _, step := range []struct {
		name   string
		do     func()
		node   string
		want   health.Status
		reason string // what health_reason contains; empty: it is empty
		kind   string
	}{
		{name: "tcp check of a closed port is critical", node: "m-tcp", want: health.Critical,
			reason: "svc critical: dial tcp " + svc, kind: "critical"},
		{name: "script exiting 2 is critical", node: "m-script", want: health.Critical,
			reason: "replication critical: exit status 2\nreplication state 2", kind: "critical"},
		{name: "script exiting 1 is a warning", do: func() { setState(1) }, node: "m-script", want: health.Warning,
			reason: "replication warning: replication state 1", kind: "warning"},
		{name: "script exiting 0 recovers", do: func() { setState(0) }, node: "m-script", want: health.Passing,
			kind: "recovered"},
		{name: "tcp check recovers once the port listens", do: func() {
			var err error
			if ln, err = net.Listen("tcp", svc); err != nil {
				t.Fatal(err)
			}
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
		}, node: "m-tcp", want: health.Passing, kind: "recovered"},
		{name: "script exiting 1 again is a warning again", do: func() { setState(1) }, node: "m-script", want: health.Warning,
			reason: "replication warning: replication state 1", kind: "warning"},
	} {
		t.Run(step.name, func(t *testing.T) {
			before := hcLastRevision(f.events(t, step.node))
			if step.do != nil {
				step.do()
			} else {
				before = 0 // the state the agent started in
			}
			// A check runs every second; the change shows at the next probe.
			f.waitHealth(t, time.Second+hcRecoverBound, map[string]health.Status{step.node: step.want})
			n := f.nodes(t)[step.node]
			if step.reason == "" && n.HealthReason != "" || !strings.Contains(n.HealthReason, step.reason) {
				t.Errorf("%s: health_reason %q, want it to contain %q", step.node, n.HealthReason, step.reason)
			}
			e := f.waitEvent(t, step.node, step.kind, before)
			if e.New != string(step.want) || e.By != "sn1" {
				t.Errorf("%s: event %+v, want new status %s by sn1", step.node, e, step.want)
			}
			if step.reason != "" && !strings.Contains(e.Message, step.reason) {
				t.Errorf("%s: event message %q, want it to contain %q", step.node, e.Message, step.reason)
			}
		})
	}
	// A self-check's failure is the node's own finding: nobody suspected
	// the node of being unreachable.
	for _, a := range agents {
		for _, e := range hcHealthEvents(f.events(t, a.Name)) {
			if e.Kind == "suspect" || strings.Contains(e.Message, "unreachable") {
				t.Errorf("%s: unexpected event %+v", a.Name, e)
			}
		}
	}
}

// hcMaxRevision is the newest store revision the supernodes report.
func (f *hcFed) maxRevision(t *testing.T) int64 {
	t.Helper()
	var rev int64
	for _, sn := range supernodes(t, f.c, f.creds) {
		rev = max(rev, sn.Revision)
	}
	if rev == 0 {
		t.Fatal("no supernode reports a store revision")
	}
	return rev
}

func TestHealthProbesWriteNothingAndMoveOffADeadSupernode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	t.Parallel()
	f := newHCFed(t, 3)
	var agents []*testcluster.Agent
	for i := 1; i <= 6; i++ {
		agents = append(agents, f.startAgent(t, fmt.Sprintf("m%d", i), nil))
	}
	f.waitAllPassing(t, agents)
	// Who probes whom while all three are healthy; the victim is the
	// supernode with the most members.
	owned := map[string][]string{}
	for _, a := range agents {
		p, _ := hcProbers(a.Name, f.names())
		owned[p] = append(owned[p], a.Name)
	}
	victim := slices.MaxFunc(f.names(), func(a, b string) int {
		if d := len(owned[a]) - len(owned[b]); d != 0 {
			return d
		}
		return strings.Compare(b, a)
	})
	t.Logf("members by prober: %v; victim %s", owned, victim)

	t.Run("store writes stay flat while probes go on", func(t *testing.T) {
		// Let the writes of start-up settle (link views, sessions).
		time.Sleep(2 * time.Second)
		const window = 10 * time.Second
		rev0 := f.maxRevision(t)
		time.Sleep(window)
		rev1 := f.maxRevision(t)
		probes := int(window/hcInterval) * len(agents)
		t.Logf("store revision %d -> %d over %s of ~%d probes", rev0, rev1, window, probes)
		if rev1-rev0 > 5 {
			t.Errorf("store revision grew by %d over %s with nothing changing, want at most 5; events:\n%s",
				rev1-rev0, window, hcFormat(f.events(t, "")))
		}
		for name, n := range f.nodes(t) {
			if n.Role == membership.RoleMember && n.Health != string(health.Passing) {
				t.Errorf("%s has health %q (%s)", name, n.Health, n.HealthReason)
			}
		}
		// The measure itself moves: one write shows within a few probe
		// rounds of the supernodes.
		if _, err := f.c.Run("kv", "put", "health-test/marker", "x", "--credentials", f.creds); err != nil {
			t.Fatal(err)
		}
		testcluster.Eventually(t, 10*time.Second, func() error {
			if rev := f.maxRevision(t); rev <= rev1 {
				return fmt.Errorf("store revision still %d after a write", rev)
			}
			return nil
		})
	})

	var sns []*testcluster.Supernode
	var survivors []string
	for _, sn := range f.sns {
		if sn.Proc.Name == victim {
			continue
		}
		sns = append(sns, sn)
		survivors = append(survivors, sn.Proc.Name)
	}
	t.Run("killing a supernode marks none of its members", func(t *testing.T) {
		before := hcLastRevision(f.events(t, ""))
		for _, sn := range f.sns {
			if sn.Proc.Name == victim {
				sn.Kill()
			}
		}
		// Other supernodes stop counting the victim as healthy after three
		// quorum probe intervals (3s); its members move then, and each is
		// probed a few times by its new supernode within the window.
		deadline := time.Now().Add(3*time.Second + 10*hcInterval + hcSlack)
		samples, failed := 0, 0
		for time.Now().Before(deadline) {
			got, err := hcTryNodes(f.c, f.creds)
			if err != nil {
				// The store may be electing a new leader.
				failed++
				t.Logf("nodes list: %v", err)
				continue
			}
			for _, a := range agents {
				if n := got[a.Name]; n.Health != string(health.Passing) {
					t.Fatalf("%s has health %q (%s) after %s died", a.Name, n.Health, n.HealthReason, victim)
				}
			}
			samples++
		}
		if samples < 10 {
			t.Fatalf("only %d samples of the nodes' health (%d requests failed)", samples, failed)
		}
		for _, e := range hcHealthEvents(f.events(t, "")) {
			if e.Revision > before {
				t.Errorf("health event after %s died: %s", victim, hcFormat([]events.Event{e}))
			}
		}
		t.Logf("%d samples, all members passing (%d requests failed)", samples, failed)
	})

	t.Run("its members are probed by the next supernode", func(t *testing.T) {
		var moved *testcluster.Agent
		for _, a := range agents {
			if a.Name == owned[victim][0] {
				moved = a
			}
		}
		prober, confirmer := hcProbers(moved.Name, survivors)
		before := hcLastRevision(f.events(t, ""))
		moved.Kill()
		bound := hcDetectBound(len(survivors))
		took := f.waitHealth(t, bound, map[string]health.Status{moved.Name: health.Critical})
		e := f.waitEvent(t, moved.Name, "critical", before)
		t.Logf("%s (probed by %s before) critical after %s: %s", moved.Name, victim, took.Round(time.Millisecond), e.Message)
		if e.By != prober || !strings.Contains(e.Message, "(confirmed by "+confirmer+")") {
			t.Errorf("critical event %+v, want it by %s confirmed by %s", e, prober, confirmer)
		}
		// The others are still fine.
		for _, a := range agents {
			if a == moved {
				continue
			}
			if n := f.nodes(t)[a.Name]; n.Health != string(health.Passing) {
				t.Errorf("%s has health %q (%s)", a.Name, n.Health, n.HealthReason)
			}
		}
	})
}

// TestHealthReasonFollowsTheCause checks that the health shown tells why:
// a member whose self-check is critical and that then dies is shown as
// unreachable, and one that comes back with a critical self-check is
// shown with that check, not as unreachable: a record is rewritten when
// its cause changes even if its status does not.
func TestHealthReasonFollowsTheCause(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	t.Parallel()
	f := newHCFed(t, 2)
	state := filepath.Join(t.TempDir(), "state")
	if err := os.WriteFile(state, []byte("2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`read s < %s; echo "state $s"; exit $s`, state)
	a := f.startAgent(t, "m1", []health.CheckConfig{{Name: "job", Type: health.TypeScript, Command: []string{"sh", "-c", script}, Interval: time.Second}})
	prober, _ := hcProbers(a.Name, f.names())
	// waitReason waits for m1 to be critical for the given reason and for
	// an event that says so.
	waitReason := func(t *testing.T, reason string, after int64) {
		t.Helper()
		testcluster.Eventually(t, hcDetectBound(2), func() error {
			got, err := hcTryNodes(f.c, f.creds)
			if err != nil {
				return err
			}
			if n := got[a.Name]; n.Health != string(health.Critical) || !strings.Contains(n.HealthReason, reason) {
				return fmt.Errorf("%s has health %q (%s), want critical for %q", a.Name, n.Health, n.HealthReason, reason)
			}
			return nil
		})
		testcluster.Eventually(t, 10*time.Second, func() error {
			evs, err := hcTryEvents(f.c, f.creds, a.Name)
			if err != nil {
				return err
			}
			for _, e := range evs {
				if e.Revision > after && strings.Contains(e.Message, reason) {
					return nil
				}
			}
			return fmt.Errorf("no event after revision %d says %q:\n%s", after, reason, hcFormat(hcHealthEvents(evs)))
		})
	}
	waitReason(t, "job critical: exit status 2", 0)

	t.Run("a failing member that dies is shown unreachable", func(t *testing.T) {
		before := hcLastRevision(f.events(t, a.Name))
		a.Kill()
		waitReason(t, "unreachable from "+prober, before)
	})
	t.Run("a dead member back with a failing check is shown with the check", func(t *testing.T) {
		before := hcLastRevision(f.events(t, a.Name))
		a.Restart()
		waitReason(t, "job critical: exit status 2", before)
	})
}
