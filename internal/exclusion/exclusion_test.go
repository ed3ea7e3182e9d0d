//go:build linux

package exclusion

// Mutual exclusion, proved from what the protected services log. Every
// HA mastership and every lock hold runs the test service (monotime),
// which logs its start, a heartbeat and its stop with the machine's
// monotonic clock and its fencing token. Trials kill the holder with
// SIGKILL, freeze it with SIGSTOP past its lease, or cut it off from the
// federation; a checker then shows from the log alone that no two
// holders' intervals overlapped and that tokens grew from each holder to
// the next. Every trial must also have produced a failover in time, so
// that the tests cannot pass by doing nothing.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fedkeeper/fedkeeper/agent"
	"github.com/fedkeeper/fedkeeper/client"
	"github.com/fedkeeper/fedkeeper/coord"
	"github.com/fedkeeper/fedkeeper/ha"
	"github.com/fedkeeper/fedkeeper/internal/testcluster"
)

// The HA group's timing: short, so that a trial takes seconds, with room
// for a loaded machine, where a process may go unscheduled for a second.
// A stop script cut off by its timeout before it told the service to
// stop leaves it running, and the next master would start beside it.
// The script timeout plus the watchdog's 250 ms margin must stay under
// half the lease.
//
// A start script that outlives its timeout or its mastership is killed
// with its process group, and the service it started in the background
// with it, too abruptly to log a stop: the checker counts a service
// without a stop line as ended at its last line (killable), here as for
// the lock.
const (
	exclHALeaseTTL      = 3 * time.Second
	exclHATakeover      = 500 * time.Millisecond
	exclHAScriptTimeout = time.Second
	exclHAStatusEvery   = time.Second
)

// The lock's timing. Its watchdog stops the command with signals, no
// script; a command that outlasts its grace is killed.
const (
	exclLockTTL   = 2 * time.Second
	exclLockGrace = 500 * time.Millisecond
)

// exclSlack covers what a failover's bound does not model: the store
// checks expiries every half second; on a loaded machine processes go
// unscheduled and the store's disk may stall for seconds, so that every
// lease lapses, and candidates and the lock's queue stand again, and
// wait.
const exclSlack = 20 * time.Second

// The longest a failover may take: the store lets a silent holder's
// lease expire a TTL after its last renewal; a new master waits the
// takeover delay.
const (
	exclHAFailoverBound   = exclHALeaseTTL + exclHATakeover + exclSlack
	exclLockFailoverBound = exclLockTTL + exclSlack
)

// exclSteadyWait bounds the return to a steady state after a trial: a
// killed agent restarts, a frozen or cut-off one notices its loss and
// stands again.
const exclSteadyWait = 60 * time.Second

// Trials per fault kind: 50 for HA groups, 60 for the lock, whose every
// trial is one acquisition. Without network namespaces (not root) there
// are no partitions: 35 and 50.
const (
	exclHAKills        = 20
	exclHAFreezes      = 15
	exclHAPartitions   = 15
	exclLockReleases   = 20
	exclLockKills      = 15
	exclLockFreezes    = 15
	exclLockPartitions = 10
	exclGroup          = "svc"
	exclLock           = "work"
	exclLockQueue      = 2 // holders waiting behind the one that holds
	exclHolderTimeout  = 60 * time.Second
)

// exclHANodes are the agents of the HA group, highest rank first.
var exclHANodes = []string{"a1", "a2", "a3"}

// exclLine is one line of a service log: "KIND GROUP NODE TOKEN MONO_NS",
// KIND being start, beat or stop. For a lock, GROUP is the lock and NODE
// the holder.
type exclLine struct {
	no                int
	kind, group, node string
	token             int64
	mono              time.Duration
}

func parseExclLine(no int, s string) (exclLine, error) {
	f := strings.Fields(s)
	if len(f) != 5 || (f[0] != "start" && f[0] != "beat" && f[0] != "stop") {
		return exclLine{}, fmt.Errorf("line %d: %q is not KIND GROUP NODE TOKEN MONO_NS", no, s)
	}
	token, err := strconv.ParseInt(f[3], 10, 64)
	if err != nil || token <= 0 {
		return exclLine{}, fmt.Errorf("line %d: %q: token %q is not a positive number", no, s, f[3])
	}
	ns, err := strconv.ParseInt(f[4], 10, 64)
	if err != nil || ns < 0 {
		return exclLine{}, fmt.Errorf("line %d: %q: time %q is not a number of nanoseconds", no, s, f[4])
	}
	return exclLine{no: no, kind: f[0], group: f[1], node: f[2], token: token, mono: time.Duration(ns)}, nil
}

// exclInterval is one mastership or hold as its service logged it.
type exclInterval struct {
	group, node string
	token       int64
	line        int // of the start
	start       time.Duration
	// last is the time of the interval's last line, stop the time of its
	// stop line if stopped.
	last, stop time.Duration
	stopped    bool
	beats      int
}

func (iv exclInterval) String() string {
	return fmt.Sprintf("%s's %s (token %d)", iv.node, iv.group, iv.token)
}

// exclMaxErrors caps the violations reported from one log.
const exclMaxErrors = 20

// checkExclusive checks a service log. In each group, taken in order of
// start on the monotonic clock, each service ends before the next starts,
// and each start's token is greater than every earlier one's. A service
// ends with its stop line. Without one it runs still, unless killable:
// then it may have been killed, and ended with its last line. Heartbeats
// and stops belong to services that run. It returns the intervals, in
// order of start, and the violations. A last line without its newline is
// being written, and left for the next reading.
func checkExclusive(text string, killable bool) ([]exclInterval, error) {
	text = text[:strings.LastIndexByte(text, '\n')+1]
	var lines []exclLine
	var errs []error
	for i, s := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if s == "" {
			continue
		}
		l, err := parseExclLine(i+1, s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		lines = append(lines, l)
	}
	// Services write concurrently: a line may land in the file after one
	// stamped later.
	slices.SortStableFunc(lines, func(a, b exclLine) int { return cmp.Compare(a.mono, b.mono) })
	var base time.Duration
	if len(lines) > 0 {
		base = lines[0].mono
	}
	at := func(d time.Duration) string { return "+" + (d - base).String() }

	type key struct {
		group, node string
		token       int64
	}
	byKey := map[key]*exclInterval{}
	var all []*exclInterval
	for _, l := range lines {
		k := key{l.group, l.node, l.token}
		iv := byKey[k]
		if l.kind == "start" {
			if iv != nil {
				errs = append(errs, fmt.Errorf("line %d: %s started again at %s", l.no, iv, at(l.mono)))
				continue
			}
			iv = &exclInterval{group: l.group, node: l.node, token: l.token, line: l.no, start: l.mono, last: l.mono}
			byKey[k] = iv
			all = append(all, iv)
			continue
		}
		what := map[string]string{"beat": "heartbeat", "stop": "stop"}[l.kind]
		name := exclInterval{group: l.group, node: l.node, token: l.token}.String()
		switch {
		case iv == nil:
			errs = append(errs, fmt.Errorf("line %d: %s of %s at %s, which never started", l.no, what, name, at(l.mono)))
		case iv.stopped:
			errs = append(errs, fmt.Errorf("line %d: %s of %s at %s, after its stop at %s", l.no, what, name, at(l.mono), at(iv.stop)))
		case l.kind == "stop":
			iv.last, iv.stop, iv.stopped = l.mono, l.mono, true
		default:
			iv.last = l.mono
			iv.beats++
		}
	}

	// If any two intervals overlap, two that follow each other do.
	prev := map[string]*exclInterval{}
	highest := map[string]*exclInterval{}
	for _, iv := range all {
		if p := prev[iv.group]; p != nil {
			switch {
			case p.stopped && p.stop >= iv.start:
				errs = append(errs, fmt.Errorf("line %d: %s started at %s, before %s, started at %s, stopped at %s", iv.line, iv, at(iv.start), p, at(p.start), at(p.stop)))
			case !p.stopped && !killable:
				errs = append(errs, fmt.Errorf("line %d: %s started at %s while %s, started at %s, had not stopped", iv.line, iv, at(iv.start), p, at(p.start)))
			case !p.stopped && p.last >= iv.start:
				errs = append(errs, fmt.Errorf("line %d: %s started at %s, before %s, started at %s, logged its last line at %s", iv.line, iv, at(iv.start), p, at(p.start), at(p.last)))
			}
		}
		prev[iv.group] = iv
		h := highest[iv.group]
		if h != nil && iv.token <= h.token {
			errs = append(errs, fmt.Errorf("line %d: %s started at %s after %s, started at %s: the token did not grow", iv.line, iv, at(iv.start), h, at(h.start)))
		}
		if h == nil || iv.token > h.token {
			highest[iv.group] = iv
		}
	}
	out := make([]exclInterval, len(all))
	for i, iv := range all {
		out[i] = *iv
	}
	if len(errs) > exclMaxErrors {
		errs = append(errs[:exclMaxErrors], fmt.Errorf("and %d more", len(errs)-exclMaxErrors))
	}
	return out, errors.Join(errs...)
}

// exclNotStopped returns the intervals without a stop line.
func exclNotStopped(ivs []exclInterval) []exclInterval {
	return slices.DeleteFunc(slices.Clone(ivs), func(iv exclInterval) bool { return iv.stopped })
}

func TestServiceLogCheckerFindsOverlapsAndTokensThatDoNotGrow(t *testing.T) {
	for _, tc := range []struct {
		name     string
		log      string
		killable bool
		// want is a part of the violation reported; "" for none.
		want      string
		intervals int
		// running is how many intervals have no stop line.
		running int
	}{
		{name: "one after the other, the last still running", log: `
start svc a1 5 100
beat svc a1 5 150
stop svc a1 5 200
start svc a2 9 300
stop svc a2 9 400
start svc a1 12 500
beat svc a1 12 600
`, intervals: 3, running: 1},
		{name: "lines written out of the clock's order", log: `
start svc a1 5 100
start svc a2 9 300
stop svc a1 5 200
`, intervals: 2, running: 1},
		{name: "groups are independent", log: `
start svc a1 5 100
start web a2 6 150
stop svc a1 5 200
stop web a2 6 250
`, intervals: 2},
		{name: "a line still being written is left out", log: "start svc a1 5 100\nstop svc a1 5 200\nstart svc a2 9 30", intervals: 1},
		{name: "empty", log: ``},
		{name: "a killable service ends at its last line", killable: true, log: `
start work h1 5 100
beat work h1 5 200
start work h2 9 300
stop work h2 9 400
`, intervals: 2, running: 1},
		{name: "overlap", log: `
start svc a1 5 100
start svc a2 9 150
stop svc a1 5 200
`, want: "line 3: a2's svc (token 9) started at +50ns, before a1's svc (token 5), started at +0s, stopped at +100ns", intervals: 2, running: 1},
		{name: "a start without a stop, then another start", log: `
start svc a1 5 100
beat svc a1 5 150
start svc a2 9 300
`, want: "line 4: a2's svc (token 9) started at +200ns while a1's svc (token 5), started at +0s, had not stopped", intervals: 2, running: 2},
		{name: "a killable service's heartbeat after the next start", killable: true, log: `
start work h1 5 100
start work h2 9 300
beat work h1 5 350
`, want: "line 3: h2's work (token 9) started at +200ns, before h1's work (token 5), started at +0s, logged its last line at +250ns", intervals: 2, running: 2},
		{name: "a token that does not grow", log: `
start svc a1 9 100
stop svc a1 9 200
start svc a2 9 300
`, want: "line 4: a2's svc (token 9) started at +200ns after a1's svc (token 9), started at +0s: the token did not grow", intervals: 2, running: 1},
		{name: "a token lower than an earlier one", killable: true, log: `
start svc a1 9 100
stop svc a1 9 200
start svc a2 4 300
`, want: "the token did not grow", intervals: 2, running: 1},
		{name: "a stop by a node that never started", log: `
start svc a1 5 100
stop svc a2 5 200
`, want: "line 3: stop of a2's svc (token 5) at +100ns, which never started", intervals: 1, running: 1},
		{name: "a heartbeat after the stop", log: `
start svc a1 5 100
stop svc a1 5 200
beat svc a1 5 250
`, want: "line 4: heartbeat of a1's svc (token 5) at +150ns, after its stop at +100ns", intervals: 1},
		{name: "a mastership started twice", log: `
start svc a1 5 100
stop svc a1 5 200
start svc a1 5 300
`, want: "line 4: a1's svc (token 5) started again at +200ns", intervals: 1},
		{name: "a malformed line", log: `
start svc a1 x 100
`, want: `line 2: "start svc a1 x 100": token "x" is not a positive number`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ivs, err := checkExclusive(tc.log, tc.killable)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("violation reported in a good log: %v", err)
			case tc.want != "" && err == nil:
				t.Errorf("no violation reported, want %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Errorf("violation %q, want one containing %q", err, tc.want)
			}
			if len(ivs) != tc.intervals || len(exclNotStopped(ivs)) != tc.running {
				t.Errorf("intervals %+v, want %d of which %d without a stop", ivs, tc.intervals, tc.running)
			}
		})
	}
}

var (
	exclServiceOnce sync.Once
	exclServicePath string
	exclServiceErr  error
)

// exclService builds the test service once per test process.
func exclService(t *testing.T) string {
	t.Helper()
	exclServiceOnce.Do(func() {
		dir, err := os.MkdirTemp("", "fedkeeper-monotime-")
		if err != nil {
			exclServiceErr = err
			return
		}
		exclServicePath = filepath.Join(dir, "monotime")
		out, err := exec.Command("go", "build", "-o", exclServicePath, "github.com/fedkeeper/fedkeeper/internal/testcluster/monotime").CombinedOutput()
		if err != nil {
			exclServiceErr = fmt.Errorf("build the test service: %v\n%s", err, out)
		}
	})
	if exclServiceErr != nil {
		t.Fatal(exclServiceErr)
	}
	return exclServicePath
}

// exclLog is a test's service log, with the services' pid files beside
// it.
type exclLog struct {
	dir, path string
	// killable: see checkExclusive.
	killable bool
}

// newExclLog makes the service log in dir. Services still running when
// the test ends are stopped first by killing procs, which makes their
// watchdogs fence, so that none writes into a directory being removed.
func newExclLog(t *testing.T, dir string, killable bool, procs func() []*testcluster.Proc) *exclLog {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	l := &exclLog{dir: dir, path: filepath.Join(dir, "log"), killable: killable}
	t.Cleanup(func() {
		for _, p := range procs() {
			p.Signal(syscall.SIGCONT)
			p.Signal(syscall.SIGKILL)
			p.Wait(10 * time.Second)
		}
		deadline := time.Now().Add(5 * time.Second)
		for len(l.running()) > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		for file, pid := range l.running() {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Errorf("service %s outlived its holder and its watchdog", file)
		}
	})
	return l
}

// read checks the log as written so far.
func (l *exclLog) read(t *testing.T) ([]exclInterval, error) {
	t.Helper()
	b, err := os.ReadFile(l.path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return checkExclusive(string(b), l.killable)
}

// intervals returns the log's intervals so far, failing the test at the
// first violation: lines are appended, and a service stops before its
// successor can start, so what the log shows at any moment is true.
func (l *exclLog) intervals(t *testing.T) []exclInterval {
	t.Helper()
	ivs, err := l.read(t)
	if err != nil {
		t.Fatalf("service log %s:\n%v", l.path, err)
	}
	return ivs
}

// running returns the services of this log still running, by pid file.
// A killed service leaves its pid file behind, and its process ID may be
// reused: only a process that runs the service on this log counts.
func (l *exclLog) running() map[string]int {
	files, _ := filepath.Glob(filepath.Join(l.dir, "*.pid"))
	out := map[string]int{}
	for _, f := range files {
		if pid, ok := l.pidIn(f); ok {
			out[filepath.Base(f)] = pid
		}
	}
	return out
}

func (l *exclLog) pidIn(file string) (int, bool) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return pid, err == nil && slices.Contains(strings.Split(string(cmdline), "\x00"), l.path)
}

// pidFile names the pid file of iv's service, as running does.
func (l *exclLog) pidFile(iv exclInterval) string {
	return fmt.Sprintf("%s-%s-%d.pid", iv.group, iv.node, iv.token)
}

// stop asks the service of iv to stop, as its holder's work being done.
func (l *exclLog) stop(iv exclInterval) error {
	pid, ok := l.pidIn(filepath.Join(l.dir, l.pidFile(iv)))
	if !ok {
		return fmt.Errorf("%s: no service running", l.pidFile(iv))
	}
	return syscall.Kill(pid, syscall.SIGTERM)
}

// successor waits for the holder that follows cur, calling tend, if
// set, with the intervals at each look.
func (l *exclLog) successor(t *testing.T, cur exclInterval, tend func([]exclInterval)) exclInterval {
	t.Helper()
	var next exclInterval
	testcluster.Eventually(t, exclSteadyWait, func() error {
		ivs := l.intervals(t)
		if tend != nil {
			tend(ivs)
		}
		for _, iv := range ivs {
			if iv.group == cur.group && iv.token > cur.token {
				next = iv
				return nil
			}
		}
		return fmt.Errorf("no successor of %s has started", cur)
	})
	return next
}

// verify checks the whole log once every holder has stopped: no
// violation, every service ended, at least want of them.
func (l *exclLog) verify(t *testing.T, want int) {
	t.Helper()
	ivs, err := l.read(t)
	if err != nil {
		t.Errorf("service log %s:\n%v", l.path, err)
	}
	killed := exclNotStopped(ivs)
	if len(killed) > 0 && !l.killable {
		t.Errorf("services that never logged their stop: %v", killed)
	}
	if left := l.running(); len(left) > 0 {
		t.Errorf("services still running after every holder stopped: %v", left)
	}
	if len(ivs) < want {
		t.Errorf("%d services ran, want at least %d", len(ivs), want)
	}
	if len(ivs) > 0 {
		t.Logf("%d services ran, one at a time, tokens %d to %d; %d killed before they could log their stop", len(ivs), ivs[0].token, ivs[len(ivs)-1].token, len(killed))
	}
}

// exclFault is one kind of fault that trials inflict on the holder.
type exclFault struct {
	name   string
	trials int
	// inject hits the holder of cur; the function it returns, called once
	// the successor has started, undoes what can be undone.
	inject func(cur exclInterval) (undo func())
}

// exclTrials runs the trials of faults, their kinds interleaved, on the
// holders logged in l, each successor due within bound. steady waits
// until one holder serves and others stand by, and returns the holder's
// interval; tend, if set, keeps others standing by while a trial waits
// for the successor. It returns each kind's failover times: from the
// fault to the successor's start line, both on the monotonic clock.
func exclTrials(t *testing.T, l *exclLog, bound time.Duration, faults []exclFault, steady func() exclInterval, tend func([]exclInterval)) map[string][]time.Duration {
	t.Helper()
	var schedule []exclFault
	for round := 0; ; round++ {
		n := len(schedule)
		for _, f := range faults {
			if round < f.trials {
				schedule = append(schedule, f)
			}
		}
		if len(schedule) == n {
			break
		}
	}
	times := map[string][]time.Duration{}
	for i, f := range schedule {
		cur := steady()
		at := ha.Mono()
		undo := f.inject(cur)
		next := l.successor(t, cur, tend)
		took := next.start - at
		t.Logf("trial %d, %s of %s: %s started %s later", i+1, f.name, cur, next, took.Round(time.Millisecond))
		if took > bound {
			t.Errorf("trial %d, %s of %s: the successor %s started %s after the fault, more than %s", i+1, f.name, cur, next, took, bound)
		}
		times[f.name] = append(times[f.name], took)
		undo()
	}
	return times
}

// exclReport logs each fault kind's failover times.
func exclReport(t *testing.T, faults []exclFault, times map[string][]time.Duration) {
	t.Helper()
	for _, f := range faults {
		d := slices.Clone(times[f.name])
		if len(d) == 0 {
			continue
		}
		slices.Sort(d)
		r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
		t.Logf("failover after %s, %d trials: min %s, median %s, max %s", f.name, len(d), r(d[0]), r(d[len(d)/2]), r(d[len(d)-1]))
	}
}

func exclTotal(faults []exclFault) int {
	n := 0
	for _, f := range faults {
		n += f.trials
	}
	return n
}

// exclPlace says where an agent runs: its address, its data directory
// and how its process starts.
type exclPlace func(name string) (host, dir string, start func(name string, args ...string) *testcluster.Proc)

// exclHA is an HA group of agents whose service is the test service.
type exclHA struct {
	t      *testing.T
	log    *exclLog
	api    *client.Client
	agents []*testcluster.Agent
}

// exclHAScript is the group's script: one test service per mastership,
// found by its pid file. A service killed with its start script leaves
// the file behind, and its process ID may be reused: alive tells.
const exclHAScript = `#!/bin/sh
pf='%[1]s'/"$2-$FEDKEEPER_NODE-$FEDKEEPER_FENCING_TOKEN.pid"
alive() {
	cmd=
	read -r cmd 2>/dev/null </proc/"$1"/cmdline
	case "$cmd" in *'%[3]s'*) return 0 ;; esac
	return 1
}
case "$1" in
start)
	'%[2]s' '%[3]s' "$2" "$FEDKEEPER_NODE" </dev/null >/dev/null 2>&1 &
	# Bounded here too: the agent that bounds it may be killed meanwhile.
	n=0
	until [ -f "$pf" ]; do
		n=$((n + 1))
		[ "$n" -le 200 ] || exit 1
		sleep 0.01
	done ;;
stop)
	# Builtins only until the service is told to stop: a stop cut short
	# by its timeout has told it all the same.
	read -r pid 2>/dev/null <"$pf" && alive "$pid" || exit 0
	kill -TERM "$pid"
	while [ -f "$pf" ] && alive "$pid"; do sleep 0.01; done ;;
status)
	read -r pid 2>/dev/null <"$pf" && alive "$pid" ;;
*)
	exit 2 ;;
esac
`

// startExclHA starts the agents of exclHANodes, placed by place, as
// candidates of the HA group, ranked in that order.
func startExclHA(t *testing.T, sn *testcluster.Supernode, dir string, place exclPlace) *exclHA {
	t.Helper()
	h := &exclHA{t: t, api: sn.AdminClient(t)}
	h.log = newExclLog(t, dir, true, func() []*testcluster.Proc {
		var ps []*testcluster.Proc
		for _, a := range h.agents {
			ps = append(ps, a.Proc)
		}
		return ps
	})
	script := filepath.Join(dir, "svc.sh")
	if err := os.WriteFile(script, fmt.Appendf(nil, exclHAScript, dir, exclService(t), h.log.path), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, name := range exclHANodes {
		host, adir, start := place(name)
		rank := 100 * (len(exclHANodes) - i)
		h.agents = append(h.agents, testcluster.StartAgent(t, sn, sn.Credentials, name, host, adir, start, func(cfg *agent.Config) {
			cfg.HAGroups = []ha.GroupConfig{{
				Name: exclGroup, Rank: rank, Script: script,
				ScriptTimeout: exclHAScriptTimeout, StatusInterval: exclHAStatusEvery,
				TakeoverDelay: exclHATakeover, LeaseTTL: exclHALeaseTTL,
			}}
		}))
	}
	return h
}

func (h *exclHA) agent(name string) *testcluster.Agent {
	h.t.Helper()
	i := slices.IndexFunc(h.agents, func(a *testcluster.Agent) bool { return a.Name == name })
	if i < 0 {
		h.t.Fatalf("no agent %s", name)
	}
	return h.agents[i]
}

func (h *exclHA) election() (coord.Election, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var e coord.Election
	err := h.api.Do(ctx, http.MethodGet, "/v1/elections/"+coord.KindHA+"/"+exclGroup, nil, &e)
	return e, err
}

// steady waits until the election has a master that runs the group's
// only service and every other agent stands by, and returns the master's
// interval.
func (h *exclHA) steady() exclInterval {
	t := h.t
	t.Helper()
	var cur exclInterval
	testcluster.Eventually(t, exclSteadyWait, func() error {
		for _, a := range h.agents {
			select {
			case <-a.Done():
				t.Fatalf("agent %s exited:\n%s", a.Name, a.Log())
			default:
			}
		}
		e, err := h.election()
		if err != nil {
			return err
		}
		if e.Master == nil || e.Request != nil || len(e.Candidates) != len(h.agents) {
			return fmt.Errorf("election %+v, want a master, no request and %d candidates", e, len(h.agents))
		}
		for _, c := range e.Candidates {
			want := ha.StateStandby
			if c.Node == e.Master.Node {
				want = ha.StateMaster
			}
			if c.State != want {
				return fmt.Errorf("%s is %s, want %s (master %s)", c.Node, c.State, want, e.Master.Node)
			}
		}
		ivs := h.log.intervals(t)
		i := slices.IndexFunc(ivs, func(iv exclInterval) bool { return iv.token == e.Master.Token })
		if running := h.log.running(); i < 0 || len(running) != 1 || running[h.log.pidFile(ivs[i])] == 0 {
			return fmt.Errorf("services running %v, want only the master %s's with token %d", running, e.Master.Node, e.Master.Token)
		}
		cur = ivs[i]
		return nil
	})
	return cur
}

// stop stops the agents cleanly, the standbys first so that none takes
// over as the master leaves.
func (h *exclHA) stop(master string) {
	h.t.Helper()
	for _, last := range []bool{false, true} {
		var stopping []*testcluster.Agent
		for _, a := range h.agents {
			if (a.Name == master) == last {
				a.Signal(syscall.SIGTERM)
				stopping = append(stopping, a)
			}
		}
		for _, a := range stopping {
			select {
			case <-a.Done():
			case <-time.After(30 * time.Second):
				h.t.Fatalf("agent %s still running 30s after SIGTERM", a.Name)
			}
		}
	}
}

// run runs the trials of faults, then stops the agents and checks the
// whole log.
func (h *exclHA) run(faults []exclFault) {
	t := h.t
	t.Helper()
	times := exclTrials(t, h.log, exclHAFailoverBound, faults, h.steady, nil)
	h.stop(h.steady().node)
	h.log.verify(t, exclTotal(faults)+1)
	exclReport(t, faults, times)
}

func TestHAMastershipsNeverOverlapAcrossKillsAndFreezes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	c := testcluster.New(t)
	sn := c.InitSupernode("sn1", "--session-ttl", "3s")
	h := startExclHA(t, sn, c.Dir("svc"), func(name string) (string, string, func(string, ...string) *testcluster.Proc) {
		return testcluster.NewHost(), c.Dir(name), c.Start
	})
	h.run([]exclFault{
		{"kill -9", exclHAKills, func(cur exclInterval) func() {
			a := h.agent(cur.node)
			a.Kill()
			return a.Restart
		}},
		{"SIGSTOP", exclHAFreezes, func(cur exclInterval) func() {
			a := h.agent(cur.node)
			a.Pause()
			frozen := time.Now()
			return func() {
				// Frozen past its lease and the takeover delay even when
				// the successor came sooner: the resumed agent must find
				// another master and stand by.
				time.Sleep(time.Until(frozen.Add(exclHALeaseTTL + exclHATakeover)))
				a.Resume()
			}
		}},
	})
}

func TestHAMastershipsNeverOverlapAcrossPartitions(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes in network namespaces; skipped with -short")
	}
	n := testcluster.NewNet(t)
	sn := n.AddHost("sn1").InitSupernode("sn1", "--session-ttl", "3s")
	hosts := map[string]*testcluster.Host{}
	for _, name := range exclHANodes {
		hosts[name] = n.AddHost(name)
	}
	h := startExclHA(t, sn, t.TempDir(), func(name string) (string, string, func(string, ...string) *testcluster.Proc) {
		return hosts[name].IP, hosts[name].Dir(name), hosts[name].Start
	})
	h.run([]exclFault{
		{"partition", exclHAPartitions, func(cur exclInterval) func() {
			n.Isolate(hosts[cur.node])
			return n.HealAll
		}},
	})
}

// exclLocks is a queue of holders of exclLock, each running the test
// service while it holds.
type exclLocks struct {
	t       *testing.T
	log     *exclLog
	api     *client.Client
	creds   string
	svc     string
	holders []*testcluster.Proc
	// start starts a holder's process, or returns nil when there is no
	// room for one now.
	start func(name string, args ...string) *testcluster.Proc
	// queue keeps exclLockQueue holders waiting.
	queue bool
}

func newExclLocks(t *testing.T, sn *testcluster.Supernode, dir string, start func(name string, args ...string) *testcluster.Proc) *exclLocks {
	t.Helper()
	k := &exclLocks{t: t, api: sn.AdminClient(t), creds: sn.Credentials, svc: exclService(t), start: start, queue: true}
	k.log = newExclLog(t, dir, true, func() []*testcluster.Proc { return k.holders })
	return k
}

func exclExited(p *testcluster.Proc) bool {
	select {
	case <-p.Done():
		return true
	default:
		return false
	}
}

func (k *exclLocks) holder(name string) *testcluster.Proc {
	k.t.Helper()
	i := slices.IndexFunc(k.holders, func(p *testcluster.Proc) bool { return p.Name == name })
	if i < 0 {
		k.t.Fatalf("no holder %s", name)
	}
	return k.holders[i]
}

// fill starts holders until exclLockQueue of them wait, given the
// intervals so far, and returns how many wait. Waiting holders may lose
// their leases in a stall of the machine, and give up.
func (k *exclLocks) fill(ivs []exclInterval) int {
	waiting := 0
	for _, p := range k.holders {
		if !exclExited(p) && !slices.ContainsFunc(ivs, func(iv exclInterval) bool { return iv.node == p.Name }) {
			waiting++
		}
	}
	for k.queue && waiting < exclLockQueue {
		name := fmt.Sprintf("holder%02d", len(k.holders)+1)
		p := k.start(name, "lock", exclLock, "--credentials", k.creds, "--ttl", exclLockTTL.String(),
			"--grace", exclLockGrace.String(), "--", k.svc, k.log.path, exclLock, name)
		if p == nil {
			break
		}
		k.holders = append(k.holders, p)
		waiting++
	}
	return waiting
}

// steady keeps exclLockQueue holders waiting, and waits until they do
// behind one whose service runs, whose interval it returns.
func (k *exclLocks) steady() exclInterval {
	t := k.t
	t.Helper()
	var cur exclInterval
	testcluster.Eventually(t, exclSteadyWait, func() error {
		ivs := k.log.intervals(t)
		waiting := k.fill(ivs)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		var lk coord.Lock
		if err := k.api.Do(ctx, http.MethodGet, "/v1/locks/"+exclLock, nil, &lk); err != nil {
			return err
		}
		if len(lk.Holders) != 1 || len(lk.Waiting) < waiting {
			return fmt.Errorf("lock %+v, want one holding and %d waiting", lk, waiting)
		}
		i := slices.IndexFunc(ivs, func(iv exclInterval) bool { return iv.token == lk.Holders[0].Token })
		if i < 0 {
			return fmt.Errorf("no service of the holder with token %d", lk.Holders[0].Token)
		}
		cur = ivs[i]
		if _, ok := k.log.running()[k.log.pidFile(cur)]; !ok || exclExited(k.holder(cur.node)) {
			return fmt.Errorf("%s is not running", cur)
		}
		return nil
	})
	return cur
}

// lost waits for the holder p, whose service was stopped for it, and
// checks that it said so.
func (k *exclLocks) lost(p *testcluster.Proc, fault string) {
	k.t.Helper()
	if st := testcluster.ExitStatus(k.t, p); st != 1 || !strings.Contains(p.Log(), "hold lost") {
		k.t.Errorf("%s, after a %s past its lease: exit status %d, want 1 and a word of its loss:\n%s", p.Name, fault, st, p.Log())
	}
}

// run runs the trials of faults; then whoever still waits holds in turn
// and is done at once; then it checks the whole log.
func (k *exclLocks) run(faults []exclFault) {
	t := k.t
	t.Helper()
	times := exclTrials(t, k.log, exclLockFailoverBound, faults, k.steady, func(ivs []exclInterval) { k.fill(ivs) })
	k.queue = false
	testcluster.Eventually(t, exclHolderTimeout, func() error {
		for _, iv := range exclNotStopped(k.log.intervals(t)) {
			k.log.stop(iv)
		}
		var running []string
		for _, p := range k.holders {
			if !exclExited(p) {
				running = append(running, p.Name)
			}
		}
		if len(running) > 0 {
			return fmt.Errorf("holders still running: %v", running)
		}
		return nil
	})
	k.log.verify(t, exclTotal(faults)+1)
	exclReport(t, faults, times)
}

func TestLockHoldersNeverOverlapAcrossKillsAndFreezes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	// Beside the HA trials, so that this package stays well within go
	// test's ten minutes on a loaded machine; it has a federation of its
	// own and no network namespaces.
	t.Parallel()
	c := testcluster.New(t)
	sn := c.InitSupernode("sn1", "--session-ttl", "3s")
	k := newExclLocks(t, sn, c.Dir("svc"), c.Start)
	k.run([]exclFault{
		{"release", exclLockReleases, func(cur exclInterval) func() {
			if err := k.log.stop(cur); err != nil {
				t.Fatalf("stop %s: %v", cur, err)
			}
			return func() {
				p := k.holder(cur.node)
				switch st := testcluster.ExitStatus(t, p); {
				case st == 0:
				case st == 1 && strings.Contains(p.Log(), "hold lost"):
					// Unscheduled past its lease on a loaded machine: its
					// watchdog stopped the command, which is as it should.
					t.Logf("%s lost its hold before its command was done", p.Name)
				default:
					t.Errorf("%s, its command done, exited with %d:\n%s", p.Name, st, p.Log())
				}
			}
		}},
		{"kill -9", exclLockKills, func(cur exclInterval) func() {
			k.holder(cur.node).Kill()
			return func() {}
		}},
		{"SIGSTOP", exclLockFreezes, func(cur exclInterval) func() {
			p := k.holder(cur.node)
			p.Pause()
			frozen := time.Now()
			return func() {
				time.Sleep(time.Until(frozen.Add(exclLockTTL)))
				p.Resume()
				k.lost(p, "SIGSTOP")
			}
		}},
	})
}

func TestLockHoldersNeverOverlapAcrossPartitions(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes in network namespaces; skipped with -short")
	}
	n := testcluster.NewNet(t)
	sn := n.AddHost("sn1").InitSupernode("sn1", "--session-ttl", "3s")
	// One holder per host, so that a partition cuts off only the one that
	// holds: one holds, exclLockQueue wait, one cut off is on its way out.
	var hosts []*testcluster.Host
	for i := range exclLockQueue + 2 {
		hosts = append(hosts, n.AddHost(fmt.Sprintf("l%d", i+1)))
	}
	on := map[string]*testcluster.Host{}
	var k *exclLocks
	k = newExclLocks(t, sn, t.TempDir(), func(name string, args ...string) *testcluster.Proc {
		for _, h := range hosts {
			if !slices.ContainsFunc(k.holders, func(p *testcluster.Proc) bool { return on[p.Name] == h && !exclExited(p) }) {
				on[name] = h
				return h.Start(name, args...)
			}
		}
		return nil
	})
	k.run([]exclFault{
		{"partition", exclLockPartitions, func(cur exclInterval) func() {
			n.Isolate(on[cur.node])
			return func() {
				n.HealAll()
				k.lost(k.holder(cur.node), "partition")
			}
		}},
	})
}
