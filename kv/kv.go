// Package kv is a small linearizable key-value space for operators and
// scripts: settings that belong to the federation but to no other concept.
//
// Key space (below store.Root):
//
//	kv/<key>   the value, as given
package kv

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedkeeper/fedkeeper/store"
)

const prefix = store.Root + "kv/"

// MaxValue bounds a value; the store is for coordination, not bulk data.
const MaxValue = 512 << 10

// Errors of this package.
var (
	ErrInvalid  = errors.New("invalid")
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
)

var keyRE = regexp.MustCompile(`^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$`)

// ValidateKey checks a key: slash-separated words of letters, digits, dot,
// underscore and hyphen, at most 256 characters. A word may not be "." or
// "..": an HTTP path holding one is cleaned into another key's path.
func ValidateKey(key string) error {
	if len(key) > 256 || !keyRE.MatchString(key) {
		return fmt.Errorf("%w: key %q must be 1-256 characters of slash-separated words (letters, digits, . _ -)", ErrInvalid, key)
	}
	for _, w := range strings.Split(key, "/") {
		if w == "." || w == ".." {
			return fmt.Errorf("%w: key %q must not have a word that is . or ..", ErrInvalid, key)
		}
	}
	return nil
}

// Entry is a key with its value and the store revision it was last
// written at.
type Entry struct {
	Key      string `json:"key"`
	Value    string `json:"value"`
	Revision int64  `json:"revision"`
}

// Store is the key-value space.
type Store struct{ kv *clientv3.Client }

// New returns the key-value space kept in the store behind c.
func New(c *clientv3.Client) *Store { return &Store{kv: c} }

// Get reads a key, linearizably.
func (s *Store) Get(ctx context.Context, key string) (Entry, error) {
	if err := ValidateKey(key); err != nil {
		return Entry{}, err
	}
	resp, err := s.kv.Get(ctx, prefix+key)
	if err != nil {
		return Entry{}, fmt.Errorf("read %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return Entry{}, fmt.Errorf("%w: no key %q", ErrNotFound, key)
	}
	return Entry{Key: key, Value: string(resp.Kvs[0].Value), Revision: resp.Kvs[0].ModRevision}, nil
}

// Put writes a key. With prevRevision >= 0 the write happens only if the
// key was last written at that revision (0: only if it does not exist).
func (s *Store) Put(ctx context.Context, key, value string, prevRevision int64) (Entry, error) {
	if err := ValidateKey(key); err != nil {
		return Entry{}, err
	}
	if len(value) > MaxValue {
		return Entry{}, fmt.Errorf("%w: value of %d bytes is larger than %d", ErrInvalid, len(value), MaxValue)
	}
	txn := s.kv.Txn(ctx)
	if prevRevision >= 0 {
		txn = txn.If(clientv3.Compare(clientv3.ModRevision(prefix+key), "=", prevRevision))
	}
	resp, err := txn.Then(clientv3.OpPut(prefix+key, value)).Commit()
	if err != nil {
		return Entry{}, fmt.Errorf("write %s: %w", key, err)
	}
	if !resp.Succeeded {
		return Entry{}, fmt.Errorf("%w: %s is not at revision %d", ErrConflict, key, prevRevision)
	}
	return Entry{Key: key, Value: value, Revision: resp.Header.Revision}, nil
}

// Delete removes a key.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	resp, err := s.kv.Delete(ctx, prefix+key)
	if err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("%w: no key %q", ErrNotFound, key)
	}
	return nil
}
