package membership

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedkeeper/fedkeeper/events"
	"github.com/fedkeeper/fedkeeper/pki"
	"github.com/fedkeeper/fedkeeper/store"
)

// Error classes; the API turns each into a status code and an error code.
var (
	ErrNotFound       = errors.New("not found")
	ErrConflict       = errors.New("conflict")
	ErrDenied         = errors.New("denied")
	ErrToken          = errors.New("token refused")
	ErrNotMember      = errors.New("not a member")
	ErrForbidden      = errors.New("forbidden")
	ErrSessionExpired = errors.New("session expired")
)

// Defaults an operator can override.
const (
	DefaultSessionTTL = 15 * time.Second
	// PendingTTL is how long an unanswered join request waits, and how long
	// a denial is kept so the node can learn of it, before its name is free
	// again.
	PendingTTL = 24 * time.Hour
)

// Service carries out membership changes against the store. Every change
// is one store transaction conditioned on what it read, so concurrent
// supernodes (or concurrent requests on one) cannot admit a name twice or
// spend a token more often than it allows.
type Service struct {
	kv  *clientv3.Client
	ca  *pki.CA
	log *slog.Logger
	// SessionTTL is the lease time of node sessions.
	SessionTTL time.Duration
	// Events, when set, receives the joins this service admits or
	// records, as seen by supernode Self.
	Events *events.Log
	Self   string
	// RenewLease, when set, renews session leases without a client
	// stream (see store.Store.RenewLease); it must wrap
	// store.ErrLeaseNotFound for an expired lease.
	RenewLease func(ctx context.Context, id int64) error

	cache *NodeCache

	// tokenMu serialises token spending on this supernode. Correctness
	// comes from the transaction's compare; the mutex only keeps many
	// agents joining with one token at once from retrying in a storm.
	tokenMu sync.Mutex
}

// New returns a membership service over the store client c that signs
// certificates with ca.
func New(c *clientv3.Client, ca *pki.CA) *Service {
	return &Service{kv: c, ca: ca, log: slog.Default().With("component", "membership"), SessionTTL: DefaultSessionTTL}
}

// Bootstrap records the federation and this supernode on first start, and
// on later starts refreshes the supernode's address and certificate.
func (s *Service) Bootstrap(ctx context.Context, self Node) error {
	fed := Federation{Name: s.ca.Federation(), CAHash: s.ca.Hash(), CreatedAt: time.Now().UTC()}
	if _, err := s.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.Version(keyFederation), "=", 0)).
		Then(clientv3.OpPut(keyFederation, store.MustJSON(fed))).
		Commit(); err != nil {
		return fmt.Errorf("record federation: %w", err)
	}
	var old Node
	_, err := store.GetJSON(ctx, s.kv, prefixNodes+self.Name, &old)
	switch {
	case err == nil:
		// Whether it votes is the quorum's business, not the supernode's.
		self.JoinedAt, self.Role = old.JoinedAt, old.Role
	case errors.Is(err, store.ErrNotFound):
		self.JoinedAt = time.Now().UTC()
	default:
		return err
	}
	self.Status = ""
	if _, err := s.kv.Put(ctx, prefixNodes+self.Name, store.MustJSON(self)); err != nil {
		return fmt.Errorf("record supernode %s: %w", self.Name, err)
	}
	return nil
}

// Federation returns the federation record.
func (s *Service) Federation(ctx context.Context) (Federation, error) {
	var f Federation
	_, err := store.GetJSON(ctx, s.kv, keyFederation, &f)
	return f, err
}

// JoinInput is a join request as it arrives.
type JoinInput struct {
	Name    string  `json:"name"`
	Profile Profile `json:"profile"`
	CSR     string  `json:"csr"`
	Token   string  `json:"token,omitempty"`
	From    string  `json:"-"`
}

// JoinResult tells a joiner where it stands. Asking again with the same key
// is safe and returns the current state, so a joiner waiting for approval
// simply repeats its request.
type JoinResult struct {
	Status  Status `json:"status"`
	CertPEM string `json:"cert_pem,omitempty"`
	CAPEM   string `json:"ca_pem,omitempty"`
}

// Join handles a join request: with a valid token the node is admitted at
// once; without one the request waits for an administrator.
func (s *Service) Join(ctx context.Context, in JoinInput) (JoinResult, error) {
	if err := ValidateName(in.Name); err != nil {
		return JoinResult{}, err
	}
	if err := in.Profile.Validate(); err != nil {
		return JoinResult{}, err
	}
	csr, err := pki.ParseCSR([]byte(in.CSR), in.Name)
	if err != nil {
		return JoinResult{}, invalid("%v", err)
	}
	if res, done, err := s.existingJoin(ctx, in.Name, csr.PublicKey); done || err != nil {
		if err != nil || res.Status != StatusPending || in.Token == "" {
			return res, err
		}
		// A node that first asked without a token came back with one: the
		// token admits it, and its waiting request goes in the same step.
	}
	if in.Token != "" {
		return s.joinWithToken(ctx, in, csr.PublicKey)
	}
	return s.requestApproval(ctx, in)
}

// existingJoin answers a join for a name that is already admitted or
// waiting: the same key gets its current state, another key a conflict.
func (s *Service) existingJoin(ctx context.Context, name string, pub crypto.PublicKey) (JoinResult, bool, error) {
	var n Node
	_, err := store.GetJSON(ctx, s.kv, prefixNodes+name, &n)
	if err == nil {
		if samePublicKey(n.CertPEM, pub) {
			return s.admitted(n), true, nil
		}
		return JoinResult{}, true, fmt.Errorf("%w: node name %q is already taken", ErrConflict, name)
	}
	if !errors.Is(err, store.ErrNotFound) {
		return JoinResult{}, true, err
	}
	var jr JoinRequest
	_, err = store.GetJSON(ctx, s.kv, prefixJoins+name, &jr)
	if errors.Is(err, store.ErrNotFound) {
		return JoinResult{}, false, nil
	}
	if err != nil {
		return JoinResult{}, true, err
	}
	csr, perr := pki.ParseCSR([]byte(jr.CSR), name)
	if perr != nil || !pki.SameKey(csr.PublicKey, pub) {
		return JoinResult{}, true, fmt.Errorf("%w: a join request for %q from another key is already waiting", ErrConflict, name)
	}
	if jr.Denied {
		return JoinResult{}, true, fmt.Errorf("%w: join request for %q was denied by an administrator: %s", ErrDenied, name, jr.Reason)
	}
	return JoinResult{Status: StatusPending}, true, nil
}

func (s *Service) admitted(n Node) JoinResult {
	return JoinResult{Status: StatusAlive, CertPEM: n.CertPEM, CAPEM: string(s.ca.CertPEM())}
}

func samePublicKey(certPEM string, pub crypto.PublicKey) bool {
	cert, err := pki.ParseCert([]byte(certPEM))
	return err == nil && pki.SameKey(cert.PublicKey, pub)
}

// issue signs a member certificate and builds the node record for it.
func (s *Service) issue(name string, p Profile, csrPEM string) (Node, error) {
	csr, err := pki.ParseCSR([]byte(csrPEM), name)
	if err != nil {
		return Node{}, invalid("%v", err)
	}
	var hosts []string
	if p.Address != "" {
		h, _, _ := net.SplitHostPort(p.Address)
		hosts = append(hosts, h)
	}
	cert, err := s.ca.Sign(csr, pki.Request{Name: name, Role: pki.RoleMember, Hosts: hosts})
	if err != nil {
		return Node{}, err
	}
	return Node{
		Name:         name,
		Role:         RoleMember,
		Projects:     []string{p.Project},
		Site:         p.Site,
		Address:      p.Address,
		Endpoints:    p.Endpoints,
		Lat:          p.Lat,
		Lon:          p.Lon,
		CertSerial:   pki.SerialHex(cert),
		CertNotAfter: cert.NotAfter.UTC(),
		CertPEM:      string(pki.EncodeCert(cert.Raw)),
		JoinedAt:     time.Now().UTC(),
	}, nil
}

func (s *Service) joinWithToken(ctx context.Context, in JoinInput, pub crypto.PublicKey) (JoinResult, error) {
	node, err := s.issue(in.Name, in.Profile, in.CSR)
	if err != nil {
		return JoinResult{}, err
	}
	check := func(tok Token) error {
		if tok.Supernode != nil {
			return fmt.Errorf("%w: token is for supernode %q, not a member node", ErrToken, tok.Supernode.Name)
		}
		if tok.Project != "" && tok.Project != in.Profile.Project {
			return fmt.Errorf("%w: token is for project %q, not %q", ErrToken, tok.Project, in.Profile.Project)
		}
		return nil
	}
	for {
		// The node's own waiting request, if it has one, goes with the
		// admission; any change to it meanwhile stops the admission.
		waiting, err := s.kv.Get(ctx, prefixJoins+in.Name)
		if err != nil {
			return JoinResult{}, fmt.Errorf("read join request of %s: %w", in.Name, err)
		}
		var waitingRev int64
		if len(waiting.Kvs) == 1 {
			waitingRev = waiting.Kvs[0].ModRevision
		}
		_, err = s.spendToken(ctx, in.Token, check,
			[]clientv3.Cmp{
				clientv3.Compare(clientv3.Version(prefixNodes+in.Name), "=", 0),
				clientv3.Compare(clientv3.ModRevision(prefixJoins+in.Name), "=", waitingRev),
			},
			clientv3.OpPut(prefixNodes+in.Name, store.MustJSON(node)),
			clientv3.OpDelete(prefixJoins+in.Name))
		if err == nil {
			s.log.Info("node admitted with token", "node", in.Name, "project", in.Profile.Project, "from", in.From)
			s.record(ctx, events.Event{Node: in.Name, Kind: "joined", New: string(RoleMember), Message: "with a token, project " + in.Profile.Project})
			return s.admitted(node), nil
		}
		if !errors.Is(err, errCompareFailed) {
			return JoinResult{}, err
		}
		// The name was taken meanwhile: by this very node asking twice, or
		// by another.
		if res, done, err := s.existingJoin(ctx, in.Name, pub); done || err != nil {
			return res, err
		}
	}
}

func (s *Service) requestApproval(ctx context.Context, in JoinInput) (JoinResult, error) {
	lease, err := s.kv.Grant(ctx, int64(PendingTTL/time.Second))
	if err != nil {
		return JoinResult{}, fmt.Errorf("grant join request lease: %w", err)
	}
	jr := JoinRequest{Name: in.Name, Profile: in.Profile, CSR: in.CSR, RequestedAt: time.Now().UTC(), From: in.From}
	resp, err := s.kv.Txn(ctx).If(
		clientv3.Compare(clientv3.Version(prefixNodes+in.Name), "=", 0),
		clientv3.Compare(clientv3.Version(prefixJoins+in.Name), "=", 0),
	).Then(clientv3.OpPut(prefixJoins+in.Name, store.MustJSON(jr), clientv3.WithLease(lease.ID))).Commit()
	if err != nil {
		return JoinResult{}, fmt.Errorf("record join request %s: %w", in.Name, err)
	}
	if !resp.Succeeded {
		s.revokeLater(lease.ID)
		csr, _ := pki.ParseCSR([]byte(in.CSR), in.Name)
		res, _, err := s.existingJoin(ctx, in.Name, csr.PublicKey)
		return res, err
	}
	s.log.Info("join request waiting for approval", "node", in.Name, "project", in.Profile.Project, "from", in.From)
	s.record(ctx, events.Event{Node: in.Name, Kind: "join_requested", New: string(StatusPending), Message: "project " + in.Profile.Project + ", from " + in.From})
	return JoinResult{Status: StatusPending}, nil
}

// WaitJoin blocks until the join request or node record of name may have
// changed after afterRev, or ctx ends; a waiting joiner then asks again.
func (s *Service) WaitJoin(ctx context.Context, name string, afterRev int64) {
	s.waitAny(ctx, afterRev, prefixJoins+name, prefixNodes+name)
}

// Revision is the store's current revision, the index of blocking queries.
func (s *Service) Revision(ctx context.Context) (int64, error) {
	resp, err := s.kv.Get(ctx, keyFederation)
	if err != nil {
		return 0, fmt.Errorf("read store revision: %w", err)
	}
	return resp.Header.Revision, nil
}

// Approve admits a node whose join request is waiting (or was denied: an
// administrator may change their mind).
func (s *Service) Approve(ctx context.Context, name string) (Node, error) {
	var jr JoinRequest
	rev, err := store.GetJSON(ctx, s.kv, prefixJoins+name, &jr)
	if errors.Is(err, store.ErrNotFound) {
		return Node{}, fmt.Errorf("%w: no join request from %q", ErrNotFound, name)
	}
	if err != nil {
		return Node{}, err
	}
	node, err := s.issue(name, jr.Profile, jr.CSR)
	if err != nil {
		return Node{}, err
	}
	resp, err := s.kv.Txn(ctx).If(
		clientv3.Compare(clientv3.ModRevision(prefixJoins+name), "=", rev),
		clientv3.Compare(clientv3.Version(prefixNodes+name), "=", 0),
	).Then(
		clientv3.OpDelete(prefixJoins+name),
		clientv3.OpPut(prefixNodes+name, store.MustJSON(node)),
	).Commit()
	if err != nil {
		return Node{}, fmt.Errorf("approve %s: %w", name, err)
	}
	if !resp.Succeeded {
		return Node{}, fmt.Errorf("%w: join request of %q changed while approving; look again", ErrConflict, name)
	}
	s.log.Info("join request approved", "node", name)
	return node, nil
}

// Deny refuses a waiting join request. The denial is kept for PendingTTL so
// the node learns of it; then the name is free again.
func (s *Service) Deny(ctx context.Context, name, reason string) error {
	if len(reason) > 512 {
		return invalid("reason must be at most 512 characters")
	}
	var jr JoinRequest
	rev, err := store.GetJSON(ctx, s.kv, prefixJoins+name, &jr)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: no join request from %q", ErrNotFound, name)
	}
	if err != nil {
		return err
	}
	jr.Denied, jr.Reason = true, reason
	resp, err := s.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(prefixJoins+name), "=", rev)).
		Then(clientv3.OpPut(prefixJoins+name, store.MustJSON(jr), clientv3.WithIgnoreLease())).
		Commit()
	if err != nil {
		return fmt.Errorf("deny %s: %w", name, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: join request of %q changed while denying; look again", ErrConflict, name)
	}
	s.log.Info("join request denied", "node", name, "reason", reason)
	return nil
}

// Authorize checks that a certificate still speaks for its holder: a node's
// certificate is valid only while the node is a member and the certificate
// is the one it was admitted with.
func (s *Service) Authorize(ctx context.Context, id pki.Identity) error {
	if id.Federation != s.ca.Federation() {
		return fmt.Errorf("%w: certificate is for federation %q", ErrNotMember, id.Federation)
	}
	if id.Role == pki.RoleAdmin {
		return nil
	}
	n, err := s.node(ctx, id.Name, id.Serial)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: node %q is not a member of the federation (it left or was removed); join again", ErrNotMember, id.Name)
	}
	if err != nil {
		return err
	}
	if n.CertSerial != id.Serial {
		return fmt.Errorf("%w: certificate %s is not the current certificate of node %q", ErrNotMember, id.Serial, id.Name)
	}
	return nil
}

// node reads one node record for authorizing a certificate with serial:
// from the node cache once it is loaded (every request is authorized), and
// from the store when the cache has no such node or another certificate,
// since the cache may lag the store by a moment (a node admitted or
// re-admitted just now).
func (s *Service) node(ctx context.Context, name, serial string) (Node, error) {
	if s.cache != nil && s.cache.Ready() {
		if n, ok := s.cache.Get(name); ok && n.CertSerial == serial {
			return n, nil
		}
	}
	var n Node
	_, err := store.GetJSON(ctx, s.kv, prefixNodes+name, &n)
	return n, err
}

// OpenSession starts a lease-bound session for a member: while it is
// renewed the node is alive.
func (s *Service) OpenSession(ctx context.Context, name string) (Session, error) {
	ttl := int64(s.SessionTTL / time.Second)
	lease, err := s.kv.Grant(ctx, ttl)
	if err != nil {
		return Session{}, fmt.Errorf("grant session lease: %w", err)
	}
	sess := Session{Lease: int64(lease.ID), Since: time.Now().UTC(), TTL: ttl}
	resp, err := s.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.Version(prefixNodes+name), ">", 0)).
		Then(clientv3.OpPut(prefixAlive+name, store.MustJSON(sess), clientv3.WithLease(lease.ID), clientv3.WithPrevKV())).
		Commit()
	if err != nil {
		s.revokeLater(lease.ID)
		return Session{}, fmt.Errorf("open session for %s: %w", name, err)
	}
	if !resp.Succeeded {
		s.revokeLater(lease.ID)
		return Session{}, fmt.Errorf("%w: node %q is not a member of the federation", ErrNotMember, name)
	}
	// A node that restarts opens a new session; its old lease goes at once.
	if prev := resp.Responses[0].GetResponsePut().GetPrevKv(); prev != nil && prev.Lease != 0 {
		s.revokeLater(clientv3.LeaseID(prev.Lease))
	}
	return sess, nil
}

// RenewSession keeps a member's session alive.
func (s *Service) RenewSession(ctx context.Context, name string, lease int64) error {
	// Whose lease it is only needs this supernode's own copy of the
	// store: the lease itself is renewed through the leader.
	resp, err := s.kv.Get(ctx, prefixAlive+name, clientv3.WithSerializable())
	if err != nil {
		return fmt.Errorf("read session of %s: %w", name, err)
	}
	var sess Session
	if len(resp.Kvs) == 0 || json.Unmarshal(resp.Kvs[0].Value, &sess) != nil || sess.Lease != lease {
		return fmt.Errorf("%w: node %q has no session with lease %x", ErrSessionExpired, name, lease)
	}
	renew := s.RenewLease
	if renew == nil {
		renew = func(ctx context.Context, id int64) error {
			_, err := s.kv.KeepAliveOnce(ctx, clientv3.LeaseID(id))
			if errors.Is(err, rpctypes.ErrLeaseNotFound) {
				return fmt.Errorf("%w: %w", store.ErrLeaseNotFound, err)
			}
			return err
		}
	}
	if err := renew(ctx, lease); err != nil {
		if errors.Is(err, store.ErrLeaseNotFound) {
			return fmt.Errorf("%w: lease %x of %q expired", ErrSessionExpired, lease, name)
		}
		return fmt.Errorf("renew session of %s: %w", name, err)
	}
	return nil
}

// record writes an event if the service has an event log. An event that
// cannot be written is logged: the change itself has happened.
func (s *Service) record(ctx context.Context, e events.Event) {
	if s.Events == nil {
		return
	}
	if e.By == "" {
		e.By = s.Self
	}
	if err := s.Events.Record(ctx, e); err != nil {
		s.log.Warn("event not recorded", "kind", e.Kind, "node", e.Node, "err", err)
	}
}

// revokeLater drops a lease that is no longer needed; if that fails the
// lease simply expires.
func (s *Service) revokeLater(id clientv3.LeaseID) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.kv.Revoke(ctx, id)
	}()
}

// Update changes what a node says about itself: the fields given in p
// (non-empty strings, a non-nil endpoint map, lat and lon) replace the
// record's, the others stay. The project list is kept: which projects a
// node belongs to is not the node's to change.
func (s *Service) Update(ctx context.Context, name string, p Profile) (Node, error) {
	if err := p.validateDetails(); err != nil {
		return Node{}, err
	}
	var n Node
	rev, err := store.GetJSON(ctx, s.kv, prefixNodes+name, &n)
	if errors.Is(err, store.ErrNotFound) {
		return Node{}, fmt.Errorf("%w: no node %q", ErrNotFound, name)
	}
	if err != nil {
		return Node{}, err
	}
	// A patch: what is not given stays as it was.
	if p.Site != "" {
		n.Site = p.Site
	}
	if p.Address != "" {
		n.Address = p.Address
	}
	if p.Endpoints != nil {
		n.Endpoints = p.Endpoints
	}
	if p.Lat != nil {
		n.Lat, n.Lon = p.Lat, p.Lon
	}
	resp, err := s.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(prefixNodes+name), "=", rev)).
		Then(clientv3.OpPut(prefixNodes+name, store.MustJSON(n))).
		Commit()
	if err != nil {
		return Node{}, fmt.Errorf("update node %s: %w", name, err)
	}
	if !resp.Succeeded {
		return Node{}, fmt.Errorf("%w: node %q changed meanwhile; try again", ErrConflict, name)
	}
	return n, nil
}

// Remove takes a member out of the federation, or drops its join request.
// Its certificate stops working at once (see Authorize).
func (s *Service) Remove(ctx context.Context, name string) error {
	var n Node
	_, err := store.GetJSON(ctx, s.kv, prefixNodes+name, &n)
	if err == nil && n.Role != RoleMember {
		return fmt.Errorf("%w: %q is a %s; remove it with: fedkeeper supernode remove %s", ErrForbidden, name, n.Role, name)
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return s.remove(ctx, name)
}

// RemoveSupernode deletes the records of a supernode that has left the
// store; its certificate stops working at once.
func (s *Service) RemoveSupernode(ctx context.Context, name string) error {
	var n Node
	if _, err := store.GetJSON(ctx, s.kv, prefixNodes+name, &n); err != nil {
		return fmt.Errorf("read record of %s: %w", name, err)
	}
	if n.Role == RoleMember {
		return fmt.Errorf("%w: %q is a member node; remove it with: fedkeeper nodes remove %s", ErrForbidden, name, name)
	}
	return s.remove(ctx, name)
}

func (s *Service) remove(ctx context.Context, name string) error {
	resp, err := s.kv.Txn(ctx).Then(
		clientv3.OpDelete(prefixNodes+name),
		clientv3.OpDelete(prefixAlive+name, clientv3.WithPrevKV()),
		clientv3.OpDelete(prefixJoins+name),
		clientv3.OpDelete(prefixLinks+name),
	).Commit()
	if err != nil {
		return fmt.Errorf("remove node %s: %w", name, err)
	}
	var deleted int64
	for _, r := range resp.Responses {
		deleted += r.GetResponseDeleteRange().Deleted
	}
	if deleted == 0 {
		return fmt.Errorf("%w: no node or join request %q", ErrNotFound, name)
	}
	if prev := resp.Responses[1].GetResponseDeleteRange().PrevKvs; len(prev) == 1 && prev[0].Lease != 0 {
		s.revokeLater(clientv3.LeaseID(prev[0].Lease))
	}
	s.log.Info("node removed", "node", name)
	return nil
}

// List returns every node and waiting join request, sorted by name, with
// the store revision they were read at.
func (s *Service) List(ctx context.Context) ([]Node, int64, error) {
	return s.read(ctx, "", clientv3.WithPrefix())
}

// read returns the nodes and join requests whose name starts with (with
// WithPrefix) or is name, from one consistent read.
func (s *Service) read(ctx context.Context, name string, opts ...clientv3.OpOption) ([]Node, int64, error) {
	resp, err := s.kv.Txn(ctx).Then(
		clientv3.OpGet(prefixNodes+name, opts...),
		clientv3.OpGet(prefixAlive+name, append(opts, clientv3.WithKeysOnly())...),
		clientv3.OpGet(prefixJoins+name, opts...),
	).Commit()
	if err != nil {
		return nil, 0, fmt.Errorf("list nodes: %w", err)
	}
	alive := map[string]bool{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		alive[strings.TrimPrefix(string(kv.Key), prefixAlive)] = true
	}
	var nodes []Node
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		var n Node
		if err := json.Unmarshal(kv.Value, &n); err != nil {
			return nil, 0, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		n.Status = StatusGone
		if alive[n.Name] {
			n.Status = StatusAlive
		}
		nodes = append(nodes, n)
	}
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		var jr JoinRequest
		if err := json.Unmarshal(kv.Value, &jr); err != nil {
			return nil, 0, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		st := StatusPending
		if jr.Denied {
			st = StatusDenied
		}
		nodes = append(nodes, Node{
			Name: jr.Name, Role: RoleMember, Projects: []string{jr.Profile.Project}, Site: jr.Profile.Site,
			Address: jr.Profile.Address, Endpoints: jr.Profile.Endpoints, Lat: jr.Profile.Lat, Lon: jr.Profile.Lon,
			JoinedAt: jr.RequestedAt, Status: st,
		})
	}
	slices.SortFunc(nodes, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	return nodes, resp.Header.Revision, nil
}

// Get returns one node (or waiting join request) by name.
func (s *Service) Get(ctx context.Context, name string) (Node, error) {
	nodes, _, err := s.read(ctx, name)
	if err != nil {
		return Node{}, err
	}
	if len(nodes) == 0 {
		return Node{}, fmt.Errorf("%w: no node %q", ErrNotFound, name)
	}
	return nodes[0], nil
}

// WaitList blocks until the node list may have changed after afterRev, or
// ctx ends.
func (s *Service) WaitList(ctx context.Context, afterRev int64) {
	s.waitAny(ctx, afterRev, prefixNodes, prefixAlive, prefixJoins)
}

// waitAny blocks until a key under any of prefixes changes after afterRev,
// or ctx ends. Waking for a neighbour's key is harmless: callers read again.
func (s *Service) waitAny(ctx context.Context, afterRev int64, prefixes ...string) {
	store.Wait(ctx, s.kv, afterRev, prefixes...)
}
