package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestAgentExposition(t *testing.T) {
	dataDir := t.TempDir()
	reg := NewAgentRegistry(AgentOptions{
		DataDir: dataDir,
		Node:    "esgf-data1", Project: "CMIP6", Site: "dkrz", Version: "v0.3.0",
		Checks: func() []CheckSample {
			return []CheckSample{
				{Name: "thredds", Type: "http", Status: StatusPassing},
				{Name: "solr", Type: "http", Status: StatusWarning},
				{Name: "data-disk", Type: "disk", Status: StatusCritical},
			}
		},
	})
	body := scrape(t, reg)
	promtoolCheck(t, body)

	fams, err := Parse(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("Parse of own exposition: %v", err)
	}
	get := func(name string, labels ...string) float64 {
		t.Helper()
		v, ok := find(fams[name], labels...)
		if !ok {
			t.Fatalf("no %s%v in\n%s", name, labels, body)
		}
		return v
	}

	memTotal := get("fedkeeper_host_memory_total_bytes")
	memAvail := get("fedkeeper_host_memory_available_bytes")
	if memTotal <= 0 || memAvail < 0 || memAvail > memTotal {
		t.Errorf("memory total %v available %v", memTotal, memAvail)
	}
	diskTotal := get("fedkeeper_host_disk_total_bytes", "path", dataDir)
	diskFree := get("fedkeeper_host_disk_free_bytes", "path", dataDir)
	if diskTotal <= 0 || diskFree < 0 || diskFree > diskTotal {
		t.Errorf("disk total %v free %v", diskTotal, diskFree)
	}
	if n := get("fedkeeper_host_cpus"); n < 1 {
		t.Errorf("cpus %v", n)
	}
	idle, user := get("fedkeeper_host_cpu_seconds_total", "mode", "idle"), get("fedkeeper_host_cpu_seconds_total", "mode", "user")
	if idle <= 0 || user <= 0 {
		t.Errorf("cpu seconds idle %v user %v", idle, user)
	}
	if fams["fedkeeper_host_cpu_seconds_total"].GetType() != dto.MetricType_COUNTER {
		t.Errorf("cpu seconds type %v", fams["fedkeeper_host_cpu_seconds_total"].GetType())
	}
	if boot := get("fedkeeper_host_boot_time_seconds"); boot <= 0 || boot > float64(time.Now().Unix()) {
		t.Errorf("boot time %v", boot)
	}
	for _, l := range []string{"fedkeeper_host_load1", "fedkeeper_host_load5", "fedkeeper_host_load15"} {
		if v := get(l); v < 0 {
			t.Errorf("%s %v", l, v)
		}
	}

	for _, c := range []struct {
		check, typ string
		want       float64
	}{{"thredds", "http", 0}, {"solr", "http", 1}, {"data-disk", "disk", 2}} {
		if got := get("fedkeeper_check_status", "check", c.check, "type", c.typ); got != c.want {
			t.Errorf("check_status{check=%q} = %v, want %v", c.check, got, c.want)
		}
	}
	for _, s := range []string{StatusPassing, StatusWarning, StatusCritical} {
		if got := get("fedkeeper_checks", "status", s); got != 1 {
			t.Errorf("checks{status=%q} = %v, want 1", s, got)
		}
	}
	if got := get("fedkeeper_agent_info", "node", "esgf-data1", "project", "CMIP6", "site", "dkrz", "version", "v0.3.0"); got != 1 {
		t.Errorf("agent_info = %v", got)
	}
	if fams["go_goroutines"] != nil || fams["process_cpu_seconds_total"] != nil {
		t.Error("agent registry carries Go/process collectors")
	}

	// What a supernode derives from the exposition: one scrape gives
	// everything but the CPU ratio.
	h := NewHistory(2, 0)
	h.Add("esgf-data1", "CMIP6", time.Now(), fams)
	s, _ := h.Latest("esgf-data1")
	if s.CPUBusyRatio != Missing || s.MemoryUsedRatio < 0 || s.MemoryUsedRatio > 1 ||
		s.DiskFreeBytes != diskFree || s.ChecksCritical != 1 || s.ChecksWarning != 1 {
		t.Errorf("sample from the agent's exposition: %+v", s)
	}
}

// A source that fails costs only its own metrics.
func TestAgentExpositionUnreadableDataDir(t *testing.T) {
	reg := NewAgentRegistry(AgentOptions{DataDir: t.TempDir() + "/missing", Node: "n"})
	fams, err := Parse(strings.NewReader(string(scrape(t, reg))))
	if err != nil {
		t.Fatal(err)
	}
	if fams["fedkeeper_host_disk_free_bytes"] != nil {
		t.Error("disk metrics for a directory that does not exist")
	}
	for _, name := range []string{"fedkeeper_host_memory_total_bytes", "fedkeeper_host_load1", "fedkeeper_agent_info", "fedkeeper_checks"} {
		if fams[name] == nil {
			t.Errorf("%s missing", name)
		}
	}
}

func TestCheckCollector(t *testing.T) {
	type key struct{ check, typ string }
	tests := []struct {
		name       string
		checks     func() []CheckSample
		wantStatus map[key]float64
		wantCounts [3]float64 // passing, warning, critical
	}{
		{name: "no check function", checks: nil, wantStatus: map[key]float64{}},
		{name: "no checks", checks: func() []CheckSample { return nil }, wantStatus: map[key]float64{}},
		{
			name: "duplicates keep the worst",
			checks: func() []CheckSample {
				return []CheckSample{
					{"solr", "http", StatusPassing}, {"solr", "http", StatusCritical}, {"solr", "http", StatusWarning},
					{"solr", "tcp", StatusPassing},
				}
			},
			wantStatus: map[key]float64{{"solr", "http"}: 2, {"solr", "tcp"}: 0},
			wantCounts: [3]float64{1, 0, 1},
		},
		{
			name:       "unknown status is critical",
			checks:     func() []CheckSample { return []CheckSample{{"x", "script", "maintenance"}} },
			wantStatus: map[key]float64{{"x", "script"}: 2},
			wantCounts: [3]float64{0, 0, 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			reg.MustRegister(&checkCollector{checks: tt.checks})
			fams := gather(t, reg)
			got := map[key]float64{}
			for _, m := range fams["fedkeeper_check_status"].GetMetric() {
				got[key{labelValue(m, "check"), labelValue(m, "type")}] = m.GetGauge().GetValue()
			}
			if len(got) != len(tt.wantStatus) {
				t.Errorf("check_status %v, want %v", got, tt.wantStatus)
			}
			for k, v := range tt.wantStatus {
				if got[k] != v {
					t.Errorf("check_status %v = %v, want %v", k, got[k], v)
				}
			}
			for i, s := range []string{StatusPassing, StatusWarning, StatusCritical} {
				if v, ok := find(fams["fedkeeper_checks"], "status", s); !ok || v != tt.wantCounts[i] {
					t.Errorf("checks{status=%q} = %v (present %v), want %v", s, v, ok, tt.wantCounts[i])
				}
			}
		})
	}
}

func gather(t *testing.T, g prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	list, err := g.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	fams := make(map[string]*dto.MetricFamily, len(list))
	for _, f := range list {
		fams[f.GetName()] = f
	}
	return fams
}

// find returns the value of fam's metric with the given label name/value
// pairs.
func find(fam *dto.MetricFamily, labels ...string) (float64, bool) {
next:
	for _, m := range fam.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			if labelValue(m, labels[i]) != labels[i+1] {
				continue next
			}
		}
		return value(m)
	}
	return 0, false
}
