package membership

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedkeeper/fedkeeper/store"
)

// Supernodes returns the records of supernodes and standbys. The read is
// served by the local store member without a round through the quorum, so
// a supernode cut off from the others still knows whom to look for.
func (s *Service) Supernodes(ctx context.Context) ([]Node, error) {
	// Called every second by several loops: the cache spares decoding
	// every member's record each time.
	if s.cache != nil && s.cache.Ready() {
		var out []Node
		for _, n := range s.cache.Nodes() {
			if n.Role == RoleSupernode || n.Role == RoleStandby {
				out = append(out, n)
			}
		}
		// In name order, as from the store, so that callers comparing
		// lists see no change where there is none.
		slices.SortFunc(out, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
		return out, nil
	}
	resp, err := s.kv.Get(ctx, prefixNodes, clientv3.WithPrefix(), clientv3.WithSerializable())
	if err != nil {
		return nil, fmt.Errorf("read supernode records: %w", err)
	}
	var out []Node
	for _, kv := range resp.Kvs {
		var n Node
		if err := json.Unmarshal(kv.Value, &n); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		if n.Role == RoleSupernode || n.Role == RoleStandby {
			out = append(out, n)
		}
	}
	return out, nil
}

// PutSupernode records a newly admitted supernode, replacing any earlier
// record of the same name (a supernode re-added after a disaster).
func (s *Service) PutSupernode(ctx context.Context, n Node) error {
	var old Node
	_, err := store.GetJSON(ctx, s.kv, prefixNodes+n.Name, &old)
	switch {
	case err == nil && old.Role == RoleMember:
		return fmt.Errorf("%w: %q is a member node", ErrConflict, n.Name)
	case err == nil:
		n.JoinedAt = old.JoinedAt
	case errors.Is(err, store.ErrNotFound):
		n.JoinedAt = time.Now().UTC()
	default:
		return err
	}
	n.Status = ""
	if _, err := s.kv.Put(ctx, prefixNodes+n.Name, store.MustJSON(n)); err != nil {
		return fmt.Errorf("record supernode %s: %w", n.Name, err)
	}
	return nil
}

// SetRole changes whether a supernode is a voter or a standby.
func (s *Service) SetRole(ctx context.Context, name string, role Role) error {
	var n Node
	rev, err := store.GetJSON(ctx, s.kv, prefixNodes+name, &n)
	if err != nil {
		return fmt.Errorf("read record of %s: %w", name, err)
	}
	if n.Role == role {
		return nil
	}
	n.Role = role
	resp, err := s.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(prefixNodes+name), "=", rev)).
		Then(clientv3.OpPut(prefixNodes+name, store.MustJSON(n))).
		Commit()
	if err != nil {
		return fmt.Errorf("set role of %s: %w", name, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: record of %s changed meanwhile", ErrConflict, name)
	}
	return nil
}
