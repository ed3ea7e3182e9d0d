package ha

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/fedkeeper/fedkeeper/api"
	"github.com/fedkeeper/fedkeeper/client"
	"github.com/fedkeeper/fedkeeper/coord"
	"github.com/fedkeeper/fedkeeper/internal/wait"
)

// KindLock is the kind of a Hold on a lock or semaphore; a coordinator
// role's is coord.KindRole.
const KindLock = "lock"

// Environment of a command run under a hold, besides EnvFencingToken.
const (
	EnvLock = "FEDKEEPER_LOCK"
	EnvRole = "FEDKEEPER_ROLE"
)

// ErrHoldLost says a hold ended before its holder gave it up: its lease
// is gone, or may end before what the holder runs could be stopped.
var ErrHoldLost = errors.New("hold lost")

// releaseTimeout bounds giving a hold up; a lease left behind expires by
// itself within its TTL.
const releaseTimeout = 10 * time.Second

// Hold is a lock, a place in a semaphore or a coordinator role's
// mastership, held on a lease of its own. The lease is kept alive until
// Release.
type Hold struct {
	// Kind is KindLock or coord.KindRole; Name is the lock's or role's.
	Kind, Name string
	// Token is the hold's fencing token.
	Token int64
	// Lease is what the hold rests on, renewed until Release.
	Lease *Lease

	log *slog.Logger
	// leave gives the hold up before its lease goes, so that the change
	// is an event.
	leave    func(context.Context) error
	stopKeep context.CancelFunc
	kept     chan struct{}

	watchdog watchdogSlot
}

// newHold grants the lease a hold of kind on name will rest on and keeps
// it alive; waiting may take longer than a TTL.
func newHold(ctx context.Context, c *client.Client, kind, name string, ttl time.Duration, log *slog.Logger) (*Hold, error) {
	log = log.With(kind, name)
	lease, err := Grant(ctx, c, ttl, log)
	if err != nil {
		return nil, err
	}
	kctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	h := &Hold{Kind: kind, Name: name, Lease: lease, log: log, stopKeep: stop, kept: make(chan struct{}), watchdog: watchdogSlot{log: log}}
	go func() {
		defer close(h.kept)
		lease.Keep(kctx, h.watchdog.extend)
	}()
	return h, nil
}

// await runs get, which waits until the hold is had and returns its
// fencing token. It gives up when ctx ends or the lease is lost, and then
// releases what it queued or stood for.
func (h *Hold) await(ctx context.Context, get func(context.Context) (int64, error)) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-h.Lease.Lost():
			cancel(fmt.Errorf("%w: lease %s lost while waiting for %s %s", ErrHoldLost, h.Lease.ID, h.Kind, h.Name))
		case <-ctx.Done():
		}
	}()
	token, err := get(ctx)
	if err == nil {
		h.Token = token
		h.log.Info("held", "token", token, "lease", h.Lease.ID)
		return nil
	}
	if cause := context.Cause(ctx); cause != nil {
		err = cause
	}
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer rcancel()
	if rerr := h.Release(rctx); rerr != nil {
		h.log.Warn("not released after giving up", "err", rerr)
	}
	return err
}

// leaseGone tells whether err is the federation's word that the hold's
// lease no longer exists.
func (h *Hold) leaseGone(err error) bool {
	var apiErr *client.Error
	return errors.As(err, &apiErr) && apiErr.Code == "lease_expired"
}

// Release gives the hold up and ends its lease. Whatever the hold guarded
// must have stopped first. A lease already gone counts as released.
func (h *Hold) Release(ctx context.Context) error {
	var errs []error
	if err := h.leave(ctx); err != nil && !h.leaseGone(err) {
		errs = append(errs, err)
	}
	if err := h.Lease.Revoke(ctx); err != nil && !h.leaseGone(err) {
		errs = append(errs, err)
	}
	h.stopKeep()
	<-h.kept
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("release %s %s (its lease ends within %s anyway): %w", h.Kind, h.Name, h.Lease.TTL, err)
	}
	return nil
}

// AcquireLock queues for lock name on a new lease of ttl and returns once
// the lease holds it. At most limit leases hold it at once (1: a lock,
// more: a semaphore); see coord.Lock for queues whose entries disagree.
// Waiting ends, releasing the place in the queue, when ctx ends or the
// lease is lost.
func AcquireLock(ctx context.Context, c *client.Client, name string, limit int, ttl time.Duration, log *slog.Logger) (*Hold, error) {
	if err := coord.ValidateName(KindLock, name); err != nil {
		return nil, err
	}
	h, err := newHold(ctx, c, KindLock, name, ttl, log)
	if err != nil {
		return nil, err
	}
	path := "/v1/locks/" + url.PathEscape(name)
	h.leave = func(ctx context.Context) error {
		return c.Do(ctx, http.MethodDelete, path+"/"+url.PathEscape(h.Lease.ID), nil, nil)
	}
	in := func(hs []coord.Holder) *coord.Holder {
		if i := slices.IndexFunc(hs, func(x coord.Holder) bool { return x.Lease == h.Lease.ID }); i >= 0 {
			return &hs[i]
		}
		return nil
	}
	// Queueing is safe to repeat: a repeat keeps the lease's place, and
	// answers whether it holds.
	enqueue := func(ctx context.Context) (*coord.Holder, error) {
		var l coord.Lock
		err := c.DoIdempotent(ctx, http.MethodPost, path, api.EnqueueRequest{Lease: h.Lease.ID, Limit: limit}, &l)
		if h.leaseGone(err) {
			err = fmt.Errorf("%w: %w", ErrHoldLost, err)
		}
		if err != nil {
			return nil, fmt.Errorf("queue for lock %s: %w", name, err)
		}
		return in(l.Holders), nil
	}
	err = h.await(ctx, func(ctx context.Context) (int64, error) {
		held, err := enqueue(ctx)
		if err != nil || held != nil {
			return tokenOf(held), err
		}
		h.log.Info("waiting", "lease", h.Lease.ID)
		err = Follow(ctx, c, path, ttl, h.log, func(l coord.Lock) (bool, error) {
			if in(l.Holders) != nil {
				return true, nil
			}
			if in(l.Waiting) == nil {
				return false, fmt.Errorf("%w: lease %s left the queue of lock %s", ErrHoldLost, h.Lease.ID, name)
			}
			return false, nil
		})
		if err != nil {
			return 0, err
		}
		// Queueing again records the acquisition as an event.
		held, err = enqueue(ctx)
		if err == nil && held == nil {
			err = fmt.Errorf("%w: lock %s no longer held by lease %s", ErrHoldLost, name, h.Lease.ID)
		}
		return tokenOf(held), err
	})
	if err != nil {
		return nil, err
	}
	return h, nil
}

func tokenOf(h *coord.Holder) int64 {
	if h == nil {
		return 0
	}
	return h.Token
}

// Follow reads path, an API resource that supports blocking queries and
// carries its store revision (a lock, an election), then reads it again
// each time it changes, each query waiting at most maxWait, and calls fn
// with every answer until fn is done or fails, or ctx ends. Failures to
// reach the federation are retried; a refusal (4xx) is returned.
func Follow[T any](ctx context.Context, c *client.Client, path string, maxWait time.Duration, log *slog.Logger, fn func(T) (done bool, err error)) error {
	var index int64
	offline := false
	for {
		p := path
		if index > 0 {
			p += fmt.Sprintf("?index=%d&wait=%s", index, maxWait)
		}
		// Every supernode in turn gets the full wait.
		qctx, cancel := context.WithTimeout(ctx, time.Duration(len(c.Servers()))*(maxWait+5*time.Second))
		body, err := c.Raw(qctx, http.MethodGet, p, nil)
		cancel()
		var apiErr *client.Error
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.As(err, &apiErr) && apiErr.Status < http.StatusInternalServerError:
			return fmt.Errorf("read %s: %w", path, err)
		default:
			if !offline {
				log.Warn("federation not reachable; retrying", "path", path, "err", err)
				offline = true
			}
			if !wait.Sleep(ctx, time.Second) {
				return ctx.Err()
			}
			continue
		}
		offline = false
		var v T
		var rev struct {
			Revision int64 `json:"revision"`
		}
		if err := json.Unmarshal(body, &v); err != nil {
			return fmt.Errorf("decode answer of GET %s: %w", path, err)
		}
		if err := json.Unmarshal(body, &rev); err != nil || rev.Revision <= 0 {
			return fmt.Errorf("answer of GET %s carries no store revision", path)
		}
		if done, err := fn(v); done || err != nil {
			return err
		}
		index = rev.Revision
	}
}

// Command is what a hold runs, and how it is stopped.
type Command struct {
	// Argv is the command and its arguments.
	Argv []string
	// Grace is how long the command has from SIGTERM to SIGKILL when it
	// must stop. It is stopped that long, and a margin, before its hold
	// may end (see WatchdogSpec.Lead).
	Grace time.Duration
	// Watchdog starts the watchdog process: the fedkeeper binary and its
	// fence subcommand.
	Watchdog []string
}

func (cmd Command) spec(pgid int) WatchdogSpec {
	return WatchdogSpec{KillGroup: pgid, StopTimeout: cmd.Grace}
}

// Check tells whether cmd can run under a hold on a lease of ttl. Leases
// are renewed every third of their TTL, and the watchdog stops the
// command Lead before the end of the lease as last renewed; a Lead under
// half the TTL lets a routine renewal come in well before that.
func (cmd Command) Check(ttl time.Duration) error {
	if len(cmd.Argv) == 0 {
		return errors.New("no command to run")
	}
	if len(cmd.Watchdog) == 0 {
		return errors.New("no watchdog command")
	}
	if cmd.Grace <= 0 {
		return fmt.Errorf("grace %s must be positive", cmd.Grace)
	}
	if err := coord.ValidateTTL(ttl); err != nil {
		return err
	}
	if lead := cmd.spec(0).Lead(); lead >= ttl/2 {
		return fmt.Errorf("grace %s: the command would be stopped %s before its lease ends, which must be under half the lease TTL %s; lengthen the TTL or shorten the grace", cmd.Grace, lead, ttl)
	}
	return nil
}

// Run runs cmd while the hold lasts, in a process group of its own, with
// EnvFencingToken and EnvLock or EnvRole set, and returns its exit status
// (128+N for signal N) once the whole group is gone. A watchdog process
// stops the group before the lease may end, even if this process is
// frozen or killed. If the hold is lost first, or ctx ends, Run stops the
// command itself and returns its status with an error (ErrHoldLost for a
// lost hold). Release the hold afterwards.
func (h *Hold) Run(ctx context.Context, cmd Command) (int, error) {
	if err := cmd.Check(h.Lease.TTL); err != nil {
		return 0, err
	}
	envName := EnvLock
	if h.Kind == coord.KindRole {
		envName = EnvRole
	}
	env := append(os.Environ(), EnvFencingToken+"="+strconv.FormatInt(h.Token, 10), envName+"="+h.Name)
	gate, err := startGated(cmd.Argv, env, os.Stdin, os.Stdout)
	if err != nil {
		return 0, err
	}
	defer gate.cancel()
	proc := gate.proc
	pgid := proc.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- proc.Wait() }()
	spec := cmd.spec(pgid)
	wd, err := StartWatchdog(cmd.Watchdog[0], cmd.Watchdog[1:], spec, env, h.Lease.ValidUntil())
	if err != nil {
		gate.cancel()
		<-exited
		return 0, fmt.Errorf("%s not started: %w", cmd.Argv[0], err)
	}
	h.watchdog.set(wd)
	defer h.watchdog.set(nil)
	// A renewal between starting the watchdog and handing it to renewed
	// would be missed: tell it the latest.
	wd.Extend(h.Lease.ValidUntil())
	// lost tells whether the watchdog has stopped, or is to stop, the
	// command for the hold's sake.
	lost := func() error {
		select {
		case <-h.Lease.Lost():
			return fmt.Errorf("%w: lease %s of %s %s lost", ErrHoldLost, h.Lease.ID, h.Kind, h.Name)
		case <-wd.Done():
			return fmt.Errorf("%w: the watchdog of %s %s stopped %s", ErrHoldLost, h.Kind, h.Name, cmd.Argv[0])
		default:
		}
		if Mono() >= h.Lease.ValidUntil()-spec.Lead() {
			return fmt.Errorf("%w: lease %s of %s %s not renewed in time", ErrHoldLost, h.Lease.ID, h.Kind, h.Name)
		}
		return nil
	}
	if why := lost(); why != nil {
		gate.cancel()
		<-exited
		wd.Disarm()
		return 0, fmt.Errorf("%s not started: %w", cmd.Argv[0], why)
	}
	if err := gate.letGo(); err != nil {
		h.log.Warn("command not let go", "err", err)
	}
	h.log.Info("running", "command", cmd.Argv[0], "pgid", pgid)

	var waitErr, why error
	done := false
	select {
	case waitErr = <-exited:
		done = true
		why = lost()
	case <-h.Lease.Lost():
		why = lost()
	case <-wd.Done():
		why = lost()
	case <-ctx.Done():
		why = fmt.Errorf("%s stopped: %w", cmd.Argv[0], context.Cause(ctx))
	}
	if !done {
		h.log.Warn("stopping the command", "why", why)
		if err := KillGroup(pgid, cmd.Grace); err != nil {
			h.log.Error("command not stopped; its watchdog will try", "err", err)
		}
		waitErr = <-exited
	}
	// What the command left behind in its group is part of it, and must
	// be gone before the hold is given up.
	if err := KillGroup(pgid, cmd.Grace); err != nil {
		h.log.Error("command's process group not stopped", "err", err)
	}
	wd.Disarm()
	return exitStatus(waitErr), why
}

// exitStatus is a command's exit status as a shell reports it.
func exitStatus(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	default:
		return 1
	}
}
