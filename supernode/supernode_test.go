package supernode

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedkeeper/fedkeeper/quorum"
)

func TestInitRefusesBadInputAndWritesNothing(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"bad supernode name", Config{Name: "Bad_Name", Listen: "127.0.0.1:7420"}, "DNS label"},
		{"bad federation name", Config{Name: "sn1", Federation: "a b", Listen: "127.0.0.1:7420"}, "federation name"},
		{"listen without port", Config{Name: "sn1", Listen: "127.0.0.1"}, "HOST:PORT"},
		{"listen port too high", Config{Name: "sn1", Listen: "127.0.0.1:65533"}, "port from 1 to 65532"},
		{"wildcard listen without advertise", Config{Name: "sn1", Listen: "0.0.0.0:7420"}, "--advertise"},
		{"session TTL too short", Config{Name: "sn1", Listen: "127.0.0.1:7420", SessionTTL: time.Second}, "session_ttl"},
		{"dead_after shorter than three probes", Config{Name: "sn1", Listen: "127.0.0.1:7420", Quorum: quorum.Config{DeadAfter: 2 * time.Second}}, "dead_after"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "sn")
			_, err := Init(dir, tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Init: want error containing %q, got %v", tc.want, err)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Fatalf("Init failed but left %s behind", dir)
			}
		})
	}
}

func TestInitRefusesADirectoryThatHoldsASupernode(t *testing.T) {
	dir := t.TempDir()
	first, err := Init(dir, Config{Name: "sn1", Listen: "127.0.0.1:7420"})
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(filepath.Join(dir, "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Init(dir, Config{Name: "sn2", Listen: "127.0.0.1:7420"}); err == nil || !strings.Contains(err.Error(), "already holds a supernode") {
		t.Fatalf("second Init: want refusal, got %v", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "pki", "ca.crt"))
	if string(before) != string(after) {
		t.Fatal("second Init replaced the federation CA")
	}
	if !strings.HasPrefix(first.CAHash, "sha256:") || first.APIURL != "https://127.0.0.1:7420" {
		t.Fatalf("unexpected init result %+v", first)
	}
}

func TestLoadConfigFillsStorePortsAndRejectsUnknownFields(t *testing.T) {
	dir := t.TempDir()
	if _, err := Init(dir, Config{Name: "sn1", Listen: "10.0.0.5:7420"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PeerListen != "10.0.0.5:7421" || cfg.StoreListen != "127.0.0.1:7422" {
		t.Fatalf("default store addresses: peer %s store %s", cfg.PeerListen, cfg.StoreListen)
	}
	f, err := os.OpenFile(filepath.Join(dir, configFile), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("sesion_ttl: 5s\n")
	f.Close()
	if _, err := LoadConfig(dir); err == nil || !strings.Contains(err.Error(), "sesion_ttl") {
		t.Fatalf("misspelt field: want error naming it, got %v", err)
	}
	if _, err := LoadConfig(t.TempDir()); err == nil || !strings.Contains(err.Error(), "run fedkeeper init first") {
		t.Fatalf("empty directory: want a hint to init, got %v", err)
	}
}
