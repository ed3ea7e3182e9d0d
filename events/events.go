// Package events records what happens in the federation — nodes joining
// and leaving, supernodes promoted and removed — as an ordered log in the
// store that operators can read and follow.
//
// Key space (below store.Root):
//
//	events/<unix nanoseconds, 20 digits>-<node>-<random>   Event
//
// The key sorts by time; the store revision of each event orders events
// written in the same nanosecond.
package events

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedkeeper/fedkeeper/store"
)

const prefix = store.Root + "events/"

// Event is one change of state.
type Event struct {
	Time time.Time `json:"time"`
	// Node is the node the event is about.
	Node string `json:"node"`
	// Kind names the change: joined, left, removed, promoted, demoted ...
	Kind string `json:"kind"`
	Old  string `json:"old,omitempty"`
	New  string `json:"new,omitempty"`
	// By is who saw or caused it: a supernode or an administrator.
	By      string `json:"by"`
	Message string `json:"message,omitempty"`
	// Revision is the store revision the event was written at.
	Revision int64 `json:"revision"`
}

// Log is the federation's event log.
type Log struct {
	kv *clientv3.Client
}

// New returns the event log kept in the store behind c.
func New(c *clientv3.Client) *Log { return &Log{kv: c} }

// Record appends an event, stamped now unless e.Time is set.
func (l *Log) Record(ctx context.Context, e Event) error {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	e.Revision = 0
	// The random tail keeps two events of one node in one nanosecond apart.
	key := fmt.Sprintf("%s%020d-%s-%08x", prefix, e.Time.UnixNano(), e.Node, rand.Uint32())
	if _, err := l.kv.Put(ctx, key, store.MustJSON(e)); err != nil {
		return fmt.Errorf("record event %s of %s: %w", e.Kind, e.Node, err)
	}
	return nil
}

// Filter selects events.
type Filter struct {
	Node string
	// AfterRevision returns only events written after this store revision.
	AfterRevision int64
	// Limit keeps only the newest Limit events; 0 means 1000.
	Limit int
}

// List returns events oldest first, and the store revision read at.
func (l *Log) List(ctx context.Context, f Filter) ([]Event, int64, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 1000
	}
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend)}
	if f.AfterRevision > 0 {
		opts = append(opts, clientv3.WithMinModRev(f.AfterRevision+1))
	}
	if f.Node == "" {
		opts = append(opts, clientv3.WithLimit(int64(limit)))
	}
	resp, err := l.kv.Get(ctx, prefix, opts...)
	if err != nil {
		return nil, 0, fmt.Errorf("list events: %w", err)
	}
	var out []Event
	for _, kv := range resp.Kvs {
		var e Event
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return nil, 0, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		if f.Node != "" && e.Node != f.Node {
			continue
		}
		e.Revision = kv.ModRevision
		out = append(out, e)
		if len(out) == limit {
			break
		}
	}
	// Newest were read first so the limit keeps them; callers want time order.
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, resp.Header.Revision, nil
}

// Prune deletes events older than maxAge, and the oldest beyond maxCount;
// a bound that is not positive is no bound.
func (l *Log) Prune(ctx context.Context, maxAge time.Duration, maxCount int) (int64, error) {
	var deleted int64
	if maxAge > 0 {
		cutoff := fmt.Sprintf("%s%020d", prefix, time.Now().Add(-maxAge).UnixNano())
		resp, err := l.kv.Delete(ctx, prefix, clientv3.WithRange(cutoff))
		if err != nil {
			return 0, fmt.Errorf("prune old events: %w", err)
		}
		deleted = resp.Deleted
	}
	if maxCount <= 0 {
		return deleted, nil
	}
	// The key of the newest event that is past the count bound.
	keys, err := l.kv.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(int64(maxCount)+1))
	if err != nil {
		return deleted, fmt.Errorf("count events: %w", err)
	}
	if len(keys.Kvs) > maxCount {
		end := string(keys.Kvs[maxCount].Key) + "\x00"
		r, err := l.kv.Delete(ctx, prefix, clientv3.WithRange(end))
		if err != nil {
			return deleted, fmt.Errorf("prune events beyond %d: %w", maxCount, err)
		}
		deleted += r.Deleted
	}
	return deleted, nil
}

// Revision is the store revision of the newest event (0 when none): the
// index of blocking queries on the event log.
func (l *Log) Revision(ctx context.Context) (int64, error) {
	resp, err := l.kv.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortDescend), clientv3.WithLimit(1))
	if err != nil {
		return 0, fmt.Errorf("read event log revision: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return 0, nil
	}
	return resp.Kvs[0].ModRevision, nil
}

// Wait blocks until an event is written after afterRev, or ctx ends.
func (l *Log) Wait(ctx context.Context, afterRev int64) {
	store.Wait(ctx, l.kv, afterRev, prefix)
}
