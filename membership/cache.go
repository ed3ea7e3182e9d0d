package membership

import (
	"context"

	"github.com/fedkeeper/fedkeeper/store"
)

// NodeCache keeps every node record in memory (without session status),
// for callers that need the whole membership every second (the health
// prober, the nameserver) without reading it each time. Its reads are
// local, so it keeps serving the last known state on a supernode cut off
// from the quorum.
type NodeCache struct {
	*store.Mirror[Node]
}

// Cache starts a NodeCache that follows the store until ctx ends; the
// service itself then answers authorizations and supernode look-ups from
// it. Call it once.
func (s *Service) Cache(ctx context.Context) *NodeCache {
	c := &NodeCache{store.Follow[Node](ctx, s.kv, prefixNodes, s.log)}
	s.cache = c
	return c
}

// Nodes returns the cached node records.
func (c *NodeCache) Nodes() []Node { return c.Values() }
