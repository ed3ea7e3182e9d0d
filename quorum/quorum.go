// Package quorum keeps the federation's supernodes: it admits new ones as
// store learners, watches every supernode's health, and — on the store
// leader only — runs the autopilot that promotes a standby when a voter has
// been dead too long and then removes the dead voter, never taking a step
// that would cost the store its quorum.
package quorum

import (
	"cmp"
	"context"
	"crypto/tls"
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

// Config tunes health checks and the autopilot.
type Config struct {
	// ProbeInterval is how often every supernode checks the others.
	ProbeInterval time.Duration `yaml:"probe_interval,omitempty"`
	// DeadAfter is how long a voter may be unreachable before the
	// autopilot replaces it with a standby.
	DeadAfter time.Duration `yaml:"dead_after,omitempty"`
	// TargetVoters is how many voting supernodes the autopilot keeps.
	TargetVoters int `yaml:"target_voters,omitempty"`
	// Autopilot switches automatic promotion and removal on (the default).
	Autopilot *bool `yaml:"autopilot,omitempty"`
}

// Defaults for LAN federations; docs/operations.md gives WAN values.
const (
	DefaultProbeInterval = time.Second
	DefaultDeadAfter     = 30 * time.Second
	DefaultTargetVoters  = 3
)

func (c Config) withDefaults() Config {
	if c.ProbeInterval <= 0 {
		c.ProbeInterval = DefaultProbeInterval
	}
	if c.DeadAfter <= 0 {
		c.DeadAfter = DefaultDeadAfter
	}
	if c.TargetVoters <= 0 {
		c.TargetVoters = DefaultTargetVoters
	}
	if c.Autopilot == nil {
		on := true
		c.Autopilot = &on
	}
	return c
}

// Health is what a supernode's liveness endpoint reports.
type Health struct {
	Status string       `json:"status"`
	Node   string       `json:"node"`
	Store  store.Status `json:"store"`
}

// Supernode is one supernode as the federation sees it.
type Supernode struct {
	Name     string `json:"name"`
	MemberID string `json:"member_id"`
	// Voter is false for standbys and for new supernodes still catching
	// up as learners.
	Voter       bool      `json:"voter"`
	Standby     bool      `json:"standby"`
	Healthy     bool      `json:"healthy"`
	Leader      bool      `json:"leader"`
	Address     string    `json:"address,omitempty"`
	PeerURL     string    `json:"peer_url"`
	Revision    int64     `json:"revision"`
	RevisionLag int64     `json:"revision_lag"`
	LastContact time.Time `json:"last_contact,omitzero"`
}

// Kind says what part a supernode plays: voter, standby, or learner (a
// new supernode catching up before it votes).
func (sn Supernode) Kind() string {
	switch {
	case sn.Voter:
		return "voter"
	case sn.Standby:
		return "standby"
	}
	return "learner"
}

// Service watches and manages the supernodes from one supernode.
type Service struct {
	self    string
	st      *store.Store
	members *membership.Service
	events  *events.Log
	cfg     Config
	http    *http.Client
	log     *slog.Logger

	mu sync.Mutex
	// seen is the last successful probe of each supernode, by name.
	seen map[string]probe
	// since is when this supernode started watching; nobody is declared
	// dead before DeadAfter has passed from it.
	since time.Time
	// links is this supernode's view of its links to the others, and
	// linksSaved when it was last written to the store.
	links      map[string]membership.Link
	linksSaved time.Time
}

type probe struct {
	at     time.Time
	rtt    time.Duration
	health Health
}

// linkRefresh is how often a supernode rewrites its link view when nothing
// went up or down, to refresh the round-trip times: a handful of writes a
// minute whatever the size of the federation.
const linkRefresh = time.Minute

// New returns the quorum service of supernode self. tlsCfg is used to
// probe other supernodes.
func New(self string, st *store.Store, members *membership.Service, ev *events.Log, cfg Config, tlsCfg *tls.Config) *Service {
	cfg = cfg.withDefaults()
	return &Service{
		self: self, st: st, members: members, events: ev, cfg: cfg,
		http: &http.Client{Timeout: cfg.ProbeInterval, Transport: &http.Transport{TLSClientConfig: tlsCfg, MaxIdleConnsPerHost: 1}},
		log:  slog.Default().With("component", "quorum", "supernode", self),
		seen: map[string]probe{}, since: time.Now(), links: map[string]membership.Link{},
	}
}

// Health is this supernode's own health report.
func (s *Service) Health() Health {
	return Health{Status: "ok", Node: s.self, Store: s.st.Status()}
}

// Run probes the other supernodes, and steers the autopilot while this
// supernode leads the store, until ctx ends.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(s.cfg.ProbeInterval)
	defer t.Stop()
	for {
		s.probeAll(ctx)
		if *s.cfg.Autopilot && s.IsLeader() {
			if err := s.autopilot(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("autopilot step failed", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// IsLeader reports whether this supernode leads the store now.
func (s *Service) IsLeader() bool {
	st := s.st.Status()
	return st.LeaderID != 0 && st.LeaderID == st.MemberID
}

func (s *Service) probeAll(ctx context.Context) {
	nodes, err := s.members.Supernodes(ctx)
	if err != nil {
		s.log.Debug("cannot read supernode records", "err", err)
		return
	}
	var wg sync.WaitGroup
	for _, n := range nodes {
		if n.Address == "" {
			continue
		}
		wg.Go(func() {
			if n.Name == s.self {
				s.record(n.Name, s.Health(), 0, nil)
				return
			}
			start := time.Now()
			h, err := s.probe(ctx, n.Address)
			if err != nil {
				s.log.Debug("probe failed", "target", n.Name, "err", err)
			}
			s.record(n.Name, h, time.Since(start), err)
		})
	}
	wg.Wait()
	s.mu.Lock()
	for name := range s.links {
		if !slices.ContainsFunc(nodes, func(n membership.Node) bool { return n.Name == name }) {
			delete(s.links, name)
			s.linksSaved = time.Time{}
		}
	}
	s.mu.Unlock()
	s.saveLinks(ctx)
}

func (s *Service) record(name string, h Health, rtt time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.seen[name] = probe{at: time.Now(), rtt: rtt, health: h}
	}
	if name == s.self {
		return
	}
	l, ok := s.links[name]
	up := err == nil
	if !ok || l.Up != up {
		l = membership.Link{From: s.self, To: name, Up: up, Since: time.Now().UTC()}
		s.linksSaved = time.Time{} // a change: save at once
	}
	if up {
		l.RTTMillis = float64(rtt.Microseconds()) / 1000
	}
	s.links[name] = l
}

// saveLinks writes this supernode's link view when a link went up or down,
// and otherwise once per linkRefresh.
func (s *Service) saveLinks(ctx context.Context) {
	s.mu.Lock()
	if time.Since(s.linksSaved) < linkRefresh || len(s.links) == 0 {
		s.mu.Unlock()
		return
	}
	links := make([]membership.Link, 0, len(s.links))
	for _, l := range s.links {
		links = append(links, l)
	}
	s.mu.Unlock()
	// A store that just lost its leader must not hold up probing and the
	// autopilot: the write gets one probe interval.
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ProbeInterval)
	defer cancel()
	if err := s.members.PutLinks(ctx, s.self, links); err != nil {
		s.log.Debug("links not saved", "err", err)
		return
	}
	s.mu.Lock()
	s.linksSaved = time.Now()
	s.mu.Unlock()
}

// Healthy lists the supernodes (voters and standbys) this one has heard
// from within the last three probe intervals, itself included.
func (s *Service) Healthy() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for name, p := range s.seen {
		if time.Since(p.at) < 3*s.cfg.ProbeInterval {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

func (s *Service) probe(ctx context.Context, addr string) (Health, error) {
	var h Health
	err := client.Call(ctx, s.http, http.MethodGet, "https://"+addr+"/v1/live", nil, &h)
	return h, err
}

// List reports every store member with this supernode's view of its health.
func (s *Service) List(ctx context.Context) ([]Supernode, error) {
	resp, err := s.st.Client.MemberList(ctx)
	if err != nil {
		return nil, fmt.Errorf("list store members: %w", err)
	}
	records, err := s.members.Supernodes(ctx)
	if err != nil {
		return nil, err
	}
	byName := map[string]membership.Node{}
	for _, n := range records {
		byName[n.Name] = n
	}
	leader := s.st.Status().LeaderID
	s.mu.Lock()
	defer s.mu.Unlock()
	var maxRev int64
	for _, p := range s.seen {
		maxRev = max(maxRev, p.health.Store.Revision)
	}
	fresh := 3 * s.cfg.ProbeInterval
	var out []Supernode
	for _, m := range resp.Members {
		sn := Supernode{
			Name:     m.Name,
			MemberID: fmt.Sprintf("%x", m.ID),
			Voter:    !m.IsLearner,
			Leader:   m.ID == leader,
		}
		if len(m.PeerURLs) > 0 {
			sn.PeerURL = m.PeerURLs[0]
		}
		rec, ok := byName[m.Name]
		if ok {
			sn.Address = rec.Address
			sn.Standby = rec.Role == membership.RoleStandby
		}
		if p, ok := s.seen[m.Name]; ok {
			sn.LastContact = p.at.UTC()
			sn.Revision = p.health.Store.Revision
			sn.RevisionLag = maxRev - sn.Revision
			sn.Healthy = time.Since(p.at) < fresh
		}
		out = append(out, sn)
	}
	slices.SortFunc(out, func(a, b Supernode) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// autopilot takes at most one step per call, so that every step is
// decided on a fresh view of the store's members.
func (s *Service) autopilot(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), 5*s.cfg.ProbeInterval)
	defer cancel()
	list, err := s.List(ctx)
	if err != nil {
		return err
	}
	step := decide(list, s.deadFor, s.cfg)
	switch step.kind {
	case stepPromote:
		return s.promote(ctx, step.target, step.why)
	case stepRemove:
		return s.removeDead(ctx, step.target, step.why)
	}
	return nil
}

type stepKind int

const (
	stepNone stepKind = iota
	stepPromote
	stepRemove
)

// step is one autopilot decision.
type step struct {
	kind   stepKind
	target Supernode
	why    string
}

// decide is the autopilot's policy, kept apart from I/O so that it can be
// tested on its own: given the store's members as this leader sees them
// and how long each has been silent, it picks at most one step.
func decide(list []Supernode, deadFor func(Supernode) time.Duration, cfg Config) step {
	var voters, healthyVoters, deadVoters, readyLearners []Supernode
	for _, sn := range list {
		if sn.Voter {
			voters = append(voters, sn)
			if sn.Healthy {
				healthyVoters = append(healthyVoters, sn)
			} else if deadFor(sn) >= cfg.DeadAfter {
				deadVoters = append(deadVoters, sn)
			}
		} else if sn.Healthy && sn.Name != "" {
			readyLearners = append(readyLearners, sn)
		}
	}
	// The most caught-up learners first.
	slices.SortStableFunc(readyLearners, func(a, b Supernode) int { return cmp.Compare(a.RevisionLag, b.RevisionLag) })
	// Promoting makes the store larger: the healthy voters and the new one
	// must be a majority of it.
	canPromote := len(healthyVoters)+1 >= quorumOf(len(voters)+1)

	// A new supernode joins as a learner and becomes a voter once it has
	// caught up; standbys stay learners until needed.
	for _, l := range readyLearners {
		if !l.Standby && canPromote {
			return step{kind: stepPromote, target: l, why: "caught up after joining"}
		}
	}
	if len(deadVoters) == 0 {
		return step{}
	}
	dead := deadVoters[0]
	silent := deadFor(dead).Round(time.Second)
	// Replace the dead voter first, so the federation never runs with
	// fewer healthy voters than before.
	if len(healthyVoters) < cfg.TargetVoters && len(readyLearners) > 0 && canPromote {
		return step{kind: stepPromote, target: readyLearners[0], why: fmt.Sprintf("voter %s unreachable for %s", dead.Name, silent)}
	}
	// Removing a dead voter never costs the quorum: the healthy voters are
	// a majority of the smaller store too. It is done only once the
	// healthy voters are back at the target, so that a voter that is
	// merely slow to return is not removed for nothing.
	if len(healthyVoters) >= cfg.TargetVoters && len(healthyVoters) >= quorumOf(len(voters)-1) {
		return step{kind: stepRemove, target: dead, why: fmt.Sprintf("unreachable for %s", silent)}
	}
	return step{}
}

// deadFor is how long sn has not answered, counted from when this
// supernode started watching at the earliest.
func (s *Service) deadFor(sn Supernode) time.Duration {
	last := sn.LastContact
	if last.Before(s.since) {
		last = s.since
	}
	return time.Since(last)
}

func quorumOf(voters int) int { return voters/2 + 1 }

func (s *Service) promote(ctx context.Context, sn Supernode, why string) error {
	id, err := parseID(sn.MemberID)
	if err != nil {
		return err
	}
	if _, err := s.st.Client.MemberPromote(ctx, id); err != nil {
		// A learner that is not yet in sync is refused; next round.
		if strings.Contains(err.Error(), "not in sync") || strings.Contains(err.Error(), "not ready") {
			s.log.Debug("learner not ready for promotion", "target", sn.Name, "err", err)
			return nil
		}
		return fmt.Errorf("promote %s: %w", sn.Name, err)
	}
	if err := s.members.SetRole(ctx, sn.Name, membership.RoleSupernode); err != nil {
		s.log.Warn("promoted but node record not updated", "target", sn.Name, "err", err)
	}
	s.log.Info("supernode promoted to voter", "target", sn.Name, "why", why)
	return s.events.Record(ctx, events.Event{Node: sn.Name, Kind: "promoted", Old: roleName(sn), New: "voter", By: s.self, Message: why})
}

func (s *Service) removeDead(ctx context.Context, sn Supernode, why string) error {
	id, err := parseID(sn.MemberID)
	if err != nil {
		return err
	}
	if _, err := s.st.Client.MemberRemove(ctx, id); err != nil {
		return fmt.Errorf("remove dead voter %s: %w", sn.Name, err)
	}
	// When it comes back it rejoins as a standby.
	if err := s.members.SetRole(ctx, sn.Name, membership.RoleStandby); err != nil {
		s.log.Warn("removed but node record not updated", "target", sn.Name, "err", err)
	}
	s.log.Warn("dead voter removed from the store", "target", sn.Name, "why", why)
	return s.events.Record(ctx, events.Event{Node: sn.Name, Kind: "removed_from_store", Old: "voter", New: "standby", By: s.self, Message: why})
}

func roleName(sn Supernode) string {
	if sn.Standby {
		return "standby"
	}
	return "learner"
}

func parseID(hex string) (uint64, error) {
	var id uint64
	if _, err := fmt.Sscanf(hex, "%x", &id); err != nil {
		return 0, fmt.Errorf("member id %q: %w", hex, err)
	}
	return id, nil
}

// ErrUnknownSupernode is returned for a name that is no store member.
var ErrUnknownSupernode = errors.New("no such supernode")
