package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Check statuses, as agents' self-checks report them.
const (
	StatusPassing  = "passing"
	StatusWarning  = "warning"
	StatusCritical = "critical"
)

// CheckSample is one self-check's latest result.
type CheckSample struct {
	Name   string
	Type   string
	Status string // StatusPassing, StatusWarning or StatusCritical
}

// AgentOptions describe the node an agent's registry reports on.
type AgentOptions struct {
	// DataDir is the directory whose filesystem's size and free space are
	// reported; empty leaves the disk metrics out.
	DataDir string

	Node, Project, Site, Version string

	// Checks returns the latest self-check results. It is called on every
	// scrape, so it should hand back results already at hand rather than
	// run the checks. Nil means the node has no checks.
	Checks func() []CheckSample
}

// NewAgentRegistry returns the registry behind an agent's /metrics: host
// basics, self-check results and the node's identity. Everything is read at
// scrape time, so an agent runs no goroutine for metrics and a scrape never
// sees stale figures.
//
// The Go runtime and process collectors are left out: agents run on every
// node, and the federation's interest there is the host, not fedkeeper's
// own heap. Supernodes have them (NewSupernodeRegistry).
func NewAgentRegistry(o AgentOptions) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newHostCollector(o.DataDir), &checkCollector{checks: o.Checks})

	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "fedkeeper_agent_info",
		Help: "Always 1; its labels name the node, its project and site, and the agent's version.",
		ConstLabels: prometheus.Labels{
			"node": o.Node, "project": o.Project, "site": o.Site, "version": o.Version,
		},
	})
	info.Set(1)
	reg.MustRegister(info)
	return reg
}

var (
	checkStatusDesc = prometheus.NewDesc("fedkeeper_check_status",
		"Latest result of a self-check: 0 passing, 1 warning, 2 critical.",
		[]string{"check", "type"}, nil)
	checksDesc = prometheus.NewDesc("fedkeeper_checks",
		"Number of self-checks whose latest result has the status.",
		[]string{"status"}, nil)
)

// checkCollector reports self-check results. The per-status count is a
// gauge named fedkeeper_checks rather than fedkeeper_checks_total: it goes
// down when a check recovers, and Prometheus reserves _total for counters
// (promtool rejects it on a gauge).
type checkCollector struct {
	checks func() []CheckSample
}

func (c *checkCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- checkStatusDesc
	ch <- checksDesc
}

func (c *checkCollector) Collect(ch chan<- prometheus.Metric) {
	type key struct{ name, typ string }
	worst := make(map[key]int)
	if c.checks != nil {
		for _, s := range c.checks() {
			// Two results under one name and type would be the same series
			// twice, which fails the whole scrape; the worse one is the one
			// an operator needs to see.
			k := key{s.Name, s.Type}
			if v, seen := worst[k]; !seen || statusValue(s.Status) > v {
				worst[k] = statusValue(s.Status)
			}
		}
	}
	var counts [3]int
	for k, v := range worst {
		counts[v]++
		ch <- prometheus.MustNewConstMetric(checkStatusDesc, prometheus.GaugeValue, float64(v), k.name, k.typ)
	}
	// Every status is always present, zeros included, so that alerts and
	// sums over nodes see a 0 rather than a missing series.
	for v, status := range []string{StatusPassing, StatusWarning, StatusCritical} {
		ch <- prometheus.MustNewConstMetric(checksDesc, prometheus.GaugeValue, float64(counts[v]), status)
	}
}

// statusValue maps a status to fedkeeper_check_status's value. A status it
// does not know counts as critical: a check whose result cannot be read is
// not known to be fine.
func statusValue(status string) int {
	switch status {
	case StatusPassing:
		return 0
	case StatusWarning:
		return 1
	default:
		return 2
	}
}
