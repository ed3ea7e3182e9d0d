package ha_test

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedkeeper/fedkeeper/api"
	"github.com/fedkeeper/fedkeeper/client"
	"github.com/fedkeeper/fedkeeper/coord"
	"github.com/fedkeeper/fedkeeper/events"
	"github.com/fedkeeper/fedkeeper/ha"
	"github.com/fedkeeper/fedkeeper/membership"
	"github.com/fedkeeper/fedkeeper/pki"
	"github.com/fedkeeper/fedkeeper/supernode"
)

// TestWatchdogProcess is no test of its own: the runners of the other
// tests start this test binary running it as their watchdog, the part
// "fedkeeper fence" plays in a build. Only a watchdog's environment has a
// fencing token.
func TestWatchdogProcess(t *testing.T) {
	if os.Getenv(ha.EnvFencingToken) == "" {
		t.Skip("run by the HA group tests as their watchdog")
	}
	fs := flag.NewFlagSet("fence", flag.ContinueOnError)
	var spec ha.WatchdogSpec
	fs.DurationVar(&spec.StopTimeout, "stop-timeout", 0, "")
	fs.IntVar(&spec.KillGroup, "kill-group", 0, "")
	if err := fs.Parse(flag.Args()); err != nil {
		os.Exit(2)
	}
	spec.Stop = fs.Args()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "watchdog", "pid", os.Getpid())
	if err := ha.RunWatchdog(context.Background(), os.Stdin, spec, log); err != nil {
		os.Exit(1)
	}
	os.Exit(0)
}

// watchdogArgs make the test binary run TestWatchdogProcess alone; the
// watchdog's own arguments follow the "--".
var watchdogArgs = []string{"-test.run=^TestWatchdogProcess$", "--"}

// The script of the tests' groups logs each call and fails while a file
// fail-ACTION-NODE exists.
const testScript = `#!/bin/sh
echo "$1 $2 $FEDKEEPER_NODE $FEDKEEPER_FENCING_TOKEN" >> %[1]s/calls
[ -e "%[1]s/fail-$1-$FEDKEEPER_NODE" ] && exit 1
exit 0
`

type federation struct {
	t     *testing.T
	ctx   context.Context
	sn    *supernode.Supernode
	admin *client.Client
	token string
	// dir holds the script, its log and its failure switches.
	dir    string
	script string
	log    *slog.Logger

	mu      sync.Mutex
	clients map[string]*client.Client
}

// newFederation starts a supernode for the test. When the test ends, its
// runners stop, then every group's calls are checked: never two nodes
// running a group's service at once, and tokens that only grow.
func newFederation(t *testing.T) *federation {
	t.Helper()
	t.Parallel()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	var sn *supernode.Supernode
	var snDir string
	// The free ports InitLoopback picks may be taken by another test's
	// supernode before this one binds them.
	for attempt := 0; sn == nil; attempt++ {
		snDir = filepath.Join(dir, fmt.Sprintf("supernode-%d", attempt))
		if _, err := supernode.InitLoopback(snDir, supernode.Config{Name: "sn1", Federation: "test"}); err != nil {
			t.Fatal(err)
		}
		var err error
		sn, err = supernode.Start(ctx, snDir)
		if err != nil && (attempt == 2 || !strings.Contains(err.Error(), "address already in use")) {
			t.Fatal(err)
		}
	}
	t.Cleanup(sn.Close)
	creds, err := client.LoadCredentials(filepath.Join(snDir, supernode.CredentialsFile))
	if err != nil {
		t.Fatal(err)
	}
	admin, err := creds.Client()
	if err != nil {
		t.Fatal(err)
	}
	token, _, err := sn.Members.CreateToken(ctx, "", 100, time.Hour, "test")
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "service.sh")
	if err := os.WriteFile(script, fmt.Appendf(nil, testScript, dir), 0o755); err != nil {
		t.Fatal(err)
	}
	out := io.Discard
	if testing.Verbose() {
		out = os.Stderr
	}
	f := &federation{t: t, ctx: ctx, sn: sn, admin: admin, token: token, dir: dir, script: script,
		log: slog.New(slog.NewTextHandler(out, nil)).With("test", t.Name()), clients: map[string]*client.Client{}}
	t.Cleanup(f.checkOneServing)
	return f
}

// client admits node and returns its client, through the proxy at via if
// given.
func (f *federation) client(node, via string) *client.Client {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.clients[node]; c != nil {
		return c
	}
	key, err := pki.NewKey()
	if err != nil {
		f.t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, node)
	if err != nil {
		f.t.Fatal(err)
	}
	res, err := f.sn.Members.Join(f.ctx, membership.JoinInput{Name: node, Token: f.token, CSR: string(csr), Profile: membership.Profile{Project: "CMIP6"}})
	if err != nil {
		f.t.Fatalf("admit %s: %v", node, err)
	}
	cert, err := pki.ParseCert([]byte(res.CertPEM))
	if err != nil {
		f.t.Fatal(err)
	}
	server := f.sn.URL()
	if via != "" {
		server = via
	}
	c := client.New([]string{server}, pki.APIClientTLS(&pki.KeyPair{Cert: cert, Key: key}, f.sn.CA.Cert))
	f.clients[node] = c
	return c
}

// group is the configuration of a group of the tests: short times, so
// that a failover takes seconds.
func (f *federation) group(name string, rank int) ha.GroupConfig {
	return ha.GroupConfig{
		Name: name, Rank: rank, Script: f.script,
		ScriptTimeout: time.Second, StatusInterval: 300 * time.Millisecond,
		TakeoverDelay: 500 * time.Millisecond, LeaseTTL: 3 * time.Second,
	}
}

// run runs node's part in a group until the returned function or the end
// of the test stops it.
func (f *federation) run(node string, cfg ha.GroupConfig) (stop func()) {
	f.t.Helper()
	g := ha.NewGroup(cfg, node, f.client(node, ""), f.log.With("node", node, "group", cfg.Name))
	g.ExeArgs = watchdogArgs
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.Run(ctx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	f.t.Cleanup(stop)
	return stop
}

func (f *federation) election(group string) coord.Election {
	f.t.Helper()
	var e coord.Election
	if err := f.admin.Do(f.ctx, http.MethodGet, "/v1/elections/ha/"+url.PathEscape(group), nil, &e); err != nil {
		f.t.Fatal(err)
	}
	return e
}

func state(e coord.Election, node string) string {
	for _, c := range e.Candidates {
		if c.Node == node {
			return c.State
		}
	}
	return ""
}

// waitMaster waits until node is master of group with its service
// started, and returns the election then.
func (f *federation) waitMaster(group, node string, within time.Duration) coord.Election {
	f.t.Helper()
	var e coord.Election
	f.eventually(within, fmt.Sprintf("%s master of %s", node, group), func() bool {
		e = f.election(group)
		return e.Master != nil && e.Master.Node == node && state(e, node) == ha.StateMaster
	})
	return e
}

func (f *federation) eventually(within time.Duration, what string, cond func() bool) {
	f.t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			f.t.Fatalf("not within %s: %s\ncalls:\n%s", within, what, f.callsText())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// fail makes action fail on node, or work again.
func (f *federation) fail(action, node string, failing bool) {
	f.t.Helper()
	p := filepath.Join(f.dir, "fail-"+action+"-"+node)
	var err error
	if failing {
		err = os.WriteFile(p, nil, 0o644)
	} else {
		err = os.Remove(p)
	}
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f *federation) ask(group, kind, node string) {
	f.t.Helper()
	if err := f.admin.Do(f.ctx, http.MethodPost, "/v1/elections/ha/"+url.PathEscape(group)+"/"+kind, api.AskRequest{Node: node}, nil); err != nil {
		f.t.Fatalf("ask %s of %s: %v", kind, group, err)
	}
}

// call is one run of the script.
type call struct {
	action, group, node string
	token               int64
}

func (f *federation) calls() []call {
	f.t.Helper()
	b, err := os.ReadFile(filepath.Join(f.dir, "calls"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		f.t.Fatal(err)
	}
	var out []call
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) != 4 {
			f.t.Fatalf("bad script call line %q", sc.Text())
		}
		token, err := strconv.ParseInt(fl[3], 10, 64)
		if err != nil {
			f.t.Fatalf("script call without a token: %q", sc.Text())
		}
		out = append(out, call{fl[0], fl[1], fl[2], token})
	}
	return out
}

func (f *federation) callsText() string {
	b, _ := os.ReadFile(filepath.Join(f.dir, "calls"))
	return string(b)
}

// find returns the index of the first call matching c from start on (an
// empty field or zero token matches any), or -1.
func find(calls []call, start int, c call) int {
	for i := start; i < len(calls); i++ {
		k := calls[i]
		if k.action == c.action && (c.group == "" || k.group == c.group) && (c.node == "" || k.node == c.node) && (c.token == 0 || k.token == c.token) {
			return i
		}
	}
	return -1
}

// checkOneServing checks the script's calls of every group: a start only
// while no other node's start is not yet followed by its stop, a status
// only by the node running the service, and tokens that grow with each
// mastership.
func (f *federation) checkOneServing() {
	running := map[string]map[string]int64{}
	lastToken := map[string]int64{}
	for i, c := range f.calls() {
		r := running[c.group]
		if r == nil {
			r = map[string]int64{}
			running[c.group] = r
		}
		switch c.action {
		case "start":
			for n, tok := range r {
				if n != c.node {
					f.t.Errorf("call %d: %s started %s (token %d) while %s (token %d) was not stopped", i, c.node, c.group, c.token, n, tok)
				}
			}
			if c.token <= lastToken[c.group] {
				f.t.Errorf("call %d: %s started %s with token %d, not above the last one %d", i, c.node, c.group, c.token, lastToken[c.group])
			}
			r[c.node], lastToken[c.group] = c.token, c.token
		case "status":
			if r[c.node] != c.token {
				f.t.Errorf("call %d: status of %s by %s (token %d), which does not run it", i, c.group, c.node, c.token)
			}
		case "stop":
			delete(r, c.node)
		}
	}
	if f.t.Failed() {
		f.t.Logf("calls:\n%s", f.callsText())
	}
}

// haEvents lists the events of kind about node.
func (f *federation) haEvents(kind, node string) []events.Event {
	f.t.Helper()
	var evs []events.Event
	if err := f.admin.Do(f.ctx, http.MethodGet, "/v1/events", nil, &evs); err != nil {
		f.t.Fatal(err)
	}
	var out []events.Event
	for _, e := range evs {
		if e.Kind == kind && e.Node == node {
			out = append(out, e)
		}
	}
	return out
}

func TestHighestRankBecomesMasterAndStartsWithItsToken(t *testing.T) {
	f := newFederation(t)
	for node, rank := range map[string]int{"a": 10, "b": 20, "c": 5} {
		f.run(node, f.group("web", rank))
	}
	e := f.waitMaster("web", "b", 15*time.Second)
	if e.Master.Token <= 0 {
		t.Fatalf("master without a fencing token: %+v", e.Master)
	}
	calls := f.calls()
	if find(calls, 0, call{action: "start", group: "web", node: "b", token: e.Master.Token}) < 0 {
		t.Fatalf("no start by b with token %d; calls:\n%s", e.Master.Token, f.callsText())
	}
	if i := find(calls, 0, call{action: "start", node: "a"}); i >= 0 {
		t.Fatalf("a lower rank started the service: %+v", calls[i])
	}
	f.eventually(5*time.Second, "a and c standby", func() bool {
		e := f.election("web")
		return state(e, "a") == ha.StateStandby && state(e, "c") == ha.StateStandby
	})
	f.eventually(5*time.Second, "a status run by the master", func() bool {
		return find(f.calls(), 0, call{action: "status", node: "b", token: e.Master.Token}) >= 0
	})
	if len(f.haEvents("ha-elected", "b")) == 0 {
		t.Error("no ha-elected event for b")
	}
}

func TestNextRankTakesOverWhenTheMasterLeaves(t *testing.T) {
	f := newFederation(t)
	f.run("a", f.group("web", 10))
	stopB := f.run("b", f.group("web", 20))
	first := f.waitMaster("web", "b", 15*time.Second)
	left := time.Now()
	stopB()
	if find(f.calls(), 0, call{action: "stop", node: "b", token: first.Master.Token}) < 0 {
		t.Fatalf("b left without stopping its service; calls:\n%s", f.callsText())
	}
	second := f.waitMaster("web", "a", 10*time.Second)
	// b revoked its lease: a need not wait for it to expire.
	if took := time.Since(left); took > 3*time.Second {
		t.Errorf("a took over %s after b left; want well within b's lease TTL", took)
	}
	if second.Master.Token <= first.Master.Token {
		t.Errorf("token %d of the new mastership is not above %d", second.Master.Token, first.Master.Token)
	}
	if state(second, "b") != "" {
		t.Errorf("b is still a candidate after leaving: %+v", second.Candidates)
	}
}

// proxy forwards TCP connections to a supernode until it is cut.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]struct{}
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() { ln.Close() })
	go p.serve()
	return p
}

func (p *proxy) URL() string { return "https://" + p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil || !p.track(in, out) {
			in.Close()
			if out != nil {
				out.Close()
			}
			continue
		}
		go func() {
			io.Copy(out, in)
			out.Close()
		}()
		go func() {
			io.Copy(in, out)
			in.Close()
		}()
	}
}

func (p *proxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return false
	}
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
	return true
}

// setCut cuts the link, dropping the connections through it, or heals it.
func (p *proxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

func TestCutOffMasterStopsItsServiceBeforeTheNextRankStarts(t *testing.T) {
	f := newFederation(t)
	px := newProxy(t, strings.TrimPrefix(f.sn.URL(), "https://"))
	f.client("b", px.URL())
	f.run("a", f.group("web", 10))
	f.run("b", f.group("web", 20))
	first := f.waitMaster("web", "b", 15*time.Second)
	px.setCut(true)
	second := f.waitMaster("web", "a", 15*time.Second)
	calls := f.calls()
	stop := find(calls, 0, call{action: "stop", node: "b", token: first.Master.Token})
	start := find(calls, 0, call{action: "start", node: "a", token: second.Master.Token})
	if stop < 0 || stop > start {
		t.Fatalf("the cut-off master did not stop before the next started; calls:\n%s", f.callsText())
	}
	if second.Master.Token <= first.Master.Token {
		t.Errorf("token %d of the new mastership is not above %d", second.Master.Token, first.Master.Token)
	}
	// Back, b stands again on a new lease, and without preempt leaves a
	// working master alone.
	px.setCut(false)
	f.eventually(15*time.Second, "b standby again", func() bool { return state(f.election("web"), "b") == ha.StateStandby })
	time.Sleep(2 * time.Second)
	if e := f.election("web"); e.Master == nil || e.Master.Token != second.Master.Token {
		t.Errorf("mastership moved after b came back without preempt: %+v", e.Master)
	}
}

func TestFailingStatusMovesMastershipToTheNextRank(t *testing.T) {
	f := newFederation(t)
	f.run("a", f.group("web", 10))
	f.run("b", f.group("web", 20))
	first := f.waitMaster("web", "b", 15*time.Second)
	f.fail("status", "b", true)
	second := f.waitMaster("web", "a", 10*time.Second)
	calls := f.calls()
	if find(calls, 0, call{action: "stop", node: "b", token: first.Master.Token}) < 0 {
		t.Fatalf("b did not stop after its status failed; calls:\n%s", f.callsText())
	}
	if len(f.haEvents("ha-failed", "b")) == 0 {
		t.Error("no ha-failed event for b")
	}
	// Another master is elected: b may stand again.
	f.eventually(5*time.Second, "b standby again", func() bool { return state(f.election("web"), "b") == ha.StateStandby })
	if e := f.election("web"); e.Master.Token != second.Master.Token {
		t.Errorf("mastership moved again: %+v", e.Master)
	}
}

func TestFailingStartMakesTheNextRankTry(t *testing.T) {
	f := newFederation(t)
	f.fail("start", "b", true)
	f.run("a", f.group("web", 10))
	f.run("b", f.group("web", 20))
	f.waitMaster("web", "a", 20*time.Second)
	calls := f.calls()
	bStart := find(calls, 0, call{action: "start", node: "b"})
	if bStart < 0 || find(calls, bStart, call{action: "stop", node: "b", token: calls[bStart].token}) < 0 {
		t.Fatalf("b did not try and then stop; calls:\n%s", f.callsText())
	}
	if len(f.haEvents("ha-failed", "b")) == 0 {
		t.Error("no ha-failed event for b")
	}
}

func TestManualTakeoverMovesMastershipWhateverTheRank(t *testing.T) {
	f := newFederation(t)
	for node, rank := range map[string]int{"a": 10, "b": 20, "c": 5} {
		f.run(node, f.group("web", rank))
	}
	first := f.waitMaster("web", "b", 15*time.Second)
	f.ask("web", coord.RequestTakeover, "c")
	second := f.waitMaster("web", "c", 10*time.Second)
	if second.Master.Token <= first.Master.Token {
		t.Errorf("token %d of the new mastership is not above %d", second.Master.Token, first.Master.Token)
	}
	f.eventually(5*time.Second, "request served and b standby", func() bool {
		e := f.election("web")
		return e.Request == nil && state(e, "b") == ha.StateStandby
	})
	if i := find(f.calls(), 0, call{action: "start", node: "a"}); i >= 0 {
		t.Errorf("a, not named, started the service")
	}
	time.Sleep(time.Second)
	if e := f.election("web"); e.Master == nil || e.Master.Node != "c" {
		t.Errorf("the mastership did not stay with c: %+v", e.Master)
	}
}

func TestGiveupMovesMastershipAndTheGiverStaysPassive(t *testing.T) {
	f := newFederation(t)
	f.run("a", f.group("web", 10))
	f.run("b", f.group("web", 20))
	// Alone in its group, x has no one to give the mastership to.
	f.run("x", f.group("solo", 10))
	f.waitMaster("web", "b", 15*time.Second)
	solo := f.waitMaster("solo", "x", 15*time.Second)

	f.ask("web", coord.RequestGiveup, "")
	f.waitMaster("web", "a", 10*time.Second)
	if len(f.haEvents("ha-passive", "b")) == 0 {
		t.Error("no ha-passive event for b")
	}

	f.ask("solo", coord.RequestGiveup, "")
	f.eventually(10*time.Second, "x passive without mastership", func() bool {
		e := f.election("solo")
		return e.Master == nil && state(e, "x") == ha.StatePassive
	})
	time.Sleep(2 * time.Second)
	if e := f.election("solo"); e.Master != nil || state(e, "x") != ha.StatePassive {
		t.Fatalf("x did not stay passive: master %+v, candidates %+v", e.Master, e.Candidates)
	}
	// A takeover naming it brings it back.
	f.ask("solo", coord.RequestTakeover, "x")
	again := f.waitMaster("solo", "x", 10*time.Second)
	if again.Master.Token <= solo.Master.Token {
		t.Errorf("token %d of the new mastership is not above %d", again.Master.Token, solo.Master.Token)
	}
}

func TestPreemptReturnsMastershipToTheHigherRankAfterItsDelay(t *testing.T) {
	f := newFederation(t)
	f.run("a", f.group("web", 10))
	first := f.waitMaster("web", "a", 15*time.Second)
	cfg := f.group("web", 20)
	cfg.Preempt, cfg.PreemptDelay = true, 2*time.Second
	back := time.Now()
	f.run("b", cfg)
	second := f.waitMaster("web", "b", 15*time.Second)
	if took := time.Since(back); took < cfg.PreemptDelay+cfg.TakeoverDelay {
		t.Errorf("b took over %s after it came back; want at least the preempt and takeover delays, %s", took, cfg.PreemptDelay+cfg.TakeoverDelay)
	}
	if second.Master.Token <= first.Master.Token {
		t.Errorf("token %d of the new mastership is not above %d", second.Master.Token, first.Master.Token)
	}
	f.eventually(5*time.Second, "a standby", func() bool { return state(f.election("web"), "a") == ha.StateStandby })
}

func TestOneBackupServesSeveralGroups(t *testing.T) {
	f := newFederation(t)
	// x is master of "left" and the backup of "right".
	f.run("x", f.group("left", 20))
	f.run("x", f.group("right", 5))
	stopY := f.run("y", f.group("right", 20))
	f.waitMaster("left", "x", 15*time.Second)
	f.waitMaster("right", "y", 15*time.Second)
	if s := state(f.election("right"), "x"); s != ha.StateStandby {
		t.Fatalf("x is %q in right, want standby", s)
	}
	stopY()
	f.waitMaster("right", "x", 10*time.Second)
	if e := f.election("left"); e.Master == nil || e.Master.Node != "x" || state(e, "x") != ha.StateMaster {
		t.Fatalf("x lost left while taking over right: %+v", e)
	}
}
