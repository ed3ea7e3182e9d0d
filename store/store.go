// Package store runs the federation's replicated store, an embedded etcd
// server, and holds the conventions every package uses to keep its records
// in it.
//
// All federation state lives below Root. Each package owns one slice of that
// key space and documents it next to the code that writes it; the whole
// layout is listed in docs/architecture.md.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.uber.org/zap"
)

// Root is the prefix of every key fedkeeper writes, so that a deployment
// pointing supernodes at a shared etcd cluster keeps its state apart.
const Root = "/fedkeeper/"

// MaxLearners bounds the standbys and joining supernodes a store takes.
const MaxLearners = 7

// ErrNotFound is returned by GetJSON when the key does not exist.
var ErrNotFound = errors.New("not found")

// Config says how to run the embedded store.
type Config struct {
	// Name is the store member name: the supernode's name.
	Name string
	// Dir holds the store's data (write-ahead log and snapshots).
	Dir string
	// PeerURL is where other supernodes reach this one (https://HOST:PORT).
	PeerURL string
	// ClientURL is where etcd clients reach the store; loopback by default
	// because fedkeeper itself uses an in-process client.
	ClientURL string
	// CertFile, KeyFile and CAFile secure peer and client traffic with
	// mutual TLS. CAFile is the store CA, which only supernodes hold.
	CertFile, KeyFile, CAFile string
	// InitialCluster lists every member as NAME=PEERURL when joining an
	// existing store; empty starts (or reopens) a store of one member.
	InitialCluster string
	// HeartbeatInterval and ElectionTimeout are Raft's timings; zero picks
	// LAN defaults (100ms, 1s). Supernodes on different continents need
	// larger values (see docs/operations.md).
	HeartbeatInterval, ElectionTimeout time.Duration
	// StartTimeout bounds how long Start waits for the store to be ready.
	StartTimeout time.Duration
}

// Store is a running embedded store with an in-process client.
type Store struct {
	etcd   *embed.Etcd
	Client *clientv3.Client
}

// Start runs the embedded store and waits until it serves requests. A data
// directory that already holds a store is reopened; otherwise a new
// one-member store is created.
func Start(ctx context.Context, cfg Config) (*Store, error) {
	peer, err := url.Parse(cfg.PeerURL)
	if err != nil {
		return nil, fmt.Errorf("store peer URL %q: %w", cfg.PeerURL, err)
	}
	client, err := url.Parse(cfg.ClientURL)
	if err != nil {
		return nil, fmt.Errorf("store client URL %q: %w", cfg.ClientURL, err)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create store directory: %w", err)
	}
	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = cfg.Dir
	ec.ListenPeerUrls = []url.URL{*peer}
	ec.AdvertisePeerUrls = []url.URL{*peer}
	ec.ListenClientUrls = []url.URL{*client}
	ec.AdvertiseClientUrls = []url.URL{*client}
	ec.InitialCluster = ec.InitialClusterFromName(cfg.Name)
	ec.ClusterState = embed.ClusterStateFlagNew
	ec.InitialClusterToken = "fedkeeper"
	// Standbys stay learners, and joining supernodes start as learners.
	ec.MaxLearners = MaxLearners
	if cfg.InitialCluster != "" {
		ec.InitialCluster = cfg.InitialCluster
		ec.ClusterState = embed.ClusterStateFlagExisting
	}
	ec.PeerTLSInfo.CertFile, ec.PeerTLSInfo.KeyFile, ec.PeerTLSInfo.TrustedCAFile = cfg.CertFile, cfg.KeyFile, cfg.CAFile
	ec.PeerTLSInfo.ClientCertAuth = true
	ec.ClientTLSInfo = ec.PeerTLSInfo
	// The store is chatty at info level; its warnings and errors are what
	// an operator needs.
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(newStoreLogger(slog.Default().With("component", "store")).WithOptions(zap.IncreaseLevel(zap.WarnLevel)))
	// Keep an hour of history for watches and blocking queries, no more:
	// the store must not grow without bound.
	ec.AutoCompactionMode = "periodic"
	ec.AutoCompactionRetention = "1h"
	if cfg.HeartbeatInterval > 0 {
		ec.TickMs = uint(cfg.HeartbeatInterval / time.Millisecond)
	}
	if cfg.ElectionTimeout > 0 {
		ec.ElectionMs = uint(cfg.ElectionTimeout / time.Millisecond)
	}
	timeout := cfg.StartTimeout
	if timeout <= 0 {
		timeout = time.Minute
	}

	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("start store: %w", err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("store failed while starting: %w", err)
	case <-t.C:
		e.Close()
		return nil, fmt.Errorf("store not ready after %s (is a quorum of supernodes reachable?)", timeout)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("start store: %w", ctx.Err())
	}
	slog.Info("store ready", "name", cfg.Name, "dir", cfg.Dir, "peer", cfg.PeerURL)
	return &Store{etcd: e, Client: v3client.New(e.Server)}, nil
}

// Err delivers a fatal error of the running store.
func (s *Store) Err() <-chan error { return s.etcd.Err() }

// Close stops the store after its in-flight requests.
func (s *Store) Close() {
	s.Client.Close()
	s.etcd.Close()
}

// GetJSON reads key into v and returns the key's modification revision,
// which callers use to make a later write conditional on nothing having
// changed. It returns ErrNotFound when there is no such key.
func GetJSON(ctx context.Context, kv clientv3.KV, key string, v any) (int64, error) {
	resp, err := kv.Get(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return 0, ErrNotFound
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, v); err != nil {
		return 0, fmt.Errorf("decode %s: %w", key, err)
	}
	return resp.Kvs[0].ModRevision, nil
}

// MustJSON encodes a record for the store. Records are plain structs, so a
// failure is a programming error.
func MustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("encode store record %T: %v", v, err))
	}
	return string(b)
}
