//go:build linux

package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fedkeeper/fedkeeper/health"
	"github.com/fedkeeper/fedkeeper/internal/testcluster"
)

// TestHealthBadLinkIsNotABadMember cuts the link between a member and the
// one supernode that probes it, and nothing else: the second supernode
// still reaches the member, so the member must never be declared
// critical; a suspicion may show for a moment until the second supernode
// refutes it.
func TestHealthBadLinkIsNotABadMember(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes in network namespaces; skipped with -short")
	}
	n := testcluster.NewNet(t)
	hosts := map[string]*testcluster.Host{}
	var sns []*testcluster.Supernode
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("sn%d", i)
		hosts[name] = n.AddHost(fmt.Sprintf("h%d", i))
		if i == 1 {
			sns = append(sns, hosts[name].InitSupernode(name))
		} else {
			sns = append(sns, hosts[name].JoinSupernode(sns[0], name, false))
		}
	}
	memberHost := n.AddHost("h4")
	c := testcluster.New(t) // runs the CLI from the root namespace, which is never cut off
	f := &hcFed{c: c, sns: sns, creds: c.Credentials(sns...)}
	hcConfigure(t, sns)
	f.waitVoters(t)

	const member = "m1"
	a := hcStartAgent(t, sns[0], f.creds, member, memberHost.IP, memberHost.Dir(member), memberHost.Start, nil)
	f.waitAllPassing(t, []*testcluster.Agent{a})
	prober, confirmer := hcProbers(member, f.names())
	var proberProc *testcluster.Supernode
	for _, sn := range sns {
		if sn.Proc.Name == prober {
			proberProc = sn
		}
	}
	t.Logf("%s is probed by %s, confirmed by %s", member, prober, confirmer)
	before := hcLastRevision(f.events(t, ""))

	n.Partition(hosts[prober], memberHost)
	cut := time.Now()
	// Long enough for the prober to suspect the member, be refuted, hold
	// back and suspect it again.
	const window = 10 * time.Second
	seen := map[string]int{}
	for time.Since(cut) < window {
		m := f.nodes(t)[member]
		seen[m.Health]++
		if m.Health == string(health.Critical) {
			t.Fatalf("%s is critical %s after only its link to %s was cut: %s", member, time.Since(cut).Round(time.Millisecond), prober, m.HealthReason)
		}
	}
	t.Logf("health samples over %s of the cut link: %v", window, seen)
	evs := hcHealthEvents(f.events(t, member))
	for _, e := range evs {
		if e.Revision > before && e.Kind == "critical" {
			t.Errorf("critical event for %s behind a bad link:\n%s", member, hcFormat(evs))
		}
	}
	// The cut did reach the prober, and the second supernode answered for
	// the member: otherwise this test proved nothing.
	if !strings.Contains(proberProc.Log(), "member reachable from another supernode only") {
		t.Errorf("%s never heard from %s that %s is reachable; events:\n%s", prober, confirmer, member, hcFormat(evs))
	}
	// A suspicion ends refuted, with the reason naming the bad link.
	f.waitHealth(t, 10*time.Second, map[string]health.Status{member: health.Passing})
	if e, ok := hcFindEvent(evs, member, "suspect", before); ok {
		r, ok := hcFindEvent(evs, member, "recovered", e.Revision)
		if !ok || r.By != confirmer || !strings.Contains(r.Message, fmt.Sprintf("reachable from %s, not from %s", confirmer, prober)) {
			t.Errorf("suspicion of %s not refuted by %s:\n%s", member, confirmer, hcFormat(evs))
		}
	}
	t.Logf("events during the cut:\n%s", hcFormat(evs))

	n.Heal(hosts[prober], memberHost)
	// Healed, the member is reached again by its own prober and stays
	// passing.
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		if h := f.nodes(t)[member]; h.Health != string(health.Passing) {
			t.Fatalf("%s has health %q (%s) after the heal", member, h.Health, h.HealthReason)
		}
	}
}
