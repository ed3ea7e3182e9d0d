package membership

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

// NodeCache keeps every node record in memory, loaded once and then kept
// current from the store's change stream, for callers that need the whole
// membership every second (the health prober) without reading it each
// time. Its reads are local, so it keeps serving the last known state on a
// supernode cut off from the quorum.
type NodeCache struct {
	mu     sync.RWMutex
	nodes  map[string]Node
	rev    int64
	loaded bool
}

// Cache starts a NodeCache that follows the store until ctx ends; the
// service itself then answers authorizations and supernode look-ups from
// it. Call it once.
func (s *Service) Cache(ctx context.Context) *NodeCache {
	c := &NodeCache{nodes: map[string]Node{}}
	go c.follow(ctx, s.kv, s.log)
	s.cache = c
	return c
}

// Ready reports whether the cache has loaded the node records once.
func (c *NodeCache) Ready() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.loaded
}

// Nodes returns the cached node records (without session status).
func (c *NodeCache) Nodes() []Node {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]Node, 0, len(c.nodes))
	for _, n := range c.nodes {
		out = append(out, n)
	}
	return out
}

// Get returns one cached node record.
func (c *NodeCache) Get(name string) (Node, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	n, ok := c.nodes[name]
	return n, ok
}

func (c *NodeCache) follow(ctx context.Context, kv *clientv3.Client, log *slog.Logger) {
	for ctx.Err() == nil {
		if err := c.load(ctx, kv); err != nil {
			log.Debug("node cache: load failed", "err", err)
			wait.Sleep(ctx, time.Second)
			continue
		}
		c.mu.RLock()
		rev := c.rev
		c.mu.RUnlock()
		for resp := range kv.Watch(ctx, prefixNodes, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
			if resp.Err() != nil {
				// Compacted or cancelled: load afresh.
				break
			}
			c.apply(resp.Events)
		}
	}
}

func (c *NodeCache) load(ctx context.Context, kv *clientv3.Client) error {
	resp, err := kv.Get(ctx, prefixNodes, clientv3.WithPrefix(), clientv3.WithSerializable())
	if err != nil {
		return err
	}
	nodes := make(map[string]Node, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var n Node
		if json.Unmarshal(kv.Value, &n) == nil {
			nodes[n.Name] = n
		}
	}
	c.mu.Lock()
	c.nodes, c.rev, c.loaded = nodes, resp.Header.Revision, true
	c.mu.Unlock()
	return nil
}

func (c *NodeCache) apply(evs []*clientv3.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ev := range evs {
		name := strings.TrimPrefix(string(ev.Kv.Key), prefixNodes)
		if ev.Type == mvccpb.DELETE {
			delete(c.nodes, name)
		} else {
			var n Node
			if json.Unmarshal(ev.Kv.Value, &n) == nil {
				c.nodes[name] = n
			}
		}
		c.rev = ev.Kv.ModRevision
	}
}
