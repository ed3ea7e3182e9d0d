package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.etcd.io/etcd/server/v3/lease"
	"go.uber.org/zap"
)

// Status is this member's own view of the store, read locally without a
// round through consensus, so it answers even without a quorum.
type Status struct {
	MemberID  uint64 `json:"member_id"`
	LeaderID  uint64 `json:"leader_id"`
	Learner   bool   `json:"learner"`
	Revision  int64  `json:"revision"`
	Applied   uint64 `json:"applied_index"`
	Committed uint64 `json:"committed_index"`
}

// Status reports this member's local view.
func (s *Store) Status() Status {
	srv := s.etcd.Server
	return Status{
		MemberID:  uint64(srv.MemberID()),
		LeaderID:  uint64(srv.Leader()),
		Learner:   srv.IsLearner(),
		Revision:  srv.KV().Rev(),
		Applied:   srv.AppliedIndex(),
		Committed: srv.CommittedIndex(),
	}
}

// Stopped is closed when the store's server stops, for instance because
// the other members removed this one.
func (s *Store) Stopped() <-chan struct{} { return s.etcd.Server.StopNotify() }

// InitialCluster renders members as NAME=PEERURL,... for Config.
func InitialCluster(members map[string]string) string {
	parts := make([]string, 0, len(members))
	for name, url := range members {
		parts = append(parts, name+"="+url)
	}
	return strings.Join(parts, ",")
}

// SaveSnapshot writes a consistent snapshot of the whole store to w.
func (s *Store) SaveSnapshot(ctx context.Context, w io.Writer) (int64, error) {
	rc, err := s.Client.Snapshot(ctx)
	if err != nil {
		return 0, fmt.Errorf("start snapshot: %w", err)
	}
	defer rc.Close()
	n, err := io.Copy(w, rc)
	// The in-process client ends a complete stream with the stream's own
	// context canceled, not io.EOF: etcd's adapter cancels it as soon as
	// the server's handler returns. A server error comes as that error.
	if err != nil && !(errors.Is(err, context.Canceled) && ctx.Err() == nil) {
		return n, fmt.Errorf("stream snapshot: %w", err)
	}
	return n, nil
}

// Restore makes dir a new one-member store holding what the snapshot file
// holds, for a supernode named name reachable by its peers at peerURL. It
// refuses a dir that already holds a store.
func Restore(snapshotFile, dir, name, peerURL string) error {
	if _, err := os.Stat(filepath.Join(dir, "member")); err == nil {
		return fmt.Errorf("%s already holds a store; restore into an empty data directory", dir)
	}
	if _, err := os.Stat(snapshotFile); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	// etcd refuses to restore into an existing directory, even an empty one.
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s must be empty: %w", dir, err)
	}
	err := snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath:        snapshotFile,
		Name:                name,
		OutputDataDir:       dir,
		PeerURLs:            []string{peerURL},
		InitialCluster:      name + "=" + peerURL,
		InitialClusterToken: "fedkeeper",
	})
	if err != nil {
		return fmt.Errorf("restore snapshot %s: %w", snapshotFile, err)
	}
	return nil
}

// RenewLease keeps lease id alive, straight through the store server
// rather than a client stream: a session renewal is the most frequent
// request a supernode serves. A follower passes it to the leader.
func (s *Store) RenewLease(ctx context.Context, id int64) error {
	if _, err := s.etcd.Server.LeaseRenew(ctx, lease.LeaseID(id)); err != nil {
		if errors.Is(err, lease.ErrLeaseNotFound) {
			return fmt.Errorf("%w: lease %x", ErrLeaseNotFound, id)
		}
		return fmt.Errorf("renew lease %x: %w", id, err)
	}
	return nil
}

// ErrLeaseNotFound says a lease has expired or never existed.
var ErrLeaseNotFound = errors.New("lease not found")
