package store

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestWaitAfterCompactionWaitsForANewChange(t *testing.T) {
	dir := t.TempDir()
	st := startTest(t, certs(t), "wait", filepath.Join(dir, "data"), "https://"+freeAddr(t))
	ctx := testCtx(t)
	put, err := st.Client.Put(ctx, Root+"watched/a", "1")
	if err != nil {
		t.Fatal(err)
	}
	old := put.Header.Revision
	var last int64
	for range 5 {
		r, err := st.Client.Put(ctx, Root+"other", "x")
		if err != nil {
			t.Fatal(err)
		}
		last = r.Header.Revision
	}
	if _, err := st.Client.Compact(ctx, last); err != nil {
		t.Fatal(err)
	}

	// Nothing under the prefix changed after old: the wait must last.
	wctx, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
	start := time.Now()
	Wait(wctx, st.Client, old, Root+"watched/")
	cancel()
	if waited := time.Since(start); waited < 500*time.Millisecond {
		t.Fatalf("Wait returned after %s for a compacted revision with nothing new: callers would spin", waited)
	}

	// A change made before the wait, after old, ends it at once.
	if _, err := st.Client.Put(ctx, Root+"watched/b", "2"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel = context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start = time.Now()
	Wait(wctx, st.Client, old, Root+"watched/")
	if waited := time.Since(start); waited > 5*time.Second {
		t.Fatalf("Wait took %s to see a change made after the index", waited)
	}
}

func TestWaitSeesADeletionMadeBeforeItStarted(t *testing.T) {
	dir := t.TempDir()
	st := startTest(t, certs(t), "wait", filepath.Join(dir, "data"), "https://"+freeAddr(t))
	ctx := testCtx(t)
	if _, err := st.Client.Put(ctx, Root+"watched/a", "1"); err != nil {
		t.Fatal(err)
	}
	put, err := st.Client.Put(ctx, Root+"watched/b", "2")
	if err != nil {
		t.Fatal(err)
	}
	index := put.Header.Revision
	// A lease that expires between a reader's read and its next blocking
	// query deletes keys; nothing newer is left to show for it.
	if _, err := st.Client.Delete(ctx, Root+"watched/a"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	start := time.Now()
	Wait(wctx, st.Client, index, Root+"watched/")
	if waited := time.Since(start); waited > 2*time.Second {
		t.Fatalf("Wait took %s to see a deletion made after the index", waited)
	}
	// With nothing deleted or written since, it waits.
	wctx, cancel = context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	resp, err := st.Client.Get(ctx, Root+"watched/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	Wait(wctx, st.Client, resp.Header.Revision, Root+"watched/")
	if waited := time.Since(start); waited < 400*time.Millisecond {
		t.Fatalf("Wait returned after %s with nothing changed", waited)
	}
}
