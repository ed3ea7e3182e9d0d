package agent

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/fedkeeper/fedkeeper/services"
)

// FuzzLoadConfig loads agent.yaml as the agent does on start. Loading
// must not panic; a configuration that validates must survive being
// written back as SaveConfig does, unchanged and still valid.
func FuzzLoadConfig(f *testing.F) {
	seed, err := yaml.Marshal(validConfig())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(`name: node1
join: ["https://sn1.example.org:7420", "https://[2001:db8::1]:7420/"]
ca_hash: sha256:abababababababababababababababababababababababababababababababab
profile:
  project: CMIP6
  site: "DKRZ Hamburg"
  address: node1.example.org:7444
  lat: 53.5
  lon: 9.9
  endpoints: {IndexService: "https://node1.example.org/esg-search"}
listen: 127.0.0.1:7444
leave_on_exit: true
checks:
  - {name: web, type: http, url: "http://127.0.0.1:8080/", interval: 10s, timeout: 2s}
  - {name: disk, type: disk, path: /data, min_free: 5%}
  - {name: tls, type: cert, cert_file: /etc/tls/x.crt, min_days: 30}
  - {name: run, type: script, command: [/bin/true]}
  - {name: port, type: tcp, address: "localhost:22"}
components:
  - {name: tomcat, home: /opt/tomcat, reload: [systemctl, reload, tomcat], reload_timeout: 30s}
services:
  - {name: thredds, port: 443, protocol: https, path: /thredds, tags: [v5], checks: [{name: up, type: tcp, address: "127.0.0.1:443"}]}
ha_groups:
  - {name: index, rank: 10, script: /usr/local/bin/index-ha, lease_ttl: 10s, preempt: true, preempt_delay: 1m}
`))
	f.Add([]byte("name: node1\nnmae: typo\n"))
	f.Add([]byte("name: &a [*a]\n"))
	f.Add([]byte("profile: {lat: .nan, lon: .inf}\n"))
	f.Add([]byte("components: [{name: a, home: /x, reload_timeout: -1s}]\n"))
	dir, again := f.TempDir(), f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, configFile), data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, ok, err := LoadConfig(dir)
		if err != nil || !ok || cfg.Validate() != nil {
			return
		}
		// SaveConfig writes these bytes; its syncs to disk would dominate
		// the run.
		saved, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatalf("a valid configuration does not encode: %v", err)
		}
		if err := os.WriteFile(filepath.Join(again, configFile), saved, 0o600); err != nil {
			t.Fatal(err)
		}
		back, ok, err := LoadConfig(again)
		if err != nil || !ok {
			t.Fatalf("the agent cannot load what it saved: %v", err)
		}
		if err := back.Validate(); err != nil {
			t.Fatalf("a valid configuration is invalid once saved: %v", err)
		}
		if b, _ := yaml.Marshal(back); !bytes.Equal(saved, b) {
			t.Fatalf("saving changed the configuration:\n%s\n%s", saved, b)
		}
	})
}

// FuzzServicesFile opens a node's service table over any services.json.
// A file it refuses must stay as it was; the registrations it takes must
// be valid, the declared one must win, and what the table holds must
// load again the same.
func FuzzServicesFile(f *testing.F) {
	declared := services.Registration{Name: "web", Port: 8080}.WithDefaults("CMIP6")
	for _, s := range []string{
		`[]`,
		`[{"name":"thredds","port":443,"protocol":"https","path":"/thredds","tags":["v5"]}]`,
		`[{"id":"web","name":"web","port":9090},{"name":"index","port":8983,"checks":[{"name":"up","type":"tcp","address":"127.0.0.1:8983"}]}]`,
		`[{"name":"a","port":1},{"name":"a","port":2}]`,
		`[{"name":"a","port":0}]`,
		`[{"name":"a","port":1,"unknown":true}]`,
		`null`,
		`{}`,
	} {
		f.Add([]byte(s))
	}
	dir, again := f.TempDir(), f.TempDir()
	path := filepath.Join(dir, servicesFile)
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		tab, err := openServiceTable(dir, "CMIP6", []services.Registration{declared}, quiet)
		after, rerr := os.ReadFile(path)
		if rerr != nil {
			t.Fatal(rerr)
		}
		if err != nil {
			if !bytes.Equal(after, data) {
				t.Fatalf("a refused services.json was rewritten:\n%q\n%q", data, after)
			}
			return
		}
		regs := tab.registrations()
		if err := services.ValidateSet(regs); err != nil {
			t.Fatalf("the table holds an invalid set: %v", err)
		}
		if s := tab.byID[declared.ID]; s == nil || !s.declared || !reflect.DeepEqual(s.reg, declared) {
			t.Fatalf("the declared service is %+v", s)
		}
		// The table's own file, loaded afresh, must give the same table.
		if err := os.WriteFile(filepath.Join(again, servicesFile), after, 0o600); err != nil {
			t.Fatal(err)
		}
		tab2, err := openServiceTable(again, "CMIP6", []services.Registration{declared}, quiet)
		if err != nil {
			t.Fatalf("services.json as the table left it does not load: %v\n%s", err, after)
		}
		b1, _ := json.Marshal(regs)
		b2, _ := json.Marshal(tab2.registrations())
		if !bytes.Equal(b1, b2) {
			t.Fatalf("the table changed on reloading:\n%s\n%s", b1, b2)
		}
	})
}
