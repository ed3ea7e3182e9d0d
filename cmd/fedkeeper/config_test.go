package main

// Integration tests of distributed configuration: real supernode and agent
// processes, files published with the fedkeeper CLI and compared byte for
// byte (by SHA-256) with what lands in the components' home directories.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedkeeper/fedkeeper/agent"
	"github.com/fedkeeper/fedkeeper/api"
	"github.com/fedkeeper/fedkeeper/client"
	"github.com/fedkeeper/fedkeeper/configsync"
	"github.com/fedkeeper/fedkeeper/internal/testcluster"
	"github.com/fedkeeper/fedkeeper/membership"
)

const cfgProject = "CMIP6"

// cfgFed is a federation of one supernode and agents that keep the
// configuration of components in home directories the test owns.
type cfgFed struct {
	t     *testing.T
	c     *testcluster.Cluster
	sn    *testcluster.Supernode
	nodes map[string]*cfgNode
	names []string
}

// cfgNode is one agent and its site: the homes of its components, their
// reload logs and a directory outside every home.
type cfgNode struct {
	name string
	dir  string // the agent's data directory
	site string
	proc *testcluster.Proc
}

func (n *cfgNode) home(comp string) string      { return filepath.Join(n.site, "homes", comp) }
func (n *cfgNode) reloadLog(comp string) string { return filepath.Join(n.site, comp+".reloads") }
func (n *cfgNode) outside() string              { return filepath.Join(n.site, "outside") }
func (n *cfgNode) stateDir(comp string) string {
	return filepath.Join(n.dir, "config", cfgProject, comp)
}

// newCfgFed starts a supernode and one agent per name; every agent keeps
// every component of comps, with a reload command that appends
// FEDKEEPER_CONFIG_VERSION to the component's reload log. The agents'
// configuration is written before their first start; they join with a
// token and restart from their data directory alone.
func newCfgFed(t *testing.T, names []string, comps ...string) *cfgFed {
	t.Helper()
	c := testcluster.New(t)
	f := &cfgFed{t: t, c: c, sn: c.InitSupernode("sn1"), nodes: map[string]*cfgNode{}, names: names}
	if len(names) == 0 {
		return f
	}
	token, err := f.admin("token", "create", "--uses", strconv.Itoa(len(names)))
	if err != nil {
		t.Fatal(err)
	}
	token = strings.TrimSpace(token)
	root := t.TempDir()
	for _, name := range names {
		n := &cfgNode{name: name, dir: c.Dir(name), site: filepath.Join(root, name)}
		if err := os.MkdirAll(n.outside(), 0o755); err != nil {
			t.Fatal(err)
		}
		var cc []agent.ComponentConfig
		for _, comp := range comps {
			if err := os.MkdirAll(n.home(comp), 0o755); err != nil {
				t.Fatal(err)
			}
			cc = append(cc, agent.ComponentConfig{
				Name:          comp,
				Home:          n.home(comp),
				Reload:        []string{"/bin/sh", "-c", `printf '%s\n' "$FEDKEEPER_CONFIG_VERSION" >> "$0"`, n.reloadLog(comp)},
				ReloadTimeout: 10 * time.Second,
			})
		}
		cfg := agent.Config{
			Name:       name,
			Join:       []string{f.sn.URL},
			CAHash:     f.sn.CAHash,
			Profile:    membership.Profile{Project: cfgProject},
			Listen:     testcluster.NewHost() + ":7430",
			Components: cc,
		}
		if err := agent.SaveConfig(n.dir, cfg); err != nil {
			t.Fatal(err)
		}
		n.proc = c.Start(name, "agent", "--data-dir", n.dir, "--token", token)
		n.proc.Args = []string{"agent", "--data-dir", n.dir}
		f.nodes[name] = n
	}
	// Before anything is published every agent applies the empty
	// configuration and says so: from then on publish --wait has nodes
	// to wait for.
	for _, comp := range comps {
		f.waitVersions(comp, 60*time.Second, cfgEach(names, "p0.c0.n0"))
	}
	return f
}

func (f *cfgFed) admin(args ...string) (string, error) { return f.sn.Admin(args...) }

// cfgCLI runs the fedkeeper binary and returns its exit code, stdout and
// stderr; for commands whose failure a test expects.
func cfgCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, testcluster.Binary(t), args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("fedkeeper %s: %v", strings.Join(args, " "), err)
	}
	return code, out.String(), errOut.String()
}

func (f *cfgFed) cli(args ...string) (int, string, string) {
	f.t.Helper()
	return cfgCLI(f.t, append(args, "--credentials", f.sn.Credentials)...)
}

// publish publishes src (a directory or mapping file) to a layer: layer
// holds the flags after --project, e.g. "--component", "x".
func (f *cfgFed) publish(src string, layer ...string) {
	f.t.Helper()
	args := append([]string{"config", "publish", "--project", cfgProject}, layer...)
	if _, err := f.admin(append(args, src)...); err != nil {
		f.t.Fatal(err)
	}
}

// statuses is config status -o json of a component, by node.
func (f *cfgFed) statuses(comp string) (map[string]configsync.Status, error) {
	out, err := f.admin("config", "status", "--project", cfgProject, "--component", comp, "-o", "json")
	if err != nil {
		return nil, err
	}
	var list []configsync.Status
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("config status -o json: %v\n%s", err, out)
	}
	m := map[string]configsync.Status{}
	for _, st := range list {
		m[st.Node] = st
	}
	return m, nil
}

func cfgEach(names []string, version string) map[string]string {
	m := map[string]string{}
	for _, n := range names {
		m[n] = version
	}
	return m
}

// waitVersions waits until each node of want reports its version of comp
// without an error.
func (f *cfgFed) waitVersions(comp string, timeout time.Duration, want map[string]string) {
	f.t.Helper()
	testcluster.Eventually(f.t, timeout, func() error {
		got, err := f.statuses(comp)
		if err != nil {
			return err
		}
		for node, v := range want {
			st, ok := got[node]
			switch {
			case !ok:
				return fmt.Errorf("%s has not reported %s", node, comp)
			case st.Version != v || st.Error != "":
				return fmt.Errorf("%s reports %s at %s (error %q), want %s", node, comp, st.Version, st.Error, v)
			}
		}
		return nil
	})
}

// history is config history -o json of a layer.
func (f *cfgFed) history(layer ...string) []configsync.Commit {
	f.t.Helper()
	out, err := f.admin(append([]string{"config", "history", "--project", cfgProject, "-o", "json"}, layer...)...)
	if err != nil {
		f.t.Fatal(err)
	}
	var list []configsync.Commit
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		f.t.Fatalf("config history -o json: %v\n%s", err, out)
	}
	return list
}

// cfgWriteTree writes files below a fresh directory and returns it.
func cfgWriteTree(t *testing.T, files map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	for p, b := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// cfgReadTree returns the regular files below dir by slash path; symbolic
// links are not followed and not listed.
func cfgReadTree(dir string) (map[string][]byte, error) {
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		files[filepath.ToSlash(rel)] = b
		return err
	})
	return files, err
}

func cfgSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// cfgCompare compares two trees by the SHA-256 of every file and names
// every path that differs.
func cfgCompare(got, want map[string][]byte) error {
	var problems []string
	for _, p := range slices.Sorted(maps.Keys(want)) {
		g, ok := got[p]
		switch {
		case !ok:
			problems = append(problems, "missing "+p)
		case cfgSum(g) != cfgSum(want[p]):
			problems = append(problems, fmt.Sprintf("%s has sha256 %.12s, want %.12s (%q)", p, cfgSum(g), cfgSum(want[p]), cfgShort(g)))
		}
	}
	for _, p := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[p]; !ok {
			problems = append(problems, "unexpected "+p)
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

func cfgShort(b []byte) string {
	if len(b) > 60 {
		return string(b[:60]) + "…"
	}
	return string(b)
}

// cfgHome reads a home without the paths in ignore (files the test put
// there itself).
func cfgHome(home string, ignore ...string) (map[string][]byte, error) {
	files, err := cfgReadTree(home)
	for _, p := range ignore {
		delete(files, p)
	}
	return files, err
}

// waitHome waits until the home of comp on node holds exactly want
// (besides the ignored paths).
func (f *cfgFed) waitHome(node, comp string, timeout time.Duration, want map[string][]byte, ignore ...string) {
	f.t.Helper()
	testcluster.Eventually(f.t, timeout, func() error {
		got, err := cfgHome(f.nodes[node].home(comp), ignore...)
		if err != nil {
			return err
		}
		if err := cfgCompare(got, want); err != nil {
			return fmt.Errorf("home of %s on %s: %v", comp, node, err)
		}
		return nil
	})
}

func cfgBytes(m map[string]string) map[string][]byte {
	out := map[string][]byte{}
	for k, v := range m {
		out[k] = []byte(v)
	}
	return out
}

func cfgReloads(t *testing.T, n *cfgNode, comp string) []string {
	t.Helper()
	b, err := os.ReadFile(n.reloadLog(comp))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

func cfgExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// 1. A tree published once lands byte for byte on every agent, and
// publish --wait returns only once every agent has it.
func TestConfigPublishReachesEveryAgentByteForByte(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	names := []string{"a1", "a2", "a3"}
	f := newCfgFed(t, names, "thredds")
	random := make([]byte, 10<<10)
	for i := range random {
		random[i] = byte(rand.IntN(256))
	}
	tree := map[string][]byte{
		"catalog.xml":                     []byte("<catalog name=\"CMIP6\">\n  <dataset name=\"tas\"/>\n</catalog>\n"),
		"conf/threddsConfig.properties":   []byte("# THREDDS\nserver.port=8080\nserver.host=esgf-data.example.org\nwms.allow=true\n"),
		"conf/sub/deep/logging.xml":       []byte("<configuration><root level=\"INFO\"/></configuration>\n"),
		"bin/reload.sh":                   []byte("#!/bin/sh\nexec kill -HUP \"$(cat /run/tomcat.pid)\"\n"),
		"data/no trailing newline.txt":    []byte("no newline"),
		"data/empty":                      {},
		"data/binary/random.bin":          random,
		"conf/sub/deep/deeper/leaf.xml":   []byte("<leaf/>\n"),
		"conf/sub/shallow.properties.bak": []byte("not merged: only *.properties are\n"),
	}
	src := cfgWriteTree(t, tree)
	start := time.Now()
	code, _, stderr := f.cli("config", "publish", "--project", cfgProject, "--component", "thredds", src, "-m", "first", "--wait", "--timeout", "60s")
	if code != 0 {
		t.Fatalf("publish --wait exited %d:\n%s", code, stderr)
	}
	t.Logf("publish --wait returned after %s: %q", time.Since(start).Round(time.Millisecond), strings.TrimSpace(stderr))
	if !strings.Contains(stderr, "published commit 1 of CMIP6/thredds (9 files)") || !strings.Contains(stderr, "3/3 nodes applied") {
		t.Errorf("publish --wait says:\n%s", stderr)
	}
	// No waiting here: --wait promised that every agent has applied it.
	for _, name := range names {
		n := f.nodes[name]
		got, err := cfgReadTree(n.home("thredds"))
		if err != nil {
			t.Fatal(err)
		}
		if err := cfgCompare(got, tree); err != nil {
			t.Errorf("%s right after publish --wait: %v", name, err)
		}
		if cfgExists(filepath.Join(n.home("thredds"), ".fedkeeper-staging")) || cfgExists(filepath.Join(n.stateDir("thredds"), "journal.json")) {
			t.Errorf("%s: staging or journal left behind after the apply", name)
		}
		var m configsync.Applied
		b, err := os.ReadFile(filepath.Join(n.stateDir("thredds"), "applied.json"))
		if err == nil {
			err = json.Unmarshal(b, &m)
		}
		if err != nil {
			t.Fatalf("%s manifest: %v", name, err)
		}
		want := map[string]string{}
		for p, c := range tree {
			want[p] = cfgSum(c)
		}
		if m.Version != "p0.c1.n0" || !maps.Equal(m.Files, want) || m.ReloadError != "" {
			t.Errorf("%s manifest: %+v", name, m)
		}
		if r := cfgReloads(t, n, "thredds"); !slices.Equal(r, []string{"p0.c1.n0"}) {
			t.Errorf("%s reloads: %q, want one for p0.c1.n0", name, r)
		}
	}

	out, err := f.admin("config", "status", "--project", cfgProject)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "NODE") || !strings.Contains(lines[0], "VERSION") {
		t.Fatalf("config status:\n%s", out)
	}
	seen := map[string]bool{}
	for _, line := range lines[1:] {
		fields := strings.Fields(line)
		if len(fields) != 5 || fields[1] != "thredds" || fields[2] != "p0.c1.n0" || fields[4] != "-" {
			t.Errorf("config status row %q: want NODE thredds p0.c1.n0 TIME -", line)
			continue
		}
		seen[fields[0]] = true
	}
	if len(seen) != 3 {
		t.Errorf("config status lists %v, want a1, a2 and a3:\n%s", slices.Sorted(maps.Keys(seen)), out)
	}

	// config get prints the published bytes too.
	got, err := f.admin("config", "get", "--project", cfgProject, "--component", "thredds", "data/binary/random.bin")
	if err != nil || got != string(random) {
		t.Errorf("config get data/binary/random.bin: %d bytes, want %d (%v)", len(got), len(random), err)
	}
}

// 2. A component's configuration is the project's files, overridden by the
// component's, overridden by a node's; *.properties merge key by key.
func TestConfigLayersInheritAndMergeProperties(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	names := []string{"a1", "a2", "a3"}
	f := newCfgFed(t, names, "solr")
	f.publish(cfgWriteTree(t, cfgBytes(map[string]string{
		"solr.properties": "# project defaults\nsolr.port=8983\nsolr.heap = 1g\nsolr.shards=1\n",
		"common/motd.txt": "CMIP6 federation\n",
		"common/logo.txt": "project logo\n",
	})))
	f.publish(cfgWriteTree(t, cfgBytes(map[string]string{
		"solr.properties": "# the component's comment is not kept\nsolr.heap = 4g\nsolr.replicas=2\n",
		"common/motd.txt": "solr node\n",
		"solr/schema.xml": "<schema name=\"esgf\"/>\n",
	})), "--component", "solr")
	f.publish(cfgWriteTree(t, cfgBytes(map[string]string{
		"solr.properties":  "solr.shards: 3\nsolr.zk=zk1:2181\n",
		"common/logo.txt":  "a2 logo\n",
		"solr/a2-only.txt": "only on a2\n",
	})), "--component", "solr", "--node", "a2")

	common := map[string]string{
		"solr.properties": "# project defaults\nsolr.port=8983\nsolr.heap = 4g\nsolr.shards=1\nsolr.replicas=2\n",
		"common/motd.txt": "solr node\n",
		"common/logo.txt": "project logo\n",
		"solr/schema.xml": "<schema name=\"esgf\"/>\n",
	}
	a2 := maps.Clone(common)
	a2["solr.properties"] = "# project defaults\nsolr.port=8983\nsolr.heap = 4g\nsolr.shards: 3\nsolr.replicas=2\nsolr.zk=zk1:2181\n"
	a2["common/logo.txt"] = "a2 logo\n"
	a2["solr/a2-only.txt"] = "only on a2\n"

	f.waitVersions("solr", 30*time.Second, map[string]string{"a1": "p1.c1.n0", "a2": "p1.c1.n1", "a3": "p1.c1.n0"})
	for _, name := range names {
		want := common
		if name == "a2" {
			want = a2
		}
		f.waitHome(name, "solr", 5*time.Second, cfgBytes(want))
	}
	// The node's own view, as an administrator reads it.
	if out, err := f.admin("config", "get", "--project", cfgProject, "--component", "solr", "--node", "a2", "solr.properties"); err != nil || out != a2["solr.properties"] {
		t.Errorf("config get --node a2 solr.properties = %q, %v", out, err)
	}

	// A later project commit flows through both overrides: the key no
	// layer above sets changes everywhere, the overridden ones stay.
	f.publish(cfgWriteTree(t, cfgBytes(map[string]string{
		"solr.properties": "# project defaults\nsolr.port=8984\nsolr.heap = 1g\nsolr.shards=1\n",
		"common/motd.txt": "CMIP6 federation\n",
		"common/logo.txt": "project logo v2\n",
	})))
	common["solr.properties"] = strings.Replace(common["solr.properties"], "8983", "8984", 1)
	common["common/logo.txt"] = "project logo v2\n"
	a2["solr.properties"] = strings.Replace(a2["solr.properties"], "8983", "8984", 1)
	f.waitVersions("solr", 30*time.Second, map[string]string{"a1": "p2.c1.n0", "a2": "p2.c1.n1", "a3": "p2.c1.n0"})
	for _, name := range names {
		want := common
		if name == "a2" {
			want = a2
		}
		f.waitHome(name, "solr", 5*time.Second, cfgBytes(want))
	}
}

// 3. A file dropped from the commit is removed from disk; files the agent
// never wrote stay as they are, even in the directories it writes to.
func TestConfigRemovesDroppedFilesAndLeavesForeignOnes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	f := newCfgFed(t, []string{"a1"}, "oodt")
	home := f.nodes["a1"].home("oodt")
	foreign := map[string][]byte{
		"local.conf":            []byte("the site admin's own\n"),
		"etc/site-notes.txt":    []byte("written by hand\n"),
		"policy/local-policy.x": []byte("<local/>\n"),
	}
	for p, b := range foreign {
		full := filepath.Join(home, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	for p := range foreign {
		if err := os.Chtimes(filepath.Join(home, p), old, old); err != nil {
			t.Fatal(err)
		}
	}
	checkForeign := func() {
		t.Helper()
		for p, b := range foreign {
			full := filepath.Join(home, p)
			got, err := os.ReadFile(full)
			if err != nil || !bytes.Equal(got, b) {
				t.Errorf("foreign file %s: %q, %v", p, got, err)
				continue
			}
			fi, err := os.Stat(full)
			if err != nil || !fi.ModTime().Equal(old) || fi.Mode().Perm() != 0o600 {
				t.Errorf("foreign file %s was touched: %v %v", p, fi.ModTime(), fi.Mode())
			}
		}
	}
	ignore := slices.Collect(maps.Keys(foreign))

	v1 := cfgBytes(map[string]string{
		"etc/filemgr.properties": "filemgr.url=http://localhost:9000\n",
		"etc/old.xml":            "<old/>\n",
		"policy/old-policy.xml":  "<policy/>\n",
		"README":                 "managed by fedkeeper\n",
	})
	f.publish(cfgWriteTree(t, v1), "--component", "oodt")
	f.waitVersions("oodt", 30*time.Second, map[string]string{"a1": "p0.c1.n0"})
	f.waitHome("a1", "oodt", 5*time.Second, v1, ignore...)
	checkForeign()

	v2 := cfgBytes(map[string]string{
		"etc/filemgr.properties": "filemgr.url=http://localhost:9001\n",
		"README":                 "managed by fedkeeper\n",
		"policy/new.xml":         "<new/>\n",
	})
	f.publish(cfgWriteTree(t, v2), "--component", "oodt")
	f.waitVersions("oodt", 30*time.Second, map[string]string{"a1": "p0.c2.n0"})
	f.waitHome("a1", "oodt", 5*time.Second, v2, ignore...)
	for _, p := range []string{"etc/old.xml", "policy/old-policy.xml"} {
		if cfgExists(filepath.Join(home, p)) {
			t.Errorf("%s dropped from the commit is still on disk", p)
		}
	}
	checkForeign()

	// A clear removes everything the agent wrote, nothing else.
	if _, err := f.admin("config", "clear", "--project", cfgProject, "--component", "oodt"); err != nil {
		t.Fatal(err)
	}
	f.waitVersions("oodt", 30*time.Second, map[string]string{"a1": "p0.c3.n0"})
	f.waitHome("a1", "oodt", 5*time.Second, map[string][]byte{}, ignore...)
	checkForeign()
}

// 4. An agent killed at any moment of an apply restarts with exactly one
// whole commit in the home, old or new, never a mix, and then converges
// to the new one.
func TestConfigApplySurvivesKillDuringApply(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	f := newCfgFed(t, []string{"a1"}, "big")
	n := f.nodes["a1"]
	home, state := n.home("big"), n.stateDir("big")
	// 200 files of 16 KiB: 3.2 MiB, under the 4 MiB commit limit.
	gen := func(i int) map[string][]byte {
		r := rand.New(rand.NewPCG(uint64(i), 42))
		files := map[string][]byte{}
		for j := range 200 {
			b := make([]byte, 16<<10)
			for k := range b {
				b[k] = byte(r.Uint32())
			}
			files[fmt.Sprintf("d%02d/f%03d.dat", j%10, j)] = b
		}
		return files
	}
	version := func(seq int) string { return fmt.Sprintf("p0.c%d.n0", seq) }
	f.publish(cfgWriteTree(t, gen(0)), "--component", "big")
	f.waitVersions("big", 30*time.Second, map[string]string{"a1": version(1)})
	f.waitHome("a1", "big", 5*time.Second, gen(0))

	poll := func(p string) func() bool { return func() bool { return cfgExists(p) } }
	cases := []struct {
		name string
		// The agent is killed delay after when first holds (nil: after
		// the publish has returned).
		when  func() bool
		delay time.Duration
	}{
		{name: "while staging", when: poll(filepath.Join(home, ".fedkeeper-staging"))},
		{name: "as soon as the journal is written", when: poll(filepath.Join(state, "journal.json"))},
		{name: "2ms after the journal is written", when: poll(filepath.Join(state, "journal.json")), delay: 2 * time.Millisecond},
		{name: "150ms after publish returns", delay: 150 * time.Millisecond},
		{name: "400ms after publish returns", delay: 400 * time.Millisecond},
	}
	for i, tc := range cases {
		seq := i + 2
		oldFiles, newFiles := gen(i), gen(i+1)
		src := cfgWriteTree(t, newFiles)
		var published sync.WaitGroup
		var pubErr error
		published.Add(1)
		go func() {
			defer published.Done()
			_, pubErr = f.admin("config", "publish", "--project", cfgProject, "--component", "big", src)
		}()
		if tc.when != nil {
			deadline := time.Now().Add(30 * time.Second)
			for !tc.when() && time.Now().Before(deadline) {
				time.Sleep(200 * time.Microsecond)
			}
		} else {
			published.Wait()
		}
		time.Sleep(tc.delay)
		n.proc.Kill()
		published.Wait()
		if pubErr != nil {
			t.Fatal(pubErr)
		}

		journal := cfgExists(filepath.Join(state, "journal.json"))
		staging := cfgExists(filepath.Join(home, ".fedkeeper-staging"))
		onDisk, err := cfgHome(home)
		if err != nil {
			t.Fatal(err)
		}
		for p := range onDisk {
			if strings.HasPrefix(p, ".fedkeeper-staging/") {
				delete(onDisk, p)
			}
		}
		atKill := cfgWhich(onDisk, oldFiles, newFiles)
		t.Logf("killed %s: journal %v, staging %v, home holds %s", tc.name, journal, staging, atKill)
		if !journal && atKill != "old" && atKill != "new" {
			// Before the commit point the home is untouched; after
			// the journal is gone the commit is complete.
			t.Errorf("killed %s without a journal, the home holds %s", tc.name, atKill)
		}

		// Restart the agent with no supernode to answer: it recovers
		// from its own disk and nothing else.
		f.sn.Kill()
		runs := strings.Count(n.proc.Log(), "agent running")
		n.proc.Restart()
		testcluster.Eventually(t, 30*time.Second, func() error {
			if strings.Count(n.proc.Log(), "agent running") <= runs {
				return errors.New("the agent has not started")
			}
			return nil
		})
		got, err := cfgHome(home)
		if err != nil {
			t.Fatal(err)
		}
		recovered := cfgWhich(got, oldFiles, newFiles)
		t.Logf("  recovered to %s", recovered)
		switch {
		case recovered != "old" && recovered != "new":
			t.Errorf("killed %s and recovered: the home holds %s", tc.name, recovered)
		case journal && recovered != "new":
			t.Errorf("killed %s past the commit point (journal written), recovered to the old commit", tc.name)
		}
		if cfgExists(filepath.Join(home, ".fedkeeper-staging")) || cfgExists(filepath.Join(state, "journal.json")) {
			t.Errorf("killed %s: staging or journal left after recovery", tc.name)
		}
		var m configsync.Applied
		b, err := os.ReadFile(filepath.Join(state, "applied.json"))
		if err == nil {
			err = json.Unmarshal(b, &m)
		}
		if err != nil {
			t.Fatal(err)
		}
		wantVersion := map[string]string{"old": version(seq - 1), "new": version(seq)}[recovered]
		sums := map[string]string{}
		for p, c := range got {
			sums[p] = cfgSum(c)
		}
		if m.Version != wantVersion || !maps.Equal(m.Files, sums) {
			t.Errorf("killed %s: the manifest says %s with %d files, the home holds %s", tc.name, m.Version, len(m.Files), recovered)
		}
		if r := cfgReloads(t, n, "big"); journal && (len(r) == 0 || r[len(r)-1] != version(seq)) {
			t.Errorf("killed %s past the commit point: recovery did not reload (reloads %q)", tc.name, r)
		}

		f.sn.Restart()
		f.sn.WaitLive(t)
		// Restarted once more, the agent asks at once instead of after
		// its retry delay (test 7 lets an agent reconnect by itself).
		n.proc.Kill()
		n.proc.Restart()
		f.waitVersions("big", 60*time.Second, map[string]string{"a1": version(seq)})
		f.waitHome("a1", "big", 5*time.Second, newFiles)
		if t.Failed() {
			return
		}
	}
}

// cfgWhich says whether files are exactly old, exactly new, or what mix.
func cfgWhich(files, old, new map[string][]byte) string {
	if cfgCompare(files, old) == nil {
		return "old"
	}
	if cfgCompare(files, new) == nil {
		return "new"
	}
	var o, nw, other, missing int
	for p := range new {
		switch b, ok := files[p]; {
		case !ok:
			missing++
		case bytes.Equal(b, new[p]):
			nw++
		case bytes.Equal(b, old[p]):
			o++
		default:
			other++
		}
	}
	return fmt.Sprintf("a mix: %d files new, %d old, %d neither, %d missing, %d in all", nw, o, other, missing, len(files))
}

// 5. Publishers racing with the same --expect-rev: exactly one wins.
func TestConfigExpectRevLetsOnePublisherWin(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	f := newCfgFed(t, nil)
	layer := []string{"--component", "esgf"}
	f.publish(cfgWriteTree(t, cfgBytes(map[string]string{"who.txt": "base\n"})), layer...)
	before := f.history(layer...)
	if len(before) != 1 || before[0].Seq != 1 {
		t.Fatalf("history after the first publish: %+v", before)
	}

	const publishers = 5
	type result struct {
		code           int
		stdout, stderr string
	}
	results := make([]result, publishers)
	srcs := make([]string, publishers)
	for i := range publishers {
		srcs[i] = cfgWriteTree(t, cfgBytes(map[string]string{"who.txt": fmt.Sprintf("publisher %d\n", i)}))
	}
	var wg sync.WaitGroup
	for i := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[i]
			r.code, r.stdout, r.stderr = f.cli("config", "publish", "--project", cfgProject, "--component", "esgf",
				"--expect-rev", "1", "-m", fmt.Sprintf("publisher %d", i), srcs[i])
		}()
	}
	wg.Wait()
	winner := -1
	for i, r := range results {
		if r.code == 0 {
			if winner >= 0 {
				t.Errorf("publishers %d and %d both succeeded with --expect-rev 1", winner, i)
			}
			winner = i
			continue
		}
		if !strings.Contains(r.stderr, "conflict") || !strings.Contains(r.stderr, "not 1") {
			t.Errorf("publisher %d failed without a conflict message: exit %d\n%s", i, r.code, r.stderr)
		}
	}
	if winner < 0 {
		t.Fatalf("no publisher succeeded: %+v", results)
	}
	after := f.history(layer...)
	if len(after) != 2 || after[0].Seq != 2 || after[0].Message != fmt.Sprintf("publisher %d", winner) {
		t.Fatalf("history after the race: %+v, want one new commit by publisher %d", after, winner)
	}
	out, err := f.admin("config", "get", "--project", cfgProject, "--component", "esgf", "who.txt")
	if err != nil || out != fmt.Sprintf("publisher %d\n", winner) {
		t.Errorf("newest who.txt = %q, %v; want publisher %d's", out, err, winner)
	}
	// A stale expectation is refused now that the race is over, and a
	// fresh one succeeds.
	if code, _, stderr := f.cli("config", "publish", "--project", cfgProject, "--component", "esgf", "--expect-rev", "1", srcs[0]); code == 0 || !strings.Contains(stderr, "conflict") {
		t.Errorf("publish --expect-rev 1 at commit 2: exit %d\n%s", code, stderr)
	}
	if code, _, stderr := f.cli("config", "publish", "--project", cfgProject, "--component", "esgf", "--expect-rev", "2", srcs[0]); code != 0 {
		t.Errorf("publish --expect-rev 2 at commit 2: exit %d\n%s", code, stderr)
	}
	if h := f.history(layer...); len(h) != 3 {
		t.Errorf("history: %d commits, want 3", len(h))
	}
}

// 6. Target paths cannot leave the home: not in what is published, and not
// through a symbolic link in a home at apply time.
func TestConfigRefusesPathEscapes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	f := newCfgFed(t, []string{"a1", "a2"}, "secure")
	layer := []string{"--component", "secure"}
	f.publish(cfgWriteTree(t, cfgBytes(map[string]string{"ok.txt": "v1\n"})), layer...)
	f.waitVersions("secure", 30*time.Second, cfgEach(f.names, "p0.c1.n0"))

	local := t.TempDir()
	for _, name := range []string{"a.txt", "b.txt"} {
		if err := os.WriteFile(filepath.Join(local, name), []byte(name+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, target := range []string{"../evil", "/etc/x", "a/../../b", "a/./b", "a//b"} {
		mapping := filepath.Join(local, fmt.Sprintf("mapping%d.yaml", i))
		// One good target with the bad one: nothing at all is published.
		text := fmt.Sprintf("a.txt: good/a.txt\nb.txt: %q\n", target)
		if err := os.WriteFile(mapping, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		code, _, stderr := f.cli(append([]string{"config", "publish", "--project", cfgProject, mapping}, layer...)...)
		if code == 0 || !strings.Contains(stderr, fmt.Sprintf("%q", target)) {
			t.Errorf("publish of target %q: exit %d, stderr does not name it:\n%s", target, code, stderr)
		}
	}
	// The API refuses them too, whatever the client checked.
	cr, err := client.LoadCredentials(f.sn.Credentials)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := cr.Client()
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"../evil", "/etc/x", "a/../../b", "a/./b", "a\\b"} {
		req := api.PublishRequest{Component: "secure", Files: []api.PublishFile{{Path: "good.txt", Content: []byte("x")}, {Path: target, Content: []byte("evil\n")}}}
		err := admin.Do(context.Background(), http.MethodPost, "/v1/config/"+cfgProject+"/publish", req, nil)
		var apiErr *client.Error
		if !errors.As(err, &apiErr) || apiErr.Status != http.StatusBadRequest || !strings.Contains(apiErr.Message, strconv.Quote(target)) {
			t.Errorf("API publish of %q: %v, want HTTP 400 naming it", target, err)
		}
	}
	if h := f.history(layer...); len(h) != 1 {
		t.Fatalf("refused publishes made commits: %+v", h)
	}

	// At apply time: a1's home has a directory link and a file link
	// leading outside it.
	a1 := f.nodes["a1"]
	home := a1.home("secure")
	if err := os.Symlink(a1.outside(), filepath.Join(home, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a1.outside(), "target.conf"), []byte("outside\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(a1.outside(), "target.conf"), filepath.Join(home, "target.conf")); err != nil {
		t.Fatal(err)
	}
	for i, files := range []map[string]string{
		{"ok.txt": "v2\n", "link/x": "through the link\n"},
		{"ok.txt": "v3\n", "target.conf": "over the link\n"},
	} {
		seq := i + 2
		f.publish(cfgWriteTree(t, cfgBytes(files)), layer...)
		testcluster.Eventually(t, 30*time.Second, func() error {
			got, err := f.statuses("secure")
			if err != nil {
				return err
			}
			if st := got["a1"]; st.Version != "p0.c1.n0" || !strings.Contains(st.Error, "symbolic link") {
				return fmt.Errorf("a1 reports %+v, want an error about the symbolic link at p0.c1.n0", st)
			}
			if st := got["a2"]; st.Version != fmt.Sprintf("p0.c%d.n0", seq) || st.Error != "" {
				return fmt.Errorf("a2 reports %+v", st)
			}
			return nil
		})
		f.waitHome("a2", "secure", 5*time.Second, cfgBytes(files))
		// Nothing of the refused commit is written on a1, in or out.
		f.waitHome("a1", "secure", time.Second, cfgBytes(map[string]string{"ok.txt": "v1\n"}))
		outside, err := cfgReadTree(a1.outside())
		if err != nil {
			t.Fatal(err)
		}
		if err := cfgCompare(outside, cfgBytes(map[string]string{"target.conf": "outside\n"})); err != nil {
			t.Errorf("outside a1's home: %v", err)
		}
	}
	out, err := f.admin("config", "status", "--project", cfgProject, "--component", "secure")
	if err != nil || !strings.Contains(out, "symbolic link") {
		t.Errorf("config status shows no error for a1: %v\n%s", err, out)
	}
	// publish --wait does not call a1's refusal a success.
	code, _, stderr := f.cli("config", "publish", "--project", cfgProject, "--component", "secure", "--wait", "--timeout", "2s",
		cfgWriteTree(t, cfgBytes(map[string]string{"ok.txt": "v4\n", "link/x": "again\n"})))
	if code == 0 || !strings.Contains(stderr, "a1") || strings.Contains(stderr, "a2") {
		t.Errorf("publish --wait of a commit a1 refuses: exit %d\n%s", code, stderr)
	}
	f.waitHome("a2", "secure", 5*time.Second, cfgBytes(map[string]string{"ok.txt": "v4\n", "link/x": "again\n"}))

	// The staging directory's name is the agent's own: a target below
	// it is refused by every agent (commit 5; a2 stays at commit 4).
	req := api.PublishRequest{Component: "secure", Files: []api.PublishFile{{Path: ".fedkeeper-staging/0", Content: []byte("x")}}}
	if err := admin.Do(context.Background(), http.MethodPost, "/v1/config/"+cfgProject+"/publish", req, nil); err != nil {
		t.Logf("the API refuses .fedkeeper-staging/0 itself: %v", err)
	} else {
		testcluster.Eventually(t, 30*time.Second, func() error {
			got, err := f.statuses("secure")
			if err != nil {
				return err
			}
			if st := got["a2"]; !strings.Contains(st.Error, ".fedkeeper-staging") || st.Version != "p0.c4.n0" {
				return fmt.Errorf("a2 reports %+v", st)
			}
			return nil
		})
	}
}

// 7. An agent that was down catches up with the newest commit; one that
// starts while no supernode answers keeps its files and reports again
// once one does.
func TestConfigOfflineAgentCatchesUp(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	f := newCfgFed(t, []string{"a1", "a2"}, "fm")
	a1 := f.nodes["a1"]
	a1.proc.Kill()
	var last map[string][]byte
	for i := 1; i <= 3; i++ {
		last = cfgBytes(map[string]string{
			"filemgr.properties":        fmt.Sprintf("filemgr.catalog=lucene\nfilemgr.generation=%d\n", i),
			fmt.Sprintf("gen%d.xml", i): fmt.Sprintf("<gen n=\"%d\"/>\n", i),
		})
		f.publish(cfgWriteTree(t, last), "--component", "fm", "-m", fmt.Sprintf("generation %d", i))
	}
	f.waitVersions("fm", 30*time.Second, map[string]string{"a2": "p0.c3.n0"})
	// --wait names the node that is behind.
	code, _, stderr := f.cli("config", "publish", "--project", cfgProject, "--component", "fm", cfgWriteTree(t, last), "--wait", "--timeout", "2s")
	if code == 0 || !strings.Contains(stderr, "not applied after 2s by: a1") {
		t.Errorf("publish --wait with a1 down: exit %d\n%s", code, stderr)
	}
	f.waitVersions("fm", 30*time.Second, map[string]string{"a2": "p0.c4.n0"})
	if got, err := cfgReadTree(a1.home("fm")); err != nil || len(got) != 0 {
		t.Fatalf("a1's home while it was down: %d files, %v", len(got), err)
	}

	a1.proc.Restart()
	f.waitVersions("fm", 30*time.Second, map[string]string{"a1": "p0.c4.n0", "a2": "p0.c4.n0"})
	f.waitHome("a1", "fm", 5*time.Second, last)
	// It went straight to the newest commit and reloaded for it.
	if r := cfgReloads(t, a1, "fm"); !slices.Equal(r, []string{"p0.c4.n0"}) {
		t.Errorf("a1's reloads: %q, want one, for p0.c4.n0", r)
	}

	// No supernode: the agent starts from its own disk.
	f.sn.Kill()
	a1.proc.Kill()
	a1.proc.Restart()
	testcluster.Eventually(t, 30*time.Second, func() error {
		log := a1.proc.Log()
		if !strings.Contains(log, "starting from the last known state") || strings.Count(log, "agent running") < 3 {
			return errors.New("a1 has not started without the supernode")
		}
		return nil
	})
	time.Sleep(2 * time.Second)
	select {
	case <-a1.proc.Done():
		t.Fatalf("a1 exited while the supernode was down:\n%s", a1.proc.Log())
	default:
	}
	if got, err := cfgReadTree(a1.home("fm")); err != nil || cfgCompare(got, last) != nil {
		t.Fatalf("a1's home with the supernode down: %v %v", cfgCompare(got, last), err)
	}

	back := time.Now()
	f.sn.Restart()
	f.sn.WaitLive(t)
	testcluster.Eventually(t, 60*time.Second, func() error {
		got, err := f.statuses("fm")
		if err != nil {
			return err
		}
		if st := got["a1"]; st.Version != "p0.c4.n0" || st.Error != "" || !st.Time.After(back) {
			return fmt.Errorf("a1 has not reported since the supernode came back: %+v", st)
		}
		return nil
	})
	// And it follows again.
	next := maps.Clone(last)
	next["gen5.xml"] = []byte("<gen n=\"5\"/>\n")
	f.publish(cfgWriteTree(t, next), "--component", "fm")
	f.waitVersions("fm", 30*time.Second, map[string]string{"a1": "p0.c5.n0", "a2": "p0.c5.n0"})
	f.waitHome("a1", "fm", 5*time.Second, next)
	if r := cfgReloads(t, a1, "fm"); !slices.Equal(r, []string{"p0.c4.n0", "p0.c5.n0"}) {
		t.Errorf("a1's reloads: %q", r)
	}
}

// 8. rollback restores an earlier commit's bytes; verify compares a local
// tree with the newest commit; oversized files and commits are refused.
func TestConfigRollbackVerifyAndLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	names := []string{"a1", "a2"}
	f := newCfgFed(t, names, "wf")
	layer := []string{"--component", "wf"}
	v1 := cfgBytes(map[string]string{
		"workflow.properties": "wengine.threads=4\n",
		"tasks/ingest.xml":    "<task name=\"ingest\"/>\n",
		"tasks/publish.xml":   "<task name=\"publish\"/>\n",
	})
	v2 := cfgBytes(map[string]string{
		"workflow.properties": "wengine.threads=16\n",
		"tasks/ingest.xml":    "<task name=\"ingest\"/>\n",
		"tasks/qc.xml":        "<task name=\"qc\"/>\n",
	})
	src1, src2 := cfgWriteTree(t, v1), cfgWriteTree(t, v2)
	f.publish(src1, layer...)
	f.publish(src2, layer...)
	f.waitVersions("wf", 30*time.Second, cfgEach(names, "p0.c2.n0"))
	for _, name := range names {
		f.waitHome(name, "wf", 5*time.Second, v2)
	}
	out, err := f.admin("config", "diff", "--project", cfgProject, "--component", "wf", "1", "2")
	if want := "removed\ttasks/publish.xml\nadded\ttasks/qc.xml\nchanged\tworkflow.properties\n"; err != nil || out != want {
		t.Errorf("config diff 1 2 = %q, %v; want %q", out, err, want)
	}

	if _, err := f.admin("config", "rollback", "--project", cfgProject, "--component", "wf", "1"); err != nil {
		t.Fatal(err)
	}
	f.waitVersions("wf", 30*time.Second, cfgEach(names, "p0.c3.n0"))
	for _, name := range names {
		f.waitHome(name, "wf", 5*time.Second, v1)
		if r := cfgReloads(t, f.nodes[name], "wf"); len(r) == 0 || r[len(r)-1] != "p0.c3.n0" {
			t.Errorf("%s reloads %q", name, r)
		}
	}
	h := f.history(layer...)
	if len(h) != 3 || h[0].Seq != 3 || h[0].Message != "roll back to commit 1" {
		t.Errorf("history after rollback: %+v", h)
	}
	if out, err := f.admin("config", "diff", "--project", cfgProject, "--component", "wf", "1", "3"); err != nil || out != "" {
		t.Errorf("config diff 1 3 = %q, %v; want nothing", out, err)
	}
	if code, _, stderr := f.cli("config", "rollback", "--project", cfgProject, "--component", "wf", "9"); code == 0 || !strings.Contains(stderr, "no commit 9") {
		t.Errorf("rollback to a commit that does not exist: exit %d\n%s", code, stderr)
	}

	// verify: the rolled-back tree is identical to the newest commit.
	code, stdout, stderr := f.cli("config", "verify", "--project", cfgProject, "--component", "wf", src1)
	if code != 0 || !strings.Contains(stdout, "identical to commit 3") {
		t.Errorf("verify of the published tree: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = f.cli("config", "verify", "--project", cfgProject, "--component", "wf", src2)
	if want := "removed\ttasks/publish.xml\nadded\ttasks/qc.xml\nchanged\tworkflow.properties\n"; code == 0 || stdout != want {
		t.Errorf("verify of another tree: exit %d, stdout %q, want %q\n%s", code, stdout, want, stderr)
	}
	if !strings.Contains(stderr, "3 files differ from commit 3") {
		t.Errorf("verify's error: %s", stderr)
	}

	// Limits: a file over 1 MiB, or a commit over 4 MiB, is refused with
	// an error that says so, and nothing is published.
	big := cfgWriteTree(t, map[string][]byte{"small.txt": []byte("x\n"), "data/big.bin": bytes.Repeat([]byte{'b'}, configsync.MaxFileBytes+1)})
	code, _, stderr = f.cli("config", "publish", "--project", cfgProject, "--component", "wf", big)
	if code == 0 || !strings.Contains(stderr, "data/big.bin") || !strings.Contains(stderr, strconv.Itoa(configsync.MaxFileBytes)) {
		t.Errorf("publish of a file over 1 MiB: exit %d\n%s", code, stderr)
	}
	huge := map[string][]byte{}
	for i := range 4 {
		huge[fmt.Sprintf("part%d.bin", i)] = bytes.Repeat([]byte{byte('0' + i)}, configsync.MaxFileBytes)
	}
	huge["one-more.txt"] = []byte("over the top\n")
	code, _, stderr = f.cli("config", "publish", "--project", cfgProject, "--component", "wf", cfgWriteTree(t, huge))
	if code == 0 || !strings.Contains(stderr, strconv.Itoa(configsync.MaxCommitBytes)) {
		t.Errorf("publish of a commit over 4 MiB: exit %d\n%s", code, stderr)
	}
	if h := f.history(layer...); len(h) != 3 {
		t.Errorf("refused publishes made commits: %d in the history", len(h))
	}
	for _, name := range names {
		f.waitHome(name, "wf", time.Second, v1)
	}
}
