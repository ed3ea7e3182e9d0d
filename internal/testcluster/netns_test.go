//go:build linux

package testcluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// probeTimeout bounds one reachability probe; a cut link is expected to
// use all of it.
const probeTimeout = time.Second

// serveGreeting answers every connection on l with "hello from NAME\n" and
// then echoes lines back, until l is closed.
func serveGreeting(l net.Listener, name string) {
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "hello from %s\n", name)
				io.Copy(c, c)
			}()
		}
	}()
}

// probe connects to addr from host from (the root namespace if nil) and
// returns the greeting line it gets.
func probe(from *Host, addr string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	var c net.Conn
	var err error
	if from == nil {
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp", addr)
	} else {
		c, err = from.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return "", err
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// check is one expectation: from (nil: the root namespace) reaches to
// (nil: the root namespace's gateway address) or, if !ok, its packets are
// silently lost so that connecting times out.
type check struct {
	from, to *Host
	ok       bool
}

func runChecks(t *testing.T, n *Net, port int, checks []check) {
	t.Helper()
	name := func(h *Host) string {
		if h == nil {
			return "root"
		}
		return h.Name
	}
	errs := make([]error, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			addr := n.Gateway
			if c.to != nil {
				addr = c.to.IP
			}
			got, err := probe(c.from, fmt.Sprintf("%s:%d", addr, port))
			want := "hello from " + name(c.to)
			switch {
			case c.ok && err != nil:
				errs[i] = fmt.Errorf("%s -> %s: %v", name(c.from), name(c.to), err)
			case c.ok && got != want:
				errs[i] = fmt.Errorf("%s -> %s: got %q, want %q", name(c.from), name(c.to), got, want)
			case !c.ok && err == nil:
				errs[i] = fmt.Errorf("%s -> %s: connected (%q), want it cut", name(c.from), name(c.to), got)
			case !c.ok && !isTimeout(err):
				errs[i] = fmt.Errorf("%s -> %s: failed fast (%v), want packets dropped and a timeout", name(c.from), name(c.to), err)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestNetPartitionAndHeal(t *testing.T) {
	n := NewNet(t)
	a, b, c := n.AddHost("a"), n.AddHost("b"), n.AddHost("c")
	const port = 7000
	for _, h := range []*Host{a, b, c} {
		l, err := h.Listen("tcp", fmt.Sprintf("%s:%d", h.IP, port))
		if err != nil {
			t.Fatal(err)
		}
		serveGreeting(l, h.Name)
	}
	rl, err := net.Listen("tcp", fmt.Sprintf("%s:%d", n.Gateway, port))
	if err != nil {
		t.Fatal(err)
	}
	defer rl.Close()
	serveGreeting(rl, "root")

	// An echo connection from a to b, opened before any partition.
	conn, err := a.DialContext(context.Background(), "tcp", fmt.Sprintf("%s:%d", b.IP, port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	connR := bufio.NewReader(conn)
	echo := func(msg string, timeout time.Duration) error {
		conn.SetDeadline(time.Now().Add(timeout))
		if _, err := fmt.Fprintln(conn, msg); err != nil {
			return err
		}
		for {
			line, err := connR.ReadString('\n')
			if err != nil {
				return err
			}
			if strings.TrimSpace(line) == msg {
				return nil
			}
		}
	}
	if err := echo("before", 2*time.Second); err != nil {
		t.Fatalf("echo over a -> b: %v", err)
	}

	all := func(except ...[2]*Host) []check {
		hosts := []*Host{nil, a, b, c}
		var cs []check
		for _, from := range hosts {
			for _, to := range hosts {
				if from == to {
					continue
				}
				ok := true
				for _, e := range except {
					if (e[0] == from && e[1] == to) || (e[1] == from && e[0] == to) {
						ok = false
					}
				}
				cs = append(cs, check{from, to, ok})
			}
		}
		return cs
	}

	steps := []struct {
		name   string
		do     func()
		checks []check
		// established is whether the connection opened at the start
		// still carries data after the step.
		established bool
	}{
		{"all connected", func() {}, all(), true},
		{"partition a b", func() { n.Partition(a, b) }, all([2]*Host{a, b}), false},
		{"partition is idempotent", func() { n.Partition(b, a) }, all([2]*Host{a, b}), false},
		{"heal a b", func() { n.Heal(a, b) }, all(), true},
		{"isolate c", func() { n.Isolate(c) }, all([2]*Host{a, c}, [2]*Host{b, c}), true},
		{"isolate a too", func() { n.Isolate(a) }, all([2]*Host{a, b}, [2]*Host{a, c}, [2]*Host{b, c}), false},
		{"heal all", func() { n.HealAll() }, all(), true},
	}
	t.Cleanup(func() {
		// Threads that entered a host for a dial or listen went back to
		// the root namespace (or ended).
		self := nsInode(t, "/proc/self/ns/net")
		tasks, _ := filepath.Glob("/proc/self/task/*/ns/net")
		for _, task := range tasks {
			var st syscall.Stat_t
			if syscall.Stat(task, &st) == nil && st.Ino != self {
				t.Errorf("thread %s is still in another network namespace", task)
			}
		}
	})
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.do()
			runChecks(t, n, port, st.checks)
			if got := n.Partitioned(a, b); got == st.established {
				t.Errorf("Partitioned(a, b) = %v", got)
			}
			// After a cut the old connection must not deliver; after a
			// heal, TCP retransmits what was lost and it works again.
			if st.established {
				if err := echo(st.name, 5*time.Second); err != nil {
					t.Errorf("established a -> b connection: %v", err)
				}
			} else if err := echo(st.name, 500*time.Millisecond); !isTimeout(err) {
				t.Errorf("established a -> b connection across a partition: got %v, want a timeout", err)
			}
		})
	}
}

// TestNetnsHelperProcess is not a test: it is the TCP greeter that
// TestNetCommandRunsInHost runs inside a host as a separate process.
func TestNetnsHelperProcess(t *testing.T) {
	addr := os.Getenv("FEDKEEPER_NETNS_HELPER_ADDR")
	if addr == "" {
		return
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(2)
	}
	serveGreeting(l, "helper")
	fmt.Println("ready")
	time.Sleep(time.Minute) // killed long before
	os.Exit(0)
}

func TestNetCommandRunsInHost(t *testing.T) {
	n := NewNet(t)
	a, b := n.AddHost("a"), n.AddHost("b")
	addr := a.IP + ":7001"

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The helper listens on a's address, which exists only in a's
	// namespace: it can start only there.
	cmd := a.Command(ctx, os.Args[0], "-test.run=^TestNetnsHelperProcess$")
	cmd.Env = append(os.Environ(), "FEDKEEPER_NETNS_HELPER_ADDR="+addr)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		t.Fatalf("helper in a: %q", line)
	}

	for _, tc := range []struct {
		name      string
		do        func()
		fromB, ok bool
	}{
		{"root reaches the process", func() {}, false, true},
		{"b reaches the process", func() {}, true, true},
		{"b is cut off after a partition", func() { n.Partition(a, b) }, true, false},
		{"root still reaches it", func() {}, false, true},
		{"b reaches it after heal", func() { n.Heal(a, b) }, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.do()
			from := (*Host)(nil)
			if tc.fromB {
				from = b
			}
			got, err := probe(from, addr)
			switch {
			case tc.ok && (err != nil || got != "hello from helper"):
				t.Errorf("got %q, %v; want the helper's greeting", got, err)
			case !tc.ok && !isTimeout(err):
				t.Errorf("got %q, %v; want a timeout", got, err)
			}
		})
	}

	t.Run("short commands run in the host", func(t *testing.T) {
		out, err := a.Command(ctx, "ip", "-4", "-o", "addr", "show", "dev", "eth0").CombinedOutput()
		if err != nil || !strings.Contains(string(out), " "+a.IP+"/24 ") {
			t.Fatalf("eth0 of a: %v\n%s", err, out)
		}
		out, err = a.Command(ctx, "ip", "route", "show", "default").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "via "+n.Gateway) {
			t.Fatalf("default route of a: %v\n%s", err, out)
		}
	})

	t.Run("traffic cannot leave the network", func(t *testing.T) {
		// The machine's own uplink address is outside the network.
		conn, err := a.DialContext(ctx, "tcp", "192.0.2.1:80")
		if err == nil {
			conn.Close()
			t.Fatal("a host connected outside its network")
		}
		if isTimeout(err) {
			t.Fatalf("leaving the network should be refused at once: %v", err)
		}
	})
}

// nsInode is the inode of a network namespace file.
func nsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestNetFedkeeperInHost(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	n := NewNet(t)
	a, b := n.AddHost("a"), n.AddHost("b")
	sn := a.InitSupernode("sn1")

	live := func(h *Host) error {
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
		if h != nil {
			tr.DialContext = h.DialContext
		}
		hc := &http.Client{Timeout: 2 * time.Second, Transport: tr}
		defer hc.CloseIdleConnections()
		resp, err := hc.Get(sn.URL + "/v1/live")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return nil
	}
	want := func(t *testing.T, h *Host, ok bool) {
		t.Helper()
		err := live(h)
		if ok && err != nil {
			t.Fatalf("live: %v", err)
		}
		if !ok && err == nil {
			t.Fatal("live answered, want no answer")
		}
	}

	t.Run("runs inside the host's namespace", func(t *testing.T) {
		sn.mu.Lock()
		pid := sn.cmd.Process.Pid
		sn.mu.Unlock()
		if got, want := nsInode(t, fmt.Sprintf("/proc/%d/ns/net", pid)), nsInode(t, "/run/netns/"+a.NS); got != want {
			t.Fatalf("supernode's namespace %d, want a's %d", got, want)
		}
	})
	t.Run("reachable from root and b", func(t *testing.T) {
		want(t, nil, true)
		want(t, b, true)
	})
	t.Run("partition cuts b only", func(t *testing.T) {
		n.Partition(a, b)
		want(t, b, false)
		want(t, nil, true)
		n.Heal(a, b)
		want(t, b, true)
	})
	t.Run("admin command runs in the host", func(t *testing.T) {
		if _, err := sn.Admin("nodes", "list", "-o", "json"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("pause and resume", func(t *testing.T) {
		sn.Pause()
		want(t, nil, false)
		sn.Resume()
		sn.WaitLive(t)
	})
	t.Run("kill and restart", func(t *testing.T) {
		sn.Kill()
		want(t, nil, false)
		sn.Restart()
		sn.WaitLive(t)
		want(t, b, true)
	})
}

// netLeftovers lists what of network id is still on the machine.
func netLeftovers(t *testing.T, n *Net) []string {
	t.Helper()
	var left []string
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && (strings.HasPrefix(f[0], n.id+"-") || f[0] == n.sw) {
			left = append(left, "namespace "+f[0])
		}
	}
	if err := exec.Command("ip", "link", "show", "dev", n.uplink).Run(); err == nil {
		left = append(left, "link "+n.uplink)
	}
	return left
}

// fakeTB stands in for a test so that a harness can fail halfway and its
// cleanups be run and checked by the real test.
type fakeTB struct {
	testing.TB
	mu       sync.Mutex
	cleanups []func()
	failed   string
}

func (f *fakeTB) Cleanup(fn func()) {
	f.mu.Lock()
	f.cleanups = append(f.cleanups, fn)
	f.mu.Unlock()
}
func (f *fakeTB) Fatal(args ...any) { f.fail(fmt.Sprint(args...)) }
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fail(fmt.Sprintf(format, args...))
}
func (f *fakeTB) FailNow()         { f.fail("FailNow") }
func (f *fakeTB) Skip(args ...any) { f.fail("skip: " + fmt.Sprint(args...)) }
func (f *fakeTB) Skipf(format string, args ...any) {
	f.fail("skip: " + fmt.Sprintf(format, args...))
}
func (f *fakeTB) SkipNow() { f.fail("skip") }
func (f *fakeTB) fail(msg string) {
	f.mu.Lock()
	f.failed = msg
	f.mu.Unlock()
	runtime.Goexit()
}
func (f *fakeTB) Failed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed != ""
}

// runFake runs body against a fake test in its own goroutine, as the
// testing package would, then runs its cleanups last-first.
func runFake(t *testing.T, body func(tb testing.TB)) (failed string) {
	f := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		body(f)
	}()
	<-done
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
	return f.failed
}

func TestNetCleanup(t *testing.T) {
	for _, tc := range []struct {
		name string
		// body builds a network; it returns the network and a command
		// it left running, if any.
		body       func(tb testing.TB, got **Net, cmd **exec.Cmd)
		wantFailed string
	}{
		{
			name: "passing test",
			body: func(tb testing.TB, got **Net, cmd **exec.Cmd) {
				n := NewNet(tb)
				*got = n
				a, b := n.AddHost("a"), n.AddHost("b")
				n.Partition(a, b)
			},
		},
		{
			name: "test fails with a process running in a host",
			body: func(tb testing.TB, got **Net, cmd **exec.Cmd) {
				n := NewNet(tb)
				*got = n
				a := n.AddHost("a")
				n.AddHost("b")
				c := a.Command(context.Background(), "sleep", "60")
				if err := c.Start(); err != nil {
					tb.Fatal(err)
				}
				*cmd = c
				if _, err := a.Listen("tcp", a.IP+":7002"); err != nil {
					tb.Fatal(err)
				}
				tb.Fatal("failed halfway")
			},
			wantFailed: "failed halfway",
		},
		{
			name: "harness fails inside AddHost",
			body: func(tb testing.TB, got **Net, cmd **exec.Cmd) {
				n := NewNet(tb)
				*got = n
				n.AddHost("a")
				// Take the switch port name the next host needs.
				if out, err := exec.Command("ip", "-n", n.sw, "link", "add", "h2", "type", "bridge").CombinedOutput(); err != nil {
					tb.Errorf("placeholder link: %v\n%s", err, out)
				}
				n.AddHost("b")
			},
			wantFailed: "File exists",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n *Net
			var cmd *exec.Cmd
			failed := runFake(t, func(tb testing.TB) { tc.body(tb, &n, &cmd) })
			if strings.HasPrefix(failed, "skip") {
				t.Skip(failed)
			}
			if !strings.Contains(failed, tc.wantFailed) || (tc.wantFailed == "") != (failed == "") {
				t.Errorf("body failed with %q, want %q", failed, tc.wantFailed)
			}
			if left := netLeftovers(t, n); len(left) > 0 {
				t.Errorf("left behind: %v", left)
			}
			if cmd != nil {
				waited := make(chan error, 1)
				go func() { waited <- cmd.Wait() }()
				select {
				case err := <-waited:
					if err == nil || !strings.Contains(err.Error(), "killed") {
						t.Errorf("process in the host: %v, want killed", err)
					}
				case <-time.After(5 * time.Second):
					cmd.Process.Kill()
					t.Error("process in the host survived cleanup")
				}
			}
		})
	}
}

func TestNetRemovesLeftovers(t *testing.T) {
	n := NewNet(t)
	// A namespace with the name the next host will get, as a crashed run
	// of this process ID would leave it, with a process inside.
	ns := n.id + "-a"
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	old := exec.Command("ip", "netns", "exec", ns, "sleep", "60")
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	defer old.Process.Kill()
	// ip enters the namespace only after it has started; a host added
	// before that would find the namespace empty, which is not the crash
	// this test stands for.
	inside := func() bool {
		out, _ := exec.Command("ip", "netns", "pids", ns).Output()
		return strings.Contains("\n"+string(out), fmt.Sprintf("\n%d\n", old.Process.Pid))
	}
	for deadline := time.Now().Add(5 * time.Second); !inside(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the leftover process never entered its namespace")
		}
	}
	a := n.AddHost("a")
	waited := make(chan error, 1)
	go func() { waited <- old.Wait() }()
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Fatal("the leftover namespace's process was not killed")
	}
	out, err := a.Command(context.Background(), "ip", "-o", "link", "show", "dev", "eth0").CombinedOutput()
	if err != nil {
		t.Fatalf("new host a has no eth0: %v\n%s", err, out)
	}
}

func TestNetDelay(t *testing.T) {
	n := NewNet(t)
	a, b := n.AddHost("a"), n.AddHost("b")
	l, err := b.Listen("tcp", b.IP+":7003")
	if err != nil {
		t.Fatal(err)
	}
	serveGreeting(l, "b")
	connectTime := func() time.Duration {
		t.Helper()
		start := time.Now()
		if _, err := probe(a, b.IP+":7003"); err != nil {
			t.Fatal(err)
		}
		return time.Since(start)
	}
	for _, d := range []time.Duration{100 * time.Millisecond, 0} {
		n.Delay(a, d)
		// Connecting and reading the greeting take two round trips.
		got := connectTime()
		if got < 4*d || (d == 0 && got > 50*time.Millisecond) {
			t.Errorf("delay %s: connect and greeting took %s", d, got)
		}
	}
}

func TestNetSubnetsDiffer(t *testing.T) {
	n1, n2 := NewNet(t), NewNet(t)
	if n1.Subnet == n2.Subnet || n1.uplink == n2.uplink || n1.id == n2.id {
		t.Fatalf("two networks share a name or subnet: %+v %+v", n1, n2)
	}
	for _, n := range []*Net{n1, n2} {
		if len(n.uplink) > 15 || !strings.HasPrefix(n.Subnet, "10.213.") {
			t.Errorf("uplink %q, subnet %q", n.uplink, n.Subnet)
		}
		if _, err := os.Stat(filepath.Join("/run/netns", n.sw)); err != nil {
			t.Error(err)
		}
	}
	// Hosts of different networks with the same name do not collide.
	a1, a2 := n1.AddHost("a"), n2.AddHost("a")
	if a1.NS == a2.NS || a1.IP == a2.IP {
		t.Fatalf("hosts collide: %+v %+v", a1, a2)
	}
}
