package configsync

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedkeeper/fedkeeper/membership"
	"github.com/fedkeeper/fedkeeper/store"
)

// Key space (below store.Root):
//
//	config/<project>/<layer>/head               Head: the layer's newest commit
//	config/<project>/<layer>/commits/<seq, 20>  Commit
//	config/blobs/<sha256>                       a file's bytes, shared by every
//	                                            commit that has them
//	configstatus/<project>/<component>/<node>   Status: what a node applied
//
// where <layer> is "_" for the project's own files, "c/<component>" for a
// component's and "c/<component>/n/<node>" for a node's overrides.
const (
	prefixConfig = store.Root + "config/"
	prefixBlobs  = prefixConfig + "blobs/"
	prefixStatus = store.Root + "configstatus/"
)

// Layer names which files a commit holds: a project's, a component's, or a
// node's overrides of a component.
type Layer struct {
	Project   string `json:"project"`
	Component string `json:"component,omitempty"`
	Node      string `json:"node,omitempty"`
}

var componentRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Validate checks the layer's names.
func (l Layer) Validate() error {
	if err := membership.ValidateProject(l.Project); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if l.Component != "" && !componentRE.MatchString(l.Component) {
		return fmt.Errorf("%w: component %q must be 1-63 lowercase letters, digits or inner hyphens", ErrInvalid, l.Component)
	}
	if l.Node != "" {
		if l.Component == "" {
			return fmt.Errorf("%w: node overrides belong to a component: give --component", ErrInvalid)
		}
		if err := membership.ValidateName(l.Node); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	return nil
}

func (l Layer) key() string {
	k := prefixConfig + l.Project + "/_"
	if l.Component != "" {
		k = prefixConfig + l.Project + "/c/" + l.Component
		if l.Node != "" {
			k += "/n/" + l.Node
		}
	}
	return k
}

func (l Layer) String() string {
	s := l.Project
	if l.Component != "" {
		s += "/" + l.Component
	}
	if l.Node != "" {
		s += " on " + l.Node
	}
	return s
}

// FileRef is a file of a commit without its bytes.
type FileRef struct {
	SHA256 string `json:"sha256"`
	Size   int    `json:"size"`
}

// Commit is one publish: the whole set of a layer's files at that moment.
type Commit struct {
	Seq     int64              `json:"seq"`
	Author  string             `json:"author"`
	Time    time.Time          `json:"time"`
	Message string             `json:"message,omitempty"`
	Files   map[string]FileRef `json:"files"`
	// Revision is the store revision the commit was written at.
	Revision int64 `json:"revision"`
}

// Head points at a layer's newest commit.
type Head struct {
	Seq int64 `json:"seq"`
}

// Store keeps the configuration commits.
type Store struct {
	kv *clientv3.Client
}

// New returns the configuration kept in the store behind c.
func New(c *clientv3.Client) *Store { return &Store{kv: c} }

func hashOf(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Publish makes files the layer's new commit: all files change together
// or none. With expectSeq set the commit is made only if the layer's
// newest commit is still that one (0: none yet), like a push that must be
// a fast-forward; otherwise the latest publish wins, in the store's order.
func (s *Store) Publish(ctx context.Context, l Layer, files map[string][]byte, message, author string, expectSeq *int64) (Commit, error) {
	if err := l.Validate(); err != nil {
		return Commit{}, err
	}
	if len(files) > MaxFiles {
		return Commit{}, fmt.Errorf("%w: %d files, at most %d", ErrTooLarge, len(files), MaxFiles)
	}
	if len(message) > 1024 {
		return Commit{}, fmt.Errorf("%w: message longer than 1024 characters", ErrInvalid)
	}
	refs := map[string]FileRef{}
	total := 0
	for p, b := range files {
		if err := ValidatePath(p); err != nil {
			return Commit{}, err
		}
		if len(b) > MaxFileBytes {
			return Commit{}, fmt.Errorf("%w: %s is %d bytes, at most %d", ErrTooLarge, p, len(b), MaxFileBytes)
		}
		total += len(b)
		refs[p] = FileRef{SHA256: hashOf(b), Size: len(b)}
	}
	if total > MaxCommitBytes {
		return Commit{}, fmt.Errorf("%w: the commit holds %d bytes, at most %d", ErrTooLarge, total, MaxCommitBytes)
	}
	if err := checkPrefixes(refs); err != nil {
		return Commit{}, err
	}
	headKey := l.key() + "/head"
	if expectSeq != nil {
		// A stale publish is refused before any of its bytes are stored.
		var head Head
		if _, err := store.GetJSON(ctx, s.kv, headKey, &head); err != nil && !errors.Is(err, store.ErrNotFound) {
			return Commit{}, err
		}
		if head.Seq != *expectSeq {
			return Commit{}, staleError(l, head.Seq, *expectSeq)
		}
	}
	// Blobs are named by their hash, so writing one again is harmless. A
	// blob whose commit then fails stays, unreferenced: such leftovers are
	// bounded by the size limits and rare.
	for p, b := range files {
		key := prefixBlobs + refs[p].SHA256
		if _, err := s.kv.Txn(ctx).If(clientv3.Compare(clientv3.Version(key), "=", 0)).Then(clientv3.OpPut(key, string(b))).Commit(); err != nil {
			return Commit{}, fmt.Errorf("store file %s: %w", p, err)
		}
	}
	for range 20 {
		var head Head
		headRev, err := store.GetJSON(ctx, s.kv, headKey, &head)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return Commit{}, err
		}
		if expectSeq != nil && head.Seq != *expectSeq {
			return Commit{}, staleError(l, head.Seq, *expectSeq)
		}
		c := Commit{Seq: head.Seq + 1, Author: author, Time: time.Now().UTC(), Message: message, Files: refs}
		resp, err := s.kv.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(headKey), "=", headRev)).
			Then(
				clientv3.OpPut(fmt.Sprintf("%s/commits/%020d", l.key(), c.Seq), store.MustJSON(c)),
				clientv3.OpPut(headKey, store.MustJSON(Head{Seq: c.Seq})),
			).Commit()
		if err != nil {
			return Commit{}, fmt.Errorf("commit %s: %w", l, err)
		}
		if resp.Succeeded {
			c.Revision = resp.Header.Revision
			return c, nil
		}
	}
	return Commit{}, fmt.Errorf("%w: %s is being published by others; try again", ErrConflict, l)
}

func staleError(l Layer, head, expect int64) error {
	return fmt.Errorf("%w: %s is at commit %d, not %d: someone published since; look at the history and publish again", ErrConflict, l, head, expect)
}

// checkPrefixes refuses a file whose path is a directory of another, which
// no file system can hold.
func checkPrefixes(refs map[string]FileRef) error {
	for p := range refs {
		for dir := p; ; {
			i := strings.LastIndexByte(dir, '/')
			if i < 0 {
				break
			}
			dir = dir[:i]
			if _, ok := refs[dir]; ok {
				return fmt.Errorf("%w: %s is a file and also the directory of %s", ErrInvalid, dir, p)
			}
		}
	}
	return nil
}

// Head returns the layer's newest commit number (0 when it has none).
func (s *Store) Head(ctx context.Context, l Layer) (int64, error) {
	if err := l.Validate(); err != nil {
		return 0, err
	}
	var head Head
	if _, err := store.GetJSON(ctx, s.kv, l.key()+"/head", &head); err != nil && !errors.Is(err, store.ErrNotFound) {
		return 0, err
	}
	return head.Seq, nil
}

// Commit returns commit seq of the layer; seq 0 means the newest.
func (s *Store) Commit(ctx context.Context, l Layer, seq int64) (Commit, error) {
	if err := l.Validate(); err != nil {
		return Commit{}, err
	}
	if seq == 0 {
		var err error
		if seq, err = s.Head(ctx, l); err != nil {
			return Commit{}, err
		}
		if seq == 0 {
			return Commit{Files: map[string]FileRef{}}, nil
		}
	}
	key := fmt.Sprintf("%s/commits/%020d", l.key(), seq)
	var c Commit
	rev, err := store.GetJSON(ctx, s.kv, key, &c)
	if errors.Is(err, store.ErrNotFound) {
		return Commit{}, fmt.Errorf("%w: %s has no commit %d", ErrNotFound, l, seq)
	}
	c.Revision = rev
	return c, err
}

// History returns the layer's commits, newest first, at most limit.
func (s *Store) History(ctx context.Context, l Layer, limit int) ([]Commit, error) {
	if err := l.Validate(); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = 100
	}
	resp, err := s.kv.Get(ctx, l.key()+"/commits/", clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(int64(limit)))
	if err != nil {
		return nil, fmt.Errorf("read history of %s: %w", l, err)
	}
	out := []Commit{}
	for _, kv := range resp.Kvs {
		var c Commit
		if err := json.Unmarshal(kv.Value, &c); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		c.Revision = kv.ModRevision
		out = append(out, c)
	}
	return out, nil
}

// Files returns the bytes of a commit's files.
func (s *Store) Files(ctx context.Context, c Commit) ([]File, error) {
	out := make([]File, 0, len(c.Files))
	for _, p := range slices.Sorted(maps.Keys(c.Files)) {
		ref := c.Files[p]
		resp, err := s.kv.Get(ctx, prefixBlobs+ref.SHA256)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", p, err)
		}
		if len(resp.Kvs) == 0 {
			return nil, fmt.Errorf("%w: the bytes of %s (%s) are missing from the store", ErrNotFound, p, ref.SHA256)
		}
		out = append(out, File{Path: p, Content: resp.Kvs[0].Value, SHA256: ref.SHA256})
	}
	return out, nil
}

// Rollback publishes, as a new commit, the files of commit seq.
func (s *Store) Rollback(ctx context.Context, l Layer, seq int64, author string) (Commit, error) {
	old, err := s.Commit(ctx, l, seq)
	if err != nil {
		return Commit{}, err
	}
	files, err := s.Files(ctx, old)
	if err != nil {
		return Commit{}, err
	}
	byPath := map[string][]byte{}
	for _, f := range files {
		byPath[f.Path] = f.Content
	}
	return s.Publish(ctx, l, byPath, fmt.Sprintf("roll back to commit %d", seq), author, nil)
}

// Change is how one file differs between two commits.
type Change struct {
	Path string `json:"path"`
	// Kind is added, removed or changed.
	Kind string `json:"kind"`
}

// Diff lists the files that differ from commit a to commit b of a layer.
func (s *Store) Diff(ctx context.Context, l Layer, a, b int64) ([]Change, error) {
	ca, err := s.Commit(ctx, l, a)
	if err != nil {
		return nil, err
	}
	cb, err := s.Commit(ctx, l, b)
	if err != nil {
		return nil, err
	}
	return diffRefs(ca.Files, cb.Files), nil
}

func diffRefs(a, b map[string]FileRef) []Change {
	changes := []Change{}
	for _, p := range slices.Sorted(maps.Keys(a)) {
		if nb, ok := b[p]; !ok {
			changes = append(changes, Change{Path: p, Kind: "removed"})
		} else if nb.SHA256 != a[p].SHA256 {
			changes = append(changes, Change{Path: p, Kind: "changed"})
		}
	}
	for _, p := range slices.Sorted(maps.Keys(b)) {
		if _, ok := a[p]; !ok {
			changes = append(changes, Change{Path: p, Kind: "added"})
		}
	}
	slices.SortStableFunc(changes, func(x, y Change) int { return strings.Compare(x.Path, y.Path) })
	return changes
}

// Status is what a node reports after applying a component's
// configuration.
type Status struct {
	Node      string    `json:"node"`
	Project   string    `json:"project"`
	Component string    `json:"component"`
	Version   string    `json:"version"`
	Time      time.Time `json:"time"`
	Error     string    `json:"error,omitempty"`
	// Failed is the version that could not be applied, when Error says
	// why; Version is then what stays on disk.
	Failed string `json:"failed,omitempty"`
}

func statusKey(project, component, node string) string {
	return prefixStatus + project + "/" + component + "/" + node
}

// PutStatus records what a node applied.
func (s *Store) PutStatus(ctx context.Context, st Status) error {
	if err := (Layer{Project: st.Project, Component: st.Component, Node: st.Node}).Validate(); err != nil {
		return err
	}
	if st.Component == "" || st.Node == "" {
		return fmt.Errorf("%w: a status names its component and node", ErrInvalid)
	}
	if len(st.Version) > 64 || len(st.Failed) > 64 || len(st.Error) > 4096 {
		return fmt.Errorf("%w: version or error too long", ErrInvalid)
	}
	st.Time = time.Now().UTC()
	if _, err := s.kv.Put(ctx, statusKey(st.Project, st.Component, st.Node), store.MustJSON(st)); err != nil {
		return fmt.Errorf("record configuration status of %s: %w", st.Node, err)
	}
	return nil
}

// Statuses returns what every node running a component of project (all
// components when component is empty) last applied.
func (s *Store) Statuses(ctx context.Context, project, component string) ([]Status, error) {
	key := prefixStatus + project + "/"
	if component != "" {
		key += component + "/"
	}
	resp, err := s.kv.Get(ctx, key, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read configuration status: %w", err)
	}
	out := []Status{}
	for _, kv := range resp.Kvs {
		var st Status
		if err := json.Unmarshal(kv.Value, &st); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		out = append(out, st)
	}
	return out, nil
}

// ForgetNode drops the status records of a node that left.
func (s *Store) ForgetNode(ctx context.Context, node string) error {
	resp, err := s.kv.Get(ctx, prefixStatus, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return fmt.Errorf("read configuration status: %w", err)
	}
	for _, kv := range resp.Kvs {
		if strings.HasSuffix(string(kv.Key), "/"+node) {
			if _, err := s.kv.Delete(ctx, string(kv.Key)); err != nil {
				return fmt.Errorf("forget configuration status of %s: %w", node, err)
			}
		}
	}
	return nil
}
