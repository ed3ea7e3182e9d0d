package store

import (
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestMirrorFollowsPutsDeletesAndSkipsGarbage(t *testing.T) {
	t.Parallel()
	st := startTest(t, certs(t), "s1", filepath.Join(t.TempDir(), "data"), "https://"+freeAddr(t))
	ctx := testCtx(t)
	put := func(key, value string) {
		t.Helper()
		if _, err := st.Client.Put(ctx, Root+"m/"+key, value); err != nil {
			t.Fatal(err)
		}
	}
	put("a", MustJSON(record{Name: "a", Count: 1}))
	put("junk", "not json")
	m := Follow[record](ctx, st.Client, Root+"m/", slog.Default())
	eventually := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("mirror never showed %s", what)
			}
		}
	}
	eventually("the first load", m.Ready)
	if _, ok := m.Get("junk"); ok {
		t.Error("an undecodable value is in the mirror")
	}
	if v, ok := m.Get("a"); !ok || v.Count != 1 {
		t.Errorf("Get(a) = %+v, %v", v, ok)
	}

	changed := m.Changed()
	before := m.Revision()
	put("b", MustJSON(record{Name: "b", Count: 2}))
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("Changed was not closed by a put")
	}
	if m.Revision() <= before {
		t.Errorf("revision %d did not grow past %d", m.Revision(), before)
	}
	eventually("b", func() bool { _, ok := m.Get("b"); return ok })
	// A key that turns to garbage leaves the mirror rather than keeping
	// its stale value.
	put("a", "garbage")
	if _, err := st.Client.Delete(ctx, Root+"m/b"); err != nil {
		t.Fatal(err)
	}
	eventually("a and b gone", func() bool { return len(m.Values()) == 0 })
	// Keys outside the prefix are not mirrored.
	if _, err := st.Client.Put(ctx, Root+"other", MustJSON(record{Name: "x"})); err != nil {
		t.Fatal(err)
	}
	put("c", MustJSON(record{Name: "c"}))
	eventually("c", func() bool { return len(m.Values()) == 1 })
	if names := []string{m.Values()[0].Name}; !slices.Equal(names, []string{"c"}) {
		t.Errorf("values = %v, want only c", names)
	}
}
