package store

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedkeeper/fedkeeper/internal/wait"
)

// Mirror keeps every record under a key prefix in memory, loaded once and
// then kept current from the store's change stream, for readers that need
// the whole set often (the health prober every second, the nameserver on
// every query) without reading the store each time. Its reads are local
// and serializable, so a supernode cut off from the quorum keeps serving
// its last known state. Values that do not decode as T are skipped.
type Mirror[T any] struct {
	prefix string
	mu     sync.RWMutex
	items  map[string]T
	rev    int64
	loaded bool
	// changed is closed and replaced on every change, waking all waiters.
	changed chan struct{}
}

// Follow starts a Mirror of the records under prefix that follows the
// store until ctx ends. Keys are given without the prefix.
func Follow[T any](ctx context.Context, c *clientv3.Client, prefix string, log *slog.Logger) *Mirror[T] {
	m := &Mirror[T]{prefix: prefix, items: map[string]T{}, changed: make(chan struct{})}
	go m.follow(ctx, c, log)
	return m
}

// Ready reports whether the mirror has loaded the records once.
func (m *Mirror[T]) Ready() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.loaded
}

// Get returns the record at prefix+key.
func (m *Mirror[T]) Get(key string) (T, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	v, ok := m.items[key]
	return v, ok
}

// Values returns every record, in no particular order.
func (m *Mirror[T]) Values() []T {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]T, 0, len(m.items))
	for _, v := range m.items {
		out = append(out, v)
	}
	return out
}

// Revision is the store revision the mirror is current to; it grows with
// every change under the prefix.
func (m *Mirror[T]) Revision() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.rev
}

// Changed returns a channel closed at the next change, for readers that
// rebuild something derived from the mirror.
func (m *Mirror[T]) Changed() <-chan struct{} {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.changed
}

func (m *Mirror[T]) follow(ctx context.Context, c *clientv3.Client, log *slog.Logger) {
	for ctx.Err() == nil {
		if err := m.load(ctx, c); err != nil {
			log.Debug("mirror: load failed", "prefix", m.prefix, "err", err)
			wait.Sleep(ctx, time.Second)
			continue
		}
		for resp := range c.Watch(ctx, m.prefix, clientv3.WithPrefix(), clientv3.WithRev(m.Revision()+1)) {
			if resp.Err() != nil {
				// Compacted or cancelled: load afresh.
				break
			}
			m.apply(resp.Events)
		}
	}
}

func (m *Mirror[T]) load(ctx context.Context, c *clientv3.Client) error {
	resp, err := c.Get(ctx, m.prefix, clientv3.WithPrefix(), clientv3.WithSerializable())
	if err != nil {
		return err
	}
	items := make(map[string]T, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var v T
		if json.Unmarshal(kv.Value, &v) == nil {
			items[strings.TrimPrefix(string(kv.Key), m.prefix)] = v
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.items, m.rev, m.loaded = items, resp.Header.Revision, true
	m.notifyLocked()
	return nil
}

func (m *Mirror[T]) apply(evs []*clientv3.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ev := range evs {
		key := strings.TrimPrefix(string(ev.Kv.Key), m.prefix)
		var v T
		if ev.Type == mvccpb.DELETE || json.Unmarshal(ev.Kv.Value, &v) != nil {
			delete(m.items, key)
		} else {
			m.items[key] = v
		}
		m.rev = ev.Kv.ModRevision
	}
	m.notifyLocked()
}

func (m *Mirror[T]) notifyLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}
