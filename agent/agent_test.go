package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedkeeper/fedkeeper/membership"
	"github.com/fedkeeper/fedkeeper/pki"
	"github.com/fedkeeper/fedkeeper/supernode"
)

func startSupernode(t *testing.T) *supernode.Supernode {
	t.Helper()
	dir := t.TempDir()
	if _, err := supernode.InitLoopback(dir, supernode.Config{Name: "sn1", Federation: "test"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sn, err := supernode.Start(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sn.Close)
	return sn
}

func validConfig() Config {
	return Config{
		Name:    "node1",
		Join:    []string{"https://127.0.0.1:7420"},
		CAHash:  "sha256:" + strings.Repeat("ab", 32),
		Profile: membership.Profile{Project: "CMIP6"},
	}
}

func TestConfigValidateNamesTheBadField(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"node name with underscore", func(c *Config) { c.Name = "node_1" }, "node name"},
		{"no project", func(c *Config) { c.Profile.Project = "" }, "project"},
		{"no join URL", func(c *Config) { c.Join = nil }, "--join"},
		{"plain http join URL", func(c *Config) { c.Join = []string{"http://127.0.0.1:7420"} }, "must be https"},
		{"join URL with a path", func(c *Config) { c.Join = []string{"https://127.0.0.1:7420/v1"} }, "must be https"},
		{"CA hash without prefix", func(c *Config) { c.CAHash = strings.Repeat("ab", 32) }, "sha256:"},
		{"short CA hash", func(c *Config) { c.CAHash = "sha256:abcd" }, "64 hex digits"},
		{"lat without lon", func(c *Config) { lat := 1.0; c.Profile.Lat = &lat }, "lat and lon"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := validConfig()
			tc.change(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want error containing %q, got %v", tc.want, err)
			}
		})
	}
	if err := validConfig().Validate(); err != nil {
		t.Fatalf("valid configuration refused: %v", err)
	}
}

func TestJoinRefusesASupernodeOfAnotherFederation(t *testing.T) {
	sn := startSupernode(t)
	other, err := pki.NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	token, _, err := sn.Members.CreateToken(context.Background(), "", 1, time.Hour, "test")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := Config{Name: "node1", Join: []string{sn.URL()}, CAHash: other.Hash(), Profile: membership.Profile{Project: "CMIP6"}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = Start(ctx, dir, cfg, token)
	if err == nil || !strings.Contains(err.Error(), "does not match the CA hash") {
		t.Fatalf("want a CA hash mismatch, got %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, certFile)); !os.IsNotExist(err) {
		t.Fatalf("a certificate was saved from an impostor: %v", err)
	}
	if _, err := sn.Members.Get(context.Background(), "node1"); err == nil {
		t.Fatal("the supernode admitted a node that never trusted it")
	}
}

func TestPendingJoinKeepsItsKeyAcrossRestartsUntilApproved(t *testing.T) {
	sn := startSupernode(t)
	dir := t.TempDir()
	cfg := Config{Name: "node1", Join: []string{sn.URL()}, CAHash: sn.CA.Hash(), Listen: "127.0.0.1:0", Profile: membership.Profile{Project: "CMIP6"}}

	// The first run gives up while waiting for approval.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, err := Start(ctx, dir, cfg, "")
	cancel()
	if err == nil {
		t.Fatal("Start returned without approval")
	}
	n, err := sn.Members.Get(context.Background(), "node1")
	if err != nil || n.Status != membership.StatusPending {
		t.Fatalf("want a pending request, got %+v, %v", n, err)
	}
	keyBefore, err := os.ReadFile(filepath.Join(dir, keyFile))
	if err != nil {
		t.Fatal(err)
	}

	// The second run finds the same request and is admitted on approval.
	started := make(chan error, 1)
	var ag *Agent
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var err error
		ag, err = Start(ctx, dir, cfg, "")
		started <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := sn.Members.Approve(context.Background(), "node1"); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("approve: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := <-started; err != nil {
		t.Fatalf("Start after approval: %v", err)
	}
	defer ag.Close()
	keyAfter, _ := os.ReadFile(filepath.Join(dir, keyFile))
	if string(keyBefore) != string(keyAfter) {
		t.Fatal("the node made a new key instead of keeping the one its request was for")
	}
	n, err = sn.Members.Get(context.Background(), "node1")
	if err != nil || n.Status != membership.StatusAlive {
		t.Fatalf("want node1 alive, got %+v, %v", n, err)
	}
	if strings.HasSuffix(n.Address, ":0") || n.Address == "" {
		t.Fatalf("node address %q is not the port actually listened on", n.Address)
	}
	saved, _, err := LoadConfig(dir)
	if err != nil || saved.Listen != "127.0.0.1:0" {
		t.Fatalf("saved configuration should keep the free-port request, got %+v, %v", saved, err)
	}
}
