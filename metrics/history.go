package metrics

import (
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// Missing is the value of a Sample field the scrape did not provide. All of
// Sample's figures are otherwise never negative, and unlike NaN it survives
// encoding/json.
const Missing = -1

// Sample is what a supernode keeps of one scrape of a node's agent.
type Sample struct {
	Time    time.Time `json:"time"`
	Node    string    `json:"node"`
	Project string    `json:"project"`
	// CPUBusyRatio is the share of CPU time not idle between the previous
	// scrape and this one, 0 to 1. It is Missing on a node's first scrape,
	// after a counter reset (the host rebooted), and when the previous
	// scrape is older than the History's maxAge.
	CPUBusyRatio    float64 `json:"cpu_busy_ratio"`
	MemoryUsedRatio float64 `json:"memory_used_ratio"` // 1 - available/total
	DiskFreeBytes   float64 `json:"disk_free_bytes"`   // summed over the reported paths
	Load1           float64 `json:"load1"`
	ChecksCritical  int     `json:"checks_critical"`
	ChecksWarning   int     `json:"checks_warning"`
}

// Names of the aggregated metrics, the keys of ProjectAggregate.Metrics.
const (
	MetricCPUBusyRatio    = "cpu_busy_ratio"
	MetricMemoryUsedRatio = "memory_used_ratio"
	MetricDiskFreeBytes   = "disk_free_bytes"
	MetricLoad1           = "load1"
	MetricChecksCritical  = "checks_critical"
	MetricChecksWarning   = "checks_warning"
)

var aggregated = []struct {
	name  string
	value func(Sample) float64
}{
	{MetricCPUBusyRatio, func(s Sample) float64 { return s.CPUBusyRatio }},
	{MetricMemoryUsedRatio, func(s Sample) float64 { return s.MemoryUsedRatio }},
	{MetricDiskFreeBytes, func(s Sample) float64 { return s.DiskFreeBytes }},
	{MetricLoad1, func(s Sample) float64 { return s.Load1 }},
	{MetricChecksCritical, func(s Sample) float64 { return float64(s.ChecksCritical) }},
	{MetricChecksWarning, func(s Sample) float64 { return float64(s.ChecksWarning) }},
}

// Stat summarises one metric over nodes. Count is the number of nodes that
// reported the metric; with Count 0 every other field is 0.
type Stat struct {
	Sum   float64 `json:"sum"`
	Avg   float64 `json:"avg"`
	Min   float64 `json:"min"`
	Max   float64 `json:"max"`
	Count int     `json:"count"`
}

func (s Stat) add(v float64) Stat {
	if s.Count == 0 || v < s.Min {
		s.Min = v
	}
	if s.Count == 0 || v > s.Max {
		s.Max = v
	}
	s.Sum += v
	s.Count++
	return s
}

func (s Stat) merge(o Stat) Stat {
	switch {
	case o.Count == 0:
		return s
	case s.Count == 0:
		return o
	}
	s.Sum += o.Sum
	s.Count += o.Count
	s.Min = min(s.Min, o.Min)
	s.Max = max(s.Max, o.Max)
	return s
}

// withAvg recomputes Avg, which is never merged itself: averages of parts
// of different sizes do not average.
func (s Stat) withAvg() Stat {
	s.Avg = 0
	if s.Count > 0 {
		s.Avg = s.Sum / float64(s.Count)
	}
	return s
}

// ProjectAggregate summarises the latest samples of a project's nodes.
type ProjectAggregate struct {
	Project string          `json:"project"` // "" for all projects
	Nodes   int             `json:"nodes"`
	Metrics map[string]Stat `json:"metrics"` // keyed by the Metric* names
}

// Merge combines partial aggregates, such as each supernode's aggregate
// over the members it scrapes, into the aggregate over all of them. The
// parts must cover disjoint sets of nodes. Metric names Merge does not know
// are merged too, so that supernodes of different versions can be combined
// during an upgrade. Project is the parts' project if they agree, else "".
func Merge(parts ...ProjectAggregate) ProjectAggregate {
	out := emptyAggregate("")
	for i, p := range parts {
		if i == 0 {
			out.Project = p.Project
		} else if p.Project != out.Project {
			out.Project = ""
		}
		out.Nodes += p.Nodes
		for name, st := range p.Metrics {
			out.Metrics[name] = out.Metrics[name].merge(st)
		}
	}
	for name, st := range out.Metrics {
		out.Metrics[name] = st.withAvg()
	}
	return out
}

func emptyAggregate(project string) ProjectAggregate {
	a := ProjectAggregate{Project: project, Metrics: make(map[string]Stat, len(aggregated))}
	for _, m := range aggregated {
		a.Metrics[m.name] = Stat{}
	}
	return a
}

// History keeps the recent samples of every node a supernode scrapes: at
// most perNode samples per node, none older than maxAge. A node whose every
// sample has aged out is forgotten. It is safe for concurrent use.
type History struct {
	perNode int
	maxAge  time.Duration
	now     func() time.Time // time.Now; tests set their own clock

	mu    sync.Mutex
	nodes map[string]*nodeHistory
}

// NewHistory returns an empty History keeping perNode samples per node
// (at least 1) no older than maxAge; maxAge <= 0 means no age limit.
func NewHistory(perNode int, maxAge time.Duration) *History {
	if perNode < 1 {
		panic(fmt.Sprintf("metrics: NewHistory: perNode %d < 1", perNode))
	}
	return &History{perNode: perNode, maxAge: maxAge, now: time.Now, nodes: make(map[string]*nodeHistory)}
}

type nodeHistory struct {
	samples ring
	cpu     cpuTimes // counters of the newest scrape that carried them
}

// cpuTimes are a scrape's CPU counters, summed over modes.
type cpuTimes struct {
	at          time.Time
	idle, total float64
	ok          bool
}

// Add derives a Sample from a scrape of node taken at t and keeps it.
// A scrape already older than maxAge is dropped, and so is one not newer
// than the node's latest sample (a retry racing the next scrape): the CPU
// ratio needs scrapes in order.
func (h *History) Add(node, project string, t time.Time, families map[string]*dto.MetricFamily) {
	h.mu.Lock()
	defer h.mu.Unlock()
	cutoff, aging := h.cutoff()
	if aging && t.Before(cutoff) {
		return
	}
	nh := h.nodes[node]
	if nh == nil {
		nh = &nodeHistory{}
		h.nodes[node] = nh
	}
	nh.samples.prune(cutoff, aging)
	if last, ok := nh.samples.newest(); ok && !t.After(last.Time) {
		return
	}
	s := Sample{Time: t, Node: node, Project: project}
	cur := cpuFrom(families)
	cur.at = t
	s.CPUBusyRatio = Missing
	if prev := nh.cpu; cur.ok && prev.ok && (h.maxAge <= 0 || t.Sub(prev.at) <= h.maxAge) {
		s.CPUBusyRatio = busyRatio(prev, cur)
	}
	if cur.ok {
		nh.cpu = cur
	}
	fillGauges(&s, families)
	nh.samples.push(s, h.perNode)
}

// fillGauges sets the figures of s that one scrape gives on its own.
func fillGauges(s *Sample, families map[string]*dto.MetricFamily) {
	s.MemoryUsedRatio = Missing
	total, okT := sum(families["fedkeeper_host_memory_total_bytes"], "", "")
	avail, okA := sum(families["fedkeeper_host_memory_available_bytes"], "", "")
	if okT && okA && total > 0 {
		s.MemoryUsedRatio = clamp01(1 - avail/total)
	}
	s.DiskFreeBytes = orMissing(sum(families["fedkeeper_host_disk_free_bytes"], "", ""))
	s.Load1 = orMissing(sum(families["fedkeeper_host_load1"], "", ""))
	s.ChecksCritical, s.ChecksWarning = Missing, Missing
	if checks := families["fedkeeper_checks"]; checks != nil {
		// Within the family a status without a series has no checks.
		crit, _ := sum(checks, "status", StatusCritical)
		warn, _ := sum(checks, "status", StatusWarning)
		s.ChecksCritical, s.ChecksWarning = countOf(crit), countOf(warn)
	}
}

// cutoff returns the time before which samples are too old, and whether
// there is an age limit at all. Called with h.mu held.
func (h *History) cutoff() (time.Time, bool) {
	if h.maxAge <= 0 {
		return time.Time{}, false
	}
	return h.now().Add(-h.maxAge), true
}

// node returns node's history with aged-out samples removed, or nil if
// none is left. Called with h.mu held.
func (h *History) node(name string) *nodeHistory {
	nh := h.nodes[name]
	if nh == nil {
		return nil
	}
	cutoff, aging := h.cutoff()
	nh.samples.prune(cutoff, aging)
	if nh.samples.n == 0 {
		delete(h.nodes, name)
		return nil
	}
	return nh
}

// Forget drops everything kept about node, as when it leaves.
func (h *History) Forget(node string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.nodes, node)
}

// Nodes returns the nodes with samples, sorted.
func (h *History) Nodes() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.liveNodes()
}

// liveNodes is Nodes with h.mu held.
func (h *History) liveNodes() []string {
	names := make([]string, 0, len(h.nodes))
	for name := range h.nodes {
		if h.node(name) != nil {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// Latest returns node's newest sample.
func (h *History) Latest(node string) (Sample, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	nh := h.node(node)
	if nh == nil {
		return Sample{}, false
	}
	return nh.samples.newest()
}

// Series returns node's samples, oldest first.
func (h *History) Series(node string) []Sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	nh := h.node(node)
	if nh == nil {
		return nil
	}
	return nh.samples.ordered(0)
}

// Aggregate summarises the latest sample of every node in project, or of
// every node if project is "". A node counts towards a project by the
// project of its latest sample. Figures a node did not report (Missing)
// are left out of that metric's Stat, so Count can be below Nodes.
func (h *History) Aggregate(project string) ProjectAggregate {
	h.mu.Lock()
	defer h.mu.Unlock()
	agg := emptyAggregate(project)
	for _, name := range h.liveNodes() {
		s, _ := h.nodes[name].samples.newest()
		if project != "" && s.Project != project {
			continue
		}
		agg.Nodes++
		for _, m := range aggregated {
			if v := m.value(s); v >= 0 {
				agg.Metrics[m.name] = agg.Metrics[m.name].add(v)
			}
		}
	}
	for name, st := range agg.Metrics {
		agg.Metrics[name] = st.withAvg()
	}
	return agg
}

// cpuFrom sums fedkeeper_host_cpu_seconds_total over modes.
func cpuFrom(families map[string]*dto.MetricFamily) cpuTimes {
	var c cpuTimes
	fam := families["fedkeeper_host_cpu_seconds_total"]
	if fam == nil {
		return c
	}
	for _, m := range fam.GetMetric() {
		mode := labelValue(m, "mode")
		// Guest time is inside user and nice already; an exporter that
		// lists it separately (node_exporter does) must not count it twice.
		if mode == "guest" || mode == "guest_nice" {
			continue
		}
		v, ok := value(m)
		if !ok {
			return cpuTimes{}
		}
		c.total += v
		if mode == "idle" {
			c.idle += v
		}
		c.ok = true
	}
	return c
}

// busyRatio is 1 - idle/total over the CPU time between two scrapes, or
// Missing when the counters did not move or went backwards (a reboot: idle
// or the other modes' sum shrank).
func busyRatio(prev, cur cpuTimes) float64 {
	dTotal := cur.total - prev.total
	dIdle := cur.idle - prev.idle
	if !(dTotal > 0) || dIdle < 0 || dIdle > dTotal {
		return Missing
	}
	r := 1 - dIdle/dTotal
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return Missing
	}
	return clamp01(r)
}

// sum adds the finite values of fam's metrics, only of those whose label
// is want if label is not empty; false if there were none.
func sum(fam *dto.MetricFamily, label, want string) (float64, bool) {
	var total float64
	found := false
	for _, m := range fam.GetMetric() {
		if label != "" && labelValue(m, label) != want {
			continue
		}
		if v, ok := value(m); ok {
			total += v
			found = true
		}
	}
	return total, found
}

// value reads a counter, gauge or untyped value (an exposition without
// TYPE lines parses as untyped); false if it is not finite or beyond
// maxFigure.
func value(m *dto.Metric) (float64, bool) {
	var v float64
	switch {
	case m.Counter != nil:
		v = m.Counter.GetValue()
	case m.Gauge != nil:
		v = m.Gauge.GetValue()
	case m.Untyped != nil:
		v = m.Untyped.GetValue()
	default:
		return 0, false
	}
	return v, !math.IsNaN(v) && math.Abs(v) <= maxFigure
}

// maxFigure bounds the values a scrape is taken to mean: no host's
// counter or gauge comes near it, and it keeps the sums of figures, over
// a node's series and over nodes, finite, as JSON needs them.
const maxFigure = 1e200

// countOf is a number of checks, Missing when it is none a node could
// have.
func countOf(v float64) int {
	if !(v >= 0 && v <= math.MaxInt32) {
		return Missing
	}
	return int(v)
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func orMissing(v float64, ok bool) float64 {
	if !ok || v < 0 {
		return Missing
	}
	return v
}

func clamp01(v float64) float64 {
	return min(max(v, 0), 1)
}

// ring holds a node's samples oldest first, growing up to its limit and
// then overwriting the oldest.
type ring struct {
	buf   []Sample
	start int // index of the oldest sample
	n     int // samples held
}

func (r *ring) push(s Sample, limit int) {
	switch {
	case r.n < len(r.buf): // room left behind pruned samples
		r.buf[(r.start+r.n)%len(r.buf)] = s
		r.n++
	case len(r.buf) < limit: // full but allowed to grow
		if r.start != 0 {
			r.buf = r.ordered(min(r.n, limit-r.n))
			r.start = 0
		}
		r.buf = append(r.buf, s)
		r.n++
	default: // at the limit: the oldest goes
		r.buf[r.start] = s
		r.start = (r.start + 1) % len(r.buf)
	}
}

// prune drops samples older than cutoff, if aging.
func (r *ring) prune(cutoff time.Time, aging bool) {
	for aging && r.n > 0 && r.buf[r.start].Time.Before(cutoff) {
		r.buf[r.start] = Sample{}
		r.start = (r.start + 1) % len(r.buf)
		r.n--
	}
}

func (r *ring) newest() (Sample, bool) {
	if r.n == 0 {
		return Sample{}, false
	}
	return r.buf[(r.start+r.n-1)%len(r.buf)], true
}

// ordered returns a copy of the samples, oldest first, with capacity for
// extra more.
func (r *ring) ordered(extra int) []Sample {
	out := make([]Sample, 0, r.n+extra)
	for i := 0; i < r.n; i++ {
		out = append(out, r.buf[(r.start+i)%len(r.buf)])
	}
	return out
}
