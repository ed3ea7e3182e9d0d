package ha

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/fedkeeper/fedkeeper/api"
	"github.com/fedkeeper/fedkeeper/client"
	"github.com/fedkeeper/fedkeeper/coord"
	"github.com/fedkeeper/fedkeeper/internal/wait"
)

// Candidate states of an HA group member, as it announces them.
const (
	// StateStandby: live and eligible; the highest-ranked standby becomes
	// master when there is none.
	StateStandby = "standby"
	// StateStarting: master, waiting for the takeover delay or running
	// the start script.
	StateStarting = "starting"
	// StateMaster: master, its service started and passing its status.
	StateMaster = "master"
	// StateFailed: its start or status failed; not eligible for a while.
	StateFailed = "failed"
	// StatePassive: it gave the mastership up; not eligible until another
	// node became master or a takeover names it.
	StatePassive = "passive"
)

// Defaults and bounds of a GroupConfig.
const (
	DefaultScriptTimeout  = 4 * time.Second
	DefaultStatusInterval = 5 * time.Second
	DefaultLeaseTTL       = 10 * time.Second
	MaxRank               = 1000000
)

// Environment of the scripts and of the watchdog's stop command.
const (
	EnvGroup        = "FEDKEEPER_GROUP"
	EnvNode         = "FEDKEEPER_NODE"
	EnvFencingToken = "FEDKEEPER_FENCING_TOKEN"
)

// GroupConfig declares a node's membership in one HA group.
type GroupConfig struct {
	// Name is the group's, shared by every node that may serve it.
	Name string `yaml:"name"`
	// Rank orders the candidates: the highest live one is master; equal
	// ranks are ordered by node name.
	Rank int `yaml:"rank"`
	// Script is the absolute path of the service's start/stop/status
	// script (see Group).
	Script string `yaml:"script"`
	// ScriptTimeout bounds each run of the script; a start or status that
	// outlasts it fails, a stop that outlasts it is killed.
	ScriptTimeout time.Duration `yaml:"script_timeout,omitempty"`
	// StatusInterval is how often the master runs the status script.
	StatusInterval time.Duration `yaml:"status_interval,omitempty"`
	// TakeoverDelay (ΔT2) is how long a new master waits before it starts
	// the service; none by default. Safety does not rest on it: the old
	// master has stopped before its lease could end. It gives a slow
	// network or a service's clients time to notice the change.
	TakeoverDelay time.Duration `yaml:"takeover_delay,omitempty"`
	// LeaseTTL (ΔT1) is how long a silent node stays a candidate, or
	// master, before it counts as dead. Whole seconds.
	LeaseTTL time.Duration `yaml:"lease_ttl,omitempty"`
	// Preempt makes this node, when its rank is higher than the master's,
	// take the mastership over after PreemptDelay.
	Preempt      bool          `yaml:"preempt,omitempty"`
	PreemptDelay time.Duration `yaml:"preempt_delay,omitempty"`
}

// WithDefaults fills in what the configuration leaves out.
func (c GroupConfig) WithDefaults() GroupConfig {
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&c.ScriptTimeout, DefaultScriptTimeout},
		{&c.StatusInterval, DefaultStatusInterval},
		{&c.LeaseTTL, DefaultLeaseTTL},
	} {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	return c
}

// spec is what the watchdog of a mastership of this group does.
func (c GroupConfig) spec() WatchdogSpec {
	return WatchdogSpec{Stop: c.argv("stop"), StopTimeout: c.ScriptTimeout}
}

func (c GroupConfig) argv(action string) []string { return []string{c.Script, action, c.Name} }

// Validate checks the configuration with its defaults filled in.
func (c GroupConfig) Validate() error {
	if err := coord.ValidateName("HA group", c.Name); err != nil {
		return err
	}
	c = c.WithDefaults()
	bad := func(format string, args ...any) error {
		return fmt.Errorf("HA group %s: "+format, append([]any{c.Name}, args...)...)
	}
	if c.Rank < 0 || c.Rank > MaxRank {
		return bad("rank %d must be from 0 to %d", c.Rank, MaxRank)
	}
	if c.Script == "" {
		return bad("script is required")
	}
	if !filepath.IsAbs(c.Script) {
		return bad("script %q must be an absolute path", c.Script)
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{
		{"script_timeout", c.ScriptTimeout}, {"status_interval", c.StatusInterval},
		{"takeover_delay", c.TakeoverDelay}, {"preempt_delay", c.PreemptDelay},
	} {
		if d.v < 0 {
			return bad("%s must not be negative", d.field)
		}
	}
	if c.PreemptDelay > 0 && !c.Preempt {
		return bad("preempt_delay is set but preempt is not")
	}
	if c.LeaseTTL < coord.MinTTL || c.LeaseTTL > coord.MaxTTL || c.LeaseTTL%time.Second != 0 {
		return bad("lease_ttl %s must be whole seconds from %s to %s", c.LeaseTTL, coord.MinTTL, coord.MaxTTL)
	}
	// A master renews every third of the TTL and its lease is known
	// alive for 90% of it: stopping within half a TTL leaves it time to
	// renew before its watchdog must fence.
	if lead := c.spec().Lead(); lead >= c.LeaseTTL/2 {
		return bad("script_timeout %s plus the watchdog's margin (%s in all) must be less than half of lease_ttl %s", c.ScriptTimeout, lead, c.LeaseTTL)
	}
	return nil
}

// Group runs one node's part in one HA group: it stands as a candidate on
// a lease of its own, becomes master when it is the highest-ranked
// standby and there is none, and drives the group's script:
//
//	SCRIPT start GROUP    start the service in the background and return
//	SCRIPT status GROUP   exit 0 while the service works
//	SCRIPT stop GROUP     stop the service completely; it may be called when
//	                      the service is not running, and more than once
//
// Each run is bounded by the group's script timeout; exit status 0 means
// success. The environment names the group (FEDKEEPER_GROUP), the node
// (FEDKEEPER_NODE) and the mastership's fencing token
// (FEDKEEPER_FENCING_TOKEN), which only grows: a resource that remembers
// the highest token it has seen can refuse a stale master.
//
// A master's watchdog (see StartWatchdog) runs the stop when the master
// can no longer renew its lease in time, even if the master is frozen or
// killed; a new master starts only after the old master's lease is gone
// and the takeover delay has passed.
type Group struct {
	// Exe and ExeArgs start the watchdog process; by default this
	// executable's "fence" command.
	Exe     string
	ExeArgs []string

	cfg  GroupConfig
	node string
	c    *client.Client
	log  *slog.Logger

	// The rest belongs to Run's goroutine, but for the watchdog, which
	// the lease's renewals extend from theirs.
	e           coord.Election
	state       string
	failedUntil time.Time
	// gaveUp holds back preemption after a give-up until the node is
	// master again: preempting would undo what the operator asked for.
	gaveUp   bool
	watchdog watchdogSlot
}

// NewGroup returns the runner of node's part in the group cfg (defaults
// filled in), calling the federation with c.
func NewGroup(cfg GroupConfig, node string, c *client.Client, log *slog.Logger) *Group {
	return &Group{
		ExeArgs:  []string{"fence"},
		cfg:      cfg.WithDefaults(),
		node:     node,
		c:        c,
		log:      log,
		state:    StateStandby,
		watchdog: watchdogSlot{log: log},
	}
}

// retryIn is how soon a call the federation did not take is tried again.
const retryIn = time.Second

// electionWait is how long one blocking query on the election waits.
const electionWait = 20 * time.Second

// Run takes part in the group until ctx ends; a master then stops its
// service, resigns and revokes its lease, so that a successor need not
// wait for the lease to expire.
func (g *Group) Run(ctx context.Context) {
	updates := make(chan coord.Election, 1)
	followed := make(chan struct{})
	go func() {
		defer close(followed)
		g.follow(ctx, updates)
	}()
	defer func() { <-followed }()
	backoff := retryIn
	for ctx.Err() == nil {
		lease, err := Grant(ctx, g.c, g.cfg.LeaseTTL, g.log)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			g.log.Warn("HA group: no lease; retrying", "err", err, "retry_in", backoff)
			wait.Sleep(ctx, backoff)
			backoff = min(2*backoff, g.cfg.LeaseTTL)
			continue
		}
		backoff = retryIn
		g.serve(ctx, lease, updates)
	}
}

// follow sends each new state of the election to out, replacing one not
// yet taken: only the latest matters.
func (g *Group) follow(ctx context.Context, out chan coord.Election) {
	path := "/v1/elections/" + coord.KindHA + "/" + url.PathEscape(g.cfg.Name)
	for ctx.Err() == nil {
		err := Follow(ctx, g.c, path, electionWait, g.log, func(e coord.Election) (bool, error) {
			select {
			case <-out:
			default:
			}
			out <- e
			return false, nil
		})
		if err != nil && ctx.Err() == nil {
			g.log.Warn("HA group: election not readable", "err", err)
			wait.Sleep(ctx, retryIn)
		}
	}
}

// term is one lease's part in the group.
type term struct {
	g     *Group
	lease *Lease
	// stopKeep ends the lease's renewals.
	stopKeep context.CancelFunc
	// published is the state the election holds for this node.
	published string
	// settled is when this candidacy has been up for a lease TTL: every
	// live candidate has announced itself by then.
	settled time.Time
	m       *mastership
	// resigned is the token of the last mastership resigned: the election
	// may still show it for a moment.
	resigned int64
	// preemptToken is the lower-ranked mastership seen since preemptSince.
	preemptToken int64
	preemptSince time.Time
	// wake is when the next step is due, zero for none.
	wake time.Time
}

// mastership is this node's current term as master.
type mastership struct {
	token int64
	since time.Time
	env   []string
	wd    *Watchdog
	// fence ends once the node may no longer act as master (see guard).
	fence   context.Context
	unfence context.CancelFunc
	startAt time.Time
	started bool
	// nextStatus is when the status script is due, once started.
	nextStatus time.Time
}

// errTermOver ends a term: the lease is gone or the mastership was
// fenced; the group starts over with a new lease.
var errTermOver = errors.New("term over")

// serve takes part in the group on lease until ctx ends or the term is
// over.
func (g *Group) serve(ctx context.Context, lease *Lease, updates <-chan coord.Election) {
	// Renewals go on while a master stops its service on shutdown.
	keepCtx, stopKeep := context.WithCancel(context.WithoutCancel(ctx))
	defer stopKeep()
	go lease.Keep(keepCtx, g.watchdog.extend)
	t := &term{g: g, lease: lease, stopKeep: stopKeep}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		t.wake = time.Time{}
		if err := t.step(ctx); err != nil {
			return
		}
		var wake <-chan time.Time
		if !t.wake.IsZero() {
			timer.Reset(time.Until(t.wake))
			wake = timer.C
		}
		var fence <-chan struct{}
		if t.m != nil {
			fence = t.m.fence.Done()
		}
		select {
		case e := <-updates:
			if e.Revision >= g.e.Revision {
				g.e = e
			}
		case <-wake:
		case <-fence:
			t.fenced(context.Cause(t.m.fence))
			return
		case <-lease.Lost():
			if t.m != nil {
				t.fenced(errors.New("lease lost"))
			}
			return
		case <-ctx.Done():
			t.shutdown()
			return
		}
		timer.Stop()
	}
}

// at asks for a step at tm, or earlier.
func (t *term) at(tm time.Time) {
	if t.wake.IsZero() || tm.Before(t.wake) {
		t.wake = tm
	}
}

// step brings the node's part in line with the election as last seen.
func (t *term) step(ctx context.Context) error {
	if err := t.publish(ctx); err != nil {
		if t.m != nil {
			t.stepDown(ctx, StateStandby, "lease gone")
		}
		return err
	}
	if t.m != nil {
		return t.master(ctx)
	}
	return t.candidate(ctx)
}

// callTimeout bounds one call to the federation: a third of the TTL, as
// for the lease's renewals.
func (t *term) callTimeout() time.Duration { return t.lease.TTL / 3 }

func (t *term) electionPath(suffix string) string {
	return "/v1/elections/" + coord.KindHA + "/" + url.PathEscape(t.g.cfg.Name) + suffix
}

// call makes one request about the election; it outlives ctx's end, since
// shutting down takes calls too.
func (t *term) call(ctx context.Context, method, suffix string, in, out any) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), t.callTimeout())
	defer cancel()
	do := t.g.c.Do
	if method == http.MethodPut {
		// The same candidacy twice is the same candidacy.
		do = t.g.c.DoIdempotent
	}
	return do(cctx, method, t.electionPath(suffix), in, out)
}

func leaseGone(err error) bool {
	var apiErr *client.Error
	return errors.As(err, &apiErr) && (apiErr.Code == "lease_expired" || apiErr.Code == "not_member")
}

// setState changes the state the node announces, at once if it can.
func (t *term) setState(ctx context.Context, state string) error {
	t.g.state = state
	return t.publish(ctx)
}

// publish announces the node's state if the election does not hold it
// yet. It fails only when the lease is gone.
func (t *term) publish(ctx context.Context) error {
	g := t.g
	if t.published == g.state {
		return nil
	}
	err := t.call(ctx, http.MethodPut, "/candidates/"+url.PathEscape(g.node),
		api.StandRequest{Lease: t.lease.ID, Rank: g.cfg.Rank, State: g.state}, nil)
	switch {
	case err == nil:
		if t.published == "" {
			t.settled = time.Now().Add(t.lease.TTL)
		}
		t.published = g.state
		g.log.Info("HA group: state announced", "state", g.state, "rank", g.cfg.Rank)
		return nil
	case leaseGone(err):
		g.log.Warn("HA group: lease gone; standing again on a new one", "err", err)
		return errTermOver
	}
	g.log.Warn("HA group: state not announced; retrying", "state", g.state, "err", err)
	t.at(time.Now().Add(retryIn))
	return nil
}

func findCandidate(e coord.Election, node string) *coord.Candidate {
	i := slices.IndexFunc(e.Candidates, func(c coord.Candidate) bool { return c.Node == node })
	if i < 0 {
		return nil
	}
	return &e.Candidates[i]
}

// named is the live candidate a takeover request names, if any.
func named(e coord.Election) string {
	if r := e.Request; r != nil && r.Kind == coord.RequestTakeover && findCandidate(e, r.Node) != nil {
		return r.Node
	}
	return ""
}

// candidate is the step of a node that is not master.
func (t *term) candidate(ctx context.Context) error {
	g, e := t.g, t.g.e
	now := time.Now()
	if m := e.Master; m != nil && m.Node == g.node && m.Lease == t.lease.ID && m.Token != t.resigned {
		// A mastership this node does not run: a resign that failed, or
		// an acquire whose answer was lost. Nothing was started under it.
		t.resign(ctx, m.Token)
		return nil
	}
	otherMaster := e.Master != nil && e.Master.Node != g.node
	switch g.state {
	case StateFailed:
		if otherMaster || !now.Before(g.failedUntil) {
			return t.setState(ctx, StateStandby)
		}
		t.at(g.failedUntil)
	case StatePassive:
		if otherMaster || named(e) == g.node {
			return t.setState(ctx, StateStandby)
		}
	}
	me := findCandidate(e, g.node)
	if me == nil || me.Lease != t.lease.ID || t.published != g.state {
		// The election does not show this candidacy yet.
		return nil
	}
	if e.Master == nil {
		if !t.eligible(e) {
			return nil
		}
		// The highest rank, not the fastest start, should win: a
		// candidacy waits until the others had time to announce theirs,
		// unless a takeover names it.
		if now.Before(t.settled) && named(e) != g.node {
			t.at(t.settled)
			return nil
		}
		return t.acquire(ctx)
	}
	t.preempt(ctx, e)
	return nil
}

// eligible tells whether this node should take the mastership now that
// there is none: a takeover names it, or none names a live candidate and
// it is the highest-ranked standby.
func (t *term) eligible(e coord.Election) bool {
	if n := named(e); n != "" {
		return n == t.g.node
	}
	if t.g.state != StateStandby {
		return false
	}
	i := slices.IndexFunc(e.Candidates, func(c coord.Candidate) bool { return c.State == StateStandby })
	return i >= 0 && e.Candidates[i].Node == t.g.node
}

// preempt asks to take over from a lower-ranked master, once this node
// has seen it master for the preempt delay.
func (t *term) preempt(ctx context.Context, e coord.Election) {
	g := t.g
	mc := findCandidate(e, e.Master.Node)
	if !g.cfg.Preempt || g.gaveUp || g.state != StateStandby || e.Master.Node == g.node || mc == nil || mc.Rank >= g.cfg.Rank {
		t.preemptSince = time.Time{}
		return
	}
	if e.Request != nil {
		return // asked already, or a change asked for is under way
	}
	now := time.Now()
	if t.preemptSince.IsZero() || t.preemptToken != e.Master.Token {
		t.preemptSince, t.preemptToken = now, e.Master.Token
	}
	if due := t.preemptSince.Add(g.cfg.PreemptDelay); now.Before(due) {
		t.at(due)
		return
	}
	if err := t.call(ctx, http.MethodPost, "/takeover", api.AskRequest{Node: g.node}, nil); err != nil {
		g.log.Warn("HA group: takeover from a lower rank not asked; retrying", "master", e.Master.Node, "err", err)
		t.at(now.Add(retryIn))
		return
	}
	g.log.Info("HA group: taking over from a lower rank", "master", e.Master.Node, "master_rank", mc.Rank)
}

// acquire makes this node master, if the election still has none.
func (t *term) acquire(ctx context.Context) error {
	g := t.g
	var m coord.Master
	err := t.call(ctx, http.MethodPost, "/acquire", api.LeaseBody{Lease: t.lease.ID}, &m)
	var apiErr *client.Error
	switch {
	case errors.As(err, &apiErr) && apiErr.Code == "taken":
		return nil // another won; the election will show it
	case err != nil:
		g.log.Warn("HA group: mastership not acquired; retrying", "err", err)
		t.at(time.Now().Add(retryIn))
		return nil
	}
	log := g.log.With("token", m.Token)
	g.gaveUp = false
	if r := g.e.Request; r != nil && r.Kind == coord.RequestTakeover && r.Node == g.node {
		if err := t.call(ctx, http.MethodDelete, "/request", nil, nil); err != nil {
			log.Warn("HA group: served takeover request not cleared", "err", err)
		}
	}
	env := append(os.Environ(), EnvGroup+"="+g.cfg.Name, EnvNode+"="+g.node, EnvFencingToken+"="+strconv.FormatInt(m.Token, 10))
	wd, err := t.startWatchdog(env)
	if err != nil {
		log.Error("HA group: elected but cannot guard the service; resigning", "err", err)
		t.resign(ctx, m.Token)
		g.failedUntil = time.Now().Add(failedCoolDown * g.cfg.LeaseTTL)
		return t.setState(ctx, StateFailed)
	}
	g.watchdog.set(wd)
	// A renewal that came before setWatchdog was not passed on.
	if err := wd.Extend(t.lease.ValidUntil()); err != nil {
		log.Warn("HA group: watchdog not told of the lease", "err", err)
	}
	fence, unfence := context.WithCancelCause(context.Background())
	go guard(fence, unfence, t.lease, g.cfg.spec().Lead(), wd)
	t.m = &mastership{
		token: m.Token, since: m.Since, env: env, wd: wd,
		fence: fence, unfence: func() { unfence(nil) },
		startAt: time.Now().Add(g.cfg.TakeoverDelay),
	}
	log.Info("HA group: elected; starting after the takeover delay", "takeover_delay", g.cfg.TakeoverDelay)
	return t.setState(ctx, StateStarting)
}

// startWatchdog starts the watchdog of a new mastership, if the lease
// leaves it time to stop the service.
func (t *term) startWatchdog(env []string) (*Watchdog, error) {
	spec := t.g.cfg.spec()
	if Mono() >= t.lease.ValidUntil()-spec.Lead() {
		return nil, errors.New("the lease is not known alive long enough to stop the service in time")
	}
	exe := t.g.Exe
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("find this executable for the watchdog: %w", err)
		}
	}
	return StartWatchdog(exe, t.g.ExeArgs, spec, env, t.lease.ValidUntil())
}

// failedCoolDown, in lease TTLs, is how long a node whose start or status
// failed stays out of the running unless another becomes master first:
// long enough for every other candidate to have its turn.
const failedCoolDown = 3

// Why a mastership's fence ends.
var (
	errNotRenewed     = errors.New("the lease may end before a stop would finish")
	errWatchdogExited = errors.New("the watchdog exited")
)

// guard ends fence once the node may no longer act as master: its lease
// is lost or may end before a stop would finish (when the watchdog
// fences), or the watchdog is gone.
func guard(fence context.Context, end context.CancelCauseFunc, lease *Lease, lead time.Duration, wd *Watchdog) {
	for {
		left := lease.ValidUntil() - lead - Mono()
		if left <= 0 {
			end(errNotRenewed)
			return
		}
		tm := time.NewTimer(left)
		select {
		case <-tm.C:
			continue
		case <-lease.Lost():
			end(errors.New("lease lost"))
		case <-wd.Done():
			end(errWatchdogExited)
		case <-fence.Done():
		}
		tm.Stop()
		return
	}
}

// mayAct tells whether the master may still act as one: the watchdog
// would not fence before what it starts now could be stopped.
func (t *term) mayAct() bool {
	return t.m.fence.Err() == nil && Mono() < t.lease.ValidUntil()-t.g.cfg.spec().Lead()
}

// script runs the group's script with action as the current master.
func (t *term) script(action string) error {
	// The watchdog guards the script: frozen after the fence, this agent
	// could not stop a start script that goes on to launch the service.
	err := RunBounded(t.m.fence, t.g.cfg.argv(action), t.m.env, t.g.cfg.ScriptTimeout, t.m.wd)
	if err != nil {
		return fmt.Errorf("%s %s %s: %w", t.g.cfg.Script, action, t.g.cfg.Name, err)
	}
	return nil
}

// master is the step of the master.
func (t *term) master(ctx context.Context) error {
	g, e, m := t.g, t.g.e, t.m
	log := g.log.With("token", m.token)
	// An election read before the acquisition says nothing about it.
	current := e.Revision >= m.token
	if current && (e.Master == nil || e.Master.Token != m.token) {
		log.Error("HA group: the election no longer names this node master; stopping")
		return t.stepDown(ctx, StateStandby, "mastership gone from the election")
	}
	if r := e.Request; r != nil && current {
		switch {
		case r.Kind == coord.RequestGiveup && r.Node == g.node && r.At.Before(m.since):
			// Asked of an earlier mastership that ended before serving it.
			if err := t.call(ctx, http.MethodDelete, "/request", nil, nil); err != nil {
				log.Warn("HA group: stale give-up not cleared", "err", err)
			}
		case r.Kind == coord.RequestGiveup && r.Node == g.node:
			g.gaveUp = true
			return t.stepDown(ctx, StatePassive, "given up, asked by "+r.By)
		case r.Kind == coord.RequestTakeover && r.Node != g.node && findCandidate(e, r.Node) != nil:
			return t.stepDown(ctx, StateStandby, "taken over by "+r.Node+", asked by "+r.By)
		}
	}
	now := time.Now()
	if !m.started {
		if now.Before(m.startAt) {
			t.at(m.startAt)
			return nil
		}
		if !t.mayAct() {
			return nil // the fence is ending: serve's select sees it
		}
		if err := t.script("start"); err != nil {
			if m.fence.Err() != nil {
				return nil
			}
			log.Error("HA group: start failed; stepping down", "err", err)
			return t.stepDown(ctx, StateFailed, "start failed")
		}
		log.Info("HA group: service started")
		m.started, m.nextStatus = true, time.Now().Add(g.cfg.StatusInterval)
		t.at(m.nextStatus)
		return t.setState(ctx, StateMaster)
	}
	if now.Before(m.nextStatus) {
		t.at(m.nextStatus)
		return nil
	}
	if !t.mayAct() {
		return nil
	}
	if err := t.script("status"); err != nil {
		if m.fence.Err() != nil {
			return nil
		}
		log.Error("HA group: status failed; stepping down", "err", err)
		return t.stepDown(ctx, StateFailed, "status failed")
	}
	m.nextStatus = time.Now().Add(g.cfg.StatusInterval)
	t.at(m.nextStatus)
	return nil
}

// stopService stops the service of a mastership that is still the node's
// to act on, and ends its watchdog. It reports false when the service may
// still run: the watchdog then fences it before the lease may end.
func (t *term) stopService() bool {
	m := t.m
	log := t.g.log.With("token", m.token)
	if !t.mayAct() {
		return false
	}
	if err := t.script("stop"); err != nil || m.fence.Err() != nil {
		log.Error("HA group: stop failed; leaving it to the watchdog", "err", err)
		return false
	}
	m.unfence()
	m.wd.Disarm()
	t.g.watchdog.set(nil)
	t.m = nil
	log.Info("HA group: service stopped")
	return true
}

// stepDown ends the mastership cleanly: the service stopped, the state
// announced, the mastership resigned. If the service cannot be stopped,
// the mastership is fenced instead and the term is over.
func (t *term) stepDown(ctx context.Context, state, why string) error {
	token := t.m.token
	t.g.log.Info("HA group: stepping down", "token", token, "why", why, "state", state)
	if !t.stopService() {
		t.fenced(errors.New("stop failed"))
		return errTermOver
	}
	if state == StateFailed {
		t.g.failedUntil = time.Now().Add(failedCoolDown * t.g.cfg.LeaseTTL)
	}
	// Announced first, so that no one sees the node without mastership
	// still called master.
	if err := t.setState(ctx, state); err != nil {
		return err
	}
	t.resign(ctx, token)
	return nil
}

// resign ends the mastership with token in the election; a failure is
// retried by the next step, which finds it still there.
func (t *term) resign(ctx context.Context, token int64) {
	if err := t.call(ctx, http.MethodPost, "/resign", api.LeaseBody{Lease: t.lease.ID}, nil); err != nil {
		t.g.log.Warn("HA group: resignation not taken; retrying", "token", token, "err", err)
		t.at(time.Now().Add(retryIn))
		return
	}
	t.resigned = token
	t.g.log.Info("HA group: resigned", "token", token)
}

// fenced ends a mastership that the node can no longer end cleanly: it
// stops renewing the lease, so that the mastership lapses with it, and
// waits until the service is stopped. The term is over.
func (t *term) fenced(why error) {
	m := t.m
	log := t.g.log.With("token", m.token)
	log.Warn("HA group: mastership over without a clean step-down", "why", why)
	t.stopKeep()
	// Until the watchdog's time comes the stop is the node's: the lease
	// may be gone already (the store said so), the watchdog killed, or a
	// stop just failed and is worth trying once more.
	if Mono() < t.lease.ValidUntil()-t.g.cfg.spec().Lead() {
		if err := RunBounded(context.Background(), t.g.cfg.argv("stop"), m.env, t.g.cfg.ScriptTimeout, nil); err != nil {
			log.Error("HA group: stop failed; the watchdog fences", "err", err)
		} else {
			m.wd.Disarm()
		}
	}
	<-m.wd.Done()
	m.unfence()
	t.g.watchdog.set(nil)
	t.m = nil
	log.Warn("HA group: fenced; standing again on a new lease")
	t.g.state = StateStandby
}

// shutdown leaves the group: a master stops its service and resigns, and
// the lease is revoked so that a successor need not wait for it to end.
func (t *term) shutdown() {
	ctx := context.Background()
	if t.m != nil {
		token := t.m.token
		if !t.stopService() {
			// The lease lapses; the watchdog fences before it does, or at
			// once when this process exits.
			t.stopKeep()
			return
		}
		t.resign(ctx, token)
	}
	cctx, cancel := context.WithTimeout(ctx, t.callTimeout())
	defer cancel()
	if err := t.lease.Revoke(cctx); err != nil {
		t.g.log.Warn("HA group: lease not revoked; it ends with its TTL", "err", err)
	}
	t.g.log.Info("HA group: left")
}
