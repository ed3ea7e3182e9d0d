package metrics

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
	"time"
)

// checkSample fails unless every figure of s is Missing or within its
// range: the API serves them as JSON, which has no NaN or infinity.
func checkSample(t *testing.T, s Sample) {
	t.Helper()
	for _, f := range []struct {
		name  string
		v     float64
		ratio bool
	}{
		{MetricCPUBusyRatio, s.CPUBusyRatio, true},
		{MetricMemoryUsedRatio, s.MemoryUsedRatio, true},
		{MetricDiskFreeBytes, s.DiskFreeBytes, false},
		{MetricLoad1, s.Load1, false},
		{MetricChecksCritical, float64(s.ChecksCritical), false},
		{MetricChecksWarning, float64(s.ChecksWarning), false},
	} {
		if f.v == Missing {
			continue
		}
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) || f.v < 0 || f.ratio && f.v > 1 {
			t.Fatalf("%s is %v in %+v", f.name, f.v, s)
		}
	}
}

// FuzzParse reads what two nodes' agents answer to a scrape, twice each
// as the history needs for CPU figures. Parsing must not panic, and the
// samples and aggregates drawn from any exposition must be in range and
// encode as JSON.
func FuzzParse(f *testing.F) {
	gauges := "# TYPE fedkeeper_host_memory_total_bytes gauge\nfedkeeper_host_memory_total_bytes 8e9\n" +
		"fedkeeper_host_memory_available_bytes 2e9\n" +
		"fedkeeper_host_disk_free_bytes{path=\"/\"} 1e11\nfedkeeper_host_disk_free_bytes{path=\"/data\"} 5e12\n" +
		"fedkeeper_host_load1 0.5\n" +
		"# TYPE fedkeeper_checks gauge\nfedkeeper_checks{status=\"critical\"} 1\nfedkeeper_checks{status=\"warning\"} 2\nfedkeeper_checks{status=\"passing\"} 3\n"
	for _, s := range [][2]string{
		{cpuText(100, 50, 50) + gauges, cpuText(130, 100, 70) + gauges},
		{cpuText(100, 50, 50), cpuText(90, 50, 50)},
		{cpuText(0, 0, 0, `{mode="guest"} 5`), cpuText(1, 1, 1, `{mode="guest_nice"} +Inf`)},
		{"fedkeeper_host_memory_total_bytes 0\nfedkeeper_host_memory_available_bytes 1\n", "fedkeeper_host_memory_total_bytes 1e-300\nfedkeeper_host_memory_available_bytes 1e300\n"},
		{"fedkeeper_host_disk_free_bytes{path=\"/a\"} 1.7e308\nfedkeeper_host_disk_free_bytes{path=\"/b\"} 1.7e308\n", "fedkeeper_host_load1 NaN\n"},
		{"fedkeeper_checks{status=\"critical\"} 1e300\nfedkeeper_checks{status=\"warning\"} -1e300\n", "fedkeeper_checks{status=\"critical\"} 0.5\n"},
		{"fedkeeper_host_cpu_seconds_total{mode=\"idle\"} 1e308\nfedkeeper_host_cpu_seconds_total{mode=\"user\"} 1e308\n", cpuText(0, 0, 0)},
		{"# TYPE fedkeeper_host_load1 histogram\nfedkeeper_host_load1_bucket{le=\"+Inf\"} 1\n", "not an exposition {"},
		{"", ""},
	} {
		f.Add([]byte(s[0]), []byte(s[1]))
	}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, first, second []byte) {
		h := NewHistory(4, 0)
		for i, text := range [][]byte{first, second, first, second} {
			families, err := Parse(bytes.NewReader(text))
			if err != nil {
				continue
			}
			node := []string{"n1", "n2"}[i/2]
			h.Add(node, "CMIP6", t0.Add(time.Duration(i%2)*15*time.Second), families)
		}
		for _, node := range h.Nodes() {
			for _, s := range h.Series(node) {
				checkSample(t, s)
			}
		}
		agg := h.Aggregate("")
		if _, err := json.Marshal(agg); err != nil {
			t.Fatalf("aggregate does not encode: %v\n%+v", err, agg)
		}
		if _, err := json.Marshal(Merge(agg, agg)); err != nil {
			t.Fatalf("merged aggregate does not encode: %v", err)
		}
	})
}
