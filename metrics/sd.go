package metrics

import (
	"sort"
)

// SDNode is what SDTargets needs to know of a node.
type SDNode struct {
	Name    string
	Role    string
	Project string // the node's first project
	Site    string
	// Address is HOST:PORT of the node's agent metrics endpoint, as
	// Prometheus scrapes it (no scheme, no path).
	Address string
	Healthy bool
}

// SDTarget is one target group of Prometheus HTTP service discovery
// (http_sd_config).
type SDTarget struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// Labels SDTargets attaches to every target. They carry a fedkeeper_ prefix
// because the agent's own fedkeeper_agent_info already has node, project
// and site labels: plain names would collide with them and Prometheus would
// rename the scraped ones to exported_node and so on.
const (
	SDLabelNode    = "fedkeeper_node"
	SDLabelRole    = "fedkeeper_role"
	SDLabelProject = "fedkeeper_project"
	SDLabelSite    = "fedkeeper_site"
)

// SDTargets returns Prometheus HTTP service discovery target groups: one
// per healthy node with an address, sorted by node name. Unhealthy nodes are
// left out: fedkeeper's own health probes already report them, and keeping
// them would only add failing scrapes.
// Empty labels are left out, as Prometheus treats them as absent anyway.
// The result is never nil, so it encodes as [] and not null, which
// Prometheus would reject.
func SDTargets(nodes []SDNode) []SDTarget {
	sorted := make([]SDNode, 0, len(nodes))
	for _, n := range nodes {
		if n.Healthy && n.Address != "" {
			sorted = append(sorted, n)
		}
	}
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })

	out := make([]SDTarget, 0, len(sorted))
	for _, n := range sorted {
		labels := make(map[string]string, 4)
		for _, l := range []struct{ name, value string }{
			{SDLabelNode, n.Name}, {SDLabelRole, n.Role},
			{SDLabelProject, n.Project}, {SDLabelSite, n.Site},
		} {
			if l.value != "" {
				labels[l.name] = l.value
			}
		}
		out = append(out, SDTarget{Targets: []string{n.Address}, Labels: labels})
	}
	return out
}
