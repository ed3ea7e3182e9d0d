package configsync

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// FuzzValidatePath checks that every target path ValidatePath accepts
// names a file strictly below any home directory it is joined to, and
// never one in the staging directory.
func FuzzValidatePath(f *testing.F) {
	for _, p := range []string{
		"conf/server.xml", "a", "a/b/c.properties", ".hidden", "..a", "a..", "a/.../b",
		"", "/etc/passwd", "../x", "a/../../x", "a/./b", "a//b", "a/", "./a", ".", "..",
		"a\\..\\b", "a\x00b", "a\nb", ".fedkeeper-staging/0", ".fedkeeper-staging", "x/.fedkeeper-staging/0",
		strings.Repeat("a/", 256) + "b", "~/x", "$HOME/x", "a/\u00e9/\u4e2d",
	} {
		f.Add(p)
	}
	const home = "/srv/component/home"
	f.Fuzz(func(t *testing.T, p string) {
		if ValidatePath(p) != nil {
			return
		}
		joined := filepath.Join(home, filepath.FromSlash(p))
		rel, err := filepath.Rel(home, joined)
		if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") || !filepath.IsLocal(p) {
			t.Fatalf("accepted %q leads to %s, outside %s", p, joined, home)
		}
		if joined != home+"/"+p {
			t.Fatalf("accepted %q is not the path it names (%s)", p, joined)
		}
		if first, _, _ := strings.Cut(rel, "/"); first == stagingDir {
			t.Fatalf("accepted %q lies in the staging directory", p)
		}
		if len(p) > MaxPathLen || strings.ContainsAny(p, "\x00\\") {
			t.Fatalf("accepted %q, which breaks the documented limits", p)
		}
	})
}

// lastByKey maps each key of a properties file to its last logical line,
// which is the one Java's Properties.load keeps, and lists the lines
// without a key (comments, blanks) in order.
func lastByKey(b []byte) (keys map[string]string, other []string) {
	keys = map[string]string{}
	for _, line := range propertyLines(b) {
		if k, _, ok := propertyKey(line); ok {
			keys[k] = line
		} else {
			other = append(other, line)
		}
	}
	return keys, other
}

// physicalLines is b with every line end ("\r\n", "\r" or "\n", as Java
// reads them) made "\n" and trailing blank lines dropped: what merging
// with nothing must give back.
func physicalLines(b []byte) string {
	s := strings.ReplaceAll(string(b), "\r\n", "\n")
	return strings.TrimRight(strings.ReplaceAll(s, "\r", "\n"), "\n")
}

// FuzzMergeProperties checks merging against what the two files say read
// on their own: every key of upper takes upper's line, every other key
// of base keeps base's, base's comments stay in order, and the result
// reads back as what was written, so merging it again changes nothing.
// Merged with nothing, base keeps every line, whatever its length.
func FuzzMergeProperties(f *testing.F) {
	for _, s := range [][2]string{
		{"# comment\na=1\nb = 2\n\nc:3\n", "b=20\nd=4\n"},
		{"a=1\\\n  continued\nb=2", "a=one\\\n two\n"},
		{"key\\ with\\ spaces=1\n! bang comment\n", "key\\ with\\ spaces=2\n"},
		{"a=1\r\nb=2\r\n", "b=3"},
		{"a=1\rb=2\r", "a=10\r\n"},
		{"a=1\\", "b=2\\"},
		{"a=1\\\\\nb=2\n", "a=x\\\\\\\n"},
		{"#a=1\\\nb=2\n", "b=3\n#b=4\n"},
		{"  \t\fa = 1\n", "a\n"},
		{"a=1\n", ""},
		{"", "a=1\n"},
	} {
		f.Add([]byte(s[0]), []byte(s[1]))
	}
	f.Fuzz(func(t *testing.T, base, upper []byte) {
		merged := MergeProperties(base, upper)
		baseKeys, baseOther := lastByKey(base)
		upperKeys, _ := lastByKey(upper)
		got, gotOther := lastByKey(merged)
		want := maps.Clone(baseKeys)
		maps.Copy(want, upperKeys)
		if !maps.Equal(got, want) {
			t.Fatalf("merge of\n%q\nand\n%q\nreads as %q, want %q", base, upper, got, want)
		}
		if !slices.Equal(gotOther, baseOther) {
			t.Fatalf("merge of\n%q\nand\n%q\nhas comments %q, want base's %q", base, upper, gotOther, baseOther)
		}
		if alone := MergeProperties(base, nil); strings.TrimRight(string(alone), "\n") != physicalLines(base) {
			t.Fatalf("merging %.200q with nothing gave %.200q", base, alone)
		}
		if again := MergeProperties(merged, upper); !bytes.Equal(again, merged) {
			t.Fatalf("merging again changed\n%q\ninto\n%q", merged, again)
		}
	})
}

// TestMergePropertiesKeepsALineAsLongAsAFile covers what the fuzzer
// cannot reach cheaply: a line as long as the largest file a commit may
// hold, as a file of its own and once a merge has ended it.
func TestMergePropertiesKeepsALineAsLongAsAFile(t *testing.T) {
	long := strings.Repeat("x", MaxFileBytes)
	merged := MergeProperties([]byte(long), []byte("y=1\r\n"))
	if want := long + "\ny=1\n"; string(merged) != want {
		t.Fatalf("merge of a %d-byte line kept %d bytes, want %d", len(long), len(merged), len(want))
	}
	if again := MergeProperties(merged, []byte("y=2")); string(again) != long+"\ny=2\n" {
		t.Fatalf("merge over a merged %d-byte line kept %d bytes", len(long), len(again))
	}
}

// FuzzApply applies two commits in turn into a home that holds a file,
// a directory and symbolic links leading out of it. The directory the
// links lead to must never change; a refused commit must leave the home
// as it was; an applied one must put exactly its files in place, and
// remove only files of the commit before.
func FuzzApply(f *testing.F) {
	f.Add("a.properties", []byte("a=1\n"), "conf/b.xml", []byte("<b/>"), "conf/b.xml")
	f.Add("keep.txt", []byte("mine"), "d/new", []byte("n"), "d/new2")
	f.Add("out/x", []byte("escape"), "b", []byte(""), "b")
	f.Add("evil", []byte("through a link"), "d/x/y", []byte("under a file"), "d")
	f.Add("a", []byte("1"), "a/b", []byte("2"), "a")
	f.Add(".fedkeeper-staging/0", []byte("1"), "../x", []byte("2"), "/etc/x")
	f.Add("d", []byte("over a directory"), "a", []byte("1"), "a/b")
	base := f.TempDir()
	log := slog.New(slog.DiscardHandler)
	outside := filepath.Join(base, "outside")
	if err := os.MkdirAll(outside, 0o755); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "target"), []byte("outside"), 0o644); err != nil {
		f.Fatal(err)
	}
	commit := func(version string, files map[string][]byte) Effective {
		eff := Effective{Project: "cmip6", Component: "c", Version: version, Files: []File{}}
		for _, p := range slices.Sorted(maps.Keys(files)) {
			sum := sha256.Sum256(files[p])
			eff.Files = append(eff.Files, File{Path: p, Content: files[p], SHA256: hex.EncodeToString(sum[:])})
		}
		return eff
	}
	f.Fuzz(func(t *testing.T, p1 string, c1 []byte, p2 string, c2 []byte, p3 string) {
		home, state := filepath.Join(base, "home"), filepath.Join(base, "state")
		for _, d := range []string{home, state} {
			if err := os.RemoveAll(d); err != nil {
				t.Fatal(err)
			}
		}
		writeFiles(t, home, map[string]string{"keep.txt": "keep", "d/x": "x"})
		for link, target := range map[string]string{"out": outside, "evil": filepath.Join(outside, "target")} {
			if err := os.Symlink(target, filepath.Join(home, link)); err != nil {
				t.Fatal(err)
			}
		}
		outsideBefore := snapshot(t, outside)
		a, err := NewApplier(home, state, nil, 0, log)
		if err != nil {
			t.Fatal(err)
		}
		first := map[string][]byte{p1: c1, p2: c2}
		second := map[string][]byte{p3: c1}
		var prev map[string][]byte
		for i, files := range []map[string][]byte{first, second} {
			before := snapshot(t, home)
			err := a.Apply(context.Background(), commit(string(rune('1'+i)), files))
			after := snapshot(t, home)
			if !maps.Equal(snapshot(t, outside), outsideBefore) {
				t.Fatalf("applying %q changed a directory outside the home", slices.Collect(maps.Keys(files)))
			}
			if _, serr := os.Lstat(filepath.Join(home, stagingDir)); !errors.Is(serr, fs.ErrNotExist) {
				t.Fatalf("staging left behind: %v", serr)
			}
			if err != nil {
				if !maps.Equal(after, before) {
					t.Fatalf("refused commit %q (%v) changed the home:\n%q\n%q", slices.Collect(maps.Keys(files)), err, before, after)
				}
				return
			}
			want := maps.Clone(before)
			for p := range prev {
				if _, kept := files[p]; !kept {
					delete(want, p)
				}
			}
			for p, c := range files {
				want[p] = string(c)
			}
			if !maps.Equal(after, want) {
				t.Fatalf("applying %q left\n%q\nwant\n%q", slices.Collect(maps.Keys(files)), after, want)
			}
			prev = files
		}
	})
}
