package kv_test

import (
	"net/url"
	"path"
	"testing"

	"github.com/fedkeeper/fedkeeper/kv"
)

// FuzzValidateKey checks that every key ValidateKey accepts is served at
// its own URL path: one the HTTP mux does not clean into another key's,
// and that needs no escaping, so the client and the server see one key.
func FuzzValidateKey(f *testing.F) {
	for _, k := range []string{"a", "a/b", "settings/index.url", "a/./b", "a/../b", "..", ".", "a//b", "/a", "a/",
		"a b", "a%2Fb", "a\\b", "...", "a/.../b", ".a/b.", "é"} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if kv.ValidateKey(key) != nil {
			return
		}
		p := "/v1/kv/" + key
		if path.Clean(p) != p {
			t.Fatalf("key %q is served at %s, which cleans to %s", key, p, path.Clean(p))
		}
		if u, err := url.Parse(p); err != nil || u.Path != p || u.EscapedPath() != p {
			t.Fatalf("key %q does not travel in a URL as it is: %v", key, err)
		}
		if len(key) == 0 || len(key) > 256 {
			t.Fatalf("accepted a key of %d characters", len(key))
		}
	})
}
