// Package testcluster runs fedkeeper as real processes for multi-node
// tests: supernodes and agents, each on its own loopback address, that a
// test can kill -9, pause, resume and restart.
package testcluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds the fedkeeper binary once per test process.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "fedkeeper-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "fedkeeper")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/fedkeeper/fedkeeper/cmd/fedkeeper").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("build fedkeeper: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// nextHost hands out loopback addresses, one per process, in a block
// chosen from the process ID so that test binaries running in parallel do
// not collide.
var nextHost atomic.Int32

// NewHost returns a fresh 127.x.y.z address for one process.
func NewHost() string {
	n := nextHost.Add(1)
	return fmt.Sprintf("127.%d.%d.%d", 10+os.Getpid()%200, n/250, 1+n%250)
}

// Cluster owns the processes of one test and stops them when it ends.
type Cluster struct {
	t   testing.TB
	bin string
	dir string

	mu    sync.Mutex
	procs []*Proc
}

// New returns an empty cluster for the test.
func New(t testing.TB) *Cluster {
	c := &Cluster{t: t, bin: Binary(t), dir: t.TempDir()}
	t.Cleanup(c.stopAll)
	return c
}

// Dir is a directory for the named process's data.
func (c *Cluster) Dir(name string) string { return filepath.Join(c.dir, name) }

// Proc is one fedkeeper process.
type Proc struct {
	Name string
	Args []string
	c    *Cluster

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	log  *os.File
}

// Start runs fedkeeper with args as a long-running process named name.
func (c *Cluster) Start(name string, args ...string) *Proc {
	c.t.Helper()
	p := &Proc{Name: name, Args: args, c: c}
	p.start()
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	return p
}

func (p *Proc) start() {
	p.c.t.Helper()
	logPath := filepath.Join(p.c.dir, p.Name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.c.t.Fatal(err)
	}
	cmd := exec.Command(p.c.bin, p.Args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		p.c.t.Fatalf("start %s: %v", p.Name, err)
	}
	p.mu.Lock()
	p.cmd, p.log, p.done = cmd, f, make(chan struct{})
	done := p.done
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		f.Close()
		close(done)
	}()
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cmd.Process.Signal(sig)
}

// Kill kills the process with SIGKILL and waits for it to be gone.
func (p *Proc) Kill() {
	p.Signal(syscall.SIGKILL)
	p.Wait(10 * time.Second)
}

// Pause stops the process with SIGSTOP; Resume continues it.
func (p *Proc) Pause()  { p.Signal(syscall.SIGSTOP) }
func (p *Proc) Resume() { p.Signal(syscall.SIGCONT) }

// Restart starts the process again with the same arguments; it must have
// exited.
func (p *Proc) Restart() {
	p.c.t.Helper()
	select {
	case <-p.Done():
	default:
		p.c.t.Fatalf("restart %s: still running", p.Name)
	}
	p.start()
}

// Done is closed when the process exits.
func (p *Proc) Done() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// Wait waits up to timeout for the process to exit and returns its exit
// error (nil for status 0).
func (p *Proc) Wait(timeout time.Duration) error {
	select {
	case <-p.Done():
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("%s still running after %s", p.Name, timeout)
	}
}

// Log returns what the process has printed so far.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(filepath.Join(p.c.dir, p.Name+".log"))
	return string(b)
}

func (c *Cluster) stopAll() {
	c.mu.Lock()
	procs := c.procs
	c.mu.Unlock()
	for _, p := range procs {
		p.Signal(syscall.SIGCONT)
		p.Signal(syscall.SIGKILL)
		p.Wait(10 * time.Second)
		if c.t.Failed() {
			c.t.Logf("--- log of %s ---\n%s", p.Name, tail(p.Log(), 60))
		}
	}
}

func tail(s string, lines int) string {
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// Run runs a short fedkeeper command and returns its standard output.
func (c *Cluster) Run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("fedkeeper %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errOut.String()))
	}
	return out.String(), nil
}

// Supernode is a supernode process with what a test needs to reach it.
type Supernode struct {
	*Proc
	Dir         string
	URL         string
	CAHash      string
	Credentials string
}

var caHashRE = regexp.MustCompile(`CA hash:\s+(sha256:[0-9a-f]{64})`)

// InitSupernode creates a federation whose first supernode listens on a
// fresh loopback address, starts it and waits until it answers.
func (c *Cluster) InitSupernode(name string, extraInitArgs ...string) *Supernode {
	c.t.Helper()
	return c.initSupernode(NewHost(), name, c.Dir(name), extraInitArgs)
}

// initSupernode runs init for a supernode listening on host:7420, starts it
// and waits until it answers.
func (c *Cluster) initSupernode(host, name, dir string, extraInitArgs []string) *Supernode {
	c.t.Helper()
	out, err := c.Run(append([]string{"init", "--name", name, "--data-dir", dir, "--listen", host + ":7420"}, extraInitArgs...)...)
	if err != nil {
		c.t.Fatal(err)
	}
	m := caHashRE.FindStringSubmatch(out)
	if m == nil {
		c.t.Fatalf("init printed no CA hash:\n%s", out)
	}
	sn := &Supernode{
		Proc:        c.Start(name, "supernode", "--data-dir", dir),
		Dir:         dir,
		URL:         "https://" + host + ":7420",
		CAHash:      m[1],
		Credentials: filepath.Join(dir, "admin.creds"),
	}
	sn.WaitLive(c.t)
	return sn
}

// JoinSupernode adds a supernode on a fresh loopback address to the
// federation of first: an administrator admits it (as a standby if asked),
// it joins, and the call returns once it answers. extra goes to the
// joining supernode command (for instance --dead-after).
func (c *Cluster) JoinSupernode(first *Supernode, name string, standby bool, extra ...string) *Supernode {
	c.t.Helper()
	return c.joinSupernode(first, NewHost(), name, c.Dir(name), standby, extra)
}

func (c *Cluster) joinSupernode(first *Supernode, host, name, dir string, standby bool, extra []string) *Supernode {
	c.t.Helper()
	args := []string{"supernode", "add", name, "--peer-url", "https://" + host + ":7421"}
	if standby {
		args = append(args, "--standby")
	}
	out, err := first.Admin(args...)
	if err != nil {
		c.t.Fatal(err)
	}
	sn := &Supernode{
		Proc: c.Start(name, append([]string{"supernode", "--data-dir", dir, "--join", first.URL, "--ca-hash", first.CAHash,
			"--token", strings.TrimSpace(out), "--name", name, "--listen", host + ":7420"}, extra...)...),
		Dir:         dir,
		URL:         "https://" + host + ":7420",
		CAHash:      first.CAHash,
		Credentials: first.Credentials,
	}
	sn.WaitLive(c.t)
	// Once joined, the supernode restarts from its data directory alone.
	sn.Args = []string{"supernode", "--data-dir", dir}
	return sn
}

// Credentials writes an administrator credentials file that lists every
// given supernode, so that admin commands fail over between them.
func (c *Cluster) Credentials(sns ...*Supernode) string {
	c.t.Helper()
	b, err := os.ReadFile(sns[0].Credentials)
	if err != nil {
		c.t.Fatal(err)
	}
	var urls []string
	for _, sn := range sns {
		urls = append(urls, "    - "+sn.URL)
	}
	text := regexp.MustCompile(`(?m)^servers:\n(    - .*\n)+`).ReplaceAllString(string(b), "servers:\n"+strings.Join(urls, "\n")+"\n")
	path := filepath.Join(c.dir, fmt.Sprintf("admin-%d.creds", len(sns)))
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		c.t.Fatal(err)
	}
	return path
}

// WaitLive waits until the supernode's liveness endpoint answers.
func (sn *Supernode) WaitLive(t testing.TB) {
	t.Helper()
	// Only liveness is asked here, so the certificate is not checked.
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer hc.CloseIdleConnections()
	Eventually(t, 60*time.Second, func() error {
		resp, err := hc.Get(sn.URL + "/v1/live")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("live: HTTP %d", resp.StatusCode)
		}
		return nil
	})
}

// Admin runs an administrator command against the supernode.
func (sn *Supernode) Admin(args ...string) (string, error) {
	return sn.c.Run(append(args, "--credentials", sn.Credentials)...)
}

// Eventually retries fn until it returns nil or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not so after %s: %v", timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
