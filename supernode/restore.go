package supernode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedkeeper/fedkeeper/membership"
	"github.com/fedkeeper/fedkeeper/pki"
	"github.com/fedkeeper/fedkeeper/quorum"
	"github.com/fedkeeper/fedkeeper/store"
)

// keyAuthority holds both CAs with their keys, so that a federation rebuilt
// from a snapshot alone has its identity back. Only supernodes can read the
// store; snapshots therefore hold secrets and are written readable by their
// owner only.
const keyAuthority = store.Root + "authority"

type authorityRecord struct {
	CACert      string `json:"ca_cert"`
	CAKey       string `json:"ca_key"`
	StoreCACert string `json:"store_ca_cert"`
	StoreCAKey  string `json:"store_ca_key"`
}

// recordAuthority writes the CAs into the store unless they are there.
func recordAuthority(ctx context.Context, c *clientv3.Client, auth quorum.Authority) error {
	caKey, err := pki.EncodeKey(auth.CA.Key)
	if err != nil {
		return err
	}
	storeKey, err := pki.EncodeKey(auth.StoreCA.Key)
	if err != nil {
		return err
	}
	rec := authorityRecord{CACert: string(auth.CA.CertPEM()), CAKey: string(caKey), StoreCACert: string(auth.StoreCA.CertPEM()), StoreCAKey: string(storeKey)}
	if _, err := c.Txn(ctx).
		If(clientv3.Compare(clientv3.Version(keyAuthority), "=", 0)).
		Then(clientv3.OpPut(keyAuthority, store.MustJSON(rec))).
		Commit(); err != nil {
		return fmt.Errorf("record the federation's CAs: %w", err)
	}
	return nil
}

// Restore rebuilds a one-supernode federation in dir from a snapshot, for
// when a quorum of supernodes is lost for good. cfg names the supernode and
// its addresses; the federation, its CAs and all its records come from the
// snapshot. The other supernodes are then added again.
func Restore(ctx context.Context, snapshotFile, dir string, cfg Config) error {
	if err := membership.ValidateName(cfg.Name); err != nil {
		return fmt.Errorf("supernode name: %w", err)
	}
	if err := fillDefaults(&cfg); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, configFile)); err == nil {
		return fmt.Errorf("%s already holds a supernode; restore into an empty data directory", dir)
	}
	if err := store.Restore(snapshotFile, storeDir(dir), cfg.Name, cfg.peerURL()); err != nil {
		return err
	}
	// The store must be opened once to read the CAs out of it; it needs
	// certificates for that, which only the CAs can make, so a throwaway
	// store CA serves this one start.
	tmp, err := os.MkdirTemp(dir, ".restore-")
	if err != nil {
		return fmt.Errorf("make temporary directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	rec, err := readAuthority(ctx, tmp, cfg)
	if err != nil {
		return err
	}
	ca, err := caFromPEM(rec.CACert, rec.CAKey)
	if err != nil {
		return fmt.Errorf("federation CA in snapshot: %w", err)
	}
	storeCA, err := caFromPEM(rec.StoreCACert, rec.StoreCAKey)
	if err != nil {
		return fmt.Errorf("store CA in snapshot: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "pki"), 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	if err := pki.SaveKeyPair(pkiPath(dir, "ca.crt"), pkiPath(dir, "ca.key"), ca.Cert, ca.Key); err != nil {
		return err
	}
	if err := pki.SaveKeyPair(pkiPath(dir, "store-ca.crt"), pkiPath(dir, "store-ca.key"), storeCA.Cert, storeCA.Key); err != nil {
		return err
	}
	cfg.Federation = ca.Federation()
	cfg.InitialCluster = ""
	return saveConfig(dir, cfg)
}

func caFromPEM(certPEM, keyPEM string) (*pki.CA, error) {
	cert, err := pki.ParseCert([]byte(certPEM))
	if err != nil {
		return nil, err
	}
	key, err := pki.ParseKey([]byte(keyPEM))
	if err != nil {
		return nil, err
	}
	return &pki.CA{Cert: cert, Key: key}, nil
}

// readAuthority opens the restored store with throwaway certificates made
// in tmp, reads the CA record and makes the restored supernode the voter
// of record, then closes the store.
func readAuthority(ctx context.Context, tmp string, cfg Config) (authorityRecord, error) {
	throwaway, err := pki.NewCA("restore")
	if err != nil {
		return authorityRecord{}, err
	}
	kp, err := throwaway.Issue(pki.Request{Name: cfg.Name, Role: pki.RoleSupernode, Hosts: hostsFor(cfg.PeerListen, cfg.StoreListen)})
	if err != nil {
		return authorityRecord{}, err
	}
	certFile, keyFile, caFile := filepath.Join(tmp, "store.crt"), filepath.Join(tmp, "store.key"), filepath.Join(tmp, "ca.crt")
	if err := pki.SaveKeyPair(certFile, keyFile, kp.Cert, kp.Key); err != nil {
		return authorityRecord{}, err
	}
	if err := pki.SaveKeyPair(caFile, filepath.Join(tmp, "ca.key"), throwaway.Cert, throwaway.Key); err != nil {
		return authorityRecord{}, err
	}
	st, err := store.Start(ctx, store.Config{
		Name: cfg.Name, Dir: storeDir(filepath.Dir(tmp)), PeerURL: cfg.peerURL(), ClientURL: "https://" + cfg.StoreListen,
		CertFile: certFile, KeyFile: keyFile, CAFile: caFile, StartTimeout: time.Minute,
	})
	if err != nil {
		return authorityRecord{}, fmt.Errorf("open restored store: %w", err)
	}
	defer st.Close()
	var rec authorityRecord
	if _, err := store.GetJSON(ctx, st.Client, keyAuthority, &rec); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return rec, errors.New("the snapshot holds no federation CA: is it a fedkeeper snapshot?")
		}
		return rec, err
	}
	ca, err := caFromPEM(rec.CACert, rec.CAKey)
	if err != nil {
		return rec, fmt.Errorf("federation CA in snapshot: %w", err)
	}
	members := membership.New(st.Client, ca)
	if err := members.SetRole(ctx, cfg.Name, membership.RoleSupernode); err != nil && !errors.Is(err, store.ErrNotFound) {
		return rec, err
	}
	return rec, nil
}
