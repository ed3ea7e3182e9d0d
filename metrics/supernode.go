package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Result label values of ProbesTotal and ScrapesTotal.
const (
	ResultOK   = "ok"
	ResultFail = "fail"
)

// SupernodeMetrics are the figures a supernode keeps about its own work.
// The supernode's packages update them; the registry they come with serves
// them.
type SupernodeMetrics struct {
	// ProbesTotal counts health probes of members by result (ResultOK,
	// ResultFail).
	ProbesTotal *prometheus.CounterVec
	// ProbeDuration observes how long each probe took, failed ones included.
	ProbeDuration prometheus.Histogram
	// MembersAssigned is how many members this supernode currently probes.
	MembersAssigned prometheus.Gauge
	// StoreWritesTotal counts writes to the replicated store by kind (the
	// record kind written, e.g. "node", "config", "event").
	StoreWritesTotal *prometheus.CounterVec
	// StoreHasLeader is 1 while this supernode's store sees a leader, else 0.
	StoreHasLeader prometheus.Gauge
	// ScrapesTotal counts scrapes of agents' /metrics by result (ResultOK,
	// ResultFail).
	ScrapesTotal *prometheus.CounterVec
	// DNSQueriesTotal counts the nameserver's answers by response code
	// (NOERROR, NXDOMAIN, REFUSED, FORMERR ...).
	DNSQueriesTotal *prometheus.CounterVec
	// DNSStale is 1 while the nameserver answers from a view that may be
	// out of date, because this supernode's store has no leader.
	DNSStale prometheus.Gauge
}

// NewSupernodeRegistry returns the registry behind a supernode's own
// /metrics: the Go runtime and process collectors, and SupernodeMetrics.
func NewSupernodeRegistry() (*prometheus.Registry, *SupernodeMetrics) {
	m := &SupernodeMetrics{
		ProbesTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedkeeper_probes_total",
			Help: "Health probes of members this supernode made, by result.",
		}, []string{"result"}),
		ProbeDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "fedkeeper_probe_duration_seconds",
			Help: "Time a health probe of a member took, failed ones included.",
			// From LAN round trips up to WAN probes that run into their
			// timeout.
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		MembersAssigned: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fedkeeper_members_assigned",
			Help: "Members this supernode is currently assigned to probe.",
		}),
		StoreWritesTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedkeeper_store_writes_total",
			Help: "Writes this supernode made to the replicated store, by kind of record.",
		}, []string{"kind"}),
		StoreHasLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fedkeeper_store_has_leader",
			Help: "1 while this supernode's store sees a leader, 0 otherwise.",
		}),
		ScrapesTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedkeeper_scrapes_total",
			Help: "Scrapes of agents' metrics this supernode made, by result.",
		}, []string{"result"}),
		DNSQueriesTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedkeeper_dns_queries_total",
			Help: "DNS queries this supernode answered, by response code.",
		}, []string{"rcode"}),
		DNSStale: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fedkeeper_dns_stale",
			Help: "1 while this supernode answers DNS from its last known state because its store has lost the quorum, 0 otherwise.",
		}),
	}
	// Both results exist from the start, so a rate of failures reads 0
	// before the first failure rather than nothing.
	for _, r := range []string{ResultOK, ResultFail} {
		m.ProbesTotal.WithLabelValues(r)
		m.ScrapesTotal.WithLabelValues(r)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.ProbesTotal, m.ProbeDuration, m.MembersAssigned,
		m.StoreWritesTotal, m.StoreHasLeader, m.ScrapesTotal,
		m.DNSQueriesTotal, m.DNSStale,
	)
	return reg, m
}
