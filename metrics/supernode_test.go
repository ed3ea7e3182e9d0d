package metrics

import (
	"strings"
	"testing"
	"time"
)

func TestSupernodeExposition(t *testing.T) {
	reg, m := NewSupernodeRegistry()
	m.ProbesTotal.WithLabelValues(ResultOK).Add(3)
	m.ProbeDuration.Observe((40 * time.Millisecond).Seconds())
	m.MembersAssigned.Set(12)
	m.StoreWritesTotal.WithLabelValues("node").Inc()
	m.StoreHasLeader.Set(1)
	m.ScrapesTotal.WithLabelValues(ResultFail).Inc()

	body := scrape(t, reg)
	promtoolCheck(t, body)
	fams, err := Parse(strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"fedkeeper_probes_total", []string{"result", ResultOK}, 3},
		{"fedkeeper_probes_total", []string{"result", ResultFail}, 0},
		{"fedkeeper_members_assigned", nil, 12},
		{"fedkeeper_store_writes_total", []string{"kind", "node"}, 1},
		{"fedkeeper_store_has_leader", nil, 1},
		{"fedkeeper_scrapes_total", []string{"result", ResultOK}, 0},
		{"fedkeeper_scrapes_total", []string{"result", ResultFail}, 1},
	} {
		if got, ok := find(fams[w.name], w.labels...); !ok || got != w.want {
			t.Errorf("%s%v = %v (present %v), want %v", w.name, w.labels, got, ok, w.want)
		}
	}
	if h := fams["fedkeeper_probe_duration_seconds"].GetMetric(); len(h) != 1 || h[0].GetHistogram().GetSampleCount() != 1 {
		t.Errorf("probe duration histogram %v", h)
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total", "process_resident_memory_bytes"} {
		if fams[name] == nil {
			t.Errorf("%s missing", name)
		}
	}
}
