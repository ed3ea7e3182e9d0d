package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedkeeper/fedkeeper/events"
	"github.com/fedkeeper/fedkeeper/internal/testcluster"
	"github.com/fedkeeper/fedkeeper/membership"
	"github.com/fedkeeper/fedkeeper/quorum"
)

func supernodes(t *testing.T, c *testcluster.Cluster, creds string) map[string]quorum.Supernode {
	t.Helper()
	out, err := c.Run("supernodes", "list", "-o", "json", "--credentials", creds)
	if err != nil {
		t.Fatal(err)
	}
	var list []quorum.Supernode
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("supernodes list -o json: %v\n%s", err, out)
	}
	m := map[string]quorum.Supernode{}
	for _, sn := range list {
		m[sn.Name] = sn
	}
	return m
}

// wantSupernodes checks the store's members: kind is "voter" or "standby"
// for each name, and nobody else is a member.
func wantSupernodes(c *testcluster.Cluster, creds string, want map[string]string) func(t *testing.T) error {
	return func(t *testing.T) error {
		got := supernodes(t, c, creds)
		if len(got) != len(want) {
			return fmt.Errorf("members %v, want %v", keys(got), want)
		}
		for name, kind := range want {
			sn, ok := got[name]
			switch {
			case !ok:
				return fmt.Errorf("%s is not a member", name)
			case !sn.Healthy:
				return fmt.Errorf("%s is not healthy", name)
			case sn.Voter != (kind == "voter"):
				return fmt.Errorf("%s: voter=%v, want %s", name, sn.Voter, kind)
			}
		}
		return nil
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func eventually(t *testing.T, timeout time.Duration, fn func(t *testing.T) error) {
	t.Helper()
	testcluster.Eventually(t, timeout, func() error { return fn(t) })
}

func TestAutopilotReplacesADeadLeaderWithTheStandby(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	c := testcluster.New(t)
	timing := []string{"--dead-after", "3s", "--session-ttl", "3s"}
	sn1 := c.InitSupernode("sn1", timing...)
	all := map[string]*testcluster.Supernode{"sn1": sn1}
	for _, name := range []string{"sn2", "sn3"} {
		all[name] = c.JoinSupernode(sn1, name, false, timing...)
	}
	all["sn4"] = c.JoinSupernode(sn1, "sn4", true, timing...)
	creds := c.Credentials(all["sn1"], all["sn2"], all["sn3"], all["sn4"])
	eventually(t, 60*time.Second, wantSupernodes(c, creds, map[string]string{"sn1": "voter", "sn2": "voter", "sn3": "voter", "sn4": "standby"}))

	if _, err := c.Run("kv", "put", "before/kill", "kept", "--credentials", creds); err != nil {
		t.Fatal(err)
	}
	var leader string
	for name, sn := range supernodes(t, c, creds) {
		if sn.Leader {
			leader = name
		}
	}
	if leader == "" {
		t.Fatal("no leader among the supernodes")
	}
	// An agent that joined through the leader must not look dead when the
	// leader dies: it fails over to another supernode.
	token, err := c.Run("token", "create", "--credentials", creds)
	if err != nil {
		t.Fatal(err)
	}
	agentHost := testcluster.NewHost()
	c.Start("a1", "agent", "--data-dir", c.Dir("a1"), "--join", all[leader].URL, "--ca-hash", sn1.CAHash,
		"--name", "a1", "--project", "CMIP6", "--listen", agentHost+":7430", "--token", strings.TrimSpace(token))
	eventually(t, 30*time.Second, func(t *testing.T) error {
		if st := nodes(t, &testcluster.Supernode{Proc: sn1.Proc, Credentials: creds})["a1"].Status; st != membership.StatusAlive {
			return fmt.Errorf("a1 is %q", st)
		}
		return nil
	})

	killed := time.Now()
	all[leader].Kill()
	t.Logf("killed leader %s", leader)

	t.Run("writes resume on the surviving voters", func(t *testing.T) {
		eventually(t, 20*time.Second, func(t *testing.T) error {
			_, err := c.Run("kv", "put", "after/kill", "written", "--credentials", creds)
			return err
		})
		t.Logf("first write %s after the kill", time.Since(killed).Round(time.Millisecond))
	})

	t.Run("the standby is promoted and the dead voter removed", func(t *testing.T) {
		want := map[string]string{"sn4": "voter"}
		for name := range all {
			if name != leader && name != "sn4" {
				want[name] = "voter"
			}
		}
		eventually(t, 60*time.Second, wantSupernodes(c, creds, want))
		out, err := c.Run("events", "-o", "json", "--credentials", creds)
		if err != nil {
			t.Fatal(err)
		}
		var promoted, removed bool
		dec := json.NewDecoder(strings.NewReader(out))
		for dec.More() {
			var e events.Event
			if err := dec.Decode(&e); err != nil {
				t.Fatal(err)
			}
			promoted = promoted || (e.Kind == "promoted" && e.Node == "sn4")
			removed = removed || (e.Kind == "removed_from_store" && e.Node == leader)
		}
		if !promoted || !removed {
			t.Fatalf("events lack the promotion of sn4 (%v) or the removal of %s (%v):\n%s", promoted, leader, removed, out)
		}
	})

	t.Run("the dead voter comes back as a standby", func(t *testing.T) {
		all[leader].Restart()
		want := map[string]string{leader: "standby", "sn4": "voter"}
		for name := range all {
			if name != leader && name != "sn4" {
				want[name] = "voter"
			}
		}
		eventually(t, 60*time.Second, wantSupernodes(c, creds, want))
		for key, value := range map[string]string{"before/kill": "kept", "after/kill": "written"} {
			out, err := c.Run("kv", "get", key, "--credentials", creds)
			if err != nil || strings.TrimSpace(out) != value {
				t.Fatalf("kv %s = %q, %v; want %q", key, out, err, value)
			}
		}
	})

	t.Run("the agent of the dead supernode stayed alive", func(t *testing.T) {
		// Two session lifetimes after the kill, a session that was not
		// renewed elsewhere would have lapsed.
		time.Sleep(time.Until(killed.Add(7 * time.Second)))
		if st := nodes(t, &testcluster.Supernode{Proc: sn1.Proc, Credentials: creds})["a1"].Status; st != membership.StatusAlive {
			t.Fatalf("a1 is %q after its supernode died", st)
		}
	})
}

func TestSnapshotRestoreRebuildsTheFederation(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	c := testcluster.New(t)
	sn := c.InitSupernode("sn1")
	// Operators keep the administrator credentials apart from the data
	// directory that is about to be lost.
	creds := filepath.Join(t.TempDir(), "admin.creds")
	b, err := os.ReadFile(sn.Credentials)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(creds, b, 0o600)
	if _, err := c.Run("kv", "put", "site/llnl", "climate", "--credentials", creds); err != nil {
		t.Fatal(err)
	}
	token, err := c.Run("token", "create", "--credentials", creds)
	if err != nil {
		t.Fatal(err)
	}
	agent := c.Start("a1", "agent", "--data-dir", c.Dir("a1"), "--join", sn.URL, "--ca-hash", sn.CAHash,
		"--name", "a1", "--project", "CMIP6", "--token", strings.TrimSpace(token), "--leave-on-exit=false")
	probe := &testcluster.Supernode{Proc: sn.Proc, Credentials: creds}
	waitStatus(t, probe, map[string]membership.Status{"a1": membership.StatusAlive})

	snap := filepath.Join(t.TempDir(), "fed.snapshot")
	if _, err := c.Run("snapshot", "save", snap, "--credentials", creds); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(snap); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("snapshot file: %v, mode %v; want it readable by its owner only", err, fi.Mode().Perm())
	}

	sn.Kill()
	agent.Kill()
	if err := os.RemoveAll(sn.Dir); err != nil {
		t.Fatal(err)
	}
	listen := strings.TrimPrefix(sn.URL, "https://")
	if _, err := c.Run("snapshot", "restore", snap, "--data-dir", sn.Dir, "--name", "sn1", "--listen", listen); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Run("snapshot", "restore", snap, "--data-dir", sn.Dir, "--name", "sn1", "--listen", listen); err == nil {
		t.Fatal("restoring over a restored supernode succeeded")
	}
	sn.Restart()
	sn.WaitLive(t)

	out, err := c.Run("kv", "get", "site/llnl", "--credentials", creds)
	if err != nil || strings.TrimSpace(out) != "climate" {
		t.Fatalf("kv after restore: %q, %v", out, err)
	}
	if n, ok := nodes(t, probe)["a1"]; !ok || n.Role != membership.RoleMember {
		t.Fatalf("a1 is not a member after restore: %+v", n)
	}
	// The agent's identity still works against the rebuilt federation.
	agent.Restart()
	waitStatus(t, probe, map[string]membership.Status{"a1": membership.StatusAlive})
	out, err = c.Run("nodemap", "--credentials", creds)
	if err != nil || !strings.Contains(out, sn.CAHash) {
		t.Fatalf("node map after restore lacks the CA hash %s: %v\n%s", sn.CAHash, err, out)
	}
}
