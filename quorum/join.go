package quorum

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/fedkeeper/fedkeeper/events"
	"github.com/fedkeeper/fedkeeper/membership"
	"github.com/fedkeeper/fedkeeper/pki"
	"github.com/fedkeeper/fedkeeper/store"
)

// Authority is what a supernode needs to admit another: the federation CA
// and the store CA. Every supernode holds both, so that any of them can
// admit nodes and supernodes and none is a single point of failure.
type Authority struct {
	CA      *pki.CA
	StoreCA *pki.CA
}

// JoinRequest is a new supernode's request to join the store.
type JoinRequest struct {
	Name  string `json:"name"`
	Token string `json:"token"`
	// Advertise is HOST:PORT of the new supernode's API.
	Advertise string `json:"advertise"`
	// APICSR and StoreCSR are requests for its two certificates.
	APICSR   string `json:"api_csr"`
	StoreCSR string `json:"store_csr"`
}

// JoinResponse gives a new supernode everything it needs to start: its
// certificates, the CA keys every supernode holds, and the store's members.
type JoinResponse struct {
	Federation     string `json:"federation"`
	CACert         string `json:"ca_cert"`
	CAKey          string `json:"ca_key"`
	StoreCACert    string `json:"store_ca_cert"`
	StoreCAKey     string `json:"store_ca_key"`
	APICert        string `json:"api_cert"`
	StoreCert      string `json:"store_cert"`
	PeerURL        string `json:"peer_url"`
	InitialCluster string `json:"initial_cluster"`
	Standby        bool   `json:"standby"`
}

// ValidatePeerURL checks a store peer URL: https://HOST:PORT.
func ValidatePeerURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Port() == "" || u.Hostname() == "" || (u.Path != "" && u.Path != "/") {
		return fmt.Errorf("%w: peer URL %q must be https://HOST:PORT", membership.ErrInvalid, s)
	}
	return nil
}

// Add lets a new supernode in: it returns a single-use token the new
// supernode presents when it starts with --join.
func (s *Service) Add(ctx context.Context, name, peerURL string, standby bool, by string) (string, error) {
	if err := membership.ValidateName(name); err != nil {
		return "", err
	}
	if err := ValidatePeerURL(peerURL); err != nil {
		return "", err
	}
	list, err := s.List(ctx)
	if err != nil {
		return "", err
	}
	for _, sn := range list {
		if sn.Name == name || sn.PeerURL == peerURL {
			return "", fmt.Errorf("%w: supernode %s (%s) is already a store member", membership.ErrConflict, sn.Name, sn.PeerURL)
		}
	}
	token, _, err := s.members.CreateSupernodeToken(ctx, membership.SupernodeGrant{Name: name, PeerURL: peerURL, Standby: standby}, time.Hour, by)
	return token, err
}

// Join admits a supernode that presents a token from Add: it signs its
// certificates and adds it to the store as a learner. The autopilot
// promotes it to voter once it has caught up, unless it is a standby.
func (s *Service) Join(ctx context.Context, auth Authority, req JoinRequest) (JoinResponse, error) {
	if err := membership.ValidateName(req.Name); err != nil {
		return JoinResponse{}, err
	}
	host, _, err := net.SplitHostPort(req.Advertise)
	if err != nil || host == "" {
		return JoinResponse{}, fmt.Errorf("%w: advertise %q must be HOST:PORT", membership.ErrInvalid, req.Advertise)
	}
	apiCSR, err := pki.ParseCSR([]byte(req.APICSR), req.Name)
	if err != nil {
		return JoinResponse{}, fmt.Errorf("%w: api_csr: %v", membership.ErrInvalid, err)
	}
	storeCSR, err := pki.ParseCSR([]byte(req.StoreCSR), req.Name)
	if err != nil {
		return JoinResponse{}, fmt.Errorf("%w: store_csr: %v", membership.ErrInvalid, err)
	}
	// The token is checked before the store changes, and spent only once
	// the store has taken the learner: a store that is briefly unable to
	// take members leaves the token good for another try.
	grant, err := s.members.CheckSupernodeToken(ctx, req.Token, req.Name)
	if err != nil {
		return JoinResponse{}, err
	}
	peer, _ := url.Parse(grant.PeerURL)
	apiCert, err := auth.CA.Sign(apiCSR, pki.Request{Name: req.Name, Role: pki.RoleSupernode, Hosts: []string{host, "localhost", "127.0.0.1"}})
	if err != nil {
		return JoinResponse{}, err
	}
	storeCert, err := auth.StoreCA.Sign(storeCSR, pki.Request{Name: req.Name, Role: pki.RoleSupernode, Hosts: []string{peer.Hostname(), "localhost", "127.0.0.1"}})
	if err != nil {
		return JoinResponse{}, err
	}
	initial, err := s.addLearner(ctx, req.Name, grant.PeerURL)
	if err != nil {
		return JoinResponse{}, err
	}
	if _, err := s.members.SpendSupernodeToken(ctx, req.Token, req.Name); err != nil {
		// Spent by a concurrent join of the same supernode: that one wins.
		return JoinResponse{}, err
	}
	role := membership.RoleSupernode
	if grant.Standby {
		role = membership.RoleStandby
	}
	if err := s.members.PutSupernode(ctx, membership.Node{
		Name: req.Name, Role: role, Projects: []string{}, Address: req.Advertise, PeerURL: grant.PeerURL,
		CertSerial: pki.SerialHex(apiCert), CertNotAfter: apiCert.NotAfter.UTC(), CertPEM: string(pki.EncodeCert(apiCert.Raw)),
	}); err != nil {
		return JoinResponse{}, err
	}
	caKey, err := pki.EncodeKey(auth.CA.Key)
	if err != nil {
		return JoinResponse{}, err
	}
	storeCAKey, err := pki.EncodeKey(auth.StoreCA.Key)
	if err != nil {
		return JoinResponse{}, err
	}
	s.log.Info("supernode joined the store as a learner", "target", req.Name, "peer", grant.PeerURL, "standby", grant.Standby)
	if err := s.events.Record(ctx, events.Event{Node: req.Name, Kind: "supernode_joined", New: string(role), By: s.self}); err != nil {
		s.log.Warn("event not recorded", "err", err)
	}
	return JoinResponse{
		Federation:     auth.CA.Federation(),
		CACert:         string(auth.CA.CertPEM()),
		CAKey:          string(caKey),
		StoreCACert:    string(auth.StoreCA.CertPEM()),
		StoreCAKey:     string(storeCAKey),
		APICert:        string(pki.EncodeCert(apiCert.Raw)),
		StoreCert:      string(pki.EncodeCert(storeCert.Raw)),
		PeerURL:        grant.PeerURL,
		InitialCluster: initial,
		Standby:        grant.Standby,
	}, nil
}

// Rejoin adds back, as a standby learner, a supernode the autopilot
// removed while it was unreachable. It returns the store's members for the
// supernode to start with on an empty store directory.
func (s *Service) Rejoin(ctx context.Context, name string) (string, error) {
	rec, err := s.members.Get(ctx, name)
	if err != nil {
		return "", err
	}
	if rec.PeerURL == "" {
		return "", fmt.Errorf("%w: %s has no store peer URL on record", membership.ErrInvalid, name)
	}
	initial, err := s.addLearner(ctx, name, rec.PeerURL)
	if err != nil {
		return "", err
	}
	if rec.Role != membership.RoleStandby {
		if err := s.members.SetRole(ctx, name, membership.RoleStandby); err != nil {
			return "", err
		}
	}
	s.log.Info("removed supernode rejoins as a standby", "target", name)
	if err := s.events.Record(ctx, events.Event{Node: name, Kind: "supernode_rejoined", New: "standby", By: s.self}); err != nil {
		s.log.Warn("event not recorded", "err", err)
	}
	return initial, nil
}

// addLearner adds peerURL to the store as a learner named name and returns
// the initial-cluster string the new member starts with. A supernode is
// never added twice: if it is already a member, that member is used.
func (s *Service) addLearner(ctx context.Context, name, peerURL string) (string, error) {
	list, err := s.st.Client.MemberList(ctx)
	if err != nil {
		return "", fmt.Errorf("list store members: %w", err)
	}
	members := map[string]string{}
	found := false
	for _, m := range list.Members {
		if len(m.PeerURLs) == 0 {
			continue
		}
		if m.PeerURLs[0] == peerURL {
			found = true
			if m.Name != "" && m.Name != name {
				return "", fmt.Errorf("%w: peer URL %s belongs to supernode %s", membership.ErrConflict, peerURL, m.Name)
			}
			continue
		}
		if m.Name == name {
			return "", fmt.Errorf("%w: supernode %s is a store member at %s already", membership.ErrConflict, name, m.PeerURLs[0])
		}
		if m.Name != "" {
			members[m.Name] = m.PeerURLs[0]
		}
	}
	if !found {
		if _, err := s.st.Client.MemberAddAsLearner(ctx, []string{peerURL}); err != nil {
			return "", fmt.Errorf("add %s to the store: %w", name, err)
		}
	}
	members[name] = peerURL
	return store.InitialCluster(members), nil
}

// Remove takes a supernode out of the store and the federation, as an
// administrator's decision. It refuses when the healthy voters left would
// not be a majority of the remaining store, and it never removes the last
// voter.
func (s *Service) Remove(ctx context.Context, name string) error {
	list, err := s.List(ctx)
	if err != nil {
		return err
	}
	var target *Supernode
	voters, healthy := 0, 0
	for i, sn := range list {
		if sn.Name == name {
			target = &list[i]
			continue
		}
		if sn.Voter {
			voters++
			if sn.Healthy {
				healthy++
			}
		}
	}
	if target != nil {
		if target.Voter && voters == 0 {
			return fmt.Errorf("%w: %s is the last voting supernode", membership.ErrForbidden, name)
		}
		if target.Voter && healthy < quorumOf(voters) {
			return fmt.Errorf("%w: without %s only %d of %d voters are healthy, too few for a quorum", membership.ErrForbidden, name, healthy, voters)
		}
	}
	// The records go first: a supernode asked to remove itself can still
	// write them before it leaves the store.
	if err := s.members.RemoveSupernode(ctx, name); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if err := s.events.Record(ctx, events.Event{Node: name, Kind: "supernode_removed", By: s.self}); err != nil {
		s.log.Warn("event not recorded", "err", err)
	}
	if target != nil {
		id, err := parseID(target.MemberID)
		if err != nil {
			return err
		}
		if _, err := s.st.Client.MemberRemove(ctx, id); err != nil {
			return fmt.Errorf("remove %s from the store: %w", name, err)
		}
	}
	s.log.Warn("supernode removed by an administrator", "target", name)
	return nil
}
