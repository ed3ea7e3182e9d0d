package configsync_test

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedkeeper/fedkeeper/configsync"
	"github.com/fedkeeper/fedkeeper/internal/storetest"
)

// storeConfigPrefix is where the package keeps layers, commits and blobs.
const storeConfigPrefix = "/fedkeeper/config/"

// storeEnv is a configuration store on a real embedded store, for one test.
type storeEnv struct {
	t   *testing.T
	ctx context.Context
	kv  *clientv3.Client
	cs  *configsync.Store
}

func newStoreEnv(t *testing.T) *storeEnv {
	t.Helper()
	st, _ := storetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return &storeEnv{t: t, ctx: ctx, kv: st.Client, cs: configsync.New(st.Client)}
}

func storeHash(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func storeInt64(n int64) *int64 { return &n }

// publish publishes files and fails the test on error.
func (e *storeEnv) publish(l configsync.Layer, files map[string]string, message string) configsync.Commit {
	e.t.Helper()
	c, err := e.cs.Publish(e.ctx, l, storeBytes(files), message, "alice", nil)
	if err != nil {
		e.t.Fatalf("publish %v: %v", l, err)
	}
	return c
}

func storeBytes(files map[string]string) map[string][]byte {
	out := make(map[string][]byte, len(files))
	for p, s := range files {
		out[p] = []byte(s)
	}
	return out
}

// keys lists every key below the configuration prefix.
func (e *storeEnv) keys() []string {
	e.t.Helper()
	resp, err := e.kv.Get(e.ctx, storeConfigPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, kv := range resp.Kvs {
		out = append(out, string(kv.Key))
	}
	return out
}

func (e *storeEnv) head(l configsync.Layer) int64 {
	e.t.Helper()
	seq, err := e.cs.Head(e.ctx, l)
	if err != nil {
		e.t.Fatal(err)
	}
	return seq
}

// files reads the bytes of a commit as path → content.
func (e *storeEnv) files(c configsync.Commit) map[string]string {
	e.t.Helper()
	fs, err := e.cs.Files(e.ctx, c)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]string{}
	for _, f := range fs {
		out[f.Path] = string(f.Content)
	}
	return out
}

func TestValidatePath(t *testing.T) {
	accepted := []string{
		"etc/filemgr.properties",
		"policy/elements.xml",
		"a.b/c-d_e",
		"a",
		"..a/b..",
		strings.Repeat("a", configsync.MaxPathLen),
	}
	for _, p := range accepted {
		if err := configsync.ValidatePath(p); err != nil {
			t.Errorf("ValidatePath(%.40q) = %v, want accepted", p, err)
		}
	}
	refused := map[string]string{
		"empty":              "",
		"absolute":           "/etc/x",
		"parent":             "../x",
		"inner parent":       "a/../b",
		"bare parent":        "..",
		"empty segment":      "a//b",
		"trailing slash":     "a/",
		"leading dot":        "./a",
		"trailing dot":       "a/.",
		"inner dot":          "a/./b",
		"backslash":          "a\\b",
		"windows parent":     "..\\x",
		"NUL":                "a\x00b",
		"tab":                "a\tb",
		"newline":            "a\nb",
		"carriage return":    "a\rb",
		"DEL":                "a\x7fb",
		"longer than limit":  strings.Repeat("a", configsync.MaxPathLen+1),
		"long with segments": strings.Repeat("ab/", 171),
	}
	for name, p := range refused {
		t.Run(name, func(t *testing.T) {
			err := configsync.ValidatePath(p)
			if err == nil {
				t.Fatalf("ValidatePath(%.40q) accepted, want refused", p)
			}
			if !errors.Is(err, configsync.ErrInvalid) {
				t.Errorf("ValidatePath(%.40q) = %v, does not wrap ErrInvalid", p, err)
			}
		})
	}
}

func TestLayerValidate(t *testing.T) {
	for _, l := range []configsync.Layer{
		{Project: "CMIP6"},
		{Project: "obs4MIPs", Component: "filemgr"},
		{Project: "CORDEX", Component: "thredds-1", Node: "node-a"},
	} {
		if err := l.Validate(); err != nil {
			t.Errorf("%+v: %v, want valid", l, err)
		}
	}
	for name, l := range map[string]configsync.Layer{
		"no project":                {},
		"project with underscore":   {Project: "CMIP_6"},
		"project with slash":        {Project: "a/b"},
		"project with leading dash": {Project: "-x"},
		"project too long":          {Project: strings.Repeat("p", 64)},
		"component upper case":      {Project: "CMIP6", Component: "FileMgr"},
		"component with slash":      {Project: "CMIP6", Component: "a/b"},
		"component with dot":        {Project: "CMIP6", Component: "a.b"},
		"component with underscore": {Project: "CMIP6", Component: "file_mgr"},
		"component trailing dash":   {Project: "CMIP6", Component: "fm-"},
		"component too long":        {Project: "CMIP6", Component: strings.Repeat("c", 64)},
		"node without component":    {Project: "CMIP6", Node: "node-a"},
		"node upper case":           {Project: "CMIP6", Component: "fm", Node: "Node-A"},
		"node with slash":           {Project: "CMIP6", Component: "fm", Node: "a/b"},
		"node with dot":             {Project: "CMIP6", Component: "fm", Node: "node.example"},
	} {
		t.Run(name, func(t *testing.T) {
			err := l.Validate()
			if err == nil {
				t.Fatalf("%+v accepted, want refused", l)
			}
			if !errors.Is(err, configsync.ErrInvalid) {
				t.Errorf("%+v: %v does not wrap ErrInvalid", l, err)
			}
		})
	}
}

func TestPublishFirstCommitAndReplace(t *testing.T) {
	e := newStoreEnv(t)
	l := configsync.Layer{Project: "CMIP6", Component: "filemgr"}
	if got := e.head(l); got != 0 {
		t.Fatalf("head of an empty layer = %d, want 0", got)
	}
	first := map[string]string{
		"etc/filemgr.properties": "a=1\n",
		"policy/elements.xml":    "<elements/>\n",
		"empty.txt":              "",
	}
	c1, err := e.cs.Publish(e.ctx, l, storeBytes(first), "first", "alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c1.Seq != 1 || c1.Author != "alice" || c1.Message != "first" || c1.Revision <= 0 || c1.Time.IsZero() {
		t.Errorf("first commit = %+v, want seq 1 by alice with message, revision and time", c1)
	}
	if len(c1.Files) != len(first) {
		t.Errorf("first commit has %d files, want %d", len(c1.Files), len(first))
	}
	for p, s := range first {
		want := configsync.FileRef{SHA256: storeHash([]byte(s)), Size: len(s)}
		if c1.Files[p] != want {
			t.Errorf("ref of %s = %+v, want %+v", p, c1.Files[p], want)
		}
	}
	if got := e.head(l); got != 1 {
		t.Errorf("head = %d, want 1", got)
	}
	head, err := e.cs.Commit(e.ctx, l, 0)
	if err != nil {
		t.Fatal(err)
	}
	if head.Seq != 1 || !maps.Equal(head.Files, c1.Files) || head.Revision != c1.Revision {
		t.Errorf("head commit = %+v, want %+v", head, c1)
	}
	if got := e.files(head); !maps.Equal(got, first) {
		t.Errorf("files of commit 1 = %q, want %q", got, first)
	}

	// The second publish is the whole new file set: what it leaves out is
	// gone from the head, but stays in commit 1.
	second := map[string]string{
		"etc/filemgr.properties": "a=2\n",
		"etc/new.xml":            "<new/>",
	}
	c2 := e.publish(l, second, "second")
	if c2.Seq != 2 || c2.Revision <= c1.Revision {
		t.Errorf("second commit = seq %d at revision %d, want seq 2 after revision %d", c2.Seq, c2.Revision, c1.Revision)
	}
	head, err = e.cs.Commit(e.ctx, l, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := slices.Sorted(maps.Keys(head.Files)); !slices.Equal(got, []string{"etc/filemgr.properties", "etc/new.xml"}) {
		t.Errorf("head files = %v, want only the second publish's", got)
	}
	if got := e.files(head); !maps.Equal(got, second) {
		t.Errorf("files of head = %q, want %q", got, second)
	}
	old, err := e.cs.Commit(e.ctx, l, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.files(old); !maps.Equal(got, first) {
		t.Errorf("commit 1 after a second publish = %q, want %q", got, first)
	}

	// Layers are independent: the project's and another component's
	// heads did not move.
	for _, other := range []configsync.Layer{{Project: "CMIP6"}, {Project: "CMIP6", Component: "other"}, {Project: "CMIP6", Component: "filemgr", Node: "n1"}, {Project: "CORDEX", Component: "filemgr"}} {
		if got := e.head(other); got != 0 {
			t.Errorf("head of %+v = %d, want 0", other, got)
		}
	}
}

func TestPublishAllOrNothing(t *testing.T) {
	e := newStoreEnv(t)
	l := configsync.Layer{Project: "CMIP6", Component: "filemgr"}
	base := e.publish(l, map[string]string{"etc/a.properties": "a=1\n"}, "base")

	big := func(n int, fill byte) []byte { return bytes.Repeat([]byte{fill}, n) }
	tooMany := map[string][]byte{}
	for i := range configsync.MaxFiles + 1 {
		tooMany[fmt.Sprintf("f/%04d.txt", i)] = []byte(fmt.Sprintf("too many %d", i))
	}
	overTotal := map[string][]byte{}
	for i := range configsync.MaxCommitBytes/configsync.MaxFileBytes + 1 {
		overTotal[fmt.Sprintf("big/%d.bin", i)] = big(configsync.MaxFileBytes, byte('a'+i))
	}
	for _, tc := range []struct {
		name  string
		layer configsync.Layer
		files map[string][]byte
		want  error
	}{
		{"one bad path", l, map[string][]byte{"ok/one.txt": []byte("bad path sibling 1"), "ok/two.txt": []byte("bad path sibling 2"), "../escape": []byte("bad path")}, configsync.ErrInvalid},
		{"one absolute path", l, map[string][]byte{"ok/three.txt": []byte("absolute sibling"), "/etc/passwd": []byte("absolute")}, configsync.ErrInvalid},
		{"one oversized file", l, map[string][]byte{"ok/four.txt": []byte("oversized sibling"), "huge.bin": big(configsync.MaxFileBytes+1, 'x')}, configsync.ErrTooLarge},
		{"total over the commit limit", l, overTotal, configsync.ErrTooLarge},
		{"more files than the limit", l, tooMany, configsync.ErrTooLarge},
		{"file that is a directory of another", l, map[string][]byte{"a": []byte("file a"), "a/b": []byte("file a/b")}, configsync.ErrInvalid},
		{"file that is a deep directory of another", l, map[string][]byte{"x/y": []byte("file x/y"), "x/y/z/w": []byte("file x/y/z/w")}, configsync.ErrInvalid},
		{"bad layer", configsync.Layer{Project: "CMIP6", Node: "n1"}, map[string][]byte{"ok.txt": []byte("bad layer")}, configsync.ErrInvalid},
		{"message too long", l, map[string][]byte{"ok.txt": []byte("long message")}, configsync.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.keys()
			msg := "refused"
			if tc.name == "message too long" {
				msg = strings.Repeat("m", 1025)
			}
			_, err := e.cs.Publish(e.ctx, tc.layer, tc.files, msg, "alice", nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Publish = %v, want %v", err, tc.want)
			}
			if after := e.keys(); !slices.Equal(after, before) {
				t.Errorf("a refused publish wrote keys: before %d, after %d: %v", len(before), len(after), storeNewKeys(before, after))
			}
			for p, b := range tc.files {
				resp, err := e.kv.Get(e.ctx, storeConfigPrefix+"blobs/"+storeHash(b), clientv3.WithCountOnly())
				if err != nil {
					t.Fatal(err)
				}
				if resp.Count != 0 {
					t.Errorf("the blob of %s was stored by a refused publish", p)
				}
			}
			if got := e.head(l); got != base.Seq {
				t.Errorf("head = %d after a refused publish, want %d", got, base.Seq)
			}
		})
	}

	// The limits themselves are allowed.
	c, err := e.cs.Publish(e.ctx, l, map[string][]byte{"max.bin": big(configsync.MaxFileBytes, 'm')}, "", "alice", nil)
	if err != nil {
		t.Fatalf("a file of exactly MaxFileBytes: %v", err)
	}
	if c.Files["max.bin"].Size != configsync.MaxFileBytes {
		t.Errorf("size of max.bin = %d, want %d", c.Files["max.bin"].Size, configsync.MaxFileBytes)
	}
	// Siblings sharing a prefix of their names are not directories of
	// each other.
	if _, err := e.cs.Publish(e.ctx, l, map[string][]byte{"a": []byte("1"), "ab/c": []byte("2"), "a.d/e": []byte("3")}, "", "alice", nil); err != nil {
		t.Errorf("files a, ab/c and a.d/e: %v", err)
	}
}

func storeNewKeys(before, after []string) []string {
	var out []string
	for _, k := range after {
		if !slices.Contains(before, k) {
			out = append(out, k)
		}
	}
	return out
}

func TestPublishExpectSeq(t *testing.T) {
	e := newStoreEnv(t)
	l := configsync.Layer{Project: "CMIP6", Component: "index"}

	// 0 is the head of an empty layer.
	c1, err := e.cs.Publish(e.ctx, l, storeBytes(map[string]string{"a.txt": "one"}), "", "alice", storeInt64(0))
	if err != nil {
		t.Fatalf("expectSeq 0 on an empty layer: %v", err)
	}
	if c1.Seq != 1 {
		t.Fatalf("seq = %d, want 1", c1.Seq)
	}
	c2, err := e.cs.Publish(e.ctx, l, storeBytes(map[string]string{"a.txt": "two"}), "", "alice", storeInt64(1))
	if err != nil {
		t.Fatalf("expectSeq = head: %v", err)
	}
	if c2.Seq != 2 {
		t.Fatalf("seq = %d, want 2", c2.Seq)
	}

	for _, stale := range []int64{0, 1, 3} {
		t.Run("stale "+strconv.FormatInt(stale, 10), func(t *testing.T) {
			before := e.keys()
			content := []byte("stale content " + strconv.FormatInt(stale, 10))
			_, err := e.cs.Publish(e.ctx, l, map[string][]byte{"a.txt": content}, "", "bob", storeInt64(stale))
			if !errors.Is(err, configsync.ErrConflict) {
				t.Fatalf("Publish with expectSeq %d at head 2 = %v, want ErrConflict", stale, err)
			}
			if !strings.Contains(err.Error(), "commit 2") {
				t.Errorf("conflict %q does not name the current commit 2", err)
			}
			if got := e.head(l); got != 2 {
				t.Errorf("head = %d, want 2", got)
			}
			if after := e.keys(); !slices.Equal(after, before) {
				t.Errorf("a conflicting publish wrote keys %v", storeNewKeys(before, after))
			}
		})
	}
}

func TestPublishConcurrent(t *testing.T) {
	e := newStoreEnv(t)
	const n = 10

	t.Run("with expectSeq exactly one wins", func(t *testing.T) {
		l := configsync.Layer{Project: "CMIP6", Component: "race"}
		e.publish(l, map[string]string{"f": "base"}, "")
		head := e.head(l)
		var wg sync.WaitGroup
		errs := make([]error, n)
		commits := make([]configsync.Commit, n)
		for i := range n {
			wg.Go(func() {
				commits[i], errs[i] = e.cs.Publish(e.ctx, l, storeBytes(map[string]string{"f": fmt.Sprint("writer ", i)}), "", "w", storeInt64(head))
			})
		}
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil:
				if winner >= 0 {
					t.Errorf("writers %d and %d both won", winner, i)
				}
				winner = i
			case !errors.Is(err, configsync.ErrConflict):
				t.Errorf("writer %d: %v, want ErrConflict", i, err)
			}
		}
		if winner < 0 {
			t.Fatal("no writer won")
		}
		if commits[winner].Seq != head+1 {
			t.Errorf("winner's seq = %d, want %d", commits[winner].Seq, head+1)
		}
		c, err := e.cs.Commit(e.ctx, l, 0)
		if err != nil {
			t.Fatal(err)
		}
		if c.Seq != head+1 {
			t.Errorf("head = %d, want %d", c.Seq, head+1)
		}
		if got, want := e.files(c)["f"], fmt.Sprint("writer ", winner); got != want {
			t.Errorf("head holds %q, want the winner's %q", got, want)
		}
	})

	t.Run("without expectSeq all succeed in order", func(t *testing.T) {
		l := configsync.Layer{Project: "CMIP6", Component: "crowd"}
		var wg sync.WaitGroup
		errs := make([]error, n)
		commits := make([]configsync.Commit, n)
		for i := range n {
			wg.Go(func() {
				commits[i], errs[i] = e.cs.Publish(e.ctx, l, storeBytes(map[string]string{"f": fmt.Sprint("writer ", i)}), "", "w", nil)
			})
		}
		wg.Wait()
		var seqs []int64
		last := -1
		for i, err := range errs {
			if err != nil {
				t.Fatalf("writer %d: %v", i, err)
			}
			seqs = append(seqs, commits[i].Seq)
			if last < 0 || commits[i].Revision > commits[last].Revision {
				last = i
			}
		}
		slices.Sort(seqs)
		if want := []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}; !slices.Equal(seqs, want) {
			t.Errorf("seqs = %v, want %v", seqs, want)
		}
		for i := range n {
			for j := range n {
				if commits[i].Seq < commits[j].Seq && commits[i].Revision >= commits[j].Revision {
					t.Errorf("commit %d at revision %d is not before commit %d at revision %d", commits[i].Seq, commits[i].Revision, commits[j].Seq, commits[j].Revision)
				}
			}
		}
		head, err := e.cs.Commit(e.ctx, l, 0)
		if err != nil {
			t.Fatal(err)
		}
		if head.Seq != n {
			t.Errorf("head = %d, want %d", head.Seq, n)
		}
		if got, want := e.files(head)["f"], fmt.Sprint("writer ", last); got != want {
			t.Errorf("head holds %q, want the last writer's %q", got, want)
		}
		hist, err := e.cs.History(e.ctx, l, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(hist) != n {
			t.Errorf("history has %d commits, want %d", len(hist), n)
		}
	})
}

func TestHistoryAndCommit(t *testing.T) {
	e := newStoreEnv(t)
	l := configsync.Layer{Project: "obs4MIPs", Component: "solr", Node: "node-a"}

	hist, err := e.cs.History(e.ctx, l, 10)
	if err != nil {
		t.Fatal(err)
	}
	if hist == nil || len(hist) != 0 {
		t.Errorf("history of an empty layer = %#v, want an empty list", hist)
	}
	empty, err := e.cs.Commit(e.ctx, l, 0)
	if err != nil {
		t.Fatalf("Commit(0) of an empty layer: %v", err)
	}
	if empty.Seq != 0 || len(empty.Files) != 0 {
		t.Errorf("Commit(0) of an empty layer = %+v, want seq 0 with no files", empty)
	}

	var published []configsync.Commit
	for i := 1; i <= 12; i++ {
		published = append(published, e.publish(l, map[string]string{"conf/solr.xml": fmt.Sprintf("<v%d/>", i)}, fmt.Sprint("change ", i)))
	}
	// A commit of another layer whose key shares the prefix of this one
	// does not show in its history.
	e.publish(configsync.Layer{Project: "obs4MIPs", Component: "solr"}, map[string]string{"x": "y"}, "component")

	hist, err = e.cs.History(e.ctx, l, 5)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []int64
	for _, c := range hist {
		seqs = append(seqs, c.Seq)
	}
	if want := []int64{12, 11, 10, 9, 8}; !slices.Equal(seqs, want) {
		t.Errorf("history limited to 5 = %v, want %v", seqs, want)
	}
	for _, c := range hist {
		p := published[c.Seq-1]
		if c.Message != p.Message || c.Author != "alice" || c.Revision != p.Revision || !maps.Equal(c.Files, p.Files) {
			t.Errorf("history entry %+v, want %+v", c, p)
		}
	}
	all, err := e.cs.History(e.ctx, l, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 12 || all[0].Seq != 12 || all[11].Seq != 1 {
		t.Errorf("history without limit has %d commits, want 12, newest first", len(all))
	}

	head, err := e.cs.Commit(e.ctx, l, 0)
	if err != nil {
		t.Fatal(err)
	}
	if head.Seq != 12 || head.Message != "change 12" {
		t.Errorf("Commit(0) = seq %d %q, want the head, 12", head.Seq, head.Message)
	}
	c5, err := e.cs.Commit(e.ctx, l, 5)
	if err != nil {
		t.Fatal(err)
	}
	if c5.Seq != 5 || c5.Message != "change 5" || c5.Revision != published[4].Revision {
		t.Errorf("Commit(5) = %+v, want %+v", c5, published[4])
	}
	files, err := e.cs.Files(e.ctx, c5)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 || files[0].Path != "conf/solr.xml" || string(files[0].Content) != "<v5/>" {
		t.Fatalf("files of commit 5 = %+v", files)
	}
	for _, f := range files {
		if storeHash(f.Content) != f.SHA256 || f.SHA256 != c5.Files[f.Path].SHA256 {
			t.Errorf("%s: content hashes to %s, file says %s, commit says %s", f.Path, storeHash(f.Content), f.SHA256, c5.Files[f.Path].SHA256)
		}
	}

	for _, seq := range []int64{13, 100, -1} {
		if _, err := e.cs.Commit(e.ctx, l, seq); !errors.Is(err, configsync.ErrNotFound) {
			t.Errorf("Commit(%d) = %v, want ErrNotFound", seq, err)
		}
	}
	if _, err := e.cs.Commit(e.ctx, configsync.Layer{Project: "obs4MIPs", Component: "never"}, 1); !errors.Is(err, configsync.ErrNotFound) {
		t.Errorf("Commit(1) of an empty layer = %v, want ErrNotFound", err)
	}
	if _, err := e.cs.History(e.ctx, configsync.Layer{Project: "bad/project"}, 1); !errors.Is(err, configsync.ErrInvalid) {
		t.Errorf("History of a bad layer = %v, want ErrInvalid", err)
	}

	// Files sorts by path and reports missing bytes.
	many := e.publish(l, map[string]string{"z": "last", "a/b": "first", "m": "middle"}, "")
	got, err := e.cs.Files(e.ctx, many)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, f := range got {
		paths = append(paths, f.Path)
	}
	if !slices.Equal(paths, []string{"a/b", "m", "z"}) {
		t.Errorf("Files paths = %v, want sorted", paths)
	}
	missing := configsync.Commit{Files: map[string]configsync.FileRef{"gone": {SHA256: storeHash([]byte("never stored")), Size: 12}}}
	if _, err := e.cs.Files(e.ctx, missing); !errors.Is(err, configsync.ErrNotFound) {
		t.Errorf("Files of a commit whose bytes are missing = %v, want ErrNotFound", err)
	}
}

func TestRollback(t *testing.T) {
	e := newStoreEnv(t)
	l := configsync.Layer{Project: "CORDEX", Component: "thredds"}
	v1 := map[string]string{"catalog.xml": "<catalog v1/>", "threddsConfig.xml": "<config/>"}
	v2 := map[string]string{"catalog.xml": "<catalog v2/>", "extra.txt": "extra"}
	c1 := e.publish(l, v1, "one")
	e.publish(l, v2, "two")

	rb, err := e.cs.Rollback(e.ctx, l, 1, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if rb.Seq != 3 || rb.Author != "bob" {
		t.Errorf("rollback commit = seq %d by %q, want seq 3 by bob", rb.Seq, rb.Author)
	}
	if !strings.Contains(rb.Message, "1") || !strings.Contains(strings.ToLower(rb.Message), "roll") {
		t.Errorf("rollback message %q does not name commit 1", rb.Message)
	}
	if !maps.Equal(rb.Files, c1.Files) {
		t.Errorf("rollback files = %v, want commit 1's %v", rb.Files, c1.Files)
	}
	head, err := e.cs.Commit(e.ctx, l, 0)
	if err != nil {
		t.Fatal(err)
	}
	if head.Seq != 3 {
		t.Errorf("head = %d, want 3", head.Seq)
	}
	if got := e.files(head); !maps.Equal(got, v1) {
		t.Errorf("head files after rollback = %q, want %q", got, v1)
	}
	// History keeps what was rolled back.
	c2, err := e.cs.Commit(e.ctx, l, 2)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.files(c2); !maps.Equal(got, v2) {
		t.Errorf("commit 2 after rollback = %q, want %q", got, v2)
	}

	if _, err := e.cs.Rollback(e.ctx, l, 9, "bob"); !errors.Is(err, configsync.ErrNotFound) {
		t.Errorf("Rollback to a missing commit = %v, want ErrNotFound", err)
	}
	if got := e.head(l); got != 3 {
		t.Errorf("head = %d after a refused rollback, want 3", got)
	}
}

func TestDiff(t *testing.T) {
	e := newStoreEnv(t)
	l := configsync.Layer{Project: "CMIP6"}
	e.publish(l, map[string]string{
		"b/same.txt":    "same",
		"d/changed.txt": "old",
		"a/removed.txt": "bye",
		"z/removed.txt": "bye too",
	}, "")
	e.publish(l, map[string]string{
		"b/same.txt":    "same",
		"d/changed.txt": "new",
		"c/added.txt":   "hi",
		"0/added.txt":   "hello",
	}, "")

	want := []configsync.Change{
		{Path: "0/added.txt", Kind: "added"},
		{Path: "a/removed.txt", Kind: "removed"},
		{Path: "c/added.txt", Kind: "added"},
		{Path: "d/changed.txt", Kind: "changed"},
		{Path: "z/removed.txt", Kind: "removed"},
	}
	got, err := e.cs.Diff(e.ctx, l, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("Diff(1, 2) = %v, want %v", got, want)
	}
	// 0 is the head.
	if got, err := e.cs.Diff(e.ctx, l, 1, 0); err != nil || !slices.Equal(got, want) {
		t.Errorf("Diff(1, head) = %v, %v, want %v", got, err, want)
	}
	// The other way round, added and removed swap.
	back, err := e.cs.Diff(e.ctx, l, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	wantBack := []configsync.Change{
		{Path: "0/added.txt", Kind: "removed"},
		{Path: "a/removed.txt", Kind: "added"},
		{Path: "c/added.txt", Kind: "removed"},
		{Path: "d/changed.txt", Kind: "changed"},
		{Path: "z/removed.txt", Kind: "added"},
	}
	if !slices.Equal(back, wantBack) {
		t.Errorf("Diff(2, 1) = %v, want %v", back, wantBack)
	}
	same, err := e.cs.Diff(e.ctx, l, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	if same == nil || len(same) != 0 {
		t.Errorf("Diff(2, 2) = %#v, want an empty list", same)
	}
	if _, err := e.cs.Diff(e.ctx, l, 1, 7); !errors.Is(err, configsync.ErrNotFound) {
		t.Errorf("Diff to a missing commit = %v, want ErrNotFound", err)
	}
}

func TestVerify(t *testing.T) {
	c := configsync.Commit{Seq: 4, Files: map[string]configsync.FileRef{
		"etc/a.properties": {SHA256: storeHash([]byte("a=1\n")), Size: 4},
		"etc/b.xml":        {SHA256: storeHash([]byte("<b/>")), Size: 4},
		"etc/c.txt":        {SHA256: storeHash([]byte("c")), Size: 1},
	}}
	identical := map[string][]byte{"etc/a.properties": []byte("a=1\n"), "etc/b.xml": []byte("<b/>"), "etc/c.txt": []byte("c")}
	if got := configsync.Verify(identical, c); len(got) != 0 {
		t.Errorf("Verify of identical files = %v, want none", got)
	}
	local := map[string][]byte{
		"etc/a.properties": []byte("a=2\n"), // changed
		"etc/c.txt":        []byte("c"),     // same
		"etc/d.txt":        []byte("new"),   // added
		// etc/b.xml removed
	}
	want := []configsync.Change{
		{Path: "etc/a.properties", Kind: "changed"},
		{Path: "etc/b.xml", Kind: "removed"},
		{Path: "etc/d.txt", Kind: "added"},
	}
	if got := configsync.Verify(local, c); !slices.Equal(got, want) {
		t.Errorf("Verify = %v, want %v", got, want)
	}
	if got := configsync.Verify(nil, configsync.Commit{}); len(got) != 0 {
		t.Errorf("Verify of nothing against an empty commit = %v, want none", got)
	}
}

func TestStoreStatuses(t *testing.T) {
	e := newStoreEnv(t)
	put := func(st configsync.Status) {
		t.Helper()
		if err := e.cs.PutStatus(e.ctx, st); err != nil {
			t.Fatalf("PutStatus %+v: %v", st, err)
		}
	}
	start := time.Now().Add(-time.Second)
	put(configsync.Status{Project: "CMIP6", Component: "filemgr", Node: "n1", Version: "p1.c1.n0"})
	put(configsync.Status{Project: "CMIP6", Component: "filemgr", Node: "n2", Version: "p1.c1.n0", Error: "disk full"})
	put(configsync.Status{Project: "CMIP6", Component: "thredds", Node: "n1", Version: "p1.c4.n0"})
	put(configsync.Status{Project: "CMIP6", Component: "filemgr-x", Node: "n3", Version: "p1.c1.n0"})
	put(configsync.Status{Project: "CORDEX", Component: "filemgr", Node: "n1", Version: "p2.c0.n0"})
	put(configsync.Status{Project: "CMIP6-extra", Component: "filemgr", Node: "n9", Version: "p1.c1.n0"})
	put(configsync.Status{Project: "CMIP6", Component: "filemgr", Node: "xn1", Version: "p1.c1.n0"})
	put(configsync.Status{Project: "CMIP6", Component: "filemgr", Node: "n1x", Version: "p1.c1.n0"})
	// A second report replaces the first.
	put(configsync.Status{Project: "CMIP6", Component: "filemgr", Node: "n1", Version: "p1.c2.n0"})

	type row struct{ project, component, node, version, err string }
	rows := func(list []configsync.Status) []row {
		var out []row
		for _, st := range list {
			if st.Time.Before(start) || st.Time.After(time.Now().Add(time.Second)) {
				t.Errorf("status %+v has time %v, want the time it was put", st, st.Time)
			}
			out = append(out, row{st.Project, st.Component, st.Node, st.Version, st.Error})
		}
		slices.SortFunc(out, func(a, b row) int {
			return cmp.Or(strings.Compare(a.project, b.project), strings.Compare(a.component, b.component), strings.Compare(a.node, b.node))
		})
		return out
	}
	statuses := func(project, component string) []row {
		t.Helper()
		list, err := e.cs.Statuses(e.ctx, project, component)
		if err != nil {
			t.Fatal(err)
		}
		if list == nil {
			t.Errorf("Statuses(%q, %q) = nil, want a list", project, component)
		}
		return rows(list)
	}

	if got, want := statuses("CMIP6", "filemgr"), []row{
		{"CMIP6", "filemgr", "n1", "p1.c2.n0", ""},
		{"CMIP6", "filemgr", "n1x", "p1.c1.n0", ""},
		{"CMIP6", "filemgr", "n2", "p1.c1.n0", "disk full"},
		{"CMIP6", "filemgr", "xn1", "p1.c1.n0", ""},
	}; !slices.Equal(got, want) {
		t.Errorf("statuses of CMIP6/filemgr = %v, want %v", got, want)
	}
	if got := statuses("CMIP6", ""); len(got) != 6 {
		t.Errorf("statuses of CMIP6 = %v, want the 6 records of its components", got)
	}
	if got, want := statuses("CORDEX", ""), []row{{"CORDEX", "filemgr", "n1", "p2.c0.n0", ""}}; !slices.Equal(got, want) {
		t.Errorf("statuses of CORDEX = %v, want %v", got, want)
	}
	if got := statuses("obs4MIPs", ""); len(got) != 0 {
		t.Errorf("statuses of a project without any = %v, want none", got)
	}

	for name, st := range map[string]configsync.Status{
		"bad project":              {Project: "CMIP/6", Component: "filemgr", Node: "n1"},
		"no project":               {Component: "filemgr", Node: "n1"},
		"bad component":            {Project: "CMIP6", Component: "File_Mgr", Node: "n1"},
		"node without a component": {Project: "CMIP6", Node: "n1"},
		"bad node":                 {Project: "CMIP6", Component: "filemgr", Node: "N1"},
		"no node":                  {Project: "CMIP6", Component: "filemgr"},
		"no component or node":     {Project: "CMIP6", Version: "p1"},
		"version too long":         {Project: "CMIP6", Component: "filemgr", Node: "n1", Version: strings.Repeat("v", 65)},
		"error too long":           {Project: "CMIP6", Component: "filemgr", Node: "n1", Error: strings.Repeat("e", 4097)},
	} {
		t.Run(name, func(t *testing.T) {
			before := statuses(st.Project, "")
			if err := e.cs.PutStatus(e.ctx, st); !errors.Is(err, configsync.ErrInvalid) {
				t.Errorf("PutStatus(%.80v) = %v, want ErrInvalid", st, err)
			}
			if after := statuses(st.Project, ""); !slices.Equal(after, before) {
				t.Errorf("a refused status was written: %v", after)
			}
		})
	}

	if err := e.cs.ForgetNode(e.ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	if got, want := statuses("CMIP6", ""), []row{
		{"CMIP6", "filemgr", "n1x", "p1.c1.n0", ""},
		{"CMIP6", "filemgr", "n2", "p1.c1.n0", "disk full"},
		{"CMIP6", "filemgr", "xn1", "p1.c1.n0", ""},
		{"CMIP6", "filemgr-x", "n3", "p1.c1.n0", ""},
	}; !slices.Equal(got, want) {
		t.Errorf("statuses of CMIP6 after forgetting n1 = %v, want %v", got, want)
	}
	if got := statuses("CORDEX", ""); len(got) != 0 {
		t.Errorf("statuses of CORDEX after forgetting n1 = %v, want none", got)
	}
	if got := statuses("CMIP6-extra", ""); len(got) != 1 {
		t.Errorf("statuses of CMIP6-extra after forgetting n1 = %v, want its n9", got)
	}
	// Forgetting a node that reported nothing is no error.
	if err := e.cs.ForgetNode(e.ctx, "never-seen"); err != nil {
		t.Errorf("ForgetNode of an unknown node: %v", err)
	}
}
