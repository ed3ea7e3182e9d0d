package configsync

// The agent's side: writing an Effective into a component's home directory
// so that the component, and a crash, only ever see whole commits.
//
// On disk, for one component:
//
//	HOME/.fedkeeper-staging/N   new contents, staged on the home's own
//	                            filesystem so that moving them into place
//	                            is a rename; present only during an apply
//	STATE/journal.json          the plan of an apply under way: the staged
//	                            files and their targets, the files to remove
//	                            and the manifest to write
//	STATE/applied.json          the manifest: what was applied last (version,
//	                            every file with its SHA-256, time, reload
//	                            error); it is also the list of files the
//	                            agent owns, the only ones it ever removes
//
// An apply stages every new or changed file (each synced, then the staging
// directory), writes the journal, and then commits: it removes the files
// dropped from the commit, renames the staged files into place, syncs the
// directories touched, writes the manifest, removes the staging directory,
// runs the reload command and finally deletes the journal. The journal is
// the commit point: without it the staging is incomplete and is thrown
// away, leaving the old commit whole; with it the staging is complete and
// the commit is done again from the start, every step of which can be
// repeated. Keeping the journal until the reload has run means a crash
// after the files moved still reloads the component once it is recovered.
//
// Files are replaced one by one: each rename is atomic, so a reader sees a
// file whole, old or new, but during the rename loop some files are
// already new while others are still old. The reload command runs only
// once all of them are in place; components that read their files on
// their own, without a reload, can see that short mix.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fedkeeper/fedkeeper/internal/atomicfile"
)

// ErrReload means the files of a commit are in place but the reload
// command failed; the failure is also kept in Applied.ReloadError.
var ErrReload = errors.New("reload command failed")

// ErrUnsafePath means a target path leads through a symbolic link, or ends
// on one or on something else than a regular file, inside the home
// directory. The agent writes only below real directories of the home, so
// that a link cannot send a file elsewhere on the node.
var ErrUnsafePath = errors.New("unsafe target path")

const (
	// stagingDir is below the home, on its filesystem; target paths may
	// not start with it.
	stagingDir   = ".fedkeeper-staging"
	manifestFile = "applied.json"
	journalFile  = "journal.json"

	// Configuration files are readable by everyone on the node, keys
	// included: the component often runs as another user than the agent,
	// and who may read a secret is up to the home directory's own mode.
	fileMode = 0o644
	dirMode  = 0o755

	// maxReloadOutput is how much of the reload command's output is kept.
	maxReloadOutput = 4 << 10
	// reloadWaitDelay is how long output is still read once the reload
	// command itself has ended, for a daemon it started that kept stdout.
	reloadWaitDelay = 500 * time.Millisecond
)

// Applied is what an agent last applied to a component's home.
type Applied struct {
	Version string `json:"version"`
	// Files maps each target path to the SHA-256 of its content, in hex.
	Files map[string]string `json:"files"`
	Time  time.Time         `json:"time"`
	// ReloadError is why the reload command failed for the files now in
	// place, empty when it succeeded or there is none.
	ReloadError string `json:"reload_error,omitempty"`
}

// Applier writes the configuration of one component into its home
// directory. Its methods may be called from several goroutines; applies
// run one at a time.
type Applier struct {
	home          string
	stateDir      string
	reload        []string
	reloadTimeout time.Duration
	log           *slog.Logger

	mu sync.Mutex // held through an apply or recovery

	appliedMu sync.Mutex
	applied   *Applied // the manifest; nil before the first apply

	// afterRename, in tests, is called once the first done renames of a
	// commit are in place (done 0: before the first); an error stops the
	// commit there, as a crash would.
	afterRename func(done int) error
}

// NewApplier returns the Applier for the component living in home, an
// existing absolute directory. stateDir, created if need be, is the
// agent's own directory for this component (for the manifest and the
// journal). reload, if not empty, is the command run once a new commit is
// in place, in home, with FEDKEEPER_CONFIG_VERSION set to its version, and
// killed with its process group after reloadTimeout. A nil log means
// slog.Default().
func NewApplier(home, stateDir string, reload []string, reloadTimeout time.Duration, log *slog.Logger) (*Applier, error) {
	if !filepath.IsAbs(home) {
		return nil, fmt.Errorf("%w: component home %q is not an absolute path", ErrInvalid, home)
	}
	if !filepath.IsAbs(stateDir) {
		return nil, fmt.Errorf("%w: state directory %q is not an absolute path", ErrInvalid, stateDir)
	}
	fi, err := os.Stat(home)
	if err != nil {
		return nil, fmt.Errorf("component home: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%w: component home %s is not a directory", ErrInvalid, home)
	}
	if len(reload) > 0 && reload[0] == "" {
		return nil, fmt.Errorf("%w: reload command has an empty program name", ErrInvalid)
	}
	if len(reload) > 0 && reloadTimeout <= 0 {
		return nil, fmt.Errorf("%w: reload timeout %v is not positive", ErrInvalid, reloadTimeout)
	}
	if err := os.MkdirAll(stateDir, dirMode); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	a := &Applier{
		home:          home,
		stateDir:      stateDir,
		reload:        slices.Clone(reload),
		reloadTimeout: reloadTimeout,
		log:           log.With("component", "configsync", "home", home),
	}
	data, err := os.ReadFile(filepath.Join(stateDir, manifestFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read manifest: %w", err)
	default:
		var m Applied
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("manifest %s is damaged (remove it to start afresh; the agent then treats every file in the home as not its own): %w",
				filepath.Join(stateDir, manifestFile), err)
		}
		a.applied = &m
	}
	return a, nil
}

// Applied returns what was applied last, from the manifest, which
// outlives the agent; false if nothing was ever applied.
func (a *Applier) Applied() (Applied, bool) {
	a.appliedMu.Lock()
	defer a.appliedMu.Unlock()
	if a.applied == nil {
		return Applied{}, false
	}
	m := *a.applied
	m.Files = maps.Clone(m.Files)
	return m, true
}

// Recover finishes an apply cut short by a crash, or throws away one that
// had not reached its commit point, so that the home holds exactly one
// whole commit. Call it once at start, before serving Applied. A finished
// commit is reloaded; an error wrapping ErrReload means its files are in
// place but the reload failed.
func (a *Applier) Recover() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	root, err := os.OpenRoot(a.home)
	if err != nil {
		return fmt.Errorf("open component home: %w", err)
	}
	defer root.Close()
	return a.finish(context.Background(), root)
}

// Apply writes eff into the home. Invalid input, a file whose content does
// not match its SHA-256, or a target path that would lead outside the home
// through a symbolic link, is an error and nothing is written. Files
// already in place are not rewritten, and a version already applied with
// the same files does nothing, reload included. Files the agent never
// wrote are left alone, unless eff has them, and then they are
// overwritten. If the reload command fails the files stay, and the error
// wraps ErrReload.
func (a *Applier) Apply(ctx context.Context, eff Effective) error {
	files, err := checkFiles(eff)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	root, err := os.OpenRoot(a.home)
	if err != nil {
		return fmt.Errorf("open component home: %w", err)
	}
	defer root.Close()
	if err := a.finish(ctx, root); err != nil {
		if !errors.Is(err, ErrReload) {
			return fmt.Errorf("finish the earlier apply: %w", err)
		}
		a.log.Warn("earlier apply finished, its reload failed", "err", err)
	}

	prev, _ := a.Applied()
	write, remove, err := a.plan(root, files, prev.Files)
	if err != nil {
		return err
	}
	next := Applied{Version: eff.Version, Files: make(map[string]string, len(files)), Time: time.Now().UTC()}
	for _, f := range files {
		next.Files[f.Path] = f.SHA256
	}
	if len(write) == 0 && len(remove) == 0 {
		if prev.Version == eff.Version && maps.Equal(prev.Files, next.Files) {
			return nil
		}
		// Nothing moves on disk, so the component is not reloaded and
		// the outcome of its last reload still holds.
		next.ReloadError = prev.ReloadError
		a.log.Info("configuration applied, no file changed", "version", eff.Version)
		return a.writeManifest(next)
	}

	renames, err := a.stage(ctx, root, write)
	if err != nil {
		removeStaging(root, a.log)
		return err
	}
	j := &journal{Applied: next, Renames: renames, Removes: remove}
	if err := a.writeJournal(j); err != nil {
		removeStaging(root, a.log)
		return err
	}
	a.log.Info("applying configuration", "version", eff.Version, "from", prev.Version,
		"written", len(renames), "removed", len(remove))
	return a.commit(ctx, root, j)
}

// checkFiles checks eff without touching the disk and returns its files
// with their hashes in lower case.
func checkFiles(eff Effective) ([]File, error) {
	if eff.Version == "" {
		return nil, fmt.Errorf("%w: configuration has no version", ErrInvalid)
	}
	files := make([]File, len(eff.Files))
	seen := make(map[string]bool, len(eff.Files))
	for i, f := range eff.Files {
		if err := ValidatePath(f.Path); err != nil {
			return nil, err
		}
		if seen[f.Path] {
			return nil, fmt.Errorf("%w: target path %q appears twice", ErrInvalid, f.Path)
		}
		seen[f.Path] = true
		sum := sha256.Sum256(f.Content)
		got := hex.EncodeToString(sum[:])
		if !strings.EqualFold(got, f.SHA256) {
			return nil, fmt.Errorf("%w: file %q: content has SHA-256 %s, the commit says %q", ErrInvalid, f.Path, got, f.SHA256)
		}
		files[i] = File{Path: f.Path, Content: f.Content, SHA256: got}
	}
	for p := range seen {
		for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
			if seen[dir] {
				return nil, fmt.Errorf("%w: target path %q is a file and also the directory of %q", ErrInvalid, dir, p)
			}
		}
	}
	return files, nil
}

// plan compares files with the manifest's prevFiles and the disk, and
// returns the files to write and the paths to remove. It writes nothing.
func (a *Applier) plan(root *os.Root, files []File, prevFiles map[string]string) (write []File, remove []string, err error) {
	wanted := make(map[string]bool, len(files))
	for _, f := range files {
		wanted[f.Path] = true
	}
	removing := map[string]bool{}
	for _, p := range slices.Sorted(maps.Keys(prevFiles)) {
		if wanted[p] || ValidatePath(p) != nil {
			continue
		}
		if ok, why := a.removable(root, p); ok {
			remove = append(remove, p)
			removing[p] = true
		} else if why != "" {
			a.log.Warn("file dropped from the configuration left in place", "path", p, "reason", why)
		}
	}
	for _, f := range files {
		exists, err := checkTarget(root, f.Path, removing)
		if err != nil {
			return nil, nil, err
		}
		if exists {
			prevSum, managed := prevFiles[f.Path]
			if prevSum == f.SHA256 {
				if sum, err := hashFile(root, f.Path); err == nil && sum == f.SHA256 {
					continue
				}
			}
			if !managed {
				a.log.Warn("overwriting a file the agent did not write", "path", f.Path)
			}
		}
		write = append(write, f)
	}
	return write, remove, nil
}

// removable reports whether p, a file of the manifest, can be removed:
// it is still a regular file, reached without a symbolic link. If not,
// why says so, or is empty when the file is gone already.
func (a *Applier) removable(root *os.Root, p string) (ok bool, why string) {
	if _, err := checkTarget(root, p, nil); err != nil {
		return false, err.Error()
	}
	fi, err := root.Lstat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, ""
	case err != nil:
		return false, err.Error()
	case !fi.Mode().IsRegular():
		return false, "no longer a regular file"
	}
	return true, ""
}

// checkTarget checks, segment by segment with Lstat, that rel leads
// through real directories (or a regular file about to be removed, in
// removing) to a regular file or to nothing, and reports whether it
// exists.
func checkTarget(root *os.Root, rel string, removing map[string]bool) (exists bool, err error) {
	segs := strings.Split(rel, "/")
	for i := 1; i < len(segs); i++ {
		dir := strings.Join(segs[:i], "/")
		fi, err := root.Lstat(dir)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return false, nil
		case err != nil:
			return false, fmt.Errorf("check target path %q: %w", rel, err)
		case fi.Mode()&fs.ModeSymlink != 0:
			return false, fmt.Errorf("%w: target path %q: %s in the home is a symbolic link", ErrUnsafePath, rel, dir)
		case fi.IsDir():
		case fi.Mode().IsRegular() && removing[dir]:
			return false, nil
		default:
			return false, fmt.Errorf("%w: target path %q: %s in the home is not a directory", ErrUnsafePath, rel, dir)
		}
	}
	fi, err := root.Lstat(rel)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("check target path %q: %w", rel, err)
	case fi.Mode()&fs.ModeSymlink != 0:
		return false, fmt.Errorf("%w: target path %q is a symbolic link in the home", ErrUnsafePath, rel)
	case !fi.Mode().IsRegular():
		return false, fmt.Errorf("%w: target path %q is a %s in the home, not a regular file", ErrUnsafePath, rel, fileType(fi.Mode()))
	}
	return true, nil
}

func fileType(m fs.FileMode) string {
	if m.IsDir() {
		return "directory"
	}
	return "special file"
}

func hashFile(root *os.Root, rel string) (string, error) {
	f, err := root.Open(rel)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", rel, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// rename is one step of a commit: a staged file moved to its target.
type rename struct {
	Staged string `json:"staged"`
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
}

// journal is the plan of a commit whose staging is complete.
type journal struct {
	Applied Applied  `json:"applied"`
	Renames []rename `json:"renames"`
	Removes []string `json:"removes"`
}

// stage writes files into a fresh staging directory, each synced to disk,
// and returns the renames that put them in place.
func (a *Applier) stage(ctx context.Context, root *os.Root, files []File) ([]rename, error) {
	if err := root.RemoveAll(stagingDir); err != nil {
		return nil, fmt.Errorf("clear staging directory: %w", err)
	}
	if err := root.Mkdir(stagingDir, 0o700); err != nil {
		return nil, fmt.Errorf("create staging directory: %w", err)
	}
	// The staged files are complete only once their directory entries,
	// and the staging directory's own, are on disk too.
	if err := syncDir(root, "."); err != nil {
		return nil, err
	}
	renames := make([]rename, 0, len(files))
	for i, f := range files {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("stage configuration: %w", err)
		}
		staged := stagingDir + "/" + strconv.Itoa(i)
		if err := writeStaged(root, staged, f.Content); err != nil {
			return nil, fmt.Errorf("stage %s: %w", f.Path, err)
		}
		renames = append(renames, rename{Staged: staged, Path: f.Path, SHA256: f.SHA256})
	}
	if err := syncDir(root, stagingDir); err != nil {
		return nil, err
	}
	return renames, nil
}

func writeStaged(root *os.Root, name string, content []byte) error {
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fileMode)
	if err != nil {
		return err
	}
	// The mode is set on the open file, past the agent's umask.
	if err := f.Chmod(fileMode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(content); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func removeStaging(root *os.Root, log *slog.Logger) {
	if err := root.RemoveAll(stagingDir); err != nil {
		log.Warn("cannot remove staging directory", "err", err)
	}
}

// finish completes a commit whose journal is present, or removes staging
// left without a journal, which never reached its commit point.
func (a *Applier) finish(ctx context.Context, root *os.Root) error {
	j, err := a.readJournal()
	if err != nil {
		return err
	}
	if j == nil {
		if _, err := root.Lstat(stagingDir); err == nil {
			a.log.Info("removing the staging of an apply cut short before its commit point")
			if err := root.RemoveAll(stagingDir); err != nil {
				return fmt.Errorf("remove staging directory: %w", err)
			}
		}
		return nil
	}
	a.log.Info("finishing an apply cut short", "version", j.Applied.Version)
	return a.commit(ctx, root, j)
}

// commit carries out j. Every step can be repeated, so an interrupted
// commit is finished by running it again from the start.
func (a *Applier) commit(ctx context.Context, root *os.Root, j *journal) error {
	// Removals go first, so that a file replaced by a directory of the
	// same name is out of the way.
	for _, p := range j.Removes {
		// The plan said why a file is left; here it may also be one
		// removed by an earlier run of this commit, or replaced since.
		if ok, _ := a.removable(root, p); !ok {
			continue
		}
		if err := root.Remove(p); err != nil {
			return fmt.Errorf("remove %s: %w", p, err)
		}
	}
	if err := a.hook(0); err != nil {
		return err
	}
	for i, r := range j.Renames {
		if err := place(root, r); err != nil {
			return err
		}
		if err := a.hook(i + 1); err != nil {
			return err
		}
	}
	for _, dir := range touchedDirs(j) {
		if err := syncDir(root, dir); err != nil {
			return err
		}
	}
	if err := a.writeManifest(j.Applied); err != nil {
		return err
	}
	if err := root.RemoveAll(stagingDir); err != nil {
		return fmt.Errorf("remove staging directory: %w", err)
	}
	if len(a.reload) > 0 {
		if err := a.runReload(ctx, j.Applied.Version); err != nil {
			if ctx.Err() != nil {
				// The journal stays, so that Recover reloads again.
				return fmt.Errorf("reload for version %s cut short: %w", j.Applied.Version, ctx.Err())
			}
			m := j.Applied
			m.ReloadError = err.Error()
			if werr := a.writeManifest(m); werr != nil {
				return werr
			}
			if werr := a.removeJournal(); werr != nil {
				return werr
			}
			a.log.Warn("configuration applied, reload failed", "version", m.Version, "err", err)
			return fmt.Errorf("%w for version %s: %v", ErrReload, m.Version, err)
		}
	}
	if err := a.removeJournal(); err != nil {
		return err
	}
	a.log.Info("configuration applied", "version", j.Applied.Version)
	return nil
}

func (a *Applier) hook(done int) error {
	if a.afterRename == nil {
		return nil
	}
	return a.afterRename(done)
}

// place moves one staged file into place. If the staged file is gone, an
// earlier run of the commit moved it, and the target must hold it.
func place(root *os.Root, r rename) error {
	if _, err := root.Lstat(r.Staged); errors.Is(err, fs.ErrNotExist) {
		sum, err := hashFile(root, r.Path)
		if err != nil || sum != r.SHA256 {
			return fmt.Errorf("finish %s: its staged copy is gone and the file in place is not the one staged", r.Path)
		}
		return nil
	}
	if err := makeParents(root, r.Path); err != nil {
		return err
	}
	if _, err := checkTarget(root, r.Path, nil); err != nil {
		return err
	}
	if err := root.Rename(r.Staged, r.Path); err != nil {
		return fmt.Errorf("move %s into place: %w", r.Path, err)
	}
	return nil
}

// makeParents creates the missing directories on the way to rel, refusing
// symbolic links (the home may have changed since the plan).
func makeParents(root *os.Root, rel string) error {
	segs := strings.Split(rel, "/")
	for i := 1; i < len(segs); i++ {
		dir := strings.Join(segs[:i], "/")
		fi, err := root.Lstat(dir)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := root.Mkdir(dir, dirMode); err != nil {
				return fmt.Errorf("create directory %s: %w", dir, err)
			}
			if err := chmodDir(root, dir); err != nil {
				return err
			}
		case err != nil:
			return fmt.Errorf("check directory %s: %w", dir, err)
		case fi.Mode()&fs.ModeSymlink != 0:
			return fmt.Errorf("%w: target path %q: %s in the home is a symbolic link", ErrUnsafePath, rel, dir)
		case !fi.IsDir():
			return fmt.Errorf("%w: target path %q: %s in the home is not a directory", ErrUnsafePath, rel, dir)
		}
	}
	return nil
}

// chmodDir sets a new directory's mode through an open handle, past the
// agent's umask and without following a link put in its place.
func chmodDir(root *os.Root, dir string) error {
	d, err := root.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("open directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Chmod(dirMode); err != nil {
		return fmt.Errorf("chmod directory %s: %w", dir, err)
	}
	return nil
}

// touchedDirs lists the directories whose entries j changed: the parents
// of its targets and their ancestors, which it may have created.
func touchedDirs(j *journal) []string {
	dirs := map[string]bool{}
	add := func(p string) {
		for d := path.Dir(p); !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
			if d == "." {
				break
			}
		}
	}
	for _, r := range j.Renames {
		add(r.Path)
	}
	for _, p := range j.Removes {
		add(p)
	}
	return slices.Sorted(maps.Keys(dirs))
}

func syncDir(root *os.Root, dir string) error {
	d, err := root.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

func (a *Applier) writeManifest(m Applied) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encode manifest: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(a.stateDir, manifestFile), data, fileMode); err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	a.appliedMu.Lock()
	a.applied = &m
	a.appliedMu.Unlock()
	return nil
}

func (a *Applier) writeJournal(j *journal) error {
	data, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("encode journal: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(a.stateDir, journalFile), data, 0o600); err != nil {
		return fmt.Errorf("write journal: %w", err)
	}
	return nil
}

// readJournal returns the journal of a commit under way, or nil.
func (a *Applier) readJournal() (*journal, error) {
	name := filepath.Join(a.stateDir, journalFile)
	data, err := os.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read journal: %w", err)
	}
	var j journal
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, fmt.Errorf("journal %s is damaged: %w", name, err)
	}
	// The journal names what gets moved and removed in the home, so it
	// is held to the same rules as a commit.
	for _, r := range j.Renames {
		if err := ValidatePath(r.Path); err != nil {
			return nil, fmt.Errorf("journal %s: %w", name, err)
		}
		n, ok := strings.CutPrefix(r.Staged, stagingDir+"/")
		if _, err := strconv.Atoi(n); !ok || err != nil {
			return nil, fmt.Errorf("%w: journal %s: staged file %q is not in %s", ErrInvalid, name, r.Staged, stagingDir)
		}
	}
	for _, p := range j.Removes {
		if err := ValidatePath(p); err != nil {
			return nil, fmt.Errorf("journal %s: %w", name, err)
		}
	}
	return &j, nil
}

func (a *Applier) removeJournal() error {
	if err := os.Remove(filepath.Join(a.stateDir, journalFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove journal: %w", err)
	}
	return nil
}

// runReload runs the reload command for version, bounded by the reload
// timeout; its error carries the command's output, capped.
func (a *Applier) runReload(ctx context.Context, version string) error {
	ctx, cancel := context.WithTimeout(ctx, a.reloadTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, a.reload[0], a.reload[1:]...)
	cmd.Dir = a.home
	cmd.Env = append(os.Environ(), "FEDKEEPER_CONFIG_VERSION="+version)
	out := &cappedOutput{}
	cmd.Stdout, cmd.Stderr = out, out
	// The command leads a process group of its own, so that on timeout
	// its children die with it. On success the group is left alone: a
	// reload may well start the component again in the background.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if errors.Is(err, syscall.ESRCH) {
			return os.ErrProcessDone
		}
		return err
	}
	cmd.WaitDelay = reloadWaitDelay
	err := cmd.Run()
	switch {
	case err == nil, errors.Is(err, exec.ErrWaitDelay) && cmd.ProcessState.Success():
		return nil
	case cmd.ProcessState == nil:
		return fmt.Errorf("cannot run %s: %w", a.reload[0], err)
	case ctx.Err() != nil:
		err = fmt.Errorf("%s did not finish within %v, its process group was killed (%w)", a.reload[0], a.reloadTimeout, ctx.Err())
	default:
		err = fmt.Errorf("%s: %w", a.reload[0], err)
	}
	if text := out.String(); text != "" {
		return fmt.Errorf("%w\n%s", err, text)
	}
	return err
}

// cappedOutput keeps the first maxReloadOutput bytes written to it and
// drops the rest, while still accepting everything, so that a chatty
// command neither fills the agent's memory nor blocks on a full pipe.
// Given as both stdout and stderr, it is written by one goroutine at a
// time (os/exec promises so for one comparable writer).
type cappedOutput struct {
	b         []byte
	truncated bool
}

func (w *cappedOutput) Write(p []byte) (int, error) {
	room := maxReloadOutput - len(w.b)
	if len(p) > room {
		w.truncated = true
	}
	w.b = append(w.b, p[:min(room, len(p))]...)
	return len(p), nil
}

func (w *cappedOutput) String() string {
	text := strings.TrimSpace(string(w.b))
	if w.truncated {
		text += "\n[output cut at 4 KiB]"
	}
	return text
}
