package services

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedkeeper/fedkeeper/health"
	"github.com/fedkeeper/fedkeeper/membership"
	"github.com/fedkeeper/fedkeeper/store"
)

// ErrNoSession says the node holds no session to bind its instances to:
// it registers again once its session is open.
var ErrNoSession = errors.New("no session")

// ErrConflict says concurrent registrations of one node kept overtaking
// each other; the agent sends its set again.
var ErrConflict = errors.New("conflict")

// Registry writes nodes' instances to the store.
type Registry struct {
	kv *clientv3.Client
}

// NewRegistry returns a registry on the store client kv.
func NewRegistry(kv *clientv3.Client) *Registry { return &Registry{kv: kv} }

// Sync replaces every instance of node by reports, in one transaction
// bound to the lease of the node's current session, so that they vanish
// with it. It returns the store revision of the change.
func (r *Registry) Sync(ctx context.Context, node membership.Node, reports []Report) (int64, error) {
	project := ""
	if len(node.Projects) > 0 {
		project = node.Projects[0]
	}
	regs := make([]Registration, len(reports))
	for i := range reports {
		reports[i].Registration = reports[i].WithDefaults(project)
		// The checks run on the node; the registry keeps their status only.
		reports[i].Checks = nil
		regs[i] = reports[i].Registration
	}
	if err := ValidateSet(regs); err != nil {
		return 0, err
	}
	now := time.Now().UTC()
	for _, rep := range reports {
		if !slices.Contains(node.Projects, rep.Project) {
			return 0, invalid("service %q: project %q is not one of node %s's projects %v", rep.ID, rep.Project, node.Name, node.Projects)
		}
		if !slices.Contains([]health.Status{health.Passing, health.Warning, health.Critical}, rep.Status) {
			return 0, invalid("service %q: status %q must be passing, warning or critical", rep.ID, rep.Status)
		}
	}
	alive := membership.AliveKey(node.Name)
	resp, err := r.kv.Get(ctx, alive)
	if err != nil {
		return 0, fmt.Errorf("read session of %s: %w", node.Name, err)
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].Lease == 0 {
		return 0, fmt.Errorf("%w: node %s has no open session; open one, then register", ErrNoSession, node.Name)
	}
	lease := clientv3.LeaseID(resp.Kvs[0].Lease)
	// The store refuses a transaction that deletes a range and puts into
	// it, so the keys to drop are read first; the transaction then holds
	// only if no instance of the node changed in between.
	for range 5 {
		nodePrefix := prefix + node.Name + "/"
		old, err := r.kv.Get(ctx, nodePrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return 0, fmt.Errorf("read services of %s: %w", node.Name, err)
		}
		var ops []clientv3.Op
		keep := map[string]bool{}
		for _, rep := range reports {
			k := key(node.Name, rep.ID)
			keep[k] = true
			ops = append(ops, clientv3.OpPut(k, store.MustJSON(rep.instance(node.Name, now)), clientv3.WithLease(lease)))
		}
		for _, kv := range old.Kvs {
			if !keep[string(kv.Key)] {
				ops = append(ops, clientv3.OpDelete(string(kv.Key)))
			}
		}
		txn, err := r.kv.Txn(ctx).If(
			clientv3.Compare(clientv3.LeaseValue(alive), "=", lease),
			clientv3.Compare(clientv3.ModRevision(nodePrefix), "<", old.Header.Revision+1).WithPrefix(),
		).Then(ops...).Else(clientv3.OpGet(alive)).Commit()
		if err != nil {
			return 0, fmt.Errorf("register services of %s: %w", node.Name, err)
		}
		if txn.Succeeded {
			return txn.Header.Revision, nil
		}
		if kvs := txn.Responses[0].GetResponseRange().Kvs; len(kvs) == 0 || clientv3.LeaseID(kvs[0].Lease) != lease {
			return 0, fmt.Errorf("%w: the session of node %s changed while its services were registered; register again", ErrNoSession, node.Name)
		}
	}
	return 0, fmt.Errorf("register services of %s: %w: they kept changing under concurrent registrations", node.Name, ErrConflict)
}
