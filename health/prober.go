package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedkeeper/fedkeeper/client"
	"github.com/fedkeeper/fedkeeper/events"
	"github.com/fedkeeper/fedkeeper/membership"
	"github.com/fedkeeper/fedkeeper/store"
)

// Suspect is the status of a member that its supernode cannot reach and no
// second supernode has yet confirmed as unreachable.
const Suspect Status = "suspect"

// prefix holds one Record per node: health/<name>. Records change only
// when a node's status changes, never on a probe that finds it as before,
// so the store's write rate does not grow with the probe rate.
const prefix = store.Root + "health/"

// Record is a node's health as the federation sees it.
type Record struct {
	Status Status    `json:"status"`
	Since  time.Time `json:"since"`
	// By is the supernode that set the status; ConfirmedBy the second one
	// that agreed a member is unreachable.
	By          string `json:"by"`
	ConfirmedBy string `json:"confirmed_by,omitempty"`
	Reason      string `json:"reason,omitempty"`
	// Cause is what the status stems from: "unreachable", "link" (one
	// supernode's link is bad), or the failing checks.
	Cause string `json:"cause,omitempty"`
}

// AgentHealth is what an agent's health endpoint answers.
type AgentHealth struct {
	Node   string   `json:"node"`
	Status Status   `json:"status"`
	Checks []Result `json:"checks"`
}

// ProbeConfig tunes how supernodes probe members.
type ProbeConfig struct {
	// Interval between probes of each member.
	Interval time.Duration `yaml:"interval,omitempty"`
	// Timeout of one probe.
	Timeout time.Duration `yaml:"timeout,omitempty"`
	// FailureThreshold is how many probes in a row must fail before a
	// member is suspect.
	FailureThreshold int `yaml:"failure_threshold,omitempty"`
	// Workers bounds the probes in flight at once.
	Workers int `yaml:"workers,omitempty"`
}

// LAN defaults; docs/operations.md gives WAN values.
const (
	DefaultProbeInterval    = time.Second
	DefaultProbeTimeout     = time.Second
	DefaultFailureThreshold = 3
	DefaultWorkers          = 64
)

func (c ProbeConfig) withDefaults() ProbeConfig {
	if c.Interval <= 0 {
		c.Interval = DefaultProbeInterval
	}
	if c.Timeout <= 0 {
		c.Timeout = min(DefaultProbeTimeout, c.Interval)
	}
	if c.FailureThreshold <= 0 {
		c.FailureThreshold = DefaultFailureThreshold
	}
	if c.Workers <= 0 {
		c.Workers = DefaultWorkers
	}
	return c
}

// Validate checks the configuration.
func (c ProbeConfig) Validate() error {
	if c.Interval < 0 || c.Timeout < 0 || c.FailureThreshold < 0 || c.Workers < 0 {
		return errors.New("health: interval, timeout, failure_threshold and workers must not be negative")
	}
	if c.Interval > 0 && c.Interval < 100*time.Millisecond {
		return fmt.Errorf("health: interval %s is too short: at least 100ms", c.Interval)
	}
	d := c.withDefaults()
	if d.Timeout > d.Interval {
		return fmt.Errorf("health: timeout %s is longer than the interval %s", d.Timeout, d.Interval)
	}
	return nil
}

// Prober is a supernode's side of health checking: it probes the members
// assigned to it, asks a second supernode to confirm before declaring one
// critical, and answers such requests from others.
type Prober struct {
	self    string
	kv      *clientv3.Client
	nodes   *membership.NodeCache
	healthy func() []string
	events  *events.Log
	http    *http.Client
	cfg     ProbeConfig
	log     *slog.Logger

	// OnProbe, when set, is told of every probe: for metrics.
	OnProbe func(ok bool, took time.Duration)
	// OnWrite, when set, is told of every store write: for metrics.
	OnWrite func()
	// OnAssigned, when set, is told after each round which members this
	// supernode probes.
	OnAssigned func(assigned map[string]bool)
	// Scrape, when set, is called on each probe round for each assigned
	// member, to collect its metrics with the same client.
	Scrape func(ctx context.Context, c *http.Client, n membership.Node)

	mu    sync.Mutex
	state map[string]*memberState
}

type memberState struct {
	failures int
	rec      Record
	loaded   bool
	// refutedUntil holds back a new suspicion after a second supernode
	// reached the member: the fault is our link, not the member. The hold
	// doubles with each refutation, so a lasting bad link costs a few
	// writes an hour, not one a minute.
	refutedUntil time.Time
	hold         time.Duration
}

// maxHold bounds how long a refuted suspicion is held back.
const maxHold = 5 * time.Minute

// NewProber returns the prober of supernode self. healthy lists the
// supernodes currently heard from; c must present the supernode's
// certificate.
func NewProber(self string, kv *clientv3.Client, nodes *membership.NodeCache, healthy func() []string, ev *events.Log, c *http.Client, cfg ProbeConfig) *Prober {
	return &Prober{
		self: self, kv: kv, nodes: nodes, healthy: healthy, events: ev, http: c, cfg: cfg.withDefaults(),
		log:   slog.Default().With("component", "health", "supernode", self),
		state: map[string]*memberState{},
	}
}

// Run probes until ctx ends.
func (p *Prober) Run(ctx context.Context) {
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		p.Round(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// split sorts the cached node records into supernodes and members.
func (p *Prober) split() (supernodes, members []membership.Node) {
	for _, n := range p.nodes.Nodes() {
		switch n.Role {
		case membership.RoleSupernode, membership.RoleStandby:
			supernodes = append(supernodes, n)
		case membership.RoleMember:
			members = append(members, n)
		}
	}
	return supernodes, members
}

// Round probes every member assigned to this supernode once.
func (p *Prober) Round(ctx context.Context) {
	supernodes, members := p.split()
	healthy := p.healthy()
	var mine []membership.Node
	assigned := map[string]bool{}
	for _, m := range members {
		if m.Address == "" {
			continue
		}
		if rank := Rank(m.Name, Candidates(project(m), supernodes, healthy)); len(rank) > 0 && rank[0] == p.self {
			mine = append(mine, m)
			assigned[m.Name] = true
		}
	}
	// Members that moved to another supernode start afresh if they come
	// back: the other supernode's view may have changed their record.
	p.mu.Lock()
	for name := range p.state {
		if !assigned[name] {
			delete(p.state, name)
		}
	}
	p.mu.Unlock()
	if p.OnAssigned != nil {
		p.OnAssigned(assigned)
	}
	sem := make(chan struct{}, p.cfg.Workers)
	var wg sync.WaitGroup
	for _, m := range mine {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			p.check(ctx, m, supernodes, healthy)
			if p.Scrape != nil {
				p.Scrape(ctx, p.http, m)
			}
		})
	}
	wg.Wait()
}

func project(n membership.Node) string {
	if len(n.Projects) > 0 {
		return n.Projects[0]
	}
	return ""
}

// check probes one member and moves its status on.
func (p *Prober) check(ctx context.Context, m membership.Node, supernodes []membership.Node, healthy []string) {
	h, err := p.Probe(ctx, m.Address)
	st, lerr := p.memberState(ctx, m.Name)
	if lerr != nil {
		p.log.Debug("health record not readable", "node", m.Name, "err", lerr)
		return
	}
	if err == nil {
		p.mu.Lock()
		// Reached: any doubt about our link to the member ends too, so a
		// failure soon after is suspected at once, not held back.
		st.failures, st.hold, st.refutedUntil = 0, 0, time.Time{}
		p.mu.Unlock()
		reason, cause := reasonOf(h)
		p.set(ctx, m.Name, st, h.Status, cause, reason, "", p.self)
		return
	}
	p.mu.Lock()
	st.failures++
	failures, refuted, status := st.failures, time.Now().Before(st.refutedUntil), st.rec.Status
	confirmedDown := st.rec.Status == Critical && st.rec.ConfirmedBy != ""
	p.mu.Unlock()
	if failures < p.cfg.FailureThreshold || refuted {
		return
	}
	reason := fmt.Sprintf("unreachable from %s: %v", p.self, err)
	if status != Suspect && status != Critical {
		p.set(ctx, m.Name, st, Suspect, causeUnreachable, reason, "", p.self)
	}
	confirmer := p.confirmer(m, supernodes, healthy)
	if confirmer == nil {
		// A federation with one supernode has nobody to ask: it waits
		// twice as long before declaring the member critical.
		if failures >= 2*p.cfg.FailureThreshold {
			p.set(ctx, m.Name, st, Critical, causeUnreachable, reason, "", p.self)
		}
		return
	}
	verdict, err := p.askConfirm(ctx, confirmer.Address, m.Name)
	switch {
	case err != nil:
		p.log.Debug("confirmation not obtained", "node", m.Name, "confirmer", confirmer.Name, "err", err)
	case verdict.Reachable && confirmedDown:
		// Both supernodes had found the member down; the second reaching
		// it now means it is back (it came up between the two probes),
		// not that our link is bad.
		p.set(ctx, m.Name, st, verdict.Status, "", "", "", confirmer.Name)
	case verdict.Reachable:
		p.mu.Lock()
		st.hold = min(max(2*st.hold, 10*p.cfg.Interval), maxHold)
		st.refutedUntil = time.Now().Add(st.hold)
		p.mu.Unlock()
		p.log.Warn("member reachable from another supernode only: suspect the link, not the member", "node", m.Name, "confirmer", confirmer.Name)
		p.set(ctx, m.Name, st, verdict.Status, causeLink, fmt.Sprintf("reachable from %s, not from %s", confirmer.Name, p.self), "", confirmer.Name)
	default:
		p.set(ctx, m.Name, st, Critical, causeUnreachable, reason, confirmer.Name, p.self)
	}
}

// confirmer is the next supernode in the member's rendezvous order after
// this one, taken from all healthy supernodes if the member's project has
// no second one.
func (p *Prober) confirmer(m membership.Node, supernodes []membership.Node, healthy []string) *membership.Node {
	for _, pool := range [][]string{Candidates(project(m), supernodes, healthy), Candidates("", supernodes, healthy)} {
		for _, name := range Rank(m.Name, pool) {
			if name == p.self {
				continue
			}
			for i := range supernodes {
				if supernodes[i].Name == name && supernodes[i].Address != "" {
					return &supernodes[i]
				}
			}
		}
	}
	return nil
}

// Causes of a status. A record is rewritten when its status or its cause
// changes, not when only the wording of its reason does (a disk check's
// free space, an error's text), so probes do not write to the store.
const (
	causeUnreachable = "unreachable"
	causeLink        = "link"
)

// reasonOf describes a reachable member's failing checks; the cause names
// them with their statuses.
func reasonOf(h AgentHealth) (reason, cause string) {
	var bad, names []string
	for _, r := range h.Checks {
		if r.Status != Passing {
			out := strings.TrimSpace(r.Output)
			if len(out) > 200 {
				out = out[:200] + "…"
			}
			bad = append(bad, fmt.Sprintf("%s %s: %s", r.Name, r.Status, out))
			names = append(names, r.Name+"="+string(r.Status))
		}
	}
	slices.Sort(names)
	return strings.Join(bad, "; "), strings.Join(names, ",")
}

// Probe asks the agent at addr for its health.
func (p *Prober) Probe(ctx context.Context, addr string) (AgentHealth, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	start := time.Now()
	h, err := p.get(ctx, addr)
	if p.OnProbe != nil {
		p.OnProbe(err == nil, time.Since(start))
	}
	return h, err
}

func (p *Prober) get(ctx context.Context, addr string) (AgentHealth, error) {
	var h AgentHealth
	if err := client.Call(ctx, p.http, http.MethodGet, "https://"+addr+"/v1/health", nil, &h); err != nil {
		return AgentHealth{}, err
	}
	if h.Status == "" {
		h.Status = Overall(h.Checks)
	}
	return h, nil
}

// Verdict is a second supernode's answer to "can you reach this member?".
type Verdict struct {
	Reachable bool   `json:"reachable"`
	Status    Status `json:"status,omitempty"`
	Error     string `json:"error,omitempty"`
}

// Confirm probes a member on behalf of another supernode.
func (p *Prober) Confirm(ctx context.Context, node string) (Verdict, error) {
	n, ok := p.nodes.Get(node)
	if !ok || n.Role != membership.RoleMember || n.Address == "" {
		return Verdict{}, fmt.Errorf("%w: no member %q with an address", membership.ErrNotFound, node)
	}
	h, err := p.Probe(ctx, n.Address)
	if err != nil {
		return Verdict{Reachable: false, Error: err.Error()}, nil
	}
	return Verdict{Reachable: true, Status: h.Status}, nil
}

func (p *Prober) askConfirm(ctx context.Context, addr, node string) (Verdict, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*p.cfg.Timeout+time.Second)
	defer cancel()
	var v Verdict
	err := client.Call(ctx, p.http, http.MethodPost, "https://"+addr+"/v1/health/confirm", map[string]string{"node": node}, &v)
	return v, err
}

// memberState returns the prober's state of a member, reading its record
// the first time the member is assigned here.
func (p *Prober) memberState(ctx context.Context, name string) (*memberState, error) {
	p.mu.Lock()
	st, ok := p.state[name]
	if !ok {
		st = &memberState{}
		p.state[name] = st
	}
	loaded := st.loaded
	p.mu.Unlock()
	if loaded {
		return st, nil
	}
	var rec Record
	if _, err := store.GetJSON(ctx, p.kv, prefix+name, &rec); err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	p.mu.Lock()
	st.rec, st.loaded = rec, true
	p.mu.Unlock()
	return st, nil
}

// set records a new status, only if it differs from the last one, with an
// event.
func (p *Prober) set(ctx context.Context, node string, st *memberState, status Status, cause, reason, confirmedBy, by string) {
	p.mu.Lock()
	old := st.rec
	p.mu.Unlock()
	if old.Status == status && old.Cause == cause {
		return
	}
	rec := Record{Status: status, Since: time.Now().UTC(), By: by, ConfirmedBy: confirmedBy, Reason: reason, Cause: cause}
	if old.Status == status {
		// Same status, another cause: the status has lasted since before.
		rec.Since = old.Since
	}
	if _, err := p.kv.Put(ctx, prefix+node, store.MustJSON(rec)); err != nil {
		p.log.Warn("health status not recorded", "node", node, "status", status, "err", err)
		return
	}
	if p.OnWrite != nil {
		p.OnWrite()
	}
	p.mu.Lock()
	st.rec = rec
	p.mu.Unlock()
	kind := string(status)
	if status == Passing && old.Status != "" {
		kind = "recovered"
	}
	p.log.Info("member health changed", "node", node, "old", old.Status, "new", status, "reason", reason, "confirmed_by", confirmedBy)
	e := events.Event{Node: node, Kind: kind, Old: string(old.Status), New: string(status), By: by, Message: reason}
	if confirmedBy != "" {
		e.Message += " (confirmed by " + confirmedBy + ")"
	}
	if err := p.events.Record(ctx, e); err != nil {
		p.log.Warn("event not recorded", "node", node, "err", err)
	}
}

// Records returns the health records of the named nodes, or of every node
// when none is named.
func Records(ctx context.Context, kv *clientv3.Client, names ...string) (map[string]Record, error) {
	var resp *clientv3.GetResponse
	var err error
	if len(names) == 1 {
		resp, err = kv.Get(ctx, prefix+names[0])
	} else {
		resp, err = kv.Get(ctx, prefix, clientv3.WithPrefix())
	}
	if err != nil {
		return nil, fmt.Errorf("read health records: %w", err)
	}
	out := make(map[string]Record, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		name := strings.TrimPrefix(string(kv.Key), prefix)
		var r Record
		if json.Unmarshal(kv.Value, &r) == nil && (len(names) == 0 || slices.Contains(names, name)) {
			out[name] = r
		}
	}
	return out, nil
}

// Sweep deletes the health records of nodes that are no longer members.
func (p *Prober) Sweep(ctx context.Context) error {
	if !p.nodes.Ready() {
		// An empty cache would make every record look orphaned.
		return nil
	}
	recs, err := Records(ctx, p.kv)
	if err != nil {
		return err
	}
	for name := range recs {
		if _, ok := p.nodes.Get(name); !ok {
			if _, err := p.kv.Delete(ctx, prefix+name); err != nil {
				return fmt.Errorf("delete health record of %s: %w", name, err)
			}
		}
	}
	return nil
}

// Mirror follows every node's health record in memory, keyed by node name.
func Mirror(ctx context.Context, kv *clientv3.Client, log *slog.Logger) *store.Mirror[Record] {
	return store.Follow[Record](ctx, kv, prefix, log)
}
