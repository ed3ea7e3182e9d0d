// Package storetest starts a real embedded store for a package's tests,
// with its own CA and certificates in a temporary directory.
package storetest

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/fedkeeper/fedkeeper/pki"
	"github.com/fedkeeper/fedkeeper/store"
)

// Start runs a one-member store for the test and returns it with the
// federation CA that signed its certificates. It is closed when the test
// ends.
func Start(t testing.TB) (*store.Store, *pki.CA) {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	storeCA, err := ca.NewSubCA("store")
	if err != nil {
		t.Fatal(err)
	}
	kp, err := storeCA.Issue(pki.Request{Name: "test-store", Role: pki.RoleSupernode, Hosts: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, caFile := filepath.Join(dir, "store.crt"), filepath.Join(dir, "store.key"), filepath.Join(dir, "store-ca.crt")
	if err := pki.SaveKeyPair(certFile, keyFile, kp.Cert, kp.Key); err != nil {
		t.Fatal(err)
	}
	if err := pki.SaveKeyPair(caFile, filepath.Join(dir, "store-ca.key"), storeCA.Cert, storeCA.Key); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Start(ctx, store.Config{
		Name:      "test-store",
		Dir:       filepath.Join(dir, "data"),
		PeerURL:   "https://" + freeAddr(t),
		ClientURL: "https://" + freeAddr(t),
		CertFile:  certFile, KeyFile: keyFile, CAFile: caFile,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st, ca
}

func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
