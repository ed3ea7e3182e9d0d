package configsync

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// effective builds a commit of files (path → content).
func effective(version string, files map[string]string) Effective {
	eff := Effective{Project: "cmip6", Component: "filemgr", Version: version}
	for _, p := range slices.Sorted(maps.Keys(files)) {
		sum := sha256.Sum256([]byte(files[p]))
		eff.Files = append(eff.Files, File{Path: p, Content: []byte(files[p]), SHA256: hex.EncodeToString(sum[:])})
	}
	return eff
}

// snapshot returns every non-directory below dir: regular files by
// content, symbolic links as "-> target".
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	got := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if d.Type()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(p)
			got[rel] = "-> " + target
			return err
		}
		data, err := os.ReadFile(p)
		got[rel] = string(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// writeFiles creates files (path → content) below dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		name := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func union(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		maps.Copy(out, m)
	}
	return out
}

func newApplier(t *testing.T, home, state string, reload []string, timeout time.Duration) *Applier {
	t.Helper()
	a, err := NewApplier(home, state, reload, timeout, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// checkHome fails unless home holds exactly want and no staging.
func checkHome(t *testing.T, home string, want map[string]string) {
	t.Helper()
	if got := snapshot(t, home); !maps.Equal(got, want) {
		t.Errorf("home holds\n%q\nwant\n%q", got, want)
	}
	if _, err := os.Lstat(filepath.Join(home, stagingDir)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("staging directory left behind: %v", err)
	}
}

func TestApplyWritesExactlyTheCommit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		foreign map[string]string // in the home before the agent
		commits []map[string]string
		want    map[string]string
	}{
		{
			name:    "changed, added and removed files, files the agent never wrote untouched",
			foreign: map[string]string{"local.txt": "mine", "etc/local.properties": "x=1"},
			commits: []map[string]string{
				{"a.conf": "a1", "etc/b.xml": "<b/>", "etc/sub/c.properties": "c=1", "keep.conf": "k"},
				{"a.conf": "a2", "etc/sub/c.properties": "c=1", "keep.conf": "k", "new/deep/d.conf": "d"},
			},
			want: map[string]string{
				"local.txt": "mine", "etc/local.properties": "x=1",
				"a.conf": "a2", "etc/sub/c.properties": "c=1", "keep.conf": "k", "new/deep/d.conf": "d",
			},
		},
		{
			name: "a file becomes a directory of files",
			commits: []map[string]string{
				{"conf": "flat"},
				{"conf/x.conf": "x", "conf/y.conf": "y"},
			},
			want: map[string]string{"conf/x.conf": "x", "conf/y.conf": "y"},
		},
		{
			name:    "a file the agent did not write is overwritten when the commit has it, and then removed with it",
			foreign: map[string]string{"server.xml": "hand-made", "other": "o"},
			commits: []map[string]string{
				{"server.xml": "from the federation"},
				{"log.properties": "l"},
			},
			want: map[string]string{"other": "o", "log.properties": "l"},
		},
		{
			name:    "an empty commit removes only the agent's files",
			foreign: map[string]string{"data/readme": "r"},
			commits: []map[string]string{{"a": "1", "data/b": "2"}, {}},
			want:    map[string]string{"data/readme": "r"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			home := t.TempDir()
			writeFiles(t, home, tc.foreign)
			a := newApplier(t, home, t.TempDir(), nil, 0)
			var last Effective
			for i, files := range tc.commits {
				last = effective("v"+strconv.Itoa(i+1), files)
				if err := a.Apply(t.Context(), last); err != nil {
					t.Fatalf("apply %s: %v", last.Version, err)
				}
			}
			checkHome(t, home, tc.want)
			got, ok := a.Applied()
			if !ok || got.Version != last.Version {
				t.Fatalf("Applied() = %+v, %v; want version %s", got, ok, last.Version)
			}
			if len(got.Files) != len(last.Files) {
				t.Errorf("manifest has %d files, commit %d", len(got.Files), len(last.Files))
			}
			for _, f := range last.Files {
				data, err := os.ReadFile(filepath.Join(home, f.Path))
				if err != nil {
					t.Fatal(err)
				}
				sum := sha256.Sum256(data)
				if disk := hex.EncodeToString(sum[:]); disk != f.SHA256 || got.Files[f.Path] != f.SHA256 {
					t.Errorf("%s: sha256 on disk %s, in manifest %s, in commit %s", f.Path, disk, got.Files[f.Path], f.SHA256)
				}
				fi, err := os.Stat(filepath.Join(home, f.Path))
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != fileMode {
					t.Errorf("%s has mode %v, want %v", f.Path, fi.Mode().Perm(), fs.FileMode(fileMode))
				}
			}
		})
	}
}

// Not parallel: the umask belongs to the whole process.
func TestApplyCreatesDirectoriesWithMode0755(t *testing.T) {
	home := t.TempDir()
	a := newApplier(t, home, t.TempDir(), nil, 0)
	old := syscall.Umask(0o077) // the agent's umask must not decide
	err := a.Apply(t.Context(), effective("v1", map[string]string{"a/b/c.conf": "c"}))
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"a", "a/b", "a/b/c.conf"} {
		fi, err := os.Stat(filepath.Join(home, p))
		if err != nil {
			t.Fatal(err)
		}
		want := fs.FileMode(fileMode)
		if fi.IsDir() {
			want = dirMode
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", p, fi.Mode().Perm(), want)
		}
	}
}

func inode(t *testing.T, name string) uint64 {
	t.Helper()
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func TestApplyDoesNotRewriteUnchangedFiles(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	a := newApplier(t, home, t.TempDir(), nil, 0)
	if err := a.Apply(t.Context(), effective("v1", map[string]string{"same": "s", "changes": "1"})); err != nil {
		t.Fatal(err)
	}
	same, changes := inode(t, filepath.Join(home, "same")), inode(t, filepath.Join(home, "changes"))
	if err := a.Apply(t.Context(), effective("v2", map[string]string{"same": "s", "changes": "2"})); err != nil {
		t.Fatal(err)
	}
	if inode(t, filepath.Join(home, "same")) != same {
		t.Error("unchanged file was rewritten")
	}
	if inode(t, filepath.Join(home, "changes")) == changes {
		t.Error("changed file kept its inode: not replaced by rename")
	}
}

func TestApplyRepairsFileEditedOnDisk(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	a := newApplier(t, home, t.TempDir(), nil, 0)
	eff := effective("v1", map[string]string{"a.conf": "right"})
	if err := a.Apply(t.Context(), eff); err != nil {
		t.Fatal(err)
	}
	writeFiles(t, home, map[string]string{"a.conf": "edited by hand"})
	if err := a.Apply(t.Context(), eff); err != nil {
		t.Fatal(err)
	}
	checkHome(t, home, map[string]string{"a.conf": "right"})
}

var errCrash = errors.New("simulated crash")

func TestRecoverFinishesCommitCutShortAfterAnyRename(t *testing.T) {
	t.Parallel()
	foreign := map[string]string{"local.txt": "mine"}
	v1 := map[string]string{"a": "a1", "b/b": "b1", "c": "c1", "gone/x": "x", "gone2": "y", "same": "s"}
	v2 := map[string]string{"a": "a2", "b/b": "b2", "c": "c2", "new/n": "n", "new/m": "m", "same": "s"}
	const renames = 5 // a, b/b, c, new/n, new/m
	for k := 0; k <= renames; k++ {
		t.Run("after "+strconv.Itoa(k)+" renames", func(t *testing.T) {
			t.Parallel()
			home, state, out := t.TempDir(), t.TempDir(), t.TempDir()
			log := filepath.Join(out, "reloads")
			reload := []string{"sh", "-c", `echo "$FEDKEEPER_CONFIG_VERSION" >> '` + log + `'`}
			writeFiles(t, home, foreign)
			a := newApplier(t, home, state, reload, 5*time.Second)
			if err := a.Apply(t.Context(), effective("v1", v1)); err != nil {
				t.Fatal(err)
			}
			done := -1
			a.afterRename = func(n int) error {
				done = n
				if n == k {
					return errCrash
				}
				return nil
			}
			if err := a.Apply(t.Context(), effective("v2", v2)); !errors.Is(err, errCrash) {
				t.Fatalf("apply = %v, want the simulated crash", err)
			}
			if done != k {
				t.Fatalf("commit stopped after %d renames, want %d", done, k)
			}
			if _, err := os.Stat(filepath.Join(state, journalFile)); err != nil {
				t.Fatalf("no journal after the crash: %v", err)
			}

			b := newApplier(t, home, state, reload, 5*time.Second)
			if err := b.Recover(); err != nil {
				t.Fatal(err)
			}
			checkHome(t, home, union(foreign, v2))
			if got, _ := b.Applied(); got.Version != "v2" || len(got.Files) != len(v2) {
				t.Errorf("Applied() = %+v, want v2 with %d files", got, len(v2))
			}
			if _, err := os.Stat(filepath.Join(state, journalFile)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("journal left after recovery: %v", err)
			}
			// The crash came before the reload: recovery runs it.
			if data, _ := os.ReadFile(log); string(data) != "v1\nv2\n" {
				t.Errorf("reloads ran for %q, want v1 then v2", data)
			}
			if err := b.Recover(); err != nil {
				t.Errorf("second recovery: %v", err)
			}
			if data, _ := os.ReadFile(log); string(data) != "v1\nv2\n" {
				t.Errorf("a second recovery reloaded again: %q", data)
			}
		})
	}
}

func TestApplyFinishesCommitCutShortBeforeItsOwn(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	a := newApplier(t, home, t.TempDir(), nil, 0)
	if err := a.Apply(t.Context(), effective("v1", map[string]string{"a": "1", "b": "1"})); err != nil {
		t.Fatal(err)
	}
	a.afterRename = func(n int) error {
		if n == 1 {
			return errCrash
		}
		return nil
	}
	if err := a.Apply(t.Context(), effective("v2", map[string]string{"a": "2", "b": "2"})); !errors.Is(err, errCrash) {
		t.Fatalf("apply = %v, want the simulated crash", err)
	}
	a.afterRename = nil
	if err := a.Apply(t.Context(), effective("v3", map[string]string{"a": "3"})); err != nil {
		t.Fatal(err)
	}
	checkHome(t, home, map[string]string{"a": "3"})
}

func TestRecoverDropsStagingWithoutJournal(t *testing.T) {
	t.Parallel()
	home, state := t.TempDir(), t.TempDir()
	v1 := map[string]string{"a": "1", "d/b": "1"}
	a := newApplier(t, home, state, nil, 0)
	if err := a.Apply(t.Context(), effective("v1", v1)); err != nil {
		t.Fatal(err)
	}
	// A crash while staging: files staged, no journal yet.
	writeFiles(t, home, map[string]string{stagingDir + "/0": "2", stagingDir + "/1": "half"})

	b := newApplier(t, home, state, nil, 0)
	if err := b.Recover(); err != nil {
		t.Fatal(err)
	}
	checkHome(t, home, v1)
	if got, _ := b.Applied(); got.Version != "v1" {
		t.Errorf("Applied().Version = %q, want v1", got.Version)
	}
}

func TestApplyRefusesUnsafeCommitAndWritesNothing(t *testing.T) {
	t.Parallel()
	file := func(p, content string) File {
		return effective("", map[string]string{p: content}).Files[0]
	}
	good := file("good.conf", "g")
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, home, outside string)
		files []File
		want  error
	}{
		{name: "a path climbing out with ..", files: []File{file("../x", "x")}, want: ErrInvalid},
		{name: "an absolute path", files: []File{file("/etc/x", "x")}, want: ErrInvalid},
		{name: "a path inside the staging directory", files: []File{file(stagingDir+"/0", "x")}, want: ErrInvalid},
		{name: "the same path twice", files: []File{file("a", "1"), file("a", "2")}, want: ErrInvalid},
		{name: "a path that is a file and a directory", files: []File{file("a", "1"), file("a/b", "2")}, want: ErrInvalid},
		{
			name:  "content that does not match its sha256",
			files: []File{{Path: "a", Content: []byte("tampered"), SHA256: good.SHA256}},
			want:  ErrInvalid,
		},
		{
			name: "a directory that is a symbolic link out of the home",
			setup: func(t *testing.T, home, outside string) {
				if err := os.Symlink(outside, filepath.Join(home, "sub")); err != nil {
					t.Fatal(err)
				}
			},
			files: []File{file("sub/x.conf", "x")},
			want:  ErrUnsafePath,
		},
		{
			name: "a deeper path through a symbolic link out of the home",
			setup: func(t *testing.T, home, outside string) {
				if err := os.Symlink(outside, filepath.Join(home, "sub")); err != nil {
					t.Fatal(err)
				}
			},
			files: []File{file("sub/deeper/x.conf", "x")},
			want:  ErrUnsafePath,
		},
		{
			name: "a directory that is a symbolic link within the home",
			setup: func(t *testing.T, home, outside string) {
				if err := os.Mkdir(filepath.Join(home, "real"), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink("real", filepath.Join(home, "alias")); err != nil {
					t.Fatal(err)
				}
			},
			files: []File{file("alias/x.conf", "x")},
			want:  ErrUnsafePath,
		},
		{
			name: "a target that is a symbolic link out of the home",
			setup: func(t *testing.T, home, outside string) {
				if err := os.Symlink(filepath.Join(outside, "target"), filepath.Join(home, "link.conf")); err != nil {
					t.Fatal(err)
				}
			},
			files: []File{file("link.conf", "x")},
			want:  ErrUnsafePath,
		},
		{
			name: "a target that is a directory",
			setup: func(t *testing.T, home, outside string) {
				writeFiles(t, home, map[string]string{"dir/inside": "i"})
			},
			files: []File{file("dir", "x")},
			want:  ErrUnsafePath,
		},
		{
			name: "a path through a file the agent did not write",
			setup: func(t *testing.T, home, outside string) {
				writeFiles(t, home, map[string]string{"plain": "p"})
			},
			files: []File{file("plain/x", "x")},
			want:  ErrUnsafePath,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			home, state, outside := t.TempDir(), t.TempDir(), t.TempDir()
			a := newApplier(t, home, state, nil, 0)
			if err := a.Apply(t.Context(), effective("v1", map[string]string{"old.conf": "o"})); err != nil {
				t.Fatal(err)
			}
			if tc.setup != nil {
				tc.setup(t, home, outside)
			}
			before := snapshot(t, home)
			manifest, _ := a.Applied()

			err := a.Apply(t.Context(), Effective{Version: "v2", Files: append([]File{good}, tc.files...)})
			if !errors.Is(err, tc.want) {
				t.Fatalf("apply = %v, want %v", err, tc.want)
			}
			checkHome(t, home, before)
			if got := snapshot(t, outside); len(got) != 0 {
				t.Errorf("written outside the home: %q", got)
			}
			if got, _ := a.Applied(); got.Version != manifest.Version || !maps.Equal(got.Files, manifest.Files) {
				t.Errorf("manifest changed to %+v", got)
			}
			if _, err := os.Stat(filepath.Join(state, journalFile)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("journal written: %v", err)
			}
		})
	}
}

func TestApplyDoesNotRemoveThroughSymlink(t *testing.T) {
	t.Parallel()
	home, outside := t.TempDir(), t.TempDir()
	a := newApplier(t, home, t.TempDir(), nil, 0)
	if err := a.Apply(t.Context(), effective("v1", map[string]string{"sub/x.conf": "x", "link": "l"})); err != nil {
		t.Fatal(err)
	}
	// Someone turns the agent's directory into a link out of the home,
	// and its file into a link: dropping them must touch neither target.
	writeFiles(t, outside, map[string]string{"x.conf": "precious", "target": "t"})
	for _, p := range []string{"sub/x.conf", "sub", "link"} {
		if err := os.Remove(filepath.Join(home, p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(home, "sub")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "target"), filepath.Join(home, "link")); err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(t.Context(), effective("v2", map[string]string{"y.conf": "y"})); err != nil {
		t.Fatal(err)
	}
	if got := snapshot(t, outside); !maps.Equal(got, map[string]string{"x.conf": "precious", "target": "t"}) {
		t.Errorf("outside the home now holds %q", got)
	}
	if _, err := os.Lstat(filepath.Join(home, "link")); err != nil {
		t.Errorf("a link the agent did not make was removed: %v", err)
	}
}

// reloadLog returns a reload command that appends its version and working
// directory to a file, and that file.
func reloadLog(t *testing.T) ([]string, string) {
	log := filepath.Join(t.TempDir(), "reloads")
	return []string{"sh", "-c", `echo "$FEDKEEPER_CONFIG_VERSION $PWD" >> '` + log + `'`}, log
}

func TestReloadRunsOncePerChange(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	reload, log := reloadLog(t)
	a := newApplier(t, home, t.TempDir(), reload, 5*time.Second)
	for _, step := range []struct {
		version string
		files   map[string]string
	}{
		{"v1", map[string]string{"a": "1"}},
		{"v1", map[string]string{"a": "1"}}, // the same again: nothing
		{"v2", map[string]string{"a": "2"}},
		{"v3", map[string]string{"a": "2"}}, // a new version, the same files
		{"v3", map[string]string{"a": "2"}},
	} {
		if err := a.Apply(t.Context(), effective(step.version, step.files)); err != nil {
			t.Fatalf("apply %s: %v", step.version, err)
		}
	}
	want := "v1 " + home + "\nv2 " + home + "\n"
	if data, _ := os.ReadFile(log); string(data) != want {
		t.Errorf("reloads:\n%s\nwant:\n%s", data, want)
	}
	if got, _ := a.Applied(); got.Version != "v3" {
		t.Errorf("Applied().Version = %q, want v3", got.Version)
	}
}

// gone reports whether pid has ended (or is a zombie nobody reaped yet).
func gone(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(fields) > 0 && fields[0] == "Z"
}

func TestFailingReloadKeepsFilesAndIsRecorded(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		script  string // $OUT is a directory for the script's own use
		timeout time.Duration
		want    []string // in ReloadError
		maxLen  int
	}{
		{name: "a failing command's status and output are kept", script: `echo boom >&2; exit 3`,
			timeout: 5 * time.Second, want: []string{"exit status 3", "boom"}},
		{name: "a chatty command's output is cut at 4 KiB", script: `head -c 100000 /dev/zero | tr '\0' x; exit 1`,
			timeout: 5 * time.Second, want: []string{"exit status 1", "cut at 4 KiB"}, maxLen: maxReloadOutput + 200},
		{name: "a command past its timeout is killed with its children", script: `sleep 30 & echo $! > "$OUT/child"; wait`,
			timeout: 300 * time.Millisecond, want: []string{"did not finish within 300ms"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			home, state, out := t.TempDir(), t.TempDir(), t.TempDir()
			reload := []string{"sh", "-c", "OUT='" + out + "'; " + tc.script}
			a := newApplier(t, home, state, reload, tc.timeout)
			start := time.Now()
			err := a.Apply(t.Context(), effective("v1", map[string]string{"a.conf": "a"}))
			if !errors.Is(err, ErrReload) {
				t.Fatalf("apply = %v, want ErrReload", err)
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("apply took %v", took)
			}
			checkHome(t, home, map[string]string{"a.conf": "a"})
			got, _ := newApplier(t, home, state, reload, tc.timeout).Applied()
			for _, w := range tc.want {
				if !strings.Contains(got.ReloadError, w) {
					t.Errorf("ReloadError %q lacks %q", got.ReloadError, w)
				}
			}
			if tc.maxLen > 0 && len(got.ReloadError) > tc.maxLen {
				t.Errorf("ReloadError is %d bytes long", len(got.ReloadError))
			}
			if data, err := os.ReadFile(filepath.Join(out, "child")); err == nil {
				pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
				deadline := time.Now().Add(2 * time.Second)
				for !gone(pid) && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
				}
				if !gone(pid) {
					t.Errorf("the reload's child %d outlived the timeout", pid)
				}
			}
			// The failure is not retried by applying the same again.
			start = time.Now()
			if err := a.Apply(t.Context(), effective("v1", map[string]string{"a.conf": "a"})); err != nil {
				t.Errorf("applying the same version again = %v, want nothing done", err)
			}
			if took := time.Since(start); took > tc.timeout/2 {
				t.Errorf("applying the same version again took %v: reload ran again", took)
			}
		})
	}
}

func TestReloadCutShortRunsAgainOnRecover(t *testing.T) {
	t.Parallel()
	home, state, out := t.TempDir(), t.TempDir(), t.TempDir()
	log, slow := filepath.Join(out, "reloads"), filepath.Join(out, "slow")
	writeFiles(t, out, map[string]string{"slow": ""})
	reload := []string{"sh", "-c", `echo "$FEDKEEPER_CONFIG_VERSION" >> '` + log + `'; if [ -e '` + slow + `' ]; then sleep 30; fi`}
	a := newApplier(t, home, state, reload, 10*time.Second)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if err := a.Apply(ctx, effective("v1", map[string]string{"a": "1"})); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("apply = %v, want it cut short", err)
	}
	if err := os.Remove(slow); err != nil {
		t.Fatal(err)
	}
	if err := newApplier(t, home, state, reload, 10*time.Second).Recover(); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(log); string(data) != "v1\nv1\n" {
		t.Errorf("reloads ran for %q, want v1 twice", data)
	}
	checkHome(t, home, map[string]string{"a": "1"})
}

func TestAppliedSurvivesNewApplier(t *testing.T) {
	t.Parallel()
	home, state := t.TempDir(), t.TempDir()
	if _, ok := newApplier(t, home, state, nil, 0).Applied(); ok {
		t.Fatal("Applied() reports a commit before any apply")
	}
	a := newApplier(t, home, state, nil, 0)
	if err := a.Apply(t.Context(), effective("p1.c2.n0", map[string]string{"a": "1", "b/c": "2"})); err != nil {
		t.Fatal(err)
	}
	want, _ := a.Applied()
	got, ok := newApplier(t, home, state, nil, 0).Applied()
	if !ok || got.Version != want.Version || !maps.Equal(got.Files, want.Files) || !got.Time.Equal(want.Time) || want.Time.IsZero() {
		t.Errorf("after a restart Applied() = %+v, %v; want %+v", got, ok, want)
	}
}

func TestNewApplierRejectsBadSettings(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	file := filepath.Join(t.TempDir(), "file")
	writeFiles(t, filepath.Dir(file), map[string]string{"file": "x"})
	damaged := t.TempDir()
	writeFiles(t, damaged, map[string]string{manifestFile: "{not json"})
	for _, tc := range []struct {
		name    string
		home    string
		state   string
		reload  []string
		timeout time.Duration
		want    string
	}{
		{"a relative home", "home", t.TempDir(), nil, 0, "not an absolute path"},
		{"a relative state directory", home, "state", nil, 0, "not an absolute path"},
		{"a missing home", filepath.Join(home, "missing"), t.TempDir(), nil, 0, "no such file"},
		{"a home that is a file", file, t.TempDir(), nil, 0, "not a directory"},
		{"a reload command without a program", home, t.TempDir(), []string{""}, time.Second, "empty program"},
		{"a reload command without a timeout", home, t.TempDir(), []string{"true"}, 0, "timeout"},
		{"a damaged manifest", home, damaged, nil, 0, "damaged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewApplier(tc.home, tc.state, tc.reload, tc.timeout, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewApplier = %v, want an error saying %q", err, tc.want)
			}
		})
	}
}
