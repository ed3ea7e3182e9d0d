// Package coord holds the federation's coordination primitives in the
// store: leases owned by a caller, elections (HA groups and coordinator
// roles) and counting locks (locks and semaphores). It guarantees mutual
// exclusion in the store, with conditioned transactions on leases, and
// hands out fencing tokens; who stands for an election and when is the
// callers' policy (see package ha).
//
// Key space (below store.Root):
//
//	leases/<id hex>                         Lease: its owner, on the lease itself
//	elections/<kind>/<name>/candidates/<n>  Candidate, on the candidate's lease
//	elections/<kind>/<name>/master          Master, on the master's lease
//	elections/<kind>/<name>/request         Request: a takeover or give-up asked for
//	locks/<name>/<lease id hex>             Holder, on the holder's lease
//
// Fencing tokens are store revisions: the revision at which a master's key
// or a holder's key was created. They only grow, across every election and
// lock, so a resource that remembers the highest token it has seen can
// refuse a stale holder.
package coord

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedkeeper/fedkeeper/store"
)

const (
	prefixLeases    = store.Root + "leases/"
	prefixElections = store.Root + "elections/"
	prefixLocks     = store.Root + "locks/"
)

// Errors; the API maps each to its status.
var (
	ErrInvalid  = errors.New("invalid")
	ErrNotFound = errors.New("not found")
	// ErrExpired says a lease is gone: whatever was bound to it is too.
	ErrExpired = errors.New("lease expired")
	// ErrForbidden says the caller does not own the lease or record.
	ErrForbidden = errors.New("forbidden")
	// ErrTaken says an election already has a master.
	ErrTaken = errors.New("taken")
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// Lease limits: a lease shorter than MinTTL would expire between two
// renewals over a slow link; one longer than MaxTTL keeps a dead holder's
// lock for too long.
const (
	MinTTL = 2 * time.Second
	MaxTTL = 10 * time.Minute
)

// Kinds of election.
const (
	KindHA   = "ha"
	KindRole = "role"
)

var (
	nameRE  = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$`)
	stateRE = regexp.MustCompile(`^[a-z]{1,16}$`)
)

// ValidateName checks the name of an election or a lock: 1-63 lowercase
// letters, digits, dots, dashes or underscores, starting and ending with a
// letter or digit, since it becomes a key and appears in events.
func ValidateName(what, name string) error {
	if !nameRE.MatchString(name) {
		return invalid("%s name %q must be 1-63 lowercase letters, digits, dots, dashes or underscores, starting and ending with a letter or digit", what, name)
	}
	return nil
}

// validateElection checks an election's kind and name.
func validateElection(kind, name string) error {
	if err := validateKind(kind); err != nil {
		return err
	}
	return ValidateName(kind, name)
}

func validateKind(kind string) error {
	if kind != KindHA && kind != KindRole {
		return invalid("election kind %q must be %s or %s", kind, KindHA, KindRole)
	}
	return nil
}

// Lease is the record of a granted lease.
type Lease struct {
	ID      int64     `json:"id"`
	Owner   string    `json:"owner"`
	TTL     int64     `json:"ttl_s"`
	Granted time.Time `json:"granted"`
}

// LeaseID renders a lease ID as the API and the keys show it.
func LeaseID(id int64) string { return strconv.FormatInt(id, 16) }

// Service runs the primitives on a store client.
type Service struct {
	kv *clientv3.Client
}

// New returns the service on the store client kv.
func New(kv *clientv3.Client) *Service { return &Service{kv: kv} }

// ValidateTTL checks the TTL of a lease: whole seconds (the store counts
// in seconds) from MinTTL to MaxTTL.
func ValidateTTL(ttl time.Duration) error {
	if ttl < MinTTL || ttl > MaxTTL || ttl%time.Second != 0 {
		return invalid("lease TTL %s must be whole seconds from %s to %s", ttl, MinTTL, MaxTTL)
	}
	return nil
}

// Grant makes a lease of ttl for owner.
func (s *Service) Grant(ctx context.Context, owner string, ttl time.Duration) (Lease, error) {
	if err := ValidateTTL(ttl); err != nil {
		return Lease{}, err
	}
	g, err := s.kv.Grant(ctx, int64(ttl/time.Second))
	if err != nil {
		return Lease{}, fmt.Errorf("grant lease: %w", err)
	}
	l := Lease{ID: int64(g.ID), Owner: owner, TTL: g.TTL, Granted: time.Now().UTC()}
	if _, err := s.kv.Put(ctx, prefixLeases+LeaseID(l.ID), store.MustJSON(l), clientv3.WithLease(g.ID)); err != nil {
		s.kv.Revoke(context.WithoutCancel(ctx), g.ID)
		return Lease{}, fmt.Errorf("record lease: %w", err)
	}
	return l, nil
}

// owned checks that owner holds lease id, and that it is alive.
func (s *Service) owned(ctx context.Context, owner string, id int64) error {
	var l Lease
	if _, err := store.GetJSON(ctx, s.kv, prefixLeases+LeaseID(id), &l); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("%w: lease %s is gone", ErrExpired, LeaseID(id))
		}
		return fmt.Errorf("read lease %s: %w", LeaseID(id), err)
	}
	if l.Owner != owner {
		return fmt.Errorf("%w: lease %s belongs to %s", ErrForbidden, LeaseID(id), l.Owner)
	}
	return nil
}

// Renew keeps owner's lease alive for another TTL from now.
func (s *Service) Renew(ctx context.Context, owner string, id int64) error {
	if err := s.owned(ctx, owner, id); err != nil {
		return err
	}
	if _, err := s.kv.KeepAliveOnce(ctx, clientv3.LeaseID(id)); err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return fmt.Errorf("%w: lease %s", ErrExpired, LeaseID(id))
		}
		return fmt.Errorf("renew lease %s: %w", LeaseID(id), err)
	}
	return nil
}

// Revoke ends owner's lease, and with it everything bound to it.
func (s *Service) Revoke(ctx context.Context, owner string, id int64) error {
	if err := s.owned(ctx, owner, id); err != nil {
		return err
	}
	if _, err := s.kv.Revoke(ctx, clientv3.LeaseID(id)); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("revoke lease %s: %w", LeaseID(id), err)
	}
	return nil
}

// leaseHeld is the condition that owner's lease id is still alive: its
// record exists and is bound to it.
func leaseHeld(id int64) clientv3.Cmp {
	return clientv3.Compare(clientv3.LeaseValue(prefixLeases+LeaseID(id)), "=", clientv3.LeaseID(id))
}

func electionKey(kind, name string) string { return prefixElections + kind + "/" + name + "/" }

// Candidate is a node standing for an election.
type Candidate struct {
	Node string `json:"node"`
	// Rank orders candidates: the highest live one should be master.
	Rank int `json:"rank"`
	// State is the candidate's own word: standby, starting, master,
	// failed, passive ...
	State string    `json:"state"`
	Lease string    `json:"lease"`
	Since time.Time `json:"since"`
}

// Master is an election's current winner.
type Master struct {
	Node string `json:"node"`
	// Token is the fencing token of this mastership.
	Token int64     `json:"token"`
	Lease string    `json:"lease"`
	Since time.Time `json:"since"`
}

// Request kinds.
const (
	RequestTakeover = "takeover"
	RequestGiveup   = "giveup"
)

// Request is an operator's or a node's wish for a change of master.
type Request struct {
	Kind string `json:"kind"`
	// Node is who should take over (takeover) or who gives up (giveup).
	Node string    `json:"node"`
	By   string    `json:"by"`
	At   time.Time `json:"at"`
}

// Election is everything about one election, read at Revision.
type Election struct {
	Kind       string      `json:"kind"`
	Name       string      `json:"name"`
	Master     *Master     `json:"master,omitempty"`
	Candidates []Candidate `json:"candidates"`
	Request    *Request    `json:"request,omitempty"`
	Revision   int64       `json:"revision"`
}

// Stand records node as a candidate of the election, bound to its lease,
// and returns the state it had before ("" when it was no candidate).
func (s *Service) Stand(ctx context.Context, owner, kind, name string, c Candidate, lease int64) (string, error) {
	if err := validateElection(kind, name); err != nil {
		return "", err
	}
	if !stateRE.MatchString(c.State) {
		return "", invalid("candidate state %q must be 1-16 lowercase letters", c.State)
	}
	if c.Rank < 0 || c.Rank > 1000000 {
		return "", invalid("rank %d must be from 0 to 1000000", c.Rank)
	}
	if err := s.owned(ctx, owner, lease); err != nil {
		return "", err
	}
	c.Node, c.Lease, c.Since = owner, LeaseID(lease), time.Now().UTC()
	key := electionKey(kind, name) + "candidates/" + owner
	resp, err := s.kv.Txn(ctx).If(leaseHeld(lease)).
		Then(clientv3.OpPut(key, store.MustJSON(c), clientv3.WithLease(clientv3.LeaseID(lease)), clientv3.WithPrevKV())).Commit()
	if err != nil {
		return "", fmt.Errorf("stand for %s %s: %w", kind, name, err)
	}
	if !resp.Succeeded {
		return "", fmt.Errorf("%w: lease %s", ErrExpired, LeaseID(lease))
	}
	var prev Candidate
	if pkv := resp.Responses[0].GetResponsePut().GetPrevKv(); pkv != nil {
		json.Unmarshal(pkv.Value, &prev)
	}
	return prev.State, nil
}

// Acquire makes owner the master of the election if it has none, bound to
// owner's lease, and returns the mastership's fencing token. The caller
// must be a candidate on the same lease.
func (s *Service) Acquire(ctx context.Context, owner, kind, name string, lease int64) (Master, error) {
	if err := validateElection(kind, name); err != nil {
		return Master{}, err
	}
	if err := s.owned(ctx, owner, lease); err != nil {
		return Master{}, err
	}
	base := electionKey(kind, name)
	m := Master{Node: owner, Lease: LeaseID(lease), Since: time.Now().UTC()}
	resp, err := s.kv.Txn(ctx).If(
		leaseHeld(lease),
		clientv3.Compare(clientv3.LeaseValue(base+"candidates/"+owner), "=", clientv3.LeaseID(lease)),
		clientv3.Compare(clientv3.CreateRevision(base+"master"), "=", 0),
	).Then(
		clientv3.OpPut(base+"master", store.MustJSON(m), clientv3.WithLease(clientv3.LeaseID(lease))),
	).Else(
		clientv3.OpGet(base + "master"),
	).Commit()
	if err != nil {
		return Master{}, fmt.Errorf("acquire %s %s: %w", kind, name, err)
	}
	if !resp.Succeeded {
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			var cur Master
			json.Unmarshal(kvs[0].Value, &cur)
			return Master{}, fmt.Errorf("%w: %s %s has master %s", ErrTaken, kind, name, cur.Node)
		}
		return Master{}, fmt.Errorf("%w: lease %s, or no candidacy on it", ErrExpired, LeaseID(lease))
	}
	// The token is the revision that created the key: the transaction's.
	m.Token = resp.Header.Revision
	return m, nil
}

// Resign ends owner's mastership held on lease, if it still holds it, and
// clears a request it has served: one naming owner (its give-up, or a
// takeover by itself). A takeover by another node stays until that node
// has acquired, so that it, not the next by rank, becomes master.
func (s *Service) Resign(ctx context.Context, owner, kind, name string, lease int64) (resigned bool, err error) {
	if err := validateElection(kind, name); err != nil {
		return false, err
	}
	if err := s.owned(ctx, owner, lease); err != nil {
		return false, err
	}
	base := electionKey(kind, name)
	ops := []clientv3.Op{clientv3.OpDelete(base + "master")}
	var r Request
	rev, err := store.GetJSON(ctx, s.kv, base+"request", &r)
	switch {
	case err == nil && r.Node == owner:
		// Only the request read: a newer one is for its node to serve.
		ops = append(ops, clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(base+"request"), "=", rev)},
			[]clientv3.Op{clientv3.OpDelete(base + "request")}, nil))
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return false, fmt.Errorf("resign %s %s: %w", kind, name, err)
	}
	resp, err := s.kv.Txn(ctx).If(
		clientv3.Compare(clientv3.LeaseValue(base+"master"), "=", clientv3.LeaseID(lease)),
	).Then(ops...).Commit()
	if err != nil {
		return false, fmt.Errorf("resign %s %s: %w", kind, name, err)
	}
	return resp.Succeeded, nil
}

// Ask records a takeover or give-up request, which the nodes act on, and
// returns it as recorded: a give-up names the master.
func (s *Service) Ask(ctx context.Context, kind, name string, r Request) (Request, error) {
	e, err := s.Election(ctx, kind, name)
	if err != nil {
		return Request{}, err
	}
	switch r.Kind {
	case RequestTakeover:
		if !slices.ContainsFunc(e.Candidates, func(c Candidate) bool { return c.Node == r.Node }) {
			return Request{}, fmt.Errorf("%w: %s is not a candidate of %s %s", ErrNotFound, r.Node, kind, name)
		}
	case RequestGiveup:
		if e.Master == nil {
			return Request{}, fmt.Errorf("%w: %s %s has no master to give up", ErrNotFound, kind, name)
		}
		r.Node = e.Master.Node
	default:
		return Request{}, invalid("request kind %q must be %s or %s", r.Kind, RequestTakeover, RequestGiveup)
	}
	r.At = time.Now().UTC()
	if _, err := s.kv.Put(ctx, electionKey(kind, name)+"request", store.MustJSON(r)); err != nil {
		return Request{}, fmt.Errorf("record %s request for %s %s: %w", r.Kind, kind, name, err)
	}
	return r, nil
}

// ClearRequest removes a request once the node it names has acted on it.
func (s *Service) ClearRequest(ctx context.Context, owner, kind, name string) error {
	if err := validateElection(kind, name); err != nil {
		return err
	}
	base := electionKey(kind, name)
	var r Request
	if _, err := store.GetJSON(ctx, s.kv, base+"request", &r); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	}
	if r.Node != owner {
		return fmt.Errorf("%w: the request names %s", ErrForbidden, r.Node)
	}
	if _, err := s.kv.Delete(ctx, base+"request"); err != nil {
		return fmt.Errorf("clear request of %s %s: %w", kind, name, err)
	}
	return nil
}

// Election reads one election.
func (s *Service) Election(ctx context.Context, kind, name string) (Election, error) {
	if err := validateElection(kind, name); err != nil {
		return Election{}, err
	}
	base := electionKey(kind, name)
	resp, err := s.kv.Get(ctx, base, clientv3.WithPrefix())
	if err != nil {
		return Election{}, fmt.Errorf("read %s %s: %w", kind, name, err)
	}
	e := Election{Kind: kind, Name: name, Candidates: []Candidate{}, Revision: resp.Header.Revision}
	for _, kv := range resp.Kvs {
		switch k := strings.TrimPrefix(string(kv.Key), base); {
		case k == "master":
			var m Master
			if json.Unmarshal(kv.Value, &m) == nil {
				m.Token = kv.CreateRevision
				e.Master = &m
			}
		case k == "request":
			var r Request
			if json.Unmarshal(kv.Value, &r) == nil {
				e.Request = &r
			}
		case strings.HasPrefix(k, "candidates/"):
			var c Candidate
			if json.Unmarshal(kv.Value, &c) == nil {
				e.Candidates = append(e.Candidates, c)
			}
		}
	}
	SortCandidates(e.Candidates)
	return e, nil
}

// SortCandidates orders candidates by rank, highest first, then by name.
func SortCandidates(cs []Candidate) {
	slices.SortFunc(cs, func(a, b Candidate) int {
		return cmp.Or(cmp.Compare(b.Rank, a.Rank), cmp.Compare(a.Node, b.Node))
	})
}

// Elections lists the names of every election of kind with a candidate.
func (s *Service) Elections(ctx context.Context, kind string) ([]string, int64, error) {
	if err := validateKind(kind); err != nil {
		return nil, 0, err
	}
	p := prefixElections + kind + "/"
	resp, err := s.kv.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, 0, fmt.Errorf("list %s elections: %w", kind, err)
	}
	var names []string
	for _, kv := range resp.Kvs {
		name, _, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), p), "/")
		if len(names) == 0 || names[len(names)-1] != name {
			names = append(names, name)
		}
	}
	return names, resp.Header.Revision, nil
}

// ElectionPrefix is the key prefix a blocking query on an election waits
// on.
func ElectionPrefix(kind, name string) string { return electionKey(kind, name) }

// Holder is one holder, or waiter, of a lock.
type Holder struct {
	Holder string `json:"holder"`
	Lease  string `json:"lease"`
	// Limit is how many may hold the lock at once: 1 for a lock, more for
	// a semaphore. A holder never shares the lock with more than its own
	// limit, whatever the others asked for (see Lock).
	Limit int       `json:"limit"`
	Since time.Time `json:"since"`
	// Token is the holder's fencing token: the revision its key was
	// created at. Holders are served in token order.
	Token int64 `json:"token"`
}

// Lock is a lock's queue: its first entries hold the lock, the rest wait.
type Lock struct {
	Name string `json:"name"`
	// Limit is the limit of the first in the queue.
	Limit    int      `json:"limit"`
	Holders  []Holder `json:"holders"`
	Waiting  []Holder `json:"waiting"`
	Revision int64    `json:"revision"`
}

// MaxLimit bounds a semaphore's holders.
const MaxLimit = 1000

// Enqueue puts owner's lease in the lock's queue; Lock then tells whether
// it holds it. It reports whether the lease was new to the queue.
func (s *Service) Enqueue(ctx context.Context, owner, name string, limit int, lease int64) (bool, error) {
	if err := ValidateName("lock", name); err != nil {
		return false, err
	}
	if limit < 1 || limit > MaxLimit {
		return false, invalid("lock limit %d must be from 1 to %d", limit, MaxLimit)
	}
	if err := s.owned(ctx, owner, lease); err != nil {
		return false, err
	}
	key := prefixLocks + name + "/" + LeaseID(lease)
	h := Holder{Holder: owner, Lease: LeaseID(lease), Limit: limit, Since: time.Now().UTC()}
	// Put only if absent: a repeated request keeps its place in the queue.
	resp, err := s.kv.Txn(ctx).If(leaseHeld(lease), clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, store.MustJSON(h), clientv3.WithLease(clientv3.LeaseID(lease)))).
		Else(clientv3.OpGet(prefixLeases + LeaseID(lease))).Commit()
	if err != nil {
		return false, fmt.Errorf("queue for lock %s: %w", name, err)
	}
	if !resp.Succeeded && len(resp.Responses[0].GetResponseRange().Kvs) == 0 {
		return false, fmt.Errorf("%w: lease %s", ErrExpired, LeaseID(lease))
	}
	return resp.Succeeded, nil
}

// Release takes owner's lease out of the lock's queue and reports whether
// it was in it.
func (s *Service) Release(ctx context.Context, owner, name string, lease int64) (bool, error) {
	if err := ValidateName("lock", name); err != nil {
		return false, err
	}
	if err := s.owned(ctx, owner, lease); err != nil {
		return false, err
	}
	resp, err := s.kv.Delete(ctx, prefixLocks+name+"/"+LeaseID(lease))
	if err != nil {
		return false, fmt.Errorf("release lock %s: %w", name, err)
	}
	return resp.Deleted > 0, nil
}

// Lock reads a lock's queue. The entry at place i (from 0, in creation
// order) holds the lock when i is below its own limit and below the limit
// of every entry ahead of it. So no holder shares the lock with more than
// it asked for, and a holder stays one until it leaves: entries ahead of
// it only ever leave, which moves it forward.
func (s *Service) Lock(ctx context.Context, name string) (Lock, error) {
	if err := ValidateName("lock", name); err != nil {
		return Lock{}, err
	}
	p := prefixLocks + name + "/"
	resp, err := s.kv.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		return Lock{}, fmt.Errorf("read lock %s: %w", name, err)
	}
	l := Lock{Name: name, Holders: []Holder{}, Waiting: []Holder{}, Revision: resp.Header.Revision}
	room := MaxLimit
	for _, kv := range resp.Kvs {
		var h Holder
		if json.Unmarshal(kv.Value, &h) != nil {
			continue
		}
		h.Token = kv.CreateRevision
		if l.Limit == 0 {
			l.Limit = h.Limit
		}
		room = min(room, h.Limit)
		// Once one waits, all behind it wait: the holders are a prefix.
		if len(l.Waiting) == 0 && len(l.Holders) < room {
			l.Holders = append(l.Holders, h)
		} else {
			l.Waiting = append(l.Waiting, h)
		}
	}
	return l, nil
}

// LockPrefix is the key prefix a blocking query on a lock waits on.
func LockPrefix(name string) string { return prefixLocks + name + "/" }
