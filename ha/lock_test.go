package ha_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedkeeper/fedkeeper/client"
	"github.com/fedkeeper/fedkeeper/coord"
	"github.com/fedkeeper/fedkeeper/ha"
)

// holdTTL is the lease TTL of the tests' holds: short, so that a lost
// hold ends within seconds, and long enough for holdGrace.
const (
	holdTTL   = 3 * time.Second
	holdGrace = 500 * time.Millisecond
)

// runLog is a file the tests' commands log their runs to, a line each as
// they start and end: "start TOKEN NAME" and "end TOKEN".
type runLog string

func newRunLog(t *testing.T) runLog { return runLog(filepath.Join(t.TempDir(), "runs")) }

// command runs body, logging its start and its end, also when stopped.
func (l runLog) command(body string) ha.Command {
	script := fmt.Sprintf(`echo "start $%[2]s $%[3]s$%[4]s" >> %[1]s
trap 'echo "end $%[2]s" >> %[1]s; exit 143' TERM
%[5]s
echo "end $%[2]s" >> %[1]s`, l, ha.EnvFencingToken, ha.EnvLock, ha.EnvRole, body)
	return ha.Command{Argv: []string{"sh", "-c", script}, Grace: holdGrace, Watchdog: append([]string{os.Args[0]}, watchdogArgs...)}
}

// check reads the log and returns the most runs that were going at once
// and the tokens of the runs in order of start. It fails the test if a
// run ended that was not going, or started with a token no larger than
// that of a run that had ended: tokens grow from holder to successor.
func (l runLog) check(t *testing.T, name string) (most int, tokens []int64) {
	t.Helper()
	b, err := os.ReadFile(string(l))
	if err != nil {
		t.Fatal(err)
	}
	going := map[int64]bool{}
	var ended int64
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		tok, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			t.Fatalf("run log line %q: %v", sc.Text(), err)
		}
		switch {
		case f[0] == "start" && len(f) == 3:
			if f[2] != name {
				t.Errorf("run with token %d was given the name %q, want %q", tok, f[2], name)
			}
			if tok <= ended {
				t.Errorf("run started with token %d after one with %d had ended", tok, ended)
			}
			tokens = append(tokens, tok)
			going[tok] = true
			most = max(most, len(going))
		case f[0] == "end" && going[tok]:
			delete(going, tok)
			ended = max(ended, tok)
		default:
			t.Fatalf("run log line %q out of place; log:\n%s", sc.Text(), b)
		}
	}
	return most, tokens
}

// runHeld runs cmd under a hold got with acquire, then releases it.
func runHeld(t *testing.T, ctx context.Context, cmd ha.Command, acquire func() (*ha.Hold, error)) (int, error) {
	h, err := acquire()
	if err != nil {
		return 0, err
	}
	status, err := h.Run(ctx, cmd)
	if rerr := h.Release(context.WithoutCancel(ctx)); rerr != nil && err == nil {
		t.Errorf("release %s %s: %v", h.Kind, h.Name, rerr)
	}
	return status, err
}

// queue reads a lock as the administrator.
func queue(t *testing.T, f *federation, name string) coord.Lock {
	t.Helper()
	var l coord.Lock
	if err := f.admin.Do(f.ctx, http.MethodGet, "/v1/locks/"+name, nil, &l); err != nil {
		t.Fatal(err)
	}
	return l
}

// alive tells whether process pid runs: it exists and is no zombie
// waiting for its parent.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z")
}

func TestCommandCheckKeepsTheWatchdogInTime(t *testing.T) {
	ok := ha.Command{Argv: []string{"true"}, Grace: 2 * time.Second, Watchdog: []string{"fedkeeper", "fence"}}
	tests := []struct {
		name string
		edit func(*ha.Command)
		ttl  time.Duration
		want string
	}{
		{"defaults", func(*ha.Command) {}, 10 * time.Second, ""},
		{"no command", func(c *ha.Command) { c.Argv = nil }, 10 * time.Second, "no command"},
		{"no watchdog", func(c *ha.Command) { c.Watchdog = nil }, 10 * time.Second, "no watchdog"},
		{"no grace", func(c *ha.Command) { c.Grace = 0 }, 10 * time.Second, "must be positive"},
		{"TTL below the minimum", func(*ha.Command) {}, time.Second, "whole seconds from 2s"},
		{"TTL of a fraction of seconds", func(*ha.Command) {}, 4500 * time.Millisecond, "whole seconds"},
		{"grace too long for the TTL", func(*ha.Command) {}, 4 * time.Second, "under half the lease TTL 4s"},
		{"short grace for the shortest TTL", func(c *ha.Command) { c.Grace = 500 * time.Millisecond }, 2 * time.Second, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.edit(&c)
			err := c.Check(tc.ttl)
			if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Check(%s) = %v, want %q", tc.ttl, err, tc.want)
			}
		})
	}
}

func TestLockHoldersTakeTurnsWithGrowingTokens(t *testing.T) {
	f := newFederation(t)
	for _, tc := range []struct {
		name    string
		limit   int
		holders int
	}{
		{"lock", 1, 3},
		{"semaphore", 2, 4},
	} {
		var clients []*client.Client
		for i := range tc.holders {
			clients = append(clients, f.client(fmt.Sprintf("%s%d", tc.name, i), ""))
		}
		t.Run(tc.name, func(t *testing.T) {
			log := newRunLog(t)
			var wg sync.WaitGroup
			for i, c := range clients {
				wg.Go(func() {
					status, err := runHeld(t, f.ctx, log.command("sleep 0.5"), func() (*ha.Hold, error) {
						return ha.AcquireLock(f.ctx, c, tc.name, tc.limit, holdTTL, f.log)
					})
					if err != nil || status != 0 {
						t.Errorf("holder %d: status %d, %v", i, status, err)
					}
				})
			}
			wg.Wait()
			most, tokens := log.check(t, tc.name)
			if most != tc.limit || len(tokens) != tc.holders {
				t.Errorf("%d runs, at most %d at once; want %d, %d at once", len(tokens), most, tc.holders, tc.limit)
			}
			if l := queue(t, f, tc.name); len(l.Holders)+len(l.Waiting) != 0 {
				t.Errorf("queue after every holder released: %+v", l)
			}
		})
	}
}

func TestRunReportsTheCommandsExitStatus(t *testing.T) {
	f := newFederation(t)
	h, err := ha.AcquireLock(f.ctx, f.client("a", ""), "status", 1, holdTTL, f.log)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release(f.ctx)
	log := newRunLog(t)
	for _, tc := range []struct {
		body string
		want int
	}{
		{"exit 0", 0},
		{"exit 7", 7},
		{"kill -KILL $$", 137},
		{"exec /nonexistent/command", 127},
	} {
		status, err := h.Run(f.ctx, log.command(tc.body))
		if err != nil || status != tc.want {
			t.Errorf("%s: status %d, %v; want %d", tc.body, status, err, tc.want)
		}
	}
}

func TestRunLeavesNothingOfTheCommandBehind(t *testing.T) {
	f := newFederation(t)
	h, err := ha.AcquireLock(f.ctx, f.client("a", ""), "orphans", 1, holdTTL, f.log)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release(f.ctx)
	pidFile := filepath.Join(t.TempDir(), "pid")
	if status, err := h.Run(f.ctx, newRunLog(t).command("sleep 60 & echo $! > "+pidFile)); err != nil || status != 0 {
		t.Fatalf("status %d, %v", status, err)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if alive(pid) {
		t.Errorf("the command's background process %d outlived its hold", pid)
	}
}

func TestWaitingForALockGivesUpCleanly(t *testing.T) {
	f := newFederation(t)
	holder, err := ha.AcquireLock(f.ctx, f.client("a", ""), "busy", 1, holdTTL, f.log)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Release(f.ctx)

	// When its context ends.
	ctx, cancel := context.WithTimeout(f.ctx, time.Second)
	defer cancel()
	_, err = ha.AcquireLock(ctx, f.client("b", ""), "busy", 1, holdTTL, f.log)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("acquire past its deadline: %v", err)
	}
	if l := queue(t, f, "busy"); len(l.Waiting) != 0 {
		t.Errorf("the waiter that gave up is still queued: %+v", l.Waiting)
	}

	// When its lease is lost.
	px := newProxy(t, strings.TrimPrefix(f.sn.URL(), "https://"))
	c := f.client("c", px.URL())
	errc := make(chan error, 1)
	go func() {
		_, err := ha.AcquireLock(f.ctx, c, "busy", 1, holdTTL, f.log)
		errc <- err
	}()
	f.eventually(5*time.Second, "c waiting", func() bool { return len(queue(t, f, "busy").Waiting) == 1 })
	px.setCut(true)
	select {
	case err := <-errc:
		if !errors.Is(err, ha.ErrHoldLost) {
			t.Errorf("acquire cut off: %v, want %v", err, ha.ErrHoldLost)
		}
	case <-time.After(3 * holdTTL):
		t.Fatal("a waiter cut off still waits after three TTLs")
	}
	f.eventually(2*holdTTL, "c's place gone with its lease", func() bool { return len(queue(t, f, "busy").Waiting) == 0 })
}

func TestCutOffHolderIsStoppedBeforeTheNextOneStarts(t *testing.T) {
	f := newFederation(t)
	px := newProxy(t, strings.TrimPrefix(f.sn.URL(), "https://"))
	cutOff, next := f.client("a", px.URL()), f.client("b", "")
	log := newRunLog(t)
	type result struct {
		status int
		err    error
	}
	first := make(chan result, 1)
	h, err := ha.AcquireLock(f.ctx, cutOff, "job", 1, holdTTL, f.log)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		status, err := h.Run(f.ctx, log.command("sleep 60"))
		h.Release(f.ctx)
		first <- result{status, err}
	}()
	second := make(chan result, 1)
	go func() {
		status, err := runHeld(t, f.ctx, log.command("true"), func() (*ha.Hold, error) {
			return ha.AcquireLock(f.ctx, next, "job", 1, holdTTL, f.log)
		})
		second <- result{status, err}
	}()
	f.eventually(5*time.Second, "b waiting", func() bool { return len(queue(t, f, "job").Waiting) == 1 })
	px.setCut(true)
	r := <-first
	if !errors.Is(r.err, ha.ErrHoldLost) || r.status != 143 {
		t.Errorf("cut-off holder: status %d, %v; want 143 and %v", r.status, r.err, ha.ErrHoldLost)
	}
	if r := <-second; r.err != nil || r.status != 0 {
		t.Errorf("next holder: status %d, %v", r.status, r.err)
	}
	if most, tokens := log.check(t, "job"); most != 1 || len(tokens) != 2 {
		t.Errorf("%d runs, at most %d at once; want the cut-off one, then the next", len(tokens), most)
	}
}

func TestRoleGoesToTheNextCandidateWhenItsMasterIsDone(t *testing.T) {
	f := newFederation(t)
	log := newRunLog(t)
	first, err := ha.StandForRole(f.ctx, f.client("a", ""), "reindex", 10, holdTTL, f.log)
	if err != nil {
		t.Fatal(err)
	}
	second := make(chan error, 1)
	go func() {
		status, err := runHeld(t, f.ctx, log.command("true"), func() (*ha.Hold, error) {
			return ha.StandForRole(f.ctx, f.client("b", ""), "reindex", 0, holdTTL, f.log)
		})
		if err == nil && status != 0 {
			err = fmt.Errorf("status %d", status)
		}
		second <- err
	}()
	var e coord.Election
	f.eventually(5*time.Second, "b standing", func() bool {
		if err := f.admin.Do(f.ctx, http.MethodGet, "/v1/elections/role/reindex", nil, &e); err != nil {
			t.Fatal(err)
		}
		return state(e, "b") == ha.StateStandby
	})
	if e.Master == nil || e.Master.Node != "a" || e.Master.Token != first.Token || state(e, "a") != ha.StateMaster {
		t.Fatalf("election %+v, want a master with token %d", e, first.Token)
	}
	if status, err := first.Run(f.ctx, log.command("sleep 1")); err != nil || status != 0 {
		t.Fatalf("master's command: status %d, %v", status, err)
	}
	released := time.Now()
	if err := first.Release(f.ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatalf("next candidate: %v", err)
	}
	if took := time.Since(released); took > holdTTL {
		t.Errorf("the next candidate took %s to take a role given up", took)
	}
	if most, tokens := log.check(t, "reindex"); most != 1 || len(tokens) != 2 {
		t.Errorf("%d runs, at most %d at once; want a's, then b's", len(tokens), most)
	}
}
