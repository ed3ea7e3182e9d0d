package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/fedkeeper/fedkeeper/configsync"
)

// FuzzReadMapping reads a mapping file as "config publish" does, next to
// a few local files and a symbolic link. Reading must not panic, and a
// publish it accepts must hold only valid target paths, each with the
// bytes of the one regular file its mapping names.
func FuzzReadMapping(f *testing.F) {
	for _, s := range []string{
		"a.txt: conf/a.txt\nsub/b.properties: conf/b.properties\n",
		"a.txt: a\nsub/b.properties: a\n",
		"a.txt: ../escape\n",
		"link: conf/link\n",
		"sub: conf/sub\n",
		"missing: conf/x\n",
		"a.txt: /etc/passwd\n",
		"a.txt: .fedkeeper-staging/0\n",
		"? [a.txt]\n: conf/a\n",
		"a.txt: [conf/a]\n",
		"- a.txt\n",
		"a.txt: &x conf/a\nsub/b.properties: *x\n",
		"",
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	local := map[string]string{"a.txt": "a=1\n", "sub/b.properties": "b=2\n"}
	for p, content := range local {
		name := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			f.Fatal(err)
		}
		if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
			f.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(dir, "a.txt"), filepath.Join(dir, "link")); err != nil {
		f.Fatal(err)
	}
	mapping := filepath.Join(dir, "mapping.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(mapping, data, 0o644); err != nil {
			t.Fatal(err)
		}
		files, err := readSources([]string{mapping})
		if err != nil {
			return
		}
		contents := map[string]bool{}
		for _, c := range local {
			contents[c] = true
		}
		contents[string(data)] = true // the mapping file may name itself
		for target, b := range files {
			if err := configsync.ValidatePath(target); err != nil {
				t.Fatalf("publish took target %q: %v", target, err)
			}
			if !contents[string(b)] {
				t.Fatalf("target %q got %q, which is no local file's content", target, b)
			}
		}
	})
}
