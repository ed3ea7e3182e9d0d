package store

// These tests are inside the package (for benign and slogLevel), so they
// cannot use internal/storetest, which imports this package; certs and
// startTest below are its setup, copied.

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/fedkeeper/fedkeeper/pki"
)

// tlsFiles are the certificate, key and store CA files a test store uses.
type tlsFiles struct{ cert, key, ca string }

// certs makes a federation CA, a store CA below it and a certificate for
// 127.0.0.1 signed by the store CA, as storetest does.
func certs(t *testing.T) tlsFiles {
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
	f := tlsFiles{cert: filepath.Join(dir, "store.crt"), key: filepath.Join(dir, "store.key"), ca: filepath.Join(dir, "store-ca.crt")}
	if err := pki.SaveKeyPair(f.cert, f.key, kp.Cert, kp.Key); err != nil {
		t.Fatal(err)
	}
	if err := pki.SaveKeyPair(f.ca, filepath.Join(dir, "store-ca.key"), storeCA.Cert, storeCA.Key); err != nil {
		t.Fatal(err)
	}
	return f
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startTest starts a one-member store named name in dir, closed when the
// test ends.
func startTest(t *testing.T, f tlsFiles, name, dir, peerURL string) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := Start(ctx, Config{
		Name:      name,
		Dir:       dir,
		PeerURL:   peerURL,
		ClientURL: "https://" + freeAddr(t),
		CertFile:  f.cert, KeyFile: f.key, CAFile: f.ca,
	})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(st.Close)
	return st
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

type record struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
}

func TestGetJSON(t *testing.T) {
	t.Parallel()
	st := startTest(t, certs(t), "s1", filepath.Join(t.TempDir(), "data"), "https://"+freeAddr(t))
	ctx := testCtx(t)

	var r record
	rev, err := GetJSON(ctx, st.Client, Root+"missing", &r)
	if !errors.Is(err, ErrNotFound) || rev != 0 {
		t.Errorf("GetJSON of a missing key = %d, %v; want 0, ErrNotFound", rev, err)
	}

	put, err := st.Client.Put(ctx, Root+"rec", MustJSON(record{Name: "a", Count: 3}))
	if err != nil {
		t.Fatal(err)
	}
	// Another write, so the key's revision differs from the store's.
	if _, err := st.Client.Put(ctx, Root+"other", "{}"); err != nil {
		t.Fatal(err)
	}
	rev, err = GetJSON(ctx, st.Client, Root+"rec", &r)
	if err != nil {
		t.Fatalf("GetJSON: %v", err)
	}
	if rev != put.Header.Revision {
		t.Errorf("GetJSON revision = %d, want the key's mod revision %d", rev, put.Header.Revision)
	}
	if r != (record{Name: "a", Count: 3}) {
		t.Errorf("GetJSON decoded %+v", r)
	}

	if _, err := st.Client.Put(ctx, Root+"bad", "not json"); err != nil {
		t.Fatal(err)
	}
	if _, err := GetJSON(ctx, st.Client, Root+"bad", &r); err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), Root+"bad") {
		t.Errorf("GetJSON of a malformed record = %v, want a decode error naming the key", err)
	}
}

func TestMustJSON(t *testing.T) {
	if got, want := MustJSON(record{Name: "n", Count: 1}), `{"name":"n","count":1}`; got != want {
		t.Errorf("MustJSON = %s, want %s", got, want)
	}
	var back record
	if err := json.Unmarshal([]byte(MustJSON(record{Name: "x"})), &back); err != nil || back.Name != "x" {
		t.Errorf("MustJSON does not round trip: %+v, %v", back, err)
	}

	for name, v := range map[string]any{
		"channel":          make(chan int),
		"function":         func() {},
		"struct with chan": struct{ C chan int }{make(chan int)},
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				p := recover()
				if p == nil {
					t.Fatal("MustJSON did not panic")
				}
				if msg, _ := p.(string); !strings.Contains(msg, "encode store record") {
					t.Errorf("panic %v does not say what failed", p)
				}
			}()
			MustJSON(v)
		})
	}
}

func TestStatusOfAOneMemberStore(t *testing.T) {
	t.Parallel()
	st := startTest(t, certs(t), "s1", filepath.Join(t.TempDir(), "data"), "https://"+freeAddr(t))
	ctx := testCtx(t)

	before := st.Status()
	if before.MemberID == 0 {
		t.Fatal("Status has no member ID")
	}
	if before.LeaderID != before.MemberID {
		t.Errorf("leader %x, want itself (%x)", before.LeaderID, before.MemberID)
	}
	if before.Learner {
		t.Error("a one-member store says it is a learner")
	}
	if before.Applied == 0 || before.Committed < before.Applied {
		t.Errorf("applied %d, committed %d: want 0 < applied <= committed", before.Applied, before.Committed)
	}

	put, err := st.Client.Put(ctx, Root+"x", "1")
	if err != nil {
		t.Fatal(err)
	}
	after := st.Status()
	if after.Revision <= before.Revision || after.Revision != put.Header.Revision {
		t.Errorf("revision %d before a write, %d after; want it to grow to the write's %d", before.Revision, after.Revision, put.Header.Revision)
	}
	if after.Applied <= before.Applied {
		t.Errorf("applied index %d before a write, %d after; want it to grow", before.Applied, after.Applied)
	}
	if after.MemberID != before.MemberID || after.LeaderID != before.LeaderID {
		t.Errorf("member or leader changed across a write: %+v then %+v", before, after)
	}
}

func TestStoppedIsClosedByClose(t *testing.T) {
	t.Parallel()
	f := certs(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := Start(ctx, Config{
		Name: "s1", Dir: filepath.Join(t.TempDir(), "data"),
		PeerURL: "https://" + freeAddr(t), ClientURL: "https://" + freeAddr(t),
		CertFile: f.cert, KeyFile: f.key, CAFile: f.ca,
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-st.Stopped():
		t.Fatal("Stopped is closed while the store runs")
	default:
	}
	st.Close()
	select {
	case <-st.Stopped():
	case <-time.After(20 * time.Second):
		t.Fatal("Stopped not closed after Close")
	}
}

func TestInitialCluster(t *testing.T) {
	tests := []struct {
		members map[string]string
		want    []string
	}{
		{nil, nil},
		{map[string]string{"sn1": "https://10.0.0.1:7480"}, []string{"sn1=https://10.0.0.1:7480"}},
		{
			map[string]string{"sn1": "https://10.0.0.1:7480", "sn2": "https://10.0.0.2:7480", "sn3": "https://[2001:db8::3]:7480"},
			[]string{"sn1=https://10.0.0.1:7480", "sn2=https://10.0.0.2:7480", "sn3=https://[2001:db8::3]:7480"},
		},
	}
	for _, tt := range tests {
		s := InitialCluster(tt.members)
		var got []string
		if s != "" {
			got = strings.Split(s, ",")
		}
		slices.Sort(got)
		if !slices.Equal(got, tt.want) {
			t.Errorf("InitialCluster(%v) = %q, want the pairs %q in any order", tt.members, s, tt.want)
		}
	}
}

func TestSnapshotRestore(t *testing.T) {
	t.Parallel()
	f := certs(t)
	tmp := t.TempDir()
	src := startTest(t, f, "s1", filepath.Join(tmp, "src"), "https://"+freeAddr(t))
	ctx := testCtx(t)

	kept := map[string]string{Root + "a": "1", Root + "b/c": "2", "/outside/root": "3"}
	for k, v := range kept {
		if _, err := src.Client.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	snapFile := filepath.Join(tmp, "fedkeeper.snapshot")
	out, err := os.Create(snapFile)
	if err != nil {
		t.Fatal(err)
	}
	n, err := src.SaveSnapshot(ctx, out)
	if err != nil {
		t.Fatalf("SaveSnapshot: %v", err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(snapFile); err != nil || n <= 0 || fi.Size() != n {
		t.Fatalf("SaveSnapshot reported %d bytes; file: %v, %v", n, fi, err)
	}
	// Written after the snapshot: not in the restored store.
	if _, err := src.Client.Put(ctx, Root+"later", "4"); err != nil {
		t.Fatal(err)
	}

	// Into a directory whose parent does not exist yet.
	dir := filepath.Join(tmp, "restored", "data")
	peer := "https://" + freeAddr(t)
	if err := Restore(snapFile, dir, "s2", peer); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "member")); err != nil {
		t.Fatalf("Restore made no store: %v", err)
	}
	dst := startTest(t, f, "s2", dir, peer)

	resp, err := dst.Client.Get(ctx, "\x00", clientv3.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, kv := range resp.Kvs {
		got[string(kv.Key)] = string(kv.Value)
	}
	if len(got) != len(kept) {
		t.Errorf("restored store holds %v, want %v", got, kept)
	}
	for k, v := range kept {
		if got[k] != v {
			t.Errorf("restored %q = %q, want %q", k, got[k], v)
		}
	}

	// The restored store is a working one-member store of its own.
	s := dst.Status()
	if s.LeaderID != s.MemberID || s.Learner {
		t.Errorf("restored store status %+v: want its own leader, not a learner", s)
	}
	if s.MemberID == src.Status().MemberID {
		t.Error("restored store has the member ID of the store it was taken from")
	}
	if _, err := dst.Client.Put(ctx, Root+"after-restore", "5"); err != nil {
		t.Errorf("write to the restored store: %v", err)
	}
}

func TestRestoreRefuses(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	// A snapshot file need not be valid for these: each is refused first.
	snapFile := filepath.Join(tmp, "snap")
	if err := os.WriteFile(snapFile, []byte("not a snapshot"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("a directory that holds a store", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "data")
		marker := filepath.Join(dir, "member", "wal", "0.wal")
		if err := os.MkdirAll(filepath.Dir(marker), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(marker, []byte("wal"), 0o600); err != nil {
			t.Fatal(err)
		}
		err := Restore(snapFile, dir, "s1", "https://127.0.0.1:7480")
		if err == nil || !strings.Contains(err.Error(), "already holds a store") || !strings.Contains(err.Error(), dir) {
			t.Fatalf("Restore = %v, want an error naming %s as already holding a store", err, dir)
		}
		if b, err := os.ReadFile(marker); err != nil || string(b) != "wal" {
			t.Errorf("Restore touched the existing store: %q, %v", b, err)
		}
	})

	t.Run("a missing snapshot file", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "data")
		missing := filepath.Join(tmp, "no-such.snapshot")
		err := Restore(missing, dir, "s1", "https://127.0.0.1:7480")
		if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), missing) {
			t.Fatalf("Restore = %v, want a not-exist error naming %s", err, missing)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Restore created %s before failing: %v", dir, err)
		}
	})

	t.Run("a directory that is not empty", func(t *testing.T) {
		dir := t.TempDir()
		other := filepath.Join(dir, "notes.txt")
		if err := os.WriteFile(other, []byte("mine"), 0o600); err != nil {
			t.Fatal(err)
		}
		err := Restore(snapFile, dir, "s1", "https://127.0.0.1:7480")
		if err == nil || !strings.Contains(err.Error(), "must be empty") {
			t.Fatalf("Restore = %v, want an error saying %s must be empty", err, dir)
		}
		if b, err := os.ReadFile(other); err != nil || string(b) != "mine" {
			t.Errorf("Restore touched the directory's files: %q, %v", b, err)
		}
	})

	t.Run("a file that is not a snapshot", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "data")
		err := Restore(snapFile, dir, "s1", "https://127.0.0.1:7480")
		if err == nil || !strings.Contains(err.Error(), "restore snapshot "+snapFile) {
			t.Fatalf("Restore = %v, want an error naming the snapshot", err)
		}
	})
}

func TestBenign(t *testing.T) {
	tests := []struct {
		name   string
		msg    string
		fields map[string]any
		want   bool
	}{
		{"unsigned auth token warning", "simple token is not cryptographically signed", nil, true},
		{"shared client port warning", "Running http and grpc server on single port. This is not recommended for production.", map[string]any{"address": "127.0.0.1:2379"}, true},
		{"closed listener", "serving client traffic failed", map[string]any{"error": "accept tcp 127.0.0.1:2379: use of closed network connection"}, true},
		{"closed HTTP server", "stopping grpc server due to error", map[string]any{"error": "http: Server closed"}, true},
		{"other warning", "slow fdatasync", map[string]any{"took": "1.2s"}, false},
		{"other error", "failed to publish", map[string]any{"error": "etcdserver: request timed out"}, false},
		{"no fields", "leader changed", nil, false},
		{"error field not text", "failed", map[string]any{"error": 42}, false},
		{"closed mentioned outside the error field", "failed", map[string]any{"detail": "use of closed network connection"}, false},
		{"known warning text changed", "simple token is not cryptographically signed!", nil, false},
	}
	for _, tt := range tests {
		if got := benign(tt.msg, tt.fields); got != tt.want {
			t.Errorf("%s: benign(%q, %v) = %v, want %v", tt.name, tt.msg, tt.fields, got, tt.want)
		}
	}
}

func TestSlogLevel(t *testing.T) {
	tests := []struct {
		zap  zapcore.Level
		want slog.Level
	}{
		{zapcore.DebugLevel, slog.LevelDebug},
		{zapcore.DebugLevel - 1, slog.LevelDebug},
		{zapcore.InfoLevel, slog.LevelInfo},
		{zapcore.WarnLevel, slog.LevelWarn},
		{zapcore.ErrorLevel, slog.LevelError},
		{zapcore.DPanicLevel, slog.LevelError},
		{zapcore.PanicLevel, slog.LevelError},
		{zapcore.FatalLevel, slog.LevelError},
	}
	for _, tt := range tests {
		if got := slogLevel(tt.zap); got != tt.want {
			t.Errorf("slogLevel(%v) = %v, want %v", tt.zap, got, tt.want)
		}
	}
}

// captured is a slog handler that keeps what it is given.
type captured struct {
	level slog.Level
	mu    sync.Mutex
	recs  []slog.Record
}

func (h *captured) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }
func (h *captured) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r)
	return nil
}
func (h *captured) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *captured) WithGroup(string) slog.Handler      { return h }

func attrs(r slog.Record) map[string]any {
	m := map[string]any{}
	r.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.Any()
		return true
	})
	return m
}

func TestStoreLogGoesToSlog(t *testing.T) {
	h := &captured{level: slog.LevelDebug}
	log := newStoreLogger(slog.New(h)).With(zap.String("member", "s1"))

	log.Warn("slow fdatasync", zap.Int("took_ms", 1200))
	log.Warn("simple token is not cryptographically signed")
	log.Error("serving failed", zap.Error(errors.New("accept tcp 127.0.0.1:1: use of closed network connection")))
	log.Error("publish failed", zap.Error(errors.New("request timed out")))
	log.Info("ready")

	want := []struct {
		msg   string
		level slog.Level
		attrs map[string]any
	}{
		{"slow fdatasync", slog.LevelWarn, map[string]any{"member": "s1", "took_ms": int64(1200)}},
		{"simple token is not cryptographically signed", slog.LevelDebug, map[string]any{"member": "s1"}},
		{"serving failed", slog.LevelDebug, map[string]any{"member": "s1", "error": "accept tcp 127.0.0.1:1: use of closed network connection"}},
		{"publish failed", slog.LevelError, map[string]any{"member": "s1", "error": "request timed out"}},
		{"ready", slog.LevelInfo, map[string]any{"member": "s1"}},
	}
	if len(h.recs) != len(want) {
		t.Fatalf("got %d records, want %d", len(h.recs), len(want))
	}
	for i, w := range want {
		r := h.recs[i]
		if r.Message != w.msg || r.Level != w.level {
			t.Errorf("record %d: %v %q, want %v %q", i, r.Level, r.Message, w.level, w.msg)
		}
		got := attrs(r)
		if len(got) != len(w.attrs) {
			t.Errorf("record %d (%s): attrs %v, want %v", i, r.Message, got, w.attrs)
			continue
		}
		for k, v := range w.attrs {
			if got[k] != v {
				t.Errorf("record %d (%s): %s = %#v, want %#v", i, r.Message, k, got[k], v)
			}
		}
	}

	// What slog would drop is not even formatted.
	quiet := &captured{level: slog.LevelWarn}
	ql := newStoreLogger(slog.New(quiet))
	if ql.Core().Enabled(zapcore.InfoLevel) || !ql.Core().Enabled(zapcore.WarnLevel) {
		t.Error("the store logger's levels do not follow the slog handler's")
	}
	ql.Info("chatty")
	ql.Debug("chattier")
	if len(quiet.recs) != 0 {
		t.Errorf("records below the handler's level were passed on: %v", quiet.recs)
	}
}
