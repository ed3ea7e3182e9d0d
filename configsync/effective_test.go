package configsync_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/fedkeeper/fedkeeper/configsync"
)

// effectiveFiles reads an effective configuration as path → content, and
// checks each file's hash.
func effectiveFiles(t *testing.T, eff configsync.Effective) map[string]string {
	t.Helper()
	out := map[string]string{}
	for i, f := range eff.Files {
		if i > 0 && eff.Files[i-1].Path >= f.Path {
			t.Errorf("effective files not sorted by path: %q before %q", eff.Files[i-1].Path, f.Path)
		}
		if f.SHA256 != storeHash(f.Content) {
			t.Errorf("%s: sha256 %s, content hashes to %s", f.Path, f.SHA256, storeHash(f.Content))
		}
		out[f.Path] = string(f.Content)
	}
	return out
}

func TestEffectiveMergesLayers(t *testing.T) {
	e := newStoreEnv(t)
	project := configsync.Layer{Project: "CMIP6"}
	filemgr := configsync.Layer{Project: "CMIP6", Component: "filemgr"}
	nodeA := configsync.Layer{Project: "CMIP6", Component: "filemgr", Node: "node-a"}

	e.publish(project, map[string]string{
		"etc/logging.properties": "# logging for every component\nlevel=INFO\nhandlers=console\n",
		"etc/site.txt":           "project site\n",
		"policy/elements.xml":    "<elements project/>\n",
	}, "project 1")
	pc := e.publish(project, map[string]string{
		"etc/logging.properties": "# logging for every component\nlevel=INFO\nhandlers=console\n",
		"etc/site.txt":           "project site\n",
		"policy/elements.xml":    "<elements project/>\n",
		"etc/federation.txt":     "federation\n",
	}, "project 2")
	e.publish(filemgr, map[string]string{
		"etc/logging.properties": "# the component's comment is dropped\nlevel=FINE\nfile=/var/log/fm.log\n",
		"policy/elements.xml":    "<elements filemgr/>\n",
		"etc/filemgr.properties": "# file manager\nport=9000\ncatalog=lucene\n",
	}, "component 1")
	e.publish(filemgr, map[string]string{
		"etc/logging.properties": "# the component's comment is dropped\nlevel=FINE\nfile=/var/log/fm.log\n",
		"policy/elements.xml":    "<elements filemgr/>\n",
		"etc/filemgr.properties": "# file manager\nport=9000\ncatalog=lucene\n",
	}, "component 2")
	cc := e.publish(filemgr, map[string]string{
		"etc/logging.properties": "# the component's comment is dropped\nlevel=FINE\nfile=/var/log/fm.log\n",
		"policy/elements.xml":    "<elements filemgr/>\n",
		"etc/filemgr.properties": "# file manager\nport=9000\ncatalog=lucene\n",
	}, "component 3")
	nc := e.publish(nodeA, map[string]string{
		"etc/filemgr.properties": "port=9100\n",
		"etc/logging.properties": "level=WARNING\n",
		"etc/site.txt":           "node a's site\n",
		"etc/node.txt":           "only on node a\n",
	}, "node 1")
	// Other components' and other nodes' files stay out.
	e.publish(configsync.Layer{Project: "CMIP6", Component: "thredds"}, map[string]string{"etc/site.txt": "thredds\n", "catalog.xml": "<c/>"}, "")
	e.publish(configsync.Layer{Project: "CMIP6", Component: "filemgr", Node: "node-b"}, map[string]string{"etc/site.txt": "node b\n", "b.txt": "b"}, "")
	e.publish(configsync.Layer{Project: "CORDEX"}, map[string]string{"etc/site.txt": "cordex\n", "cordex.txt": "c"}, "")

	t.Run("component on its own", func(t *testing.T) {
		eff, err := e.cs.Effective(e.ctx, "CMIP6", "filemgr", "")
		if err != nil {
			t.Fatal(err)
		}
		if eff.Project != "CMIP6" || eff.Component != "filemgr" || eff.Node != "" {
			t.Errorf("effective names %q/%q/%q", eff.Project, eff.Component, eff.Node)
		}
		if eff.Version != "p2.c3" {
			t.Errorf("version = %q, want p2.c3", eff.Version)
		}
		// The revision is its layers' newest change, not the store's:
		// publishes to other layers came later.
		if eff.Revision != cc.Revision {
			t.Errorf("revision = %d, want the component's last commit's %d", eff.Revision, cc.Revision)
		}
		want := map[string]string{
			"etc/logging.properties": "# logging for every component\nlevel=FINE\nhandlers=console\nfile=/var/log/fm.log\n",
			"etc/site.txt":           "project site\n",
			"etc/federation.txt":     "federation\n",
			"policy/elements.xml":    "<elements filemgr/>\n",
			"etc/filemgr.properties": "# file manager\nport=9000\ncatalog=lucene\n",
		}
		if got := effectiveFiles(t, eff); !maps.Equal(got, want) {
			t.Errorf("effective files:\n got %q\nwant %q", got, want)
		}
	})

	t.Run("node overrides", func(t *testing.T) {
		eff, err := e.cs.Effective(e.ctx, "CMIP6", "filemgr", "node-a")
		if err != nil {
			t.Fatal(err)
		}
		if eff.Node != "node-a" {
			t.Errorf("node = %q", eff.Node)
		}
		if eff.Version != "p2.c3.n1" {
			t.Errorf("version = %q, want p2.c3.n1", eff.Version)
		}
		if eff.Revision != nc.Revision {
			t.Errorf("revision = %d, want the node layer's commit's %d", eff.Revision, nc.Revision)
		}
		want := map[string]string{
			"etc/logging.properties": "# logging for every component\nlevel=WARNING\nhandlers=console\nfile=/var/log/fm.log\n",
			"etc/site.txt":           "node a's site\n",
			"etc/federation.txt":     "federation\n",
			"policy/elements.xml":    "<elements filemgr/>\n",
			"etc/filemgr.properties": "# file manager\nport=9100\ncatalog=lucene\n",
			"etc/node.txt":           "only on node a\n",
		}
		if got := effectiveFiles(t, eff); !maps.Equal(got, want) {
			t.Errorf("effective files:\n got %q\nwant %q", got, want)
		}
	})

	t.Run("node without overrides", func(t *testing.T) {
		eff, err := e.cs.Effective(e.ctx, "CMIP6", "filemgr", "node-c")
		if err != nil {
			t.Fatal(err)
		}
		if eff.Version != "p2.c3.n0" {
			t.Errorf("version = %q, want p2.c3.n0", eff.Version)
		}
		if eff.Revision != cc.Revision {
			t.Errorf("revision = %d, want the component's last commit's %d", eff.Revision, cc.Revision)
		}
		plain, err := e.cs.Effective(e.ctx, "CMIP6", "filemgr", "")
		if err != nil {
			t.Fatal(err)
		}
		if got, want := effectiveFiles(t, eff), effectiveFiles(t, plain); !maps.Equal(got, want) {
			t.Errorf("a node without overrides gets %q, want the component's %q", got, want)
		}
	})

	t.Run("project files reach every component", func(t *testing.T) {
		eff, err := e.cs.Effective(e.ctx, "CMIP6", "solr", "node-a")
		if err != nil {
			t.Fatal(err)
		}
		if eff.Version != "p2.c0.n0" {
			t.Errorf("version = %q, want p2.c0.n0", eff.Version)
		}
		if eff.Revision != pc.Revision {
			t.Errorf("revision = %d, want the project's last commit's %d", eff.Revision, pc.Revision)
		}
		want := map[string]string{
			"etc/logging.properties": "# logging for every component\nlevel=INFO\nhandlers=console\n",
			"etc/site.txt":           "project site\n",
			"policy/elements.xml":    "<elements project/>\n",
			"etc/federation.txt":     "federation\n",
		}
		if got := effectiveFiles(t, eff); !maps.Equal(got, want) {
			t.Errorf("effective files:\n got %q\nwant %q", got, want)
		}
	})

	t.Run("empty component", func(t *testing.T) {
		eff, err := e.cs.Effective(e.ctx, "obs4MIPs", "solr", "")
		if err != nil {
			t.Fatal(err)
		}
		if eff.Files == nil || len(eff.Files) != 0 {
			t.Errorf("files = %#v, want an empty list", eff.Files)
		}
		if eff.Version != "p0.c0" {
			t.Errorf("version = %q, want p0.c0", eff.Version)
		}
		if eff.Revision != 0 {
			t.Errorf("revision = %d, want 0: no layer has changed", eff.Revision)
		}
		eff, err = e.cs.Effective(e.ctx, "obs4MIPs", "solr", "node-a")
		if err != nil {
			t.Fatal(err)
		}
		if eff.Version != "p0.c0.n0" || len(eff.Files) != 0 {
			t.Errorf("with a node: version %q, %d files, want p0.c0.n0 and none", eff.Version, len(eff.Files))
		}
	})

	t.Run("bad names", func(t *testing.T) {
		for _, args := range [][3]string{
			{"CMIP/6", "filemgr", ""},
			{"CMIP6", "File_Mgr", ""},
			{"CMIP6", "filemgr", "Node_A"},
			{"CMIP6", "", ""},
			{"CMIP6", "", "node-a"},
		} {
			if _, err := e.cs.Effective(e.ctx, args[0], args[1], args[2]); !errors.Is(err, configsync.ErrInvalid) {
				t.Errorf("Effective%q = %v, want ErrInvalid", args, err)
			}
		}
	})
}

// A project-level properties file merges with the component's, and the
// result with the node's; a non-properties file is taken whole from the
// strongest layer that has it.
func TestEffectivePropertiesAlongTheChain(t *testing.T) {
	e := newStoreEnv(t)
	e.publish(configsync.Layer{Project: "CORDEX"}, map[string]string{
		"a.properties": "# project\nx=1\ny: 2\nz 3\nlist=a,\\\n  b\n",
		"a.conf":       "x=1\ny=2\n",
	}, "")
	e.publish(configsync.Layer{Project: "CORDEX", Component: "wm"}, map[string]string{
		"a.properties": "y=20\nnew=c\n",
		"a.conf":       "y=20\n",
	}, "")
	e.publish(configsync.Layer{Project: "CORDEX", Component: "wm", Node: "n1"}, map[string]string{
		"a.properties": "z=30\nlist=c\nnew=n\nnode=1\n",
	}, "")
	eff, err := e.cs.Effective(e.ctx, "CORDEX", "wm", "n1")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"a.properties": "# project\nx=1\ny=20\nz=30\nlist=c\nnew=n\nnode=1\n",
		"a.conf":       "y=20\n",
	}
	if got := effectiveFiles(t, eff); !maps.Equal(got, want) {
		t.Errorf("effective files:\n got %q\nwant %q", got, want)
	}
}

func TestMergeProperties(t *testing.T) {
	for _, tc := range []struct {
		name, base, upper, want string
	}{
		{
			name:  "base keeps comments and order, values replaced in place, new keys appended",
			base:  "# header\n\na=1\n! bang comment\nb=2\nc=3\n",
			upper: "c=30\nnew1=x\na=10\nnew2=y\n",
			want:  "# header\n\na=10\n! bang comment\nb=2\nc=30\nnew1=x\nnew2=y\n",
		},
		{
			name:  "colon and whitespace separators",
			base:  "a:1\nb 2\nc\t3\nd = 4\ne : 5\n",
			upper: "a=10\nb:20\nc 30\nd=40\ne\t50\n",
			want:  "a=10\nb:20\nc 30\nd=40\ne\t50\n",
		},
		{
			name:  "leading whitespace before a key",
			base:  "  a = 1\n\tb=2\n",
			upper: "a=10\n   b = 20\n",
			want:  "a=10\n   b = 20\n",
		},
		{
			name:  "continued line in base is replaced whole",
			base:  "paths=/a,\\\n  /b,\\\n  /c\nx=1\n",
			upper: "paths=/d\n",
			want:  "paths=/d\nx=1\n",
		},
		{
			name:  "continued line in upper replaces whole",
			base:  "paths=/a\nx=1\n",
			upper: "paths=/c,\\\n  /d\n",
			want:  "paths=/c,\\\n  /d\nx=1\n",
		},
		{
			name:  "a continuation that looks like a key is part of the value",
			base:  "paths=/a,\\\nx=1\ny=2\n",
			upper: "x=10\n",
			want:  "paths=/a,\\\nx=1\ny=2\nx=10\n",
		},
		{
			name:  "an escaped backslash at the end does not continue",
			base:  "dir=C:\\\\\nb=1\n",
			upper: "b=2\n",
			want:  "dir=C:\\\\\nb=2\n",
		},
		{
			name:  "a comment in base ending in a backslash does not continue",
			base:  "# C:\\dir\\\na=1\n",
			upper: "a=2\n",
			want:  "# C:\\dir\\\na=2\n",
		},
		{
			name:  "a comment in upper ending in a backslash does not hide the next key",
			base:  "a=1\nb=1\n",
			upper: "# on Windows: C:\\\na=2\n  ! also\\\nb=2\n",
			want:  "a=2\nb=2\n",
		},
		{
			name:  "a continuation line starting with a hash is value, not comment",
			base:  "a=x,\\\n#y\nb=1\n",
			upper: "b=2\n",
			want:  "a=x,\\\n#y\nb=2\n",
		},
		{
			name:  "a backslash before trailing blanks escapes a blank, not the line end",
			base:  "a=0\nb=1\n",
			upper: "a=x\\ \nb=2\n",
			want:  "a=x\\ \nb=2\n",
		},
		{
			name:  "escaped equals sign in a key",
			base:  "a\\=b=1\na=2\n",
			upper: "a\\=b=3\n",
			want:  "a\\=b=3\na=2\n",
		},
		{
			name:  "escaped equals sign is not the plain key",
			base:  "a\\=b=1\na=2\n",
			upper: "a=20\n",
			want:  "a\\=b=1\na=20\n",
		},
		{
			name:  "escaped space and colon in keys",
			base:  "a\\ b=1\nc\\:d=2\na=3\nc=4\n",
			upper: "a\\ b=10\nc\\:d 20\n",
			want:  "a\\ b=10\nc\\:d 20\na=3\nc=4\n",
		},
		{
			name:  "upper comments and blank lines are dropped",
			base:  "a=1\n",
			upper: "# why\n\n! also\nb=2\n",
			want:  "a=1\nb=2\n",
		},
		{
			name:  "the last value of a key repeated in upper wins",
			base:  "a=1\n",
			upper: "a=2\nb=1\na=3\n",
			want:  "a=3\nb=1\n",
		},
		{
			name:  "a key repeated in base is replaced everywhere",
			base:  "a=1\nb=2\na=1\n",
			upper: "a=9\n",
			want:  "a=9\nb=2\na=9\n",
		},
		{
			name:  "key without value",
			base:  "flag\nx=1\n",
			upper: "flag=on\n",
			want:  "flag=on\nx=1\n",
		},
		{
			name:  "empty upper keeps base",
			base:  "# c\na=1\n",
			upper: "",
			want:  "# c\na=1\n",
		},
		{
			name:  "empty base takes upper's properties",
			base:  "",
			upper: "# dropped\nb=2\na=1\n",
			want:  "b=2\na=1\n",
		},
		{
			name:  "missing final newline",
			base:  "a=1\nb=2",
			upper: "b=3",
			want:  "a=1\nb=3\n",
		},
		{
			name:  "key case matters",
			base:  "Key=1\n",
			upper: "key=2\n",
			want:  "Key=1\nkey=2\n",
		},
		{
			name:  "a value holding separators",
			base:  "url=http://a:80/x?y=z\n",
			upper: "url=http://b:81/\n",
			want:  "url=http://b:81/\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := string(configsync.MergeProperties([]byte(tc.base), []byte(tc.upper)))
			if got != tc.want {
				t.Errorf("MergeProperties(%q, %q)\n got %q\nwant %q", tc.base, tc.upper, got, tc.want)
			}
		})
	}
}

// waitEffectiveResult runs WaitEffective in the background and reports
// when it returns.
func waitEffectiveResult(ctx context.Context, cs *configsync.Store, project, component, node string, after int64) <-chan time.Duration {
	done := make(chan time.Duration, 1)
	start := time.Now()
	go func() {
		cs.WaitEffective(ctx, project, component, node, after)
		done <- time.Since(start)
	}()
	return done
}

func TestWaitEffective(t *testing.T) {
	e := newStoreEnv(t)
	const project, component, node = "CMIP6", "filemgr", "node-a"
	layers := map[string]configsync.Layer{
		"project":   {Project: project},
		"component": {Project: project, Component: component},
		"node":      {Project: project, Component: component, Node: node},
	}
	for _, name := range []string{"project", "component", "node"} {
		t.Run("wakes on a publish to the "+name+" layer", func(t *testing.T) {
			eff, err := e.cs.Effective(e.ctx, project, component, node)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(e.ctx, 20*time.Second)
			defer cancel()
			done := waitEffectiveResult(ctx, e.cs, project, component, node, eff.Revision)
			select {
			case <-done:
				t.Fatal("WaitEffective returned before anything changed")
			case <-time.After(200 * time.Millisecond):
			}
			e.publish(layers[name], map[string]string{name + ".txt": fmt.Sprint(time.Now().UnixNano())}, "")
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatalf("WaitEffective did not return within 10s of a publish to the %s layer", name)
			}
			after, err := e.cs.Effective(e.ctx, project, component, node)
			if err != nil {
				t.Fatal(err)
			}
			if after.Revision <= eff.Revision || after.Version == eff.Version {
				t.Errorf("after the publish: revision %d version %s, before %d %s", after.Revision, after.Version, eff.Revision, eff.Version)
			}
		})
	}

	t.Run("returns at once for a change already made", func(t *testing.T) {
		eff, err := e.cs.Effective(e.ctx, project, component, node)
		if err != nil {
			t.Fatal(err)
		}
		e.publish(layers["component"], map[string]string{"again.txt": "again"}, "")
		ctx, cancel := context.WithTimeout(e.ctx, 20*time.Second)
		defer cancel()
		select {
		case <-waitEffectiveResult(ctx, e.cs, project, component, node, eff.Revision):
		case <-time.After(10 * time.Second):
			t.Fatal("WaitEffective did not return for a change made after the given revision")
		}
	})

	t.Run("blocks until the context ends when nothing of it changes", func(t *testing.T) {
		eff, err := e.cs.Effective(e.ctx, project, component, node)
		if err != nil {
			t.Fatal(err)
		}
		// The store moves on after the revision read: that alone is no
		// reason to wake.
		e.publish(configsync.Layer{Project: project, Component: "solr"}, map[string]string{"x": "0"}, "")
		const wait = 1500 * time.Millisecond
		ctx, cancel := context.WithTimeout(e.ctx, wait)
		defer cancel()
		done := waitEffectiveResult(ctx, e.cs, project, component, node, eff.Revision)
		// Changes elsewhere do not wake it: another component, another
		// node, another project, and statuses.
		e.publish(configsync.Layer{Project: project, Component: "thredds"}, map[string]string{"x": "1"}, "")
		e.publish(configsync.Layer{Project: project, Component: component, Node: "node-b"}, map[string]string{"x": "2"}, "")
		e.publish(configsync.Layer{Project: "CORDEX"}, map[string]string{"x": "3"}, "")
		e.publish(configsync.Layer{Project: project, Component: component + "-x"}, map[string]string{"x": "4"}, "")
		if err := e.cs.PutStatus(e.ctx, configsync.Status{Project: project, Component: component, Node: node, Version: eff.Version}); err != nil {
			t.Fatal(err)
		}
		select {
		case took := <-done:
			if took < wait-100*time.Millisecond {
				t.Errorf("WaitEffective returned after %s, before its context ended (%s), with no change of its layers", took, wait)
			}
		case <-time.After(wait + 10*time.Second):
			t.Fatal("WaitEffective did not return when its context ended")
		}
	})

	t.Run("returns when the context is cancelled", func(t *testing.T) {
		eff, err := e.cs.Effective(e.ctx, project, component, "")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(e.ctx)
		done := waitEffectiveResult(ctx, e.cs, project, component, "", eff.Revision)
		time.AfterFunc(300*time.Millisecond, cancel)
		select {
		case took := <-done:
			if took < 250*time.Millisecond {
				t.Errorf("returned after %s, before the cancel", took)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("WaitEffective did not return when its context was cancelled")
		}
	})
}
