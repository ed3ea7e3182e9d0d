package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedkeeper/fedkeeper/agent"
	"github.com/fedkeeper/fedkeeper/health"
	"github.com/fedkeeper/fedkeeper/internal/testcluster"
	"github.com/fedkeeper/fedkeeper/services"
)

// DNS tests: real supernodes answer a real resolver client, dig, about
// services that real agents register, while the tests break those
// services, kill agents and take the store's quorum away.

// dnsCheckInterval is how often the agents of these tests check their
// services; dnsTTL the supernode's answer TTL (its default).
const (
	dnsCheckInterval = time.Second
	dnsTTL           = 5 * time.Second
	dnsSessionTTL    = 3 * time.Second
)

// needDig skips a test on a machine without dig.
func needDig(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	if _, err := exec.LookPath("dig"); err != nil {
		t.Skip("these tests query the nameserver with dig: install bind9-dnsutils")
	}
}

// dnsAddr is where a supernode of the test cluster answers DNS: its API
// port + 3 on the same host.
func dnsAddr(sn *testcluster.Supernode) (host, port string) {
	host, _, _ = net.SplitHostPort(strings.TrimPrefix(sn.URL, "https://"))
	return host, "7423"
}

// dig asks the supernode's nameserver and returns dig's +short lines.
func dig(t *testing.T, sn *testcluster.Supernode, args ...string) []string {
	t.Helper()
	host, port := dnsAddr(sn)
	out, err := exec.Command("dig", append([]string{"@" + host, "-p", port, "+short", "+time=2", "+tries=1"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("dig %v: %v\n%s", args, err, out)
	}
	var lines []string
	for l := range strings.Lines(string(out)) {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, ";") {
			lines = append(lines, l)
		}
	}
	return lines
}

// digFull returns dig's whole answer: status, flags and sections.
func digFull(t *testing.T, sn *testcluster.Supernode, args ...string) string {
	t.Helper()
	host, port := dnsAddr(sn)
	out, err := exec.Command("dig", append([]string{"@" + host, "-p", port, "+time=2", "+tries=1"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("dig %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// flipServer is an HTTP service whose health the test turns on and off.
type flipServer struct {
	ok   atomic.Bool
	addr string
}

func startFlipServer(t *testing.T, host string) *flipServer {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	f := &flipServer{addr: ln.Addr().String()}
	f.ok.Store(true)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !f.ok.Load() {
			http.Error(w, "broken on purpose", http.StatusInternalServerError)
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return f
}

// dnsFed is one supernode with short probe and session timings.
func dnsFed(t *testing.T) (*testcluster.Cluster, *testcluster.Supernode, string) {
	t.Helper()
	c := testcluster.New(t)
	sn := c.InitSupernode("sn1", "--session-ttl", dnsSessionTTL.String())
	hcConfigure(t, []*testcluster.Supernode{sn})
	return c, sn, c.Credentials(sn)
}

// startServiceAgent starts an agent on a fresh host that registers regs
// in its configuration.
func startServiceAgent(t *testing.T, c *testcluster.Cluster, first *testcluster.Supernode, creds, name string, regs ...services.Registration) (*testcluster.Agent, string) {
	t.Helper()
	host := testcluster.NewHost()
	a := testcluster.StartAgent(t, first, creds, name, host, c.Dir(name), c.Start, func(cfg *agent.Config) { cfg.Services = regs })
	return a, host
}

func httpService(name string, port int, checkURL string) services.Registration {
	r := services.Registration{Name: name, Port: port, Protocol: services.ProtocolHTTP}
	if checkURL != "" {
		r.Checks = []health.CheckConfig{{Name: "up", Type: health.TypeHTTP, URL: checkURL, Interval: dnsCheckInterval}}
	}
	return r
}

func TestDNSAnswersOnlyServingInstances(t *testing.T) {
	needDig(t)
	c, sn, creds := dnsFed(t)
	var hosts []string
	var flips []*flipServer
	var agents []*testcluster.Agent
	for i := range 3 {
		host := testcluster.NewHost()
		f := startFlipServer(t, host)
		name := fmt.Sprintf("site%d", i)
		a := testcluster.StartAgent(t, sn, creds, name, host, c.Dir(name), c.Start, func(cfg *agent.Config) {
			cfg.Services = []services.Registration{httpService("index", 8080, "http://"+f.addr+"/")}
		})
		hosts, flips, agents = append(hosts, host), append(flips, f), append(agents, a)
	}
	slices.Sort(hosts)
	eventually(t, 30*time.Second, func(t *testing.T) error {
		if got := sorted(dig(t, sn, "index.service.fedkeeper.", "A")); !slices.Equal(got, hosts) {
			return fmt.Errorf("index A = %v, want %v", got, hosts)
		}
		return nil
	})
	srv := dig(t, sn, "index.service.CMIP6.fedkeeper.", "SRV")
	if len(srv) != 3 || !strings.Contains(srv[0], " 8080 ") || !strings.Contains(srv[0], ".node.fedkeeper.") {
		t.Errorf("index SRV in project CMIP6 = %v, want 3 records on port 8080 naming nodes", srv)
	}
	if got := dig(t, sn, "index.service.CORDEX.fedkeeper.", "A"); len(got) != 0 {
		t.Errorf("index in CORDEX = %v, want nothing", got)
	}

	// Shuffled on every answer: the first record varies.
	firsts := map[string]bool{}
	for range 40 {
		if a := dig(t, sn, "index.service.fedkeeper.", "A"); len(a) > 0 {
			firsts[a[0]] = true
		}
	}
	if len(firsts) < 2 {
		t.Errorf("40 answers all began with %v: not shuffled", firsts)
	}

	// A failing check takes the instance out within a check interval,
	// plus the report to the supernode; clients then see it within the
	// TTL of what they cached.
	flips[1].ok.Store(false)
	start := time.Now()
	eventually(t, dnsCheckInterval+dnsTTL+hcSlack, func(t *testing.T) error {
		if got := dig(t, sn, "index.service.fedkeeper.", "A"); slices.Contains(got, hostOf(agents[1])) {
			return fmt.Errorf("failing instance still answered: %v", got)
		}
		return nil
	})
	t.Logf("failing instance left the answers after %v", time.Since(start).Round(10*time.Millisecond))
	flips[1].ok.Store(true)
	eventually(t, dnsCheckInterval+dnsTTL+hcSlack, func(t *testing.T) error {
		if got := dig(t, sn, "index.service.fedkeeper.", "A"); len(got) != 3 {
			return fmt.Errorf("after recovery index A = %v, want 3", got)
		}
		return nil
	})

	// A killed agent's instances go: first as its node turns suspect, and
	// for good when its session lapses.
	agents[2].Kill()
	eventually(t, dnsSessionTTL+hcSlack+hcDetectBound(1), func(t *testing.T) error {
		if got := dig(t, sn, "index.service.fedkeeper.", "A"); slices.Contains(got, hostOf(agents[2])) || len(got) != 2 {
			return fmt.Errorf("with site2 killed, index A = %v", got)
		}
		return nil
	})

	// Every failing: the name still exists, with no records (NOERROR and
	// the SOA for negative caching), unlike a name nobody registered.
	flips[0].ok.Store(false)
	flips[1].ok.Store(false)
	eventually(t, dnsCheckInterval+dnsTTL+hcSlack, func(t *testing.T) error {
		out := digFull(t, sn, "index.service.fedkeeper.", "A")
		if !strings.Contains(out, "status: NOERROR") || !strings.Contains(out, "ANSWER: 0") || !strings.Contains(out, "IN\tSOA") {
			return fmt.Errorf("all failing, want NOERROR, no answer, SOA:\n%s", out)
		}
		return nil
	})
	if out := digFull(t, sn, "nosuch.service.fedkeeper.", "A"); !strings.Contains(out, "status: NXDOMAIN") || !strings.Contains(out, "IN\tSOA") {
		t.Errorf("unregistered service, want NXDOMAIN with SOA:\n%s", out)
	}
	if out := digFull(t, sn, "www.example.org.", "A"); !strings.Contains(out, "status: REFUSED") {
		t.Errorf("a name outside the zone, want REFUSED:\n%s", out)
	}
	if got := dig(t, sn, "site0.node.fedkeeper.", "A"); !slices.Equal(got, []string{hostOf(agents[0])}) {
		t.Errorf("site0.node = %v, want %s", got, hostOf(agents[0]))
	}
}

func hostOf(a *testcluster.Agent) string {
	h, _, _ := net.SplitHostPort(a.Addr)
	return h
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestDNSLargeAnswersFallBackToTCP(t *testing.T) {
	needDig(t)
	c, sn, creds := dnsFed(t)
	var regs []services.Registration
	for i := range 40 {
		r := httpService("bulk", 9000+i, "")
		r.ID = "bulk-" + strconv.Itoa(i)
		regs = append(regs, r)
	}
	startServiceAgent(t, c, sn, creds, "bulky", regs...)
	eventually(t, 30*time.Second, func(t *testing.T) error {
		// dig retries over TCP by itself when the UDP answer is truncated.
		if got := dig(t, sn, "bulk.service.fedkeeper.", "SRV"); len(got) != 40 {
			return fmt.Errorf("bulk SRV has %d records, want 40", len(got))
		}
		return nil
	})
	udp := digFull(t, sn, "+notcp", "+ignore", "+noedns", "bulk.service.fedkeeper.", "SRV")
	if !digFlag(udp, "tc") {
		t.Errorf("a 40-record answer over plain UDP is not truncated:\n%s", udp)
	}
	tcp := dig(t, sn, "+tcp", "bulk.service.fedkeeper.", "SRV")
	if len(tcp) != 40 {
		t.Errorf("over TCP bulk SRV has %d records, want 40", len(tcp))
	}
	// Garbage does not stop the server.
	host, port := dnsAddr(sn)
	conn, err := net.Dial("udp", net.JoinHostPort(host, port))
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("\x00\x01not a dns message at all"))
	conn.Close()
	if got := dig(t, sn, "bulky.node.fedkeeper.", "A"); len(got) != 1 {
		t.Errorf("after garbage, bulky.node = %v", got)
	}
}

// digFlag reports whether dig's ";; flags:" line has flag.
func digFlag(out, flag string) bool {
	for l := range strings.Lines(out) {
		if rest, ok := strings.CutPrefix(l, ";; flags:"); ok {
			flags, _, _ := strings.Cut(rest, ";")
			return slices.Contains(strings.Fields(flags), flag)
		}
	}
	return false
}

func TestDNSAnswersFromLastKnownStateWithoutQuorum(t *testing.T) {
	needDig(t)
	c := testcluster.New(t)
	sn1 := c.InitSupernode("sn1")
	sns := []*testcluster.Supernode{sn1, c.JoinSupernode(sn1, "sn2", false), c.JoinSupernode(sn1, "sn3", false)}
	creds := c.Credentials(sns...)
	eventually(t, 60*time.Second, wantSupernodes(c, creds, map[string]string{"sn1": "voter", "sn2": "voter", "sn3": "voter"}))
	_, host := startServiceAgent(t, c, sn1, creds, "llnl", httpService("thredds", 8443, ""))
	eventually(t, 30*time.Second, func(t *testing.T) error {
		if got := dig(t, sn1, "thredds.service.fedkeeper.", "A"); !slices.Equal(got, []string{host}) {
			return fmt.Errorf("thredds A = %v, want %s", got, host)
		}
		return nil
	})
	sns[1].Kill()
	sns[2].Kill()
	eventually(t, 30*time.Second, func(t *testing.T) error {
		if v := metricValue(t, sn1, "fedkeeper_dns_stale"); v != "1" {
			return fmt.Errorf("fedkeeper_dns_stale = %q, want 1", v)
		}
		return nil
	})
	if got := dig(t, sn1, "thredds.service.fedkeeper.", "A"); !slices.Equal(got, []string{host}) {
		t.Errorf("without quorum, thredds A = %v, want the last known %s", got, host)
	}
}

// metricValue reads one unlabelled metric from a supernode's /metrics.
func metricValue(t *testing.T, sn *testcluster.Supernode, name string) string {
	t.Helper()
	// /metrics is open like any exporter's; only its value matters here.
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(sn.URL + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for l := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return strings.TrimSpace(v)
		}
	}
	return "absent"
}
