//go:build linux

package testcluster

// Multi-host tests with Linux network namespaces.
//
// A Net is a small private LAN: every Host is a network namespace with one
// interface (eth0) plugged into a bridge. The bridge does not live in the
// root namespace but in a namespace of its own (the "switch"): in the root
// namespace Docker and similar tools set the FORWARD policy to DROP while
// br_netfilter sends bridged frames through that chain, which would
// silently cut host-to-host traffic. The switch namespace has no firewall
// at all. The root namespace, where the test process runs, is plugged into
// the switch by one veth pair (the uplink) and has the network's first
// address, so the test talks to every host directly.
//
// Partitions are nftables drop rules at each host's input: packets vanish
// the way they do on a broken WAN link, so connections hang and time out
// instead of failing fast, and connections that already exist stop
// working too. Traffic from and to the root namespace is never cut.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// netCmdTimeout bounds every ip, nft and tc command the harness runs.
const netCmdTimeout = 15 * time.Second

// netSeq numbers the networks of this test process; names and subnets are
// derived from it and the process ID.
var netSeq atomic.Int32

// subnets claimed by live networks of this process, by third octet.
var (
	subnetMu    sync.Mutex
	subnetTaken = map[int]bool{}
)

var hostNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9-]{0,30}$`)

// Net is a private IPv4 network of hosts, each in its own Linux network
// namespace, reachable from the test process in the root namespace. Create
// one with NewNet; it is torn down when the test ends.
type Net struct {
	// Subnet is the network's prefix, like "10.213.7.0/24".
	Subnet string
	// Gateway is the root namespace's address on the network, like
	// "10.213.7.1": hosts reach the test process there.
	Gateway string

	t      testing.TB
	ip     string // path of the ip command
	id     string // "fk<pid>-<seq>", the prefix of every namespace name
	sw     string // namespace holding the bridge
	uplink string // root-side interface name
	octet  int    // third octet of the subnet
	dir    string

	mu        sync.Mutex
	hosts     []*Host
	nss       []string        // namespaces created (or about to be), for cleanup
	cut       map[[2]int]bool // partitioned pairs of host indexes, smaller first
	listeners []net.Listener
	closed    bool
}

// Host is one machine of a Net: a network namespace with one address.
type Host struct {
	// Name is the name given to AddHost.
	Name string
	// NS is the network namespace's name, for `ip netns exec NS ...`.
	NS string
	// IP is the host's IPv4 address on the network.
	IP string

	n     *Net
	index int    // 1-based; the address is .index+1
	port  string // the host's veth end in the switch namespace

	once sync.Once
	c    *Cluster // runs fedkeeper inside the host; made on first use
}

// NewNet creates an empty network for the test, or skips the test when
// network namespaces cannot be used here (not root, no ip, nft or bridge
// support). Everything it makes is removed when the test ends, also when
// the test fails halfway.
func NewNet(t testing.TB) *Net {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespace tests need root")
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Skip("network namespace tests need the ip command (iproute2)")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("network namespace tests need the nft command (nftables) for partitions")
	}
	if _, err := netRun("", ip, "netns", "list"); err != nil {
		t.Skipf("ip netns is not usable here: %v", err)
	}
	pid := os.Getpid()
	seq := int(netSeq.Add(1))
	n := &Net{
		t:      t,
		ip:     ip,
		id:     fmt.Sprintf("fk%d-%d", pid, seq),
		uplink: fmt.Sprintf("fk%dn%d", pid, seq),
		dir:    t.TempDir(),
		octet:  -1,
		cut:    map[[2]int]bool{},
	}
	n.sw = n.id + "_switch"
	if len(n.uplink) > 15 {
		t.Fatalf("interface name %q is longer than 15 bytes", n.uplink)
	}
	// Registered before anything exists, so a failure at any later step
	// still removes whatever was made.
	t.Cleanup(n.destroy)

	n.removeNS(n.sw)
	n.ipCmd("link", "del", n.uplink) // leftover of an earlier run; usually fails
	n.mu.Lock()
	n.nss = append(n.nss, n.sw)
	n.mu.Unlock()
	if _, err := n.ipCmd("netns", "add", n.sw); err != nil {
		t.Skipf("cannot create network namespaces here: %v", err)
	}
	if _, err := n.ipCmd("-n", n.sw, "link", "add", "br0", "type", "bridge"); err != nil {
		t.Skipf("cannot create a bridge here: %v", err)
	}
	n.mustIP("-n", n.sw, "link", "set", "lo", "up")
	n.mustIP("-n", n.sw, "link", "set", "br0", "up")
	n.mustIP("link", "add", n.uplink, "type", "veth", "peer", "name", "up0", "netns", n.sw)
	n.mustIP("-n", n.sw, "link", "set", "up0", "master", "br0", "up")
	n.mustIP("link", "set", n.uplink, "up")
	n.claimSubnet(seq)
	return n
}

// claimSubnet picks 10.213.N.0/24 for the network, with N starting at a
// point derived from the process ID and the network's number and skipping
// prefixes that are in use in the root namespace or by this process, and
// puts the gateway address on the uplink.
func (n *Net) claimSubnet(seq int) {
	start := (os.Getpid()*37 + seq*11) % 254
	for i := 0; i < 254; i++ {
		octet := 1 + (start+i)%254
		prefix := fmt.Sprintf("10.213.%d.", octet)
		subnetMu.Lock()
		if subnetTaken[octet] || n.prefixInUse(prefix, "") {
			subnetMu.Unlock()
			continue
		}
		subnetTaken[octet] = true
		subnetMu.Unlock()
		n.octet = octet
		n.Subnet = prefix + "0/24"
		n.Gateway = prefix + "1"
		n.mustIP("addr", "add", n.Gateway+"/24", "dev", n.uplink)
		// Another test process may have picked the same prefix at the
		// same moment: if so, back off to the next one.
		if !n.prefixInUse(prefix, n.uplink) {
			return
		}
		n.ipCmd("addr", "del", n.Gateway+"/24", "dev", n.uplink)
		n.octet, n.Subnet, n.Gateway = -1, "", ""
		subnetMu.Lock()
		delete(subnetTaken, octet)
		subnetMu.Unlock()
	}
	n.t.Fatal("no free subnet in 10.213.0.0/16")
}

// prefixInUse reports whether an address or route of the root namespace,
// other than on interface except, starts with prefix (like "10.213.7.").
func (n *Net) prefixInUse(prefix, except string) bool {
	re := regexp.MustCompile(`(^|[^0-9.])` + regexp.QuoteMeta(prefix))
	addrs, _ := n.ipCmd("-4", "-o", "addr", "show")
	routes, _ := n.ipCmd("-4", "route", "show", "table", "all")
	for _, line := range strings.Split(addrs+"\n"+routes, "\n") {
		if !re.MatchString(line) {
			continue
		}
		if except != "" && strings.Contains(" "+line+" ", " "+except+" ") {
			continue
		}
		return true
	}
	return false
}

// AddHost creates a host named name (letters, digits and dashes) with the
// next free address of the network, its loopback up and a default route
// via the gateway. Traffic to anything outside the network is refused
// inside the host, so nothing a test starts can leave the machine.
func (n *Net) AddHost(name string) *Host {
	n.t.Helper()
	if !hostNameRE.MatchString(name) {
		n.t.Fatalf("host name %q: use up to 31 letters, digits and dashes", name)
	}
	n.mu.Lock()
	for _, h := range n.hosts {
		if h.Name == name {
			n.mu.Unlock()
			n.t.Fatalf("host %q already exists", name)
		}
	}
	index := len(n.hosts) + 1
	if index > 253 {
		n.mu.Unlock()
		n.t.Fatal("a Net holds at most 253 hosts")
	}
	h := &Host{
		Name:  name,
		NS:    n.id + "-" + name,
		IP:    fmt.Sprintf("10.213.%d.%d", n.octet, index+1),
		n:     n,
		index: index,
		port:  fmt.Sprintf("h%d", index),
	}
	n.nss = append(n.nss, h.NS)
	n.mu.Unlock()

	n.removeNS(h.NS)
	n.mustIP("netns", "add", h.NS)
	n.mustIP("-n", n.sw, "link", "add", h.port, "type", "veth", "peer", "name", "eth0", "netns", h.NS)
	n.mustIP("-n", n.sw, "link", "set", h.port, "master", "br0", "up")
	n.mustIP("-n", h.NS, "link", "set", "lo", "up")
	n.mustIP("-n", h.NS, "addr", "add", h.IP+"/24", "dev", "eth0")
	n.mustIP("-n", h.NS, "link", "set", "eth0", "up")
	n.mustIP("-n", h.NS, "route", "add", "default", "via", n.Gateway)

	// The host's own firewall: a set of cut-off peers whose packets are
	// dropped on arrival, and a fence that refuses traffic leaving the
	// network.
	rules := fmt.Sprintf(`table inet fedkeeper_testnet {
	set cut {
		type ipv4_addr
	}
	chain input {
		type filter hook input priority filter - 10; policy accept;
		ip saddr @cut drop
	}
	chain output {
		type filter hook output priority filter - 10; policy accept;
		oifname "eth0" ip daddr != %s reject with icmpx type admin-prohibited
	}
}
`, n.Subnet)
	if _, err := netRun(rules, n.ip, "netns", "exec", h.NS, "nft", "-f", "-"); err != nil {
		n.t.Skipf("nftables does not work in a network namespace here: %v", err)
	}

	n.mu.Lock()
	n.hosts = append(n.hosts, h)
	n.mu.Unlock()
	return h
}

// Hosts returns the network's hosts in the order they were added.
func (n *Net) Hosts() []*Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*Host(nil), n.hosts...)
}

// Start runs fedkeeper with args as a long-running process named name
// inside host h; see Host.Start.
func (n *Net) Start(h *Host, name string, args ...string) *Proc {
	n.t.Helper()
	return h.Start(name, args...)
}

// Partition cuts all traffic between a and b, both ways, including
// connections already open. Both stay reachable from the root namespace
// and from other hosts.
func (n *Net) Partition(a, b *Host) {
	n.t.Helper()
	n.setCut(a, b, true)
}

// Heal undoes Partition(a, b).
func (n *Net) Heal(a, b *Host) {
	n.t.Helper()
	n.setCut(a, b, false)
}

// Isolate partitions h from every other host of the network (hosts added
// later are not cut off). The root namespace still reaches it.
func (n *Net) Isolate(h *Host) {
	n.t.Helper()
	for _, o := range n.Hosts() {
		if o != h {
			n.setCut(h, o, true)
		}
	}
}

// HealAll removes every partition.
func (n *Net) HealAll() {
	n.t.Helper()
	n.mu.Lock()
	n.cut = map[[2]int]bool{}
	hosts := append([]*Host(nil), n.hosts...)
	n.mu.Unlock()
	for _, h := range hosts {
		n.mustNS(h, "nft", "flush", "set", "inet", "fedkeeper_testnet", "cut")
	}
}

// Partitioned reports whether traffic between a and b is cut.
func (n *Net) Partitioned(a, b *Host) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cut[pairKey(a, b)]
}

func pairKey(a, b *Host) [2]int {
	if a.index > b.index {
		a, b = b, a
	}
	return [2]int{a.index, b.index}
}

func (n *Net) setCut(a, b *Host, cut bool) {
	n.t.Helper()
	if a.n != n || b.n != n {
		n.t.Fatal("partition of hosts from another Net")
	}
	if a == b {
		n.t.Fatalf("cannot partition %s from itself", a.Name)
	}
	n.mu.Lock()
	k := pairKey(a, b)
	if n.cut[k] == cut {
		n.mu.Unlock()
		return
	}
	n.cut[k] = cut
	n.mu.Unlock()
	verb := "add"
	if !cut {
		verb = "delete"
	}
	n.mustNS(a, "nft", verb, "element", "inet", "fedkeeper_testnet", "cut", "{ "+b.IP+" }")
	n.mustNS(b, "nft", verb, "element", "inet", "fedkeeper_testnet", "cut", "{ "+a.IP+" }")
}

// Delay makes h's link slow: every packet to or from h waits d more, so a
// round trip between h and anyone grows by 2d (and by 2(d1+d2) between two
// delayed hosts). Zero removes the delay. It uses tc netem and skips the
// test when the kernel has no netem.
func (n *Net) Delay(h *Host, d time.Duration) {
	n.t.Helper()
	type link struct{ ns, dev string }
	for _, l := range []link{{h.NS, "eth0"}, {n.sw, h.port}} {
		if d <= 0 {
			netRun("", n.ip, "netns", "exec", l.ns, "tc", "qdisc", "del", "dev", l.dev, "root")
			continue
		}
		delay := strconv.FormatInt(d.Microseconds(), 10) + "us"
		_, err := netRun("", n.ip, "netns", "exec", l.ns, "tc", "qdisc", "replace", "dev", l.dev, "root", "netem", "delay", delay, "limit", "100000")
		if err != nil && strings.Contains(err.Error(), "qdisc kind is unknown") {
			n.t.Skipf("tc netem is not available in this kernel: %v", err)
		}
		if err != nil {
			n.t.Fatal(err)
		}
	}
}

// cluster returns the Cluster that runs fedkeeper inside the host, making
// it on first use so that hosts without fedkeeper processes do not need
// the binary.
func (h *Host) cluster() *Cluster {
	h.once.Do(func() {
		t := h.n.t
		t.Helper()
		dir := h.Dir("")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		// Procs run the binary through a two-line wrapper, so that the
		// existing Proc machinery (Kill, Pause, Restart, logs) works
		// unchanged; sh and ip netns exec both exec the next program, so
		// the Proc's process ID is fedkeeper's own.
		wrapper := filepath.Join(h.n.dir, h.Name+".fedkeeper")
		script := fmt.Sprintf("#!/bin/sh\nexec %s netns exec %s %s \"$@\"\n", shQuote(h.n.ip), shQuote(h.NS), shQuote(Binary(t)))
		if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		c := &Cluster{t: t, bin: wrapper, dir: dir}
		t.Cleanup(c.stopAll)
		h.c = c
	})
	if h.c == nil {
		h.n.t.Fatalf("host %s: cannot run fedkeeper", h.Name)
	}
	return h.c
}

// Start runs fedkeeper with args as a long-running process named name
// inside the host, with the Proc's usual Kill, Pause, Resume and Restart.
// Its log is kept under the host, so names need only be unique per host.
func (h *Host) Start(name string, args ...string) *Proc {
	h.n.t.Helper()
	return h.cluster().Start(name, args...)
}

// Run runs a short fedkeeper command inside the host and returns its
// standard output.
func (h *Host) Run(args ...string) (string, error) { return h.cluster().Run(args...) }

// Dir is a directory for the named process's data on this host.
func (h *Host) Dir(name string) string { return filepath.Join(h.n.dir, h.Name, name) }

// Command returns a command that runs the program name with args inside
// the host, killed when ctx is done. Processes still running in the host
// when the test ends are killed.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, h.n.ip, append([]string{"netns", "exec", h.NS, name}, args...)...)
}

// InitSupernode creates a federation whose first supernode listens on the
// host's address (port 7420), starts it inside the host and waits until it
// answers from the root namespace.
func (h *Host) InitSupernode(name string, extraInitArgs ...string) *Supernode {
	h.n.t.Helper()
	return h.cluster().initSupernode(h.IP, name, h.Dir(name), extraInitArgs)
}

// JoinSupernode adds a supernode on this host to the federation of first
// (see Cluster.JoinSupernode).
func (h *Host) JoinSupernode(first *Supernode, name string, standby bool, extra ...string) *Supernode {
	h.n.t.Helper()
	return h.cluster().joinSupernode(first, h.IP, name, h.Dir(name), standby, extra)
}

// DialContext connects to addr from inside the host, from the test
// process itself: the socket is made on a thread that has entered the
// host's namespace. It fits http.Transport.DialContext. Give IP
// addresses: names would be resolved outside the host.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.inNS(func() error {
		// No Happy Eyeballs: its racing dials run on other goroutines,
		// and so on threads outside the namespace.
		d := net.Dialer{FallbackDelay: -1}
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen listens on addr (like "10.213.7.2:8080" or ":8080") inside the
// host, from the test process itself. The listener is closed when the test
// ends, if not before.
func (h *Host) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := h.inNS(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	h.n.mu.Lock()
	h.n.listeners = append(h.n.listeners, l)
	h.n.mu.Unlock()
	return l, nil
}

// inNS runs fn on an OS thread that has entered the host's network
// namespace. Sockets belong to the namespace they were made in, whichever
// thread uses them later.
func (h *Host) inNS(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join("/run/netns", h.NS))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("host %s: %w", h.Name, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", h.NS, err)
			return
		}
		err = fn()
		// Go back, so the thread can serve other goroutines; if that
		// fails the thread stays locked and ends with this goroutine.
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// destroy kills every process in the network's namespaces and deletes the
// namespaces and the uplink. It reports what it could not remove.
func (n *Net) destroy() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	listeners := n.listeners
	nss := append([]string(nil), n.nss...)
	n.mu.Unlock()
	for _, l := range listeners {
		l.Close()
	}
	for _, ns := range nss {
		if err := n.removeNS(ns); err != nil {
			n.t.Errorf("netns cleanup: %v", err)
		}
	}
	if n.linkExists(n.uplink) {
		if _, err := n.ipCmd("link", "del", n.uplink); err != nil && n.linkExists(n.uplink) {
			n.t.Errorf("netns cleanup: %v", err)
		}
	}
	if n.octet >= 0 {
		subnetMu.Lock()
		delete(subnetTaken, n.octet)
		subnetMu.Unlock()
	}
}

// removeNS kills the processes in namespace ns and deletes it, if it
// exists.
func (n *Net) removeNS(ns string) error {
	if _, err := os.Stat(filepath.Join("/run/netns", ns)); err != nil {
		return nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := n.ipCmd("netns", "pids", ns)
		if err != nil {
			break
		}
		var left []int
		for _, f := range strings.Fields(out) {
			pid, err := strconv.Atoi(f)
			if err != nil || pid == os.Getpid() {
				continue
			}
			left = append(left, pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v in namespace %s survive SIGKILL", left, ns)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := n.ipCmd("netns", "del", ns); err != nil {
		if _, serr := os.Stat(filepath.Join("/run/netns", ns)); errors.Is(serr, os.ErrNotExist) {
			return nil
		}
		return err
	}
	return nil
}

func (n *Net) linkExists(name string) bool {
	_, err := n.ipCmd("link", "show", "dev", name)
	return err == nil
}

func (n *Net) ipCmd(args ...string) (string, error) { return netRun("", n.ip, args...) }

func (n *Net) mustIP(args ...string) {
	n.t.Helper()
	if _, err := n.ipCmd(args...); err != nil {
		n.t.Fatal(err)
	}
}

// mustNS runs a command inside host h.
func (n *Net) mustNS(h *Host, args ...string) {
	n.t.Helper()
	if _, err := netRun("", n.ip, append([]string{"netns", "exec", h.NS}, args...)...); err != nil {
		n.t.Fatal(err)
	}
}

// netRun runs a command with stdin, bounded by netCmdTimeout, and returns
// its combined output.
func netRun(stdin, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), netCmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v: %s", filepath.Base(name), strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
