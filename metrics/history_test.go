package metrics

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// clock is a History clock tests move by hand.
type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

func newTestHistory(perNode int, maxAge time.Duration, c *clock) *History {
	h := NewHistory(perNode, maxAge)
	h.now = c.Now
	return h
}

// times returns the sample times of a series as offsets from t0.
func times(series []Sample) []time.Duration {
	out := make([]time.Duration, len(series))
	for i, s := range series {
		out[i] = s.Time.Sub(t0)
	}
	return out
}

func TestHistoryRing(t *testing.T) {
	tests := []struct {
		name    string
		perNode int
		maxAge  time.Duration
		// steps: a positive n adds a scrape taken at t0+n seconds; a
		// negative n moves the clock (at first t0) to t0+|n| seconds.
		steps []int
		want  []int // seconds after t0 of the series left
	}{
		{name: "below the bound", perNode: 3, steps: []int{1, 2}, want: []int{1, 2}},
		{name: "bound keeps newest", perNode: 3, steps: []int{1, 2, 3, 4, 5}, want: []int{3, 4, 5}},
		{name: "one per node", perNode: 1, steps: []int{1, 2, 3}, want: []int{3}},
		{name: "out of order and duplicate dropped", perNode: 5, steps: []int{1, 3, 2, 3, 4}, want: []int{1, 3, 4}},
		{name: "age prunes oldest", perNode: 10, maxAge: 10 * time.Second, steps: []int{1, 5, 10, -16}, want: []int{10}},
		{name: "cutoff itself is kept", perNode: 10, maxAge: 10 * time.Second, steps: []int{1, 5, -15}, want: []int{5}},
		{name: "all aged out", perNode: 10, maxAge: 10 * time.Second, steps: []int{1, 5, -30}, want: nil},
		{name: "too old on arrival", perNode: 10, maxAge: 10 * time.Second, steps: []int{-30, 10, 25}, want: []int{25}},
		// Grows to 4 slots, loses 2 to age, wraps into the freed slots,
		// straightens out to grow again, then reaches the bound.
		{name: "regrow after pruning", perNode: 6, maxAge: 10 * time.Second,
			steps: []int{1, 2, 3, 4, -13, 14, 15, 16, 17, 18}, want: []int{4, 14, 15, 16, 17, 18}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &clock{now: t0}
			h := newTestHistory(tt.perNode, tt.maxAge, c)
			for _, s := range tt.steps {
				if s < 0 {
					c.now = t0.Add(time.Duration(-s) * time.Second)
					continue
				}
				h.Add("n1", "CMIP6", t0.Add(time.Duration(s)*time.Second), mustParse(t, "fedkeeper_host_load1 1\n"))
			}
			var want []time.Duration
			for _, s := range tt.want {
				want = append(want, time.Duration(s)*time.Second)
			}
			got := times(h.Series("n1"))
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("series %v, want %v", got, want)
			}
			latest, ok := h.Latest("n1")
			if ok != (len(want) > 0) || ok && latest.Time.Sub(t0) != want[len(want)-1] {
				t.Errorf("Latest = %v, %v; want the newest of %v", latest.Time.Sub(t0), ok, want)
			}
			if nodes := h.Nodes(); (len(nodes) == 1) != (len(want) > 0) {
				t.Errorf("Nodes = %v", nodes)
			}
		})
	}
}

func cpuText(idle, user, system float64, more ...string) string {
	s := fmt.Sprintf("# HELP fedkeeper_host_cpu_seconds_total cpu\n# TYPE fedkeeper_host_cpu_seconds_total counter\n"+
		"fedkeeper_host_cpu_seconds_total{mode=\"idle\"} %g\n"+
		"fedkeeper_host_cpu_seconds_total{mode=\"user\"} %g\n"+
		"fedkeeper_host_cpu_seconds_total{mode=\"system\"} %g\n", idle, user, system)
	for _, m := range more {
		s += "fedkeeper_host_cpu_seconds_total" + m + "\n"
	}
	return s
}

func TestHistoryCPUBusyRatio(t *testing.T) {
	first := cpuText(100, 50, 50)
	tests := []struct {
		name          string
		first, second string
		gap           time.Duration // between the scrapes; 15s if 0
		maxAge        time.Duration
		want          float64
	}{
		{name: "busy", first: first, second: cpuText(130, 100, 70), want: 0.7},
		{name: "idle", first: first, second: cpuText(200, 50, 50), want: 0},
		{name: "fully busy", first: first, second: cpuText(100, 150, 50), want: 1},
		{name: "guest not counted twice", first: first,
			second: cpuText(130, 100, 70, `{mode="guest"} 1000`, `{mode="guest_nice"} 500`), want: 0.7},
		{name: "other modes count as busy", first: first,
			second: cpuText(130, 100, 50, `{mode="iowait"} 10`, `{mode="steal"} 10`), want: 0.7},
		{name: "untyped, no TYPE lines", first: "fedkeeper_host_cpu_seconds_total{mode=\"idle\"} 10\nfedkeeper_host_cpu_seconds_total{mode=\"user\"} 10\n",
			second: "fedkeeper_host_cpu_seconds_total{mode=\"idle\"} 13\nfedkeeper_host_cpu_seconds_total{mode=\"user\"} 11\n", want: 0.25},
		{name: "first scrape has no CPU", first: "fedkeeper_host_load1 1\n", second: cpuText(130, 100, 70), want: Missing},
		{name: "second scrape has no CPU", first: first, second: "fedkeeper_host_load1 1\n", want: Missing},
		{name: "reboot", first: first, second: cpuText(10, 5, 5), want: Missing},
		{name: "idle reset alone", first: first, second: cpuText(20, 100, 100), want: Missing},
		{name: "others reset alone", first: first, second: cpuText(300, 10, 10), want: Missing},
		{name: "no movement", first: first, second: first, want: Missing},
		{name: "NaN counter", first: first, second: cpuText(130, math.NaN(), 70), want: Missing},
		{name: "Inf counter", first: first, second: cpuText(130, math.Inf(1), 70), want: Missing},
		{name: "baseline too old", first: first, second: cpuText(130, 100, 70), gap: 2 * time.Minute, maxAge: time.Minute, want: Missing},
		{name: "baseline within age", first: first, second: cpuText(130, 100, 70), gap: 50 * time.Second, maxAge: time.Minute, want: 0.7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gap := tt.gap
			if gap == 0 {
				gap = 15 * time.Second
			}
			c := &clock{now: t0}
			h := newTestHistory(10, tt.maxAge, c)
			h.Add("n1", "CMIP6", t0, mustParse(t, tt.first))
			if s, _ := h.Latest("n1"); s.CPUBusyRatio != Missing {
				t.Fatalf("first scrape's CPU ratio %v, want Missing", s.CPUBusyRatio)
			}
			c.now = t0.Add(gap)
			h.Add("n1", "CMIP6", c.now, mustParse(t, tt.second))
			s, ok := h.Latest("n1")
			if !ok || s.Time != c.now {
				t.Fatalf("second scrape not kept: %+v", s)
			}
			if math.Abs(s.CPUBusyRatio-tt.want) > 1e-9 {
				t.Errorf("CPU busy ratio %v, want %v", s.CPUBusyRatio, tt.want)
			}
		})
	}
}

// After a scrape without CPU figures the ratio is taken against the last
// scrape that had them.
func TestHistoryCPUBaselineSkipsGaps(t *testing.T) {
	h := NewHistory(10, 0)
	h.Add("n1", "", t0, mustParse(t, cpuText(100, 50, 50)))
	h.Add("n1", "", t0.Add(time.Second), mustParse(t, "fedkeeper_host_load1 1\n"))
	h.Add("n1", "", t0.Add(2*time.Second), mustParse(t, cpuText(130, 100, 70)))
	if s, _ := h.Latest("n1"); math.Abs(s.CPUBusyRatio-0.7) > 1e-9 {
		t.Fatalf("CPU busy ratio %v, want 0.7", s.CPUBusyRatio)
	}
}

func TestHistorySampleFields(t *testing.T) {
	full := `# TYPE fedkeeper_host_memory_total_bytes gauge
fedkeeper_host_memory_total_bytes 1000
# TYPE fedkeeper_host_memory_available_bytes gauge
fedkeeper_host_memory_available_bytes 250
# TYPE fedkeeper_host_disk_free_bytes gauge
fedkeeper_host_disk_free_bytes{path="/data"} 100
fedkeeper_host_disk_free_bytes{path="/var/lib/fedkeeper"} 200
# TYPE fedkeeper_host_load1 gauge
fedkeeper_host_load1 0.5
# TYPE fedkeeper_checks gauge
fedkeeper_checks{status="passing"} 4
fedkeeper_checks{status="warning"} 1
fedkeeper_checks{status="critical"} 2
`
	tests := []struct {
		name string
		text string
		want Sample // Time, Node, Project, CPUBusyRatio filled in
	}{
		{name: "all present", text: full, want: Sample{MemoryUsedRatio: 0.75, DiskFreeBytes: 300, Load1: 0.5, ChecksCritical: 2, ChecksWarning: 1}},
		{name: "nothing", text: "", want: Sample{MemoryUsedRatio: Missing, DiskFreeBytes: Missing, Load1: Missing, ChecksCritical: Missing, ChecksWarning: Missing}},
		{name: "memory without available", text: "fedkeeper_host_memory_total_bytes 1000\n",
			want: Sample{MemoryUsedRatio: Missing, DiskFreeBytes: Missing, Load1: Missing, ChecksCritical: Missing, ChecksWarning: Missing}},
		{name: "zero memory total", text: "fedkeeper_host_memory_total_bytes 0\nfedkeeper_host_memory_available_bytes 0\nfedkeeper_host_load1 NaN\n",
			want: Sample{MemoryUsedRatio: Missing, DiskFreeBytes: Missing, Load1: Missing, ChecksCritical: Missing, ChecksWarning: Missing}},
		{name: "available above total", text: "fedkeeper_host_memory_total_bytes 1000\nfedkeeper_host_memory_available_bytes 2000\nfedkeeper_checks{status=\"passing\"} 3\n",
			want: Sample{MemoryUsedRatio: 0, DiskFreeBytes: Missing, Load1: Missing}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHistory(1, 0)
			h.Add("n1", "CORDEX", t0, mustParse(t, tt.text))
			got, ok := h.Latest("n1")
			want := tt.want
			want.Time, want.Node, want.Project, want.CPUBusyRatio = t0, "n1", "CORDEX", Missing
			if !ok || got != want {
				t.Fatalf("sample\n got %+v\nwant %+v", got, want)
			}
			// Missing must survive JSON, which NaN would not.
			if _, err := json.Marshal(got); err != nil {
				t.Fatalf("json: %v", err)
			}
		})
	}
}

func TestHistoryForgetAndNodes(t *testing.T) {
	h := NewHistory(3, 0)
	for _, n := range []string{"c", "a", "b"} {
		h.Add(n, "CMIP6", t0, nil)
	}
	h.Forget("b")
	h.Forget("unknown")
	if got := strings.Join(h.Nodes(), ","); got != "a,c" {
		t.Fatalf("Nodes = %s, want a,c", got)
	}
	if _, ok := h.Latest("b"); ok || h.Series("b") != nil {
		t.Fatal("forgotten node still has samples")
	}
	// A forgotten node starts afresh: no CPU baseline survives.
	h.Add("b", "", t0, mustParse(t, cpuText(100, 50, 50)))
	h.Forget("b")
	h.Add("b", "", t0.Add(time.Second), mustParse(t, cpuText(130, 100, 70)))
	if s, _ := h.Latest("b"); s.CPUBusyRatio != Missing {
		t.Fatalf("CPU ratio %v across Forget", s.CPUBusyRatio)
	}
}

func TestNewHistoryRejectsZeroBound(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("NewHistory(0, 0) did not panic")
		}
	}()
	NewHistory(0, 0)
}

// Run with -race: writers and readers of several nodes at once.
func TestHistoryConcurrent(t *testing.T) {
	h := NewHistory(5, time.Hour)
	// Parsed up front: t.Fatal may not be called from other goroutines.
	scrapes := make([]map[string]*dto.MetricFamily, 200)
	for i := range scrapes {
		scrapes[i] = mustParse(t, cpuText(float64(100+i), float64(50+i), 50))
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			node := fmt.Sprintf("n%d", w)
			for i, fams := range scrapes {
				h.Add(node, "CMIP6", time.Now().Add(time.Duration(i)*time.Millisecond), fams)
				h.Aggregate("CMIP6")
				h.Series(node)
				h.Nodes()
				if i%50 == 0 {
					h.Forget(node)
				}
			}
		}()
	}
	wg.Wait()
	for _, n := range h.Nodes() {
		if l := len(h.Series(n)); l > 5 {
			t.Errorf("%s holds %d samples, bound 5", n, l)
		}
	}
}

// node describes a node's latest figures for the aggregate tests; a
// negative figure leaves the metric out of its scrapes.
type node struct {
	name, project         string
	busy, mem, disk, load float64
	crit, warn            int
}

// feed gives h two scrapes of n, one second apart, whose latest sample
// carries n's figures.
func feed(t *testing.T, h *History, n node) {
	t.Helper()
	scrape := func(idle, user float64) string {
		var b strings.Builder
		if n.busy >= 0 {
			b.WriteString(cpuText(idle, user, 0))
		}
		if n.mem >= 0 {
			fmt.Fprintf(&b, "fedkeeper_host_memory_total_bytes 1000\nfedkeeper_host_memory_available_bytes %g\n", 1000*(1-n.mem))
		}
		if n.disk >= 0 {
			fmt.Fprintf(&b, "fedkeeper_host_disk_free_bytes{path=\"/data\"} %g\n", n.disk)
		}
		if n.load >= 0 {
			fmt.Fprintf(&b, "fedkeeper_host_load1 %g\n", n.load)
		}
		if n.crit >= 0 {
			fmt.Fprintf(&b, "fedkeeper_checks{status=\"critical\"} %d\nfedkeeper_checks{status=\"warning\"} %d\n", n.crit, n.warn)
		}
		return b.String()
	}
	h.Add(n.name, n.project, t0, mustParse(t, scrape(0, 0)))
	h.Add(n.name, n.project, t0.Add(time.Second), mustParse(t, scrape(1000*(1-n.busy), 1000*n.busy)))
}

func historyOf(t *testing.T, nodes ...node) *History {
	t.Helper()
	h := NewHistory(4, 0)
	for _, n := range nodes {
		feed(t, h, n)
	}
	return h
}

var (
	n1 = node{name: "n1", project: "CMIP6", busy: 0.25, mem: 0.5, disk: 1000, load: 2, crit: 1, warn: 0}
	n2 = node{name: "n2", project: "CMIP6", busy: 0.75, mem: 0.25, disk: 3000, load: 0.5, crit: 0, warn: 2}
	n3 = node{name: "n3", project: "CORDEX", busy: 0.5, mem: 0.75, disk: 500, load: 4, crit: 3, warn: 1}
	// n4 reports no disk and no checks.
	n4 = node{name: "n4", project: "CORDEX", busy: 0, mem: 0, disk: Missing, load: 0, crit: Missing}
)

func statOf(vs ...float64) Stat {
	var s Stat
	for _, v := range vs {
		s = s.add(v)
	}
	return s.withAvg()
}

func checkAggregate(t *testing.T, got ProjectAggregate, wantProject string, wantNodes int, want map[string]Stat) {
	t.Helper()
	if got.Project != wantProject || got.Nodes != wantNodes {
		t.Errorf("project %q nodes %d, want %q %d", got.Project, got.Nodes, wantProject, wantNodes)
	}
	for _, m := range aggregated {
		if _, ok := got.Metrics[m.name]; !ok {
			t.Errorf("metric %s missing", m.name)
		}
	}
	for name, w := range want {
		if g := got.Metrics[name]; !statClose(g, w) {
			t.Errorf("%s = %+v, want %+v", name, g, w)
		}
	}
}

func statClose(a, b Stat) bool {
	close := func(x, y float64) bool { return math.Abs(x-y) <= 1e-9*max(1, math.Abs(x), math.Abs(y)) }
	return a.Count == b.Count && close(a.Sum, b.Sum) && close(a.Avg, b.Avg) && close(a.Min, b.Min) && close(a.Max, b.Max)
}

func TestAggregate(t *testing.T) {
	zero := Stat{}
	tests := []struct {
		name      string
		nodes     []node
		project   string
		wantNodes int
		want      map[string]Stat
	}{
		{name: "empty history", project: "", want: map[string]Stat{
			MetricCPUBusyRatio: zero, MetricMemoryUsedRatio: zero, MetricDiskFreeBytes: zero,
			MetricLoad1: zero, MetricChecksCritical: zero, MetricChecksWarning: zero}},
		{name: "one node", nodes: []node{n1}, project: "CMIP6", wantNodes: 1, want: map[string]Stat{
			MetricCPUBusyRatio:    {Sum: 0.25, Avg: 0.25, Min: 0.25, Max: 0.25, Count: 1},
			MetricMemoryUsedRatio: {Sum: 0.5, Avg: 0.5, Min: 0.5, Max: 0.5, Count: 1},
			MetricDiskFreeBytes:   {Sum: 1000, Avg: 1000, Min: 1000, Max: 1000, Count: 1},
			MetricLoad1:           {Sum: 2, Avg: 2, Min: 2, Max: 2, Count: 1},
			MetricChecksCritical:  {Sum: 1, Avg: 1, Min: 1, Max: 1, Count: 1},
			MetricChecksWarning:   {Sum: 0, Avg: 0, Min: 0, Max: 0, Count: 1}}},
		{name: "one project of two", nodes: []node{n1, n2, n3}, project: "CMIP6", wantNodes: 2, want: map[string]Stat{
			MetricCPUBusyRatio:  {Sum: 1, Avg: 0.5, Min: 0.25, Max: 0.75, Count: 2},
			MetricDiskFreeBytes: {Sum: 4000, Avg: 2000, Min: 1000, Max: 3000, Count: 2},
			MetricChecksWarning: {Sum: 2, Avg: 1, Min: 0, Max: 2, Count: 2}}},
		{name: "all projects", nodes: []node{n1, n2, n3}, project: "", wantNodes: 3, want: map[string]Stat{
			MetricCPUBusyRatio:    statOf(0.25, 0.75, 0.5),
			MetricMemoryUsedRatio: statOf(0.5, 0.25, 0.75),
			MetricLoad1:           {Sum: 6.5, Avg: 6.5 / 3, Min: 0.5, Max: 4, Count: 3},
			MetricChecksCritical:  {Sum: 4, Avg: 4.0 / 3, Min: 0, Max: 3, Count: 3}}},
		{name: "project without nodes", nodes: []node{n1, n3}, project: "obs4MIPs", wantNodes: 0, want: map[string]Stat{
			MetricCPUBusyRatio: zero, MetricLoad1: zero}},
		{name: "node missing metrics", nodes: []node{n3, n4}, project: "CORDEX", wantNodes: 2, want: map[string]Stat{
			MetricCPUBusyRatio:   {Sum: 0.5, Avg: 0.25, Min: 0, Max: 0.5, Count: 2},
			MetricDiskFreeBytes:  {Sum: 500, Avg: 500, Min: 500, Max: 500, Count: 1},
			MetricChecksCritical: {Sum: 3, Avg: 3, Min: 3, Max: 3, Count: 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkAggregate(t, historyOf(t, tt.nodes...).Aggregate(tt.project), tt.project, tt.wantNodes, tt.want)
		})
	}
}

func TestAggregateFollowsLatestProject(t *testing.T) {
	h := historyOf(t, n1)
	h.Add("n1", "CORDEX", t0.Add(2*time.Second), mustParse(t, "fedkeeper_host_load1 3\n"))
	if a := h.Aggregate("CMIP6"); a.Nodes != 0 {
		t.Errorf("CMIP6 still counts the node: %+v", a)
	}
	if a := h.Aggregate("CORDEX"); a.Nodes != 1 || a.Metrics[MetricLoad1].Sum != 3 {
		t.Errorf("CORDEX aggregate %+v", a)
	}
}

func TestMerge(t *testing.T) {
	// Values that binary floating point cannot hold exactly, so that the
	// comparison with the whole tolerates summation order.
	odd := []node{
		{name: "a", project: "CMIP6", busy: 0.1, mem: 0.3, disk: 1e12 / 3, load: 0.7, crit: 0, warn: 1},
		{name: "b", project: "CMIP6", busy: 0.9, mem: 0.6, disk: 7, load: 12.3, crit: 2, warn: 0},
		{name: "c", project: "CORDEX", busy: 0.2, mem: 0.1, disk: Missing, load: 1.1, crit: Missing},
		{name: "d", project: "CMIP6", busy: Missing, mem: 0.9, disk: 5e11, load: 0.01, crit: 5, warn: 5},
		{name: "e", project: "CORDEX", busy: 0.65, mem: 0.2, disk: 1, load: 3, crit: 0, warn: 0},
	}
	tests := []struct {
		name        string
		left, right []node
	}{
		{name: "split in two", left: odd[:2], right: odd[2:]},
		{name: "interleaved", left: []node{odd[0], odd[2], odd[4]}, right: []node{odd[1], odd[3]}},
		{name: "one side empty", left: nil, right: odd},
		{name: "one node each", left: odd[:1], right: odd[1:2]},
		{name: "both empty"},
	}
	for _, tt := range tests {
		for _, project := range []string{"", "CMIP6", "CORDEX"} {
			t.Run(tt.name+"/"+project, func(t *testing.T) {
				whole := historyOf(t, append(append([]node{}, tt.left...), tt.right...)...).Aggregate(project)
				merged := Merge(historyOf(t, tt.left...).Aggregate(project), historyOf(t, tt.right...).Aggregate(project))
				checkAggregate(t, merged, whole.Project, whole.Nodes, whole.Metrics)
				if len(merged.Metrics) != len(whole.Metrics) {
					t.Errorf("merged metrics %v, whole %v", merged.Metrics, whole.Metrics)
				}
			})
		}
	}
}

func TestMergeParts(t *testing.T) {
	a := ProjectAggregate{Project: "CMIP6", Nodes: 1, Metrics: map[string]Stat{
		MetricLoad1: {Sum: 1, Avg: 1, Min: 1, Max: 1, Count: 1},
	}}
	b := ProjectAggregate{Project: "CMIP6", Nodes: 3, Metrics: map[string]Stat{
		MetricLoad1:      {Sum: 9, Avg: 3, Min: 2, Max: 4, Count: 3},
		"gpu_busy_ratio": {Sum: 0.5, Avg: 0.5, Min: 0.5, Max: 0.5, Count: 1},
	}}
	other := ProjectAggregate{Project: "CORDEX", Nodes: 1, Metrics: map[string]Stat{
		MetricLoad1: {Sum: 0.5, Avg: 0.5, Min: 0.5, Max: 0.5, Count: 1},
	}}
	tests := []struct {
		name        string
		parts       []ProjectAggregate
		wantProject string
		wantNodes   int
		want        map[string]Stat
	}{
		{name: "no parts", want: map[string]Stat{MetricLoad1: {}, MetricCPUBusyRatio: {}}},
		{name: "one part", parts: []ProjectAggregate{a}, wantProject: "CMIP6", wantNodes: 1,
			want: map[string]Stat{MetricLoad1: a.Metrics[MetricLoad1], MetricDiskFreeBytes: {}}},
		// The average of the parts' averages would be 2.
		{name: "avg from sum and count", parts: []ProjectAggregate{a, b}, wantProject: "CMIP6", wantNodes: 4,
			want: map[string]Stat{MetricLoad1: {Sum: 10, Avg: 2.5, Min: 1, Max: 4, Count: 4}}},
		{name: "metric a part does not know", parts: []ProjectAggregate{a, b}, wantProject: "CMIP6", wantNodes: 4,
			want: map[string]Stat{"gpu_busy_ratio": b.Metrics["gpu_busy_ratio"]}},
		{name: "empty part changes nothing", parts: []ProjectAggregate{{Project: "CMIP6"}, a, {Project: "CMIP6", Metrics: map[string]Stat{MetricLoad1: {}}}},
			wantProject: "CMIP6", wantNodes: 1, want: map[string]Stat{MetricLoad1: a.Metrics[MetricLoad1]}},
		{name: "projects differ", parts: []ProjectAggregate{a, other}, wantProject: "", wantNodes: 2,
			want: map[string]Stat{MetricLoad1: {Sum: 1.5, Avg: 0.75, Min: 0.5, Max: 1, Count: 2}}},
		{name: "stale avg in a part is ignored", parts: []ProjectAggregate{{Nodes: 1, Metrics: map[string]Stat{MetricLoad1: {Sum: 2, Avg: 99, Min: 2, Max: 2, Count: 1}}}},
			wantNodes: 1, want: map[string]Stat{MetricLoad1: {Sum: 2, Avg: 2, Min: 2, Max: 2, Count: 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkAggregate(t, Merge(tt.parts...), tt.wantProject, tt.wantNodes, tt.want)
		})
	}
}
