package services

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedkeeper/fedkeeper/health"
	"github.com/fedkeeper/fedkeeper/membership"
	"github.com/fedkeeper/fedkeeper/nameserver"
	"github.com/fedkeeper/fedkeeper/store"
)

// View is a supernode's in-memory view of the registry: the instances,
// the nodes they run on and those nodes' health, each followed from the
// store. Reads are local and cost no store round trip, which lets the
// nameserver answer every query from it; a supernode cut off from the
// quorum keeps answering from the last state it saw.
type View struct {
	nodes     *membership.NodeCache
	instances *store.Mirror[Instance]
	health    *store.Mirror[health.Record]

	mu sync.Mutex
	// byName indexes the instances by service name; it is rebuilt when
	// the instances have moved on from builtAt.
	byName  map[string][]Instance
	builtAt int64
}

// NewView starts a view that follows the store until ctx ends.
func NewView(ctx context.Context, kv *clientv3.Client, nodes *membership.NodeCache, log *slog.Logger) *View {
	return &View{
		nodes:     nodes,
		instances: store.Follow[Instance](ctx, kv, prefix, log),
		health:    health.Mirror(ctx, kv, log),
		builtAt:   -1,
	}
}

// Ready reports whether every part of the view has loaded once.
func (v *View) Ready() bool {
	return v.nodes.Ready() && v.instances.Ready() && v.health.Ready()
}

// Revision is the store revision the view is current to; a blocking query
// waits for it to pass the caller's index.
func (v *View) Revision() int64 {
	return max(v.nodes.Revision(), v.instances.Revision(), v.health.Revision())
}

// Wait blocks until the view moves past after, or ctx ends.
func (v *View) Wait(ctx context.Context, after int64) {
	for v.Revision() <= after {
		select {
		case <-v.nodes.Changed():
		case <-v.instances.Changed():
		case <-v.health.Changed():
		case <-ctx.Done():
			return
		}
	}
}

// Query selects entries; empty fields select everything.
type Query struct {
	Name    string
	Project string
	Tag     string
	Node    string
	// Serving keeps only the entries clients should be sent to.
	Serving bool
}

func (q Query) matches(in Instance) bool {
	// Projects are matched regardless of case: DNS names arrive lower-cased.
	return (q.Project == "" || strings.EqualFold(in.Project, q.Project)) &&
		(q.Tag == "" || slices.Contains(in.Tags, q.Tag)) &&
		(q.Node == "" || in.Node == q.Node)
}

// index returns the instances by service name, rebuilt if stale.
func (v *View) index() map[string][]Instance {
	v.mu.Lock()
	defer v.mu.Unlock()
	if rev := v.instances.Revision(); rev != v.builtAt {
		byName := map[string][]Instance{}
		for _, in := range v.instances.Values() {
			byName[in.Name] = append(byName[in.Name], in)
		}
		v.byName, v.builtAt = byName, rev
	}
	return v.byName
}

// Entries returns the instances q selects, sorted by name, node and ID;
// found is false when q selects no registered instance at all, serving or
// not.
func (v *View) Entries(q Query) (entries []Entry, found bool) {
	var candidates []Instance
	if q.Name != "" {
		candidates = v.index()[q.Name]
	} else {
		candidates = v.instances.Values()
	}
	for _, in := range candidates {
		if !q.matches(in) {
			continue
		}
		e, ok := v.entry(in)
		if !ok {
			continue
		}
		found = true
		if q.Serving && !e.Serving() {
			continue
		}
		entries = append(entries, e)
	}
	slices.SortFunc(entries, func(a, b Entry) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Node, b.Node), cmp.Compare(a.ID, b.ID))
	})
	return entries, found
}

// entry completes an instance with its node's address and health; an
// instance of a node that is no longer a member is not an entry.
func (v *View) entry(in Instance) (Entry, bool) {
	n, ok := v.nodes.Get(in.Node)
	if !ok {
		return Entry{}, false
	}
	e := Entry{Instance: in, Host: in.Address}
	if e.Host == "" {
		e.Host = membership.HostOf(n.Address)
	}
	if rec, ok := v.health.Get(in.Node); ok {
		e.NodeHealth = rec.Status
	}
	e.Status = status(in.Checks, e.NodeHealth)
	e.URL = e.url()
	return e, true
}

// Summary counts the instances of one service in one project.
type Summary struct {
	Name      string `json:"name"`
	Project   string `json:"project"`
	Instances int    `json:"instances"`
	Serving   int    `json:"serving"`
	// Nodes lists the nodes the service runs on.
	Nodes []string `json:"nodes"`
}

// Summaries counts every service's instances per project, sorted by name
// and project.
func (v *View) Summaries(project string) []Summary {
	type key struct{ name, project string }
	sums := map[key]*Summary{}
	entries, _ := v.Entries(Query{Project: project})
	for _, e := range entries {
		k := key{e.Name, e.Project}
		s := sums[k]
		if s == nil {
			s = &Summary{Name: e.Name, Project: e.Project, Nodes: []string{}}
			sums[k] = s
		}
		s.Instances++
		if e.Serving() {
			s.Serving++
		}
		if !slices.Contains(s.Nodes, e.Node) {
			s.Nodes = append(s.Nodes, e.Node)
		}
	}
	out := make([]Summary, 0, len(sums))
	for _, s := range sums {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b Summary) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Project, b.Project))
	})
	return out
}

// AddEndpoints lists each node's registered http and https services among
// its endpoints in the node map, under their ESGF element name when they
// have one (so they appear in registration.xml) and their service name
// otherwise. An endpoint the node declared itself takes precedence.
func (v *View) AddEndpoints(m *membership.NodeMap) {
	// One pass over the registry, not one per node.
	all, _ := v.Entries(Query{})
	byNode := map[string][]Entry{}
	for _, e := range all {
		byNode[e.Node] = append(byNode[e.Node], e)
	}
	for i := range m.Nodes {
		n := &m.Nodes[i]
		for _, e := range byNode[n.Name] {
			if e.URL == "" {
				continue
			}
			kind, ok := ESGFKind(e.Name)
			if !ok {
				kind = e.Name
			}
			if _, declared := n.Endpoints[kind]; declared {
				continue
			}
			if n.Endpoints == nil {
				n.Endpoints = map[string]string{}
			}
			n.Endpoints[kind] = e.URL
		}
	}
}

// Service answers the nameserver: the serving instances of a service.
func (v *View) Service(name, project, tag string) ([]nameserver.Target, bool) {
	entries, found := v.Entries(Query{Name: name, Project: project, Tag: tag, Serving: true})
	targets := make([]nameserver.Target, 0, len(entries))
	for _, e := range entries {
		targets = append(targets, nameserver.Target{Node: e.Node, Host: e.Host, Port: e.Port})
	}
	return targets, found
}

// Node answers the nameserver: the host of a node's address.
func (v *View) Node(name string) (string, bool) {
	n, ok := v.nodes.Get(name)
	if !ok || n.Address == "" {
		return "", false
	}
	return membership.HostOf(n.Address), true
}

// Nameservers answers the nameserver: the voting supernodes, by name.
func (v *View) Nameservers() []nameserver.Target {
	var out []nameserver.Target
	for _, n := range v.nodes.Nodes() {
		if n.Role == membership.RoleSupernode && n.Address != "" {
			out = append(out, nameserver.Target{Node: n.Name, Host: membership.HostOf(n.Address)})
		}
	}
	slices.SortFunc(out, func(a, b nameserver.Target) int { return cmp.Compare(a.Node, b.Node) })
	return out
}

// Serial answers the nameserver: the zone's SOA serial, which grows with
// the view (RFC 1982 arithmetic copes with the wrap of a long-lived store).
func (v *View) Serial() uint32 { return uint32(v.Revision()) }
