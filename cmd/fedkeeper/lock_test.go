package main

// Integration tests of `fedkeeper lock` and `fedkeeper role`: real
// supernode, real lock and role processes, which the tests kill -9 and
// freeze. Every command run logs its start and end to one file; the
// tests check from it that holders never overlap beyond the limit and
// that fencing tokens grow from holder to successor.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fedkeeper/fedkeeper/agent"
	"github.com/fedkeeper/fedkeeper/coord"
	"github.com/fedkeeper/fedkeeper/internal/testcluster"
	"github.com/fedkeeper/fedkeeper/membership"
)

// lockTiming is the lease of the tests' holders: a kill or a freeze ends
// a hold within seconds.
var lockTiming = []string{"--ttl", "4s", "--grace", "1s"}

// lockFed is a one-supernode federation and the log of the commands run
// under its locks and roles.
type lockFed struct {
	c    *testcluster.Cluster
	sn   *testcluster.Supernode
	runs string
}

func newLockFed(t *testing.T) *lockFed {
	t.Helper()
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	t.Parallel()
	c := testcluster.New(t)
	return &lockFed{c: c, sn: c.InitSupernode("sn1"), runs: filepath.Join(c.Dir("runs"), "log")}
}

// script is a shell command that logs "start TOKEN NAME" and, when it
// ends or is stopped, "end TOKEN", with body in between.
func (f *lockFed) script(body string) string {
	os.MkdirAll(filepath.Dir(f.runs), 0o755)
	return fmt.Sprintf(`echo "start $FEDKEEPER_FENCING_TOKEN $FEDKEEPER_LOCK$FEDKEEPER_ROLE" >> %[1]s
trap 'echo "end $FEDKEEPER_FENCING_TOKEN" >> %[1]s; exit 143' TERM
%[2]s
echo "end $FEDKEEPER_FENCING_TOKEN" >> %[1]s`, f.runs, body)
}

// lock starts `fedkeeper lock` as the process proc.
func (f *lockFed) lock(proc, name, body string, flags ...string) *testcluster.Proc {
	args := append(append([]string{"lock", name, "--credentials", f.sn.Credentials}, lockTiming...), flags...)
	return f.c.Start(proc, append(args, "--", "sh", "-c", f.script(body))...)
}

// lockRun is one run of a command in the log.
type lockRun struct {
	name       string
	token      int64
	start, end int // line numbers; end is 0 while it runs
}

// read returns the runs logged so far, in order of start.
func (f *lockFed) read(t *testing.T) []lockRun {
	t.Helper()
	b, err := os.ReadFile(f.runs)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var runs []lockRun
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for line := 1; sc.Scan(); line++ {
		fl := strings.Fields(sc.Text())
		tok, err := strconv.ParseInt(fl[1], 10, 64)
		if err != nil {
			t.Fatalf("run log line %q: %v", sc.Text(), err)
		}
		switch {
		case fl[0] == "start" && len(fl) == 3:
			runs = append(runs, lockRun{name: fl[2], token: tok, start: line})
		case fl[0] == "end":
			i := len(runs) - 1
			for i >= 0 && (runs[i].token != tok || runs[i].end != 0) {
				i--
			}
			if i < 0 {
				t.Fatalf("run log line %d: end of a run with token %d that was not going:\n%s", line, tok, b)
			}
			runs[i].end = line
		default:
			t.Fatalf("run log line %q", sc.Text())
		}
	}
	return runs
}

// waitRuns waits until n runs have started, and returns the runs.
func (f *lockFed) waitRuns(t *testing.T, n int) []lockRun {
	t.Helper()
	var runs []lockRun
	testcluster.Eventually(t, 30*time.Second, func() error {
		if runs = f.read(t); len(runs) < n {
			return fmt.Errorf("%d runs started, want %d", len(runs), n)
		}
		return nil
	})
	return runs
}

// check checks the runs of name, all ended: at most limit at once, and
// each with a larger token than every run that ended before it started.
// It returns the most that ran at once.
func (f *lockFed) check(t *testing.T, name string, limit int) int {
	t.Helper()
	runs := f.read(t)
	most := 0
	for i, r := range runs {
		if r.name != name {
			continue
		}
		if r.end == 0 {
			t.Errorf("run with token %d has not ended", r.token)
		}
		going := 0
		for _, o := range runs {
			if o.name != name {
				continue
			}
			if o.start <= r.start && (o.end == 0 || o.end > r.start) {
				going++
			}
			if o.end != 0 && o.end < r.start && o.token >= r.token {
				t.Errorf("run %d started with token %d after one with token %d had ended", i, r.token, o.token)
			}
		}
		most = max(most, going)
	}
	if most > limit {
		t.Errorf("%d runs of %s at once, limit %d; log:\n%+v", most, name, limit, runs)
	}
	return most
}

func TestLockHoldersTakeTurnsAndSemaphoresAllowTheirLimit(t *testing.T) {
	f := newLockFed(t)
	for _, tc := range []struct {
		name    string
		limit   int
		holders int
	}{
		{"batch", 1, 3},
		{"pool", 2, 3},
	} {
		var procs []*testcluster.Proc
		for i := range tc.holders {
			procs = append(procs, f.lock(fmt.Sprintf("%s%d", tc.name, i), tc.name, "sleep 1", "--limit", strconv.Itoa(tc.limit)))
		}
		for _, p := range procs {
			if st := testcluster.ExitStatus(t, p); st != 0 {
				t.Fatalf("%s exited with %d:\n%s", p.Name, st, p.Log())
			}
		}
		if most := f.check(t, tc.name, tc.limit); most != tc.limit {
			t.Errorf("%s: at most %d ran at once, want %d", tc.name, most, tc.limit)
		}
	}
}

func TestLockStatusTimeoutAndExitStatus(t *testing.T) {
	f := newLockFed(t)
	holder := f.lock("holder", "db", "sleep 60")
	token := f.waitRuns(t, 1)[0].token

	out, err := f.sn.Admin("lock", "status", "db", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var l coord.Lock
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("lock status -o json: %v\n%s", err, out)
	}
	if l.Name != "db" || l.Limit != 1 || len(l.Holders) != 1 || l.Holders[0].Token != token || l.Holders[0].Holder != "admin" {
		t.Errorf("lock status: %+v, want admin holding db with the command's token %d", l, token)
	}
	out, err = f.sn.Admin("lock", "status", "db")
	if err != nil || !strings.Contains(out, "1 holding, 0 waiting") || !strings.Contains(out, strconv.FormatInt(token, 10)) {
		t.Errorf("lock status table (%v):\n%s", err, out)
	}

	late := f.lock("late", "db", "true", "--timeout", "1s")
	if st := testcluster.ExitStatus(t, late); st != exitNotAcquired || !strings.Contains(late.Log(), "lock db not acquired within 1s") {
		t.Errorf("lock with --timeout while held: exit status %d, want %d:\n%s", st, exitNotAcquired, late.Log())
	}
	if l := f.read(t); len(l) != 1 {
		t.Errorf("the late command ran: %+v", l)
	}

	if st := testcluster.ExitStatus(t, f.lock("failing", "other", "exit 7")); st != 7 {
		t.Errorf("exit status %d, want the command's 7", st)
	}
	holder.Kill()
}

func TestLockHolderKilledOrFrozenIsFencedBeforeTheNextStarts(t *testing.T) {
	f := newLockFed(t)
	for _, tc := range []struct {
		name  string
		fault func(p *testcluster.Proc)
	}{
		{"killed", func(p *testcluster.Proc) { p.Kill() }},
		{"frozen", func(p *testcluster.Proc) { p.Pause() }},
	} {
		before := len(f.read(t))
		first := f.lock(tc.name+"-first", tc.name, "sleep 60")
		runs := f.waitRuns(t, before+1)
		next := f.lock(tc.name+"-next", tc.name, "true")
		testcluster.Eventually(t, 10*time.Second, func() error {
			out, err := f.sn.Admin("lock", "status", tc.name, "-o", "json")
			if err != nil {
				return err
			}
			var l coord.Lock
			json.Unmarshal([]byte(out), &l)
			if len(l.Waiting) != 1 {
				return fmt.Errorf("lock %s: %s", tc.name, out)
			}
			return nil
		})
		faulted := time.Now()
		tc.fault(first)
		if st := testcluster.ExitStatus(t, next); st != 0 {
			t.Fatalf("%s: next holder exited with %d:\n%s", tc.name, st, next.Log())
		}
		if took := time.Since(faulted); took > 15*time.Second {
			t.Errorf("%s: the next holder took %s to run", tc.name, took)
		}
		f.check(t, tc.name, 1)
		if r := runs[len(runs)-1]; r.name != tc.name {
			t.Fatalf("run %+v is not the first holder's", r)
		}
		if tc.name == "frozen" {
			first.Resume()
			if st := testcluster.ExitStatus(t, first); st != 1 || !strings.Contains(first.Log(), "hold lost") {
				t.Errorf("frozen holder, resumed: exit status %d, want 1 and a word of its loss:\n%s", st, first.Log())
			}
		}
	}
}

func TestRoleRunsOnOneNodeAtATimeAndStatusWatchShowsEachChange(t *testing.T) {
	f := newLockFed(t)
	nodeFlags := map[string][]string{}
	for _, name := range []string{"a1", "a2"} {
		testcluster.StartAgent(t, f.sn, f.sn.Credentials, name, testcluster.NewHost(), f.c.Dir(name), f.c.Start, func(*agent.Config) {})
		dir := f.c.Dir(name)
		nodeFlags[name] = []string{"--server", f.sn.URL, "--ca", filepath.Join(dir, "ca.crt"),
			"--cert", filepath.Join(dir, "node.crt"), "--key", filepath.Join(dir, "node.key")}
	}
	waitStatus(t, f.sn, map[string]membership.Status{"a1": membership.StatusAlive, "a2": membership.StatusAlive})
	watch := f.c.Start("watch", "role", "status", "coord", "--watch", "--credentials", f.sn.Credentials)
	roleRun := func(node, body string) *testcluster.Proc {
		args := append(append([]string{"role", "run", "coord"}, lockTiming...), nodeFlags[node]...)
		return f.c.Start("role-"+node, append(args, "--", "sh", "-c", f.script(body))...)
	}

	first := roleRun("a1", "sleep 3")
	f.waitRuns(t, 1)
	second := roleRun("a2", "true")
	testcluster.Eventually(t, 10*time.Second, func() error {
		out, err := f.sn.Admin("role", "status", "coord", "-o", "json")
		if err != nil {
			return err
		}
		var e coord.Election
		if err := json.Unmarshal([]byte(out), &e); err != nil {
			return err
		}
		if e.Master == nil || e.Master.Node != "a1" || len(e.Candidates) != 2 {
			return fmt.Errorf("role status: %s", out)
		}
		return nil
	})
	for _, p := range []*testcluster.Proc{first, second} {
		if st := testcluster.ExitStatus(t, p); st != 0 {
			t.Fatalf("%s exited with %d:\n%s", p.Name, st, p.Log())
		}
	}
	f.check(t, "coord", 1)
	if runs := f.read(t); len(runs) != 2 {
		t.Fatalf("runs %+v, want a1's then a2's", runs)
	}
	testcluster.Eventually(t, 10*time.Second, func() error {
		log := watch.Log()
		a1, a2 := strings.Index(log, "master a1"), strings.Index(log, "master a2")
		if a1 < 0 || a2 < a1 || !strings.Contains(log[a2:], "no master; candidates: -") {
			return fmt.Errorf("role status --watch printed:\n%s", log)
		}
		return nil
	})
}
