package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fedkeeper/fedkeeper/api"
	"github.com/fedkeeper/fedkeeper/client"
	"github.com/fedkeeper/fedkeeper/internal/testcluster"
	"github.com/fedkeeper/fedkeeper/metrics"
)

// promtoolCheck runs promtool check metrics on an exposition.
func promtoolCheck(t *testing.T, exposition string) {
	t.Helper()
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(exposition)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

func fetch(t *testing.T, url string) string {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: HTTP %d, %v", url, resp.StatusCode, err)
	}
	return string(b)
}

func TestMetricsAreCollectedAggregatedAndDiscoverable(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	if _, err := exec.LookPath("promtool"); err != nil {
		t.Skip("promtool not installed (Debian package prometheus)")
	}
	c := testcluster.New(t)
	host := testcluster.NewHost()
	dir := c.Dir("sn1")
	out, err := c.Run("init", "--name", "sn1", "--data-dir", dir, "--listen", host+":7420")
	if err != nil {
		t.Fatal(err)
	}
	caHash := regexp.MustCompile(`sha256:[0-9a-f]{64}`).FindString(out)
	f, err := os.OpenFile(filepath.Join(dir, "supernode.yaml"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(f, "metrics_interval: 1s\nhealth:\n  interval: 500ms\n  timeout: 500ms\n")
	f.Close()
	sn := &testcluster.Supernode{Proc: c.Start("sn1", "supernode", "--data-dir", dir), Dir: dir, URL: "https://" + host + ":7420", CAHash: caHash, Credentials: filepath.Join(dir, "admin.creds")}
	sn.WaitLive(t)

	token, err := sn.Admin("token", "create", "--uses", "2")
	if err != nil {
		t.Fatal(err)
	}
	agents := map[string]string{}
	procs := map[string]*testcluster.Proc{}
	for _, name := range []string{"a1", "a2"} {
		addr := testcluster.NewHost() + ":7430"
		agents[name] = addr
		procs[name] = c.Start(name, "agent", "--data-dir", c.Dir(name), "--join", sn.URL, "--ca-hash", caHash, "--name", name,
			"--project", "CMIP6", "--listen", addr, "--token", strings.TrimSpace(token), "--leave-on-exit=false")
	}

	t.Run("expositions pass promtool", func(t *testing.T) {
		promtoolCheck(t, fetch(t, sn.URL+"/metrics"))
		var exp string
		testcluster.Eventually(t, 30*time.Second, func() error {
			hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
			resp, err := hc.Get("https://" + agents["a1"] + "/metrics")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			exp = string(b)
			return nil
		})
		promtoolCheck(t, exp)
		for _, want := range []string{"fedkeeper_host_memory_total_bytes", `fedkeeper_check_status{check="agent-certificate",type="cert"} 0`, `fedkeeper_agent_info{node="a1",project="CMIP6"`} {
			if !strings.Contains(exp, want) {
				t.Errorf("agent metrics lack %s", want)
			}
		}
	})

	t.Run("the supernode aggregates its members per project", func(t *testing.T) {
		testcluster.Eventually(t, 30*time.Second, func() error {
			out, err := sn.Admin("metrics", "--project", "CMIP6", "-o", "json")
			if err != nil {
				return err
			}
			var m api.ProjectMetrics
			if err := json.Unmarshal([]byte(out), &m); err != nil {
				return err
			}
			mem, cpu := m.Metrics[metrics.MetricMemoryUsedRatio], m.Metrics[metrics.MetricCPUBusyRatio]
			if m.Nodes != 2 || mem.Count != 2 || cpu.Count != 2 {
				return fmt.Errorf("aggregate %+v: want 2 nodes with memory and CPU figures", m)
			}
			if mem.Min <= 0 || mem.Max > 1 || cpu.Min < 0 || cpu.Max > 1 {
				return fmt.Errorf("ratios out of range: memory %+v cpu %+v", mem, cpu)
			}
			return nil
		})
		out, err := sn.Admin("metrics", "--project", "CORDEX", "-o", "json")
		if err != nil || !strings.Contains(out, `"nodes": 0`) {
			t.Fatalf("a project without members: %v\n%s", err, out)
		}
	})

	t.Run("service discovery lists the healthy nodes only", func(t *testing.T) {
		cr, err := client.LoadCredentials(sn.Credentials)
		if err != nil {
			t.Fatal(err)
		}
		admin, err := cr.Client()
		if err != nil {
			t.Fatal(err)
		}
		targets := func() map[string]metrics.SDTarget {
			var list []metrics.SDTarget
			if err := admin.Do(context.Background(), http.MethodGet, "/v1/sd/prometheus", nil, &list); err != nil {
				t.Fatal(err)
			}
			m := map[string]metrics.SDTarget{}
			for _, tg := range list {
				m[tg.Labels[metrics.SDLabelNode]] = tg
			}
			return m
		}
		testcluster.Eventually(t, 30*time.Second, func() error {
			got := targets()
			for name, addr := range agents {
				tg, ok := got[name]
				if !ok || tg.Targets[0] != addr || tg.Labels[metrics.SDLabelProject] != "CMIP6" || tg.Labels["__scheme__"] != "https" {
					return fmt.Errorf("target of %s: %+v", name, tg)
				}
			}
			if _, ok := got["sn1"]; !ok {
				return fmt.Errorf("the supernode is not a target: %v", got)
			}
			return nil
		})
		procs["a2"].Kill()
		testcluster.Eventually(t, 30*time.Second, func() error {
			if _, ok := targets()["a2"]; ok {
				return fmt.Errorf("a2 is still a target after it died")
			}
			return nil
		})
		if _, ok := targets()["a1"]; !ok {
			t.Fatal("a1 was dropped too")
		}
	})
}
