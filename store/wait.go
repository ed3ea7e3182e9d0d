package store

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedkeeper/fedkeeper/internal/wait"
)

// Wait blocks until a key under any of prefixes changes after afterRev, or
// ctx ends; blocking queries are built on it. Every wait on one client
// shares a single watch of the whole key space: the store's in-process
// client stalls when many short-lived watches come and go, as thousands of
// agents' blocking queries would make them. A change between afterRev and
// the start of the wait (or older than the store's compaction) is found by
// reading what is there now.
func Wait(ctx context.Context, c *clientv3.Client, afterRev int64, prefixes ...string) {
	w := watcherOf(c)
	wt := &waiter{prefixes: prefixes, ch: make(chan struct{}, 1)}
	w.add(wt)
	defer w.remove(wt)
	if changedSince(ctx, c, afterRev, prefixes) {
		return
	}
	select {
	case <-wt.ch:
	case <-ctx.Done():
	}
}

// changedSince reports whether a key under any of prefixes was written or
// deleted after afterRev; a failed read counts as a change, so the caller
// reads again rather than waits blind. Deletions older than the store's
// compaction cannot be told: the caller, whose index is that old, then
// waits for the next change like everyone else rather than spin.
func changedSince(ctx context.Context, c *clientv3.Client, afterRev int64, prefixes []string) bool {
	for _, p := range prefixes {
		resp, err := c.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
			clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortDescend), clientv3.WithLimit(1))
		if err != nil {
			return ctx.Err() == nil
		}
		if len(resp.Kvs) > 0 && resp.Kvs[0].ModRevision > afterRev {
			return true
		}
		if afterRev <= 0 {
			continue
		}
		// Nothing newer: then every key there now was there at afterRev,
		// and fewer keys now means some were deleted since (a lease that
		// expired takes its keys with it).
		then, err := c.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithRev(afterRev))
		switch {
		case errors.Is(err, rpctypes.ErrCompacted):
		case err != nil:
			return ctx.Err() == nil
		case then.Count != resp.Count:
			return true
		}
	}
	return false
}

type waiter struct {
	prefixes []string
	ch       chan struct{}
}

// watcher is the one watch of a client's key space, fanned out to waiters.
type watcher struct {
	c       *clientv3.Client
	mu      sync.Mutex
	waiters map[*waiter]struct{}
}

var (
	watchersMu sync.Mutex
	watchers   = map[*clientv3.Client]*watcher{}
)

// watcherOf returns the client's watcher, starting it on first use; it
// lives as long as the client.
func watcherOf(c *clientv3.Client) *watcher {
	watchersMu.Lock()
	defer watchersMu.Unlock()
	w, ok := watchers[c]
	if !ok {
		w = &watcher{c: c, waiters: map[*waiter]struct{}{}}
		watchers[c] = w
		// Knowing where it starts before anyone waits spares waking the
		// first waiters for nothing.
		ctx, cancel := context.WithTimeout(c.Ctx(), 5*time.Second)
		next, _ := currentRevision(ctx, c)
		cancel()
		go w.run(next)
	}
	return w
}

// currentRevision is the first revision not yet written.
func currentRevision(ctx context.Context, c *clientv3.Client) (int64, error) {
	resp, err := c.Get(ctx, Root, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(1))
	if err != nil {
		return 0, err
	}
	return resp.Header.Revision + 1, nil
}

func (w *watcher) add(wt *waiter) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.waiters[wt] = struct{}{}
}

func (w *watcher) remove(wt *waiter) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.waiters, wt)
}

// run follows every change below Root until the client closes. It picks
// up where it left off after a broken watch; when history is gone
// (compaction) or cannot be had, every waiter is woken to read again: a
// spurious wake-up costs a read, a missed one a whole wait.
func (w *watcher) run(next int64) {
	// next is the first revision not yet seen; 0 when unknown.
	ctx := clientv3.WithRequireLeader(w.c.Ctx())
	for ctx.Err() == nil {
		if next == 0 {
			var err error
			if next, err = currentRevision(ctx, w.c); err != nil {
				wait.Sleep(ctx, 200*time.Millisecond)
				continue
			}
			// What happened while the watch was down, waiters find by
			// reading.
			w.notify("")
		}
		for resp := range w.c.Watch(ctx, Root, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithRev(next)) {
			if resp.CompactRevision != 0 || resp.Err() != nil {
				next = 0
				break
			}
			for _, ev := range resp.Events {
				w.notify(string(ev.Kv.Key))
			}
			next = max(next, resp.Header.Revision+1)
		}
		wait.Sleep(ctx, 200*time.Millisecond)
	}
	watchersMu.Lock()
	delete(watchers, w.c)
	watchersMu.Unlock()
}

// notify wakes the waiters interested in key, or all of them for "".
func (w *watcher) notify(key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for wt := range w.waiters {
		for _, p := range wt.prefixes {
			if key == "" || strings.HasPrefix(key, p) {
				select {
				case wt.ch <- struct{}{}:
				default:
				}
				break
			}
		}
	}
}
