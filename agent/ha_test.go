package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedkeeper/fedkeeper/ha"
)

func TestHAGroupValidationNamesTheGroupAndField(t *testing.T) {
	group := func(change func(*ha.GroupConfig)) []ha.GroupConfig {
		g := ha.GroupConfig{Name: "web", Rank: 10, Script: "/usr/local/bin/web-ha"}
		change(&g)
		return []ha.GroupConfig{g}
	}
	for _, tc := range []struct {
		name   string
		groups []ha.GroupConfig
		want   string
	}{
		{"uppercase name", group(func(g *ha.GroupConfig) { g.Name = "Web" }), `HA group name "Web" must be`},
		{"empty name", group(func(g *ha.GroupConfig) { g.Name = "" }), `HA group name "" must be`},
		{"negative rank", group(func(g *ha.GroupConfig) { g.Rank = -1 }), "HA group web: rank -1"},
		{"rank too high", group(func(g *ha.GroupConfig) { g.Rank = ha.MaxRank + 1 }), "HA group web: rank 1000001"},
		{"no script", group(func(g *ha.GroupConfig) { g.Script = "" }), "HA group web: script is required"},
		{"relative script", group(func(g *ha.GroupConfig) { g.Script = "bin/web-ha" }), `HA group web: script "bin/web-ha" must be an absolute path`},
		{"negative script timeout", group(func(g *ha.GroupConfig) { g.ScriptTimeout = -time.Second }), "HA group web: script_timeout must not be negative"},
		{"negative takeover delay", group(func(g *ha.GroupConfig) { g.TakeoverDelay = -time.Second }), "HA group web: takeover_delay must not be negative"},
		{"preempt delay without preempt", group(func(g *ha.GroupConfig) { g.PreemptDelay = time.Second }), "HA group web: preempt_delay is set but preempt is not"},
		{"lease TTL below the minimum", group(func(g *ha.GroupConfig) { g.LeaseTTL = time.Second }), "HA group web: lease_ttl 1s must be whole seconds"},
		{"lease TTL not whole seconds", group(func(g *ha.GroupConfig) { g.LeaseTTL = 2500 * time.Millisecond }), "HA group web: lease_ttl 2.5s must be whole seconds"},
		{"script timeout too long for the lease", group(func(g *ha.GroupConfig) { g.ScriptTimeout = 5 * time.Second }), "HA group web: script_timeout 5s plus the watchdog's margin (5.25s in all) must be less than half of lease_ttl 10s"},
		{"declared twice", append(group(func(*ha.GroupConfig) {}), ha.GroupConfig{Name: "web", Rank: 5, Script: "/bin/true"}), "HA group web is declared twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := validConfig()
			cfg.HAGroups = tc.groups
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want error containing %q, got %v", tc.want, err)
			}
		})
	}
}

func TestHAGroupsLoadFromTheConfigurationFileWithDefaults(t *testing.T) {
	dir := t.TempDir()
	yaml := `name: node1
join: [https://127.0.0.1:7420]
ca_hash: sha256:` + strings.Repeat("ab", 32) + `
profile: {project: CMIP6}
ha_groups:
  - name: index
    rank: 100
    script: /usr/local/bin/index-ha
    script_timeout: 8s
    lease_ttl: 30s
    preempt: true
    preempt_delay: 1m
  - name: data.backup
    rank: 5
    script: /usr/local/bin/data-ha
`
	if err := os.WriteFile(filepath.Join(dir, configFile), []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, ok, err := LoadConfig(dir)
	if err != nil || !ok {
		t.Fatalf("load: %v (found %v)", err, ok)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("valid configuration refused: %v", err)
	}
	want := []ha.GroupConfig{
		{Name: "index", Rank: 100, Script: "/usr/local/bin/index-ha", ScriptTimeout: 8 * time.Second, StatusInterval: ha.DefaultStatusInterval,
			LeaseTTL: 30 * time.Second, Preempt: true, PreemptDelay: time.Minute},
		{Name: "data.backup", Rank: 5, Script: "/usr/local/bin/data-ha", ScriptTimeout: ha.DefaultScriptTimeout, StatusInterval: ha.DefaultStatusInterval,
			LeaseTTL: ha.DefaultLeaseTTL},
	}
	if len(cfg.HAGroups) != len(want) {
		t.Fatalf("got %d groups, want %d", len(cfg.HAGroups), len(want))
	}
	for i, g := range cfg.HAGroups {
		if got := g.WithDefaults(); got != want[i] {
			t.Errorf("group %d:\n got %+v\nwant %+v", i, got, want[i])
		}
	}
}
