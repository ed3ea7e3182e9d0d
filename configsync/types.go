// Package configsync keeps configuration files consistent across the
// federation, the way Apache OODT's distributed configuration does:
// administrators publish a component's files as one commit, supernodes keep
// every commit in the store, and agents apply the newest commit to the
// component's home directory atomically.
//
// A component's configuration is the merge of three layers, each with its
// own history: the project's files (for every component of the project),
// the component's own files, and overrides for one node. Properties files
// (*.properties) merge key by key along that chain; other files override
// whole.
package configsync

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// Errors of this package; the API maps them to status codes.
var (
	ErrInvalid  = errors.New("invalid")
	ErrConflict = errors.New("conflict")
	ErrNotFound = errors.New("not found")
	ErrTooLarge = errors.New("too large")
)

// Limits of one commit. The store is for coordination: configuration files
// are small, and a commit is one store transaction.
const (
	MaxFileBytes   = 1 << 20
	MaxCommitBytes = 4 << 20
	MaxFiles       = 1000
	MaxPathLen     = 512
)

// File is one file of a component's configuration.
type File struct {
	// Path is where the file goes, relative to the component's home
	// directory, with forward slashes.
	Path    string `json:"path"`
	Content []byte `json:"content"`
	SHA256  string `json:"sha256"`
}

// Effective is what an agent applies for one component on one node: the
// merge of the project, component and node layers.
type Effective struct {
	Project   string `json:"project"`
	Component string `json:"component"`
	Node      string `json:"node,omitempty"`
	// Version names the commits merged, one per layer: "p3.c7.n0" is the
	// project's commit 3, the component's 7 and no node override.
	Version string `json:"version"`
	// Revision is the store revision of the newest change of a layer;
	// agents wait for changes after it.
	Revision int64  `json:"revision"`
	Files    []File `json:"files"`
}

// ValidatePath checks a target path: relative, slash-separated, with no
// empty, "." or ".." segment, no backslash or control character, so that
// it names a file below the home directory on every system. Symbolic
// links on the way are checked where the file is written.
func ValidatePath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("%w: empty target path", ErrInvalid)
	case len(p) > MaxPathLen:
		return fmt.Errorf("%w: target path %.40q… is longer than %d characters", ErrInvalid, p, MaxPathLen)
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("%w: target path %q is absolute; give it relative to the component's home", ErrInvalid, p)
	case strings.ContainsAny(p, "\\\x00"):
		return fmt.Errorf("%w: target path %q has a backslash or NUL", ErrInvalid, p)
	case strings.ContainsFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return fmt.Errorf("%w: target path %q has a control character", ErrInvalid, p)
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w: target path %q has an empty, \".\" or \"..\" segment", ErrInvalid, p)
		}
	}
	if path.Clean(p) != p {
		return fmt.Errorf("%w: target path %q is not clean", ErrInvalid, p)
	}
	if first, _, _ := strings.Cut(p, "/"); first == stagingDir {
		return fmt.Errorf("%w: target path %q is inside %s, where agents stage files", ErrInvalid, p, stagingDir)
	}
	return nil
}
