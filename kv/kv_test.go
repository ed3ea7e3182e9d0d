package kv_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedkeeper/fedkeeper/internal/storetest"
	"github.com/fedkeeper/fedkeeper/kv"
	"github.com/fedkeeper/fedkeeper/store"
)

func TestValidateKey(t *testing.T) {
	tests := []struct {
		key string
		ok  bool
	}{
		{"a", true},
		{"a/b.c_d-e", true},
		{"project/CMIP6/index-url", true},
		{"A9/z0", true},
		{".hidden", true},
		{"a/..b/c..", true},
		{strings.Repeat("a", 256), true},
		{strings.Repeat("ab/", 85) + "a", true}, // 256 characters

		{"", false},
		{strings.Repeat("a", 257), false},
		{"..", false},
		{".", false},
		{"a/..", false},
		{"a/../b", false},
		{"./a", false},
		{"a//b", false},
		{"/a", false},
		{"a/", false},
		{"/", false},
		{"a b", false},
		{" a", false},
		{"a\tb", false},
		{"a\nb", false},
		{"ключ", false},
		{"café", false},
		{"a\x00b", false},
		{"a?b", false},
		{"a%2Fb", false},
		{`a\b`, false},
	}
	for _, tt := range tests {
		err := kv.ValidateKey(tt.key)
		if tt.ok && err != nil {
			t.Errorf("ValidateKey(%q) = %v, want nil", tt.key, err)
		}
		if !tt.ok && !errors.Is(err, kv.ErrInvalid) {
			t.Errorf("ValidateKey(%q) = %v, want ErrInvalid", tt.key, err)
		}
	}
}

type env struct {
	ctx context.Context
	kv  *kv.Store
	raw *clientv3.Client
}

func newEnv(t *testing.T) env {
	t.Helper()
	t.Parallel()
	st, _ := storetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return env{ctx: ctx, kv: kv.New(st.Client), raw: st.Client}
}

// mustHold reads key and fails the test unless it holds value at rev.
func (e env) mustHold(t *testing.T, key, value string, rev int64) {
	t.Helper()
	got, err := e.kv.Get(e.ctx, key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	if want := (kv.Entry{Key: key, Value: value, Revision: rev}); got != want {
		t.Fatalf("Get(%q) = %+v, want %+v", key, got, want)
	}
}

// allKeys lists every key of the store with its value.
func (e env) allKeys(t *testing.T) map[string]string {
	t.Helper()
	resp, err := e.raw.Get(e.ctx, "\x00", clientv3.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, kv := range resp.Kvs {
		m[string(kv.Key)] = string(kv.Value)
	}
	return m
}

func TestPutGetRoundTrip(t *testing.T) {
	e := newEnv(t)

	put, err := e.kv.Put(e.ctx, "site/dkrz/contact", "ops@dkrz.de", -1)
	if err != nil {
		t.Fatal(err)
	}
	if put.Key != "site/dkrz/contact" || put.Value != "ops@dkrz.de" || put.Revision <= 0 {
		t.Fatalf("Put returned %+v", put)
	}
	e.mustHold(t, "site/dkrz/contact", "ops@dkrz.de", put.Revision)

	// An unconditional Put overwrites and moves the revision on.
	again, err := e.kv.Put(e.ctx, "site/dkrz/contact", "", -1)
	if err != nil {
		t.Fatal(err)
	}
	if again.Revision <= put.Revision {
		t.Errorf("second Put at revision %d, not after the first's %d", again.Revision, put.Revision)
	}
	e.mustHold(t, "site/dkrz/contact", "", again.Revision)

	// A value of exactly MaxValue bytes is accepted.
	big := strings.Repeat("x", kv.MaxValue)
	p, err := e.kv.Put(e.ctx, "big", big, -1)
	if err != nil {
		t.Fatalf("Put of MaxValue bytes: %v", err)
	}
	e.mustHold(t, "big", big, p.Revision)
}

func TestPutConditional(t *testing.T) {
	e := newEnv(t)

	created, err := e.kv.Put(e.ctx, "leader", "sn1", 0)
	if err != nil {
		t.Fatalf("create with prevRevision 0: %v", err)
	}
	if _, err := e.kv.Put(e.ctx, "leader", "sn2", 0); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("second create = %v, want ErrConflict", err)
	}
	e.mustHold(t, "leader", "sn1", created.Revision)

	updated, err := e.kv.Put(e.ctx, "leader", "sn3", created.Revision)
	if err != nil {
		t.Fatalf("update at the current revision: %v", err)
	}
	if updated.Revision <= created.Revision {
		t.Errorf("update at revision %d, not after %d", updated.Revision, created.Revision)
	}
	e.mustHold(t, "leader", "sn3", updated.Revision)

	// The revision the key was created at is stale now.
	if _, err := e.kv.Put(e.ctx, "leader", "sn4", created.Revision); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("update at a stale revision = %v, want ErrConflict", err)
	}
	e.mustHold(t, "leader", "sn3", updated.Revision)

	// A revision of another key is no match either.
	other, err := e.kv.Put(e.ctx, "other", "x", -1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.kv.Put(e.ctx, "leader", "sn5", other.Revision); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("update at another key's revision = %v, want ErrConflict", err)
	}
	e.mustHold(t, "leader", "sn3", updated.Revision)

	// A key that does not exist cannot be updated at a revision.
	if _, err := e.kv.Put(e.ctx, "absent", "x", updated.Revision); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("conditional update of a missing key = %v, want ErrConflict", err)
	}
	if _, err := e.kv.Get(e.ctx, "absent"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("a failed conditional Put wrote the key: Get = %v", err)
	}

	// Once deleted, a key can be created again.
	if err := e.kv.Delete(e.ctx, "leader"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.kv.Put(e.ctx, "leader", "sn6", 0); err != nil {
		t.Fatalf("create after delete: %v", err)
	}
}

func TestInvalidInputWritesNothing(t *testing.T) {
	e := newEnv(t)
	before := e.allKeys(t)

	if _, err := e.kv.Put(e.ctx, "big", strings.Repeat("x", kv.MaxValue+1), -1); !errors.Is(err, kv.ErrInvalid) {
		t.Errorf("Put of MaxValue+1 bytes = %v, want ErrInvalid", err)
	}
	if _, err := e.kv.Put(e.ctx, "big", strings.Repeat("x", kv.MaxValue+1), 0); !errors.Is(err, kv.ErrInvalid) {
		t.Errorf("create of MaxValue+1 bytes = %v, want ErrInvalid", err)
	}
	if _, err := e.kv.Get(e.ctx, "big"); !errors.Is(err, kv.ErrNotFound) {
		t.Errorf("Get after a refused Put = %v, want ErrNotFound", err)
	}
	for _, key := range []string{"", "../x", "a//b", "/a", "a b"} {
		if _, err := e.kv.Put(e.ctx, key, "v", -1); !errors.Is(err, kv.ErrInvalid) {
			t.Errorf("Put(%q) = %v, want ErrInvalid", key, err)
		}
		if _, err := e.kv.Get(e.ctx, key); !errors.Is(err, kv.ErrInvalid) {
			t.Errorf("Get(%q) = %v, want ErrInvalid", key, err)
		}
		if err := e.kv.Delete(e.ctx, key); !errors.Is(err, kv.ErrInvalid) {
			t.Errorf("Delete(%q) = %v, want ErrInvalid", key, err)
		}
	}
	if after := e.allKeys(t); len(after) != len(before) {
		t.Errorf("invalid input wrote to the store: %d keys before, %d after", len(before), len(after))
	}
}

func TestMissingKey(t *testing.T) {
	e := newEnv(t)

	if _, err := e.kv.Get(e.ctx, "nothing/here"); !errors.Is(err, kv.ErrNotFound) {
		t.Errorf("Get of a missing key = %v, want ErrNotFound", err)
	}
	if err := e.kv.Delete(e.ctx, "nothing/here"); !errors.Is(err, kv.ErrNotFound) {
		t.Errorf("Delete of a missing key = %v, want ErrNotFound", err)
	}

	if _, err := e.kv.Put(e.ctx, "k", "v", -1); err != nil {
		t.Fatal(err)
	}
	if err := e.kv.Delete(e.ctx, "k"); err != nil {
		t.Fatalf("Delete of a present key: %v", err)
	}
	if _, err := e.kv.Get(e.ctx, "k"); !errors.Is(err, kv.ErrNotFound) {
		t.Errorf("Get after Delete = %v, want ErrNotFound", err)
	}
	if err := e.kv.Delete(e.ctx, "k"); !errors.Is(err, kv.ErrNotFound) {
		t.Errorf("second Delete = %v, want ErrNotFound", err)
	}
}

func TestKeysLiveUnderTheKVPrefixOnly(t *testing.T) {
	e := newEnv(t)

	// Keys of other packages, one of which shares the prefix "kv" but not
	// "kv/"; none may be read, changed or deleted through the kv space.
	others := map[string]string{
		store.Root + "nodes/n1": "node",
		store.Root + "kvx/a":    "not kv",
		"/elsewhere/a":          "foreign",
	}
	for k, v := range others {
		if _, err := e.raw.Put(e.ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.kv.Get(e.ctx, "nodes/n1"); !errors.Is(err, kv.ErrNotFound) {
		t.Errorf("Get reached a key outside the kv space: %v", err)
	}

	for _, k := range []string{"a", "a/b", "nodes/n1", "x.y"} {
		if _, err := e.kv.Put(e.ctx, k, "v-"+k, -1); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.kv.Delete(e.ctx, "x.y"); err != nil {
		t.Fatal(err)
	}

	want := map[string]string{
		store.Root + "kv/a":        "v-a",
		store.Root + "kv/a/b":      "v-a/b",
		store.Root + "kv/nodes/n1": "v-nodes/n1",
	}
	for k, v := range others {
		want[k] = v
	}
	got := e.allKeys(t)
	if len(got) != len(want) {
		t.Errorf("store holds %d keys, want %d: %v", len(got), len(want), got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("key %q = %q, want %q", k, got[k], v)
		}
	}
}
