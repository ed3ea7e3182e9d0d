package supernode

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/fedkeeper/fedkeeper/nameserver"
)

// noDirectory answers nothing; the nameserver built from a configuration
// is only checked, never started.
type noDirectory struct{}

func (noDirectory) Service(string, string, string) ([]nameserver.Target, bool) { return nil, false }
func (noDirectory) Node(string) (string, bool)                                 { return "", false }
func (noDirectory) Nameservers() []nameserver.Target                           { return nil }
func (noDirectory) Serial() uint32                                             { return 0 }

// FuzzLoadConfig loads supernode.yaml as Start does. Loading must not
// panic; a configuration it accepts must be one Start can serve DNS with
// (the nameserver is made only after the store has started), and must
// load the same once written back as Init writes it.
func FuzzLoadConfig(f *testing.F) {
	for _, s := range []string{
		"name: sn1\nlisten: 127.0.0.1:7420\n",
		`name: sn1
federation: esgf
site: DKRZ
listen: 0.0.0.0:7443
advertise: sn1.example.org:7443
peer_listen: 0.0.0.0:7444
store_listen: 127.0.0.1:7445
initial_cluster: sn1=https://sn1.example.org:7444,sn2=https://sn2.example.org:7444
projects: [CMIP6, CORDEX]
quorum: {probe_interval: 2s, dead_after: 30s, target_voters: 5}
health: {interval: 5s, timeout: 2s, failure_threshold: 3, workers: 16}
events: {max_age: 720h, max_count: 100000}
dns: {listen: "[::]:53", domain: fed.example.org., ttl: 10s}
metrics_interval: 30s
session_ttl: 15s
request_timeout: 3s
heartbeat_interval: 100ms
election_timeout: 1s
`,
		"name: sn1\nlisten: 127.0.0.1:65532\ndns: {ttl: 1500ms}\n",
		"name: sn1\nlisten: 127.0.0.1:7420\nnmae: typo\n",
		"name: Bad_Name\nlisten: 127.0.0.1:7420\n",
		"name: sn1\nlisten: '[::1]:7420'\ndns: {domain: Fed.Example.ORG}\n",
	} {
		f.Add([]byte(s))
	}
	dir, again := f.TempDir(), f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, configFile), data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := LoadConfig(dir)
		if err != nil {
			return
		}
		if _, err := nameserver.New(nameserver.Config{Domain: cfg.DNS.Domain, TTL: cfg.DNS.TTL}, noDirectory{}); err != nil {
			t.Fatalf("a loaded configuration makes no nameserver: %v", err)
		}
		// saveConfig writes these bytes; its syncs to disk would dominate
		// the run.
		saved, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatalf("a loaded configuration does not encode: %v", err)
		}
		if err := os.WriteFile(filepath.Join(again, configFile), saved, 0o600); err != nil {
			t.Fatal(err)
		}
		back, err := LoadConfig(again)
		if err != nil {
			t.Fatalf("a configuration does not load once written back: %v\n%s", err, saved)
		}
		if b, _ := yaml.Marshal(back); !bytes.Equal(saved, b) {
			t.Fatalf("writing back changed the configuration:\n%s\n%s", saved, b)
		}
	})
}
