package bench

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/fedkeeper/fedkeeper/health"
	"github.com/fedkeeper/fedkeeper/membership"
	"github.com/fedkeeper/fedkeeper/pki"
	"github.com/fedkeeper/fedkeeper/services"
	"github.com/fedkeeper/fedkeeper/supernode"
)

// The tools of the dns scenario, from Debian's nsd and dnsperf packages.
const (
	nsdPath     = "/usr/sbin/nsd"
	dnsperfPath = "/usr/bin/dnsperf"
)

// Bounds and shape of the dns scenario.
const (
	dnsProject = "bench"
	// dnsMinNodes members at least carry the instances, more when a
	// service has more instances or the nodes would exceed their limit of
	// registrations.
	dnsMinNodes = 10
	// dnsHold outlasts any run: the members' sessions are granted for it
	// and the supernode's probes come no sooner. The members are records
	// only, with no agent behind their addresses, so a probe would find
	// them unreachable and take their instances out of the answers.
	dnsHold       = time.Hour
	dnsSetupLimit = 5 * time.Minute
	dnsReadyLimit = time.Minute
	dnsNSDLimit   = 30 * time.Second
	dnsAskTimeout = 2 * time.Second
	// dnsperfSlack is what a dnsperf run may take beyond its duration:
	// its start and the wait for the last answers.
	dnsperfSlack = 30 * time.Second
	// dnsEDNSSize is the buffer size dnsperf's -e advertises; the check
	// of the answers asks with it too, so that it sees what dnsperf gets.
	dnsEDNSSize = 4096
	// dnsBlock is one block of the query file: dnsServiceA A queries of
	// services, then one SRV query, one node query and one name that does
	// not exist. dnsMinBlocks blocks at least make the file, more when
	// needed to name every service and node.
	dnsServiceA  = 7
	dnsBlock     = dnsServiceA + 3
	dnsMinBlocks = 100
	// The SOA timers fedkeeper's nameserver gives; only secondaries read
	// them, and nothing compares them here.
	dnsSOATimers = "3600 600 1209600"
)

// DNSOptions shapes a run of the dns scenario.
type DNSOptions struct {
	// Services are registered with Instances instances each, all passing.
	Services  int
	Instances int
	// Duration is the length of one dnsperf run; each server gets Rounds
	// runs, taken in turns.
	Duration time.Duration
	Rounds   int
	// Clients and Threads are dnsperf's -c and -T.
	Clients int
	Threads int
	// NSDServers is NSD's server-count: its processes answering queries.
	NSDServers int
}

// DNS measures fedkeeper's nameserver against NSD, a static authoritative
// server, serving the same records, with dnsperf sending a mix of queries
// as fast as the servers answer.
//
// fedkeeper: one supernode runs in this process; members, each with its
// own address, are admitted with a token and hold their sessions open,
// and their services are registered through the registry, so that the
// nameserver answers from its view of the store as in a federation.
//
// NSD: the same records written as a zone file, served by Debian's nsd
// in the foreground on another loopback port, with its response rate
// limiting off (it would cap a single client far below what NSD serves)
// and minimal responses: fedkeeper adds no NS records to its answers,
// and neither does NSD then, though it also leaves out the addresses of
// SRV targets that fedkeeper adds. The average answer size of each is
// among the figures.
//
// Before any measure, every distinct query of the query file is asked of
// both servers, and their answers must hold the same records. dnsperf
// then runs against fedkeeper and NSD in turns, Rounds times each, with
// EDNS0; each server's figures are the median of its runs, and its lost
// queries their sum.
func DNS(ctx context.Context, o DNSOptions, progress io.Writer) (Result, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	for _, tool := range []string{nsdPath, dnsperfPath} {
		if _, err := os.Stat(tool); err != nil {
			return nil, fmt.Errorf("%s is missing (%w); install Debian's packages: apt-get install -y nsd dnsperf", tool, err)
		}
	}
	start := time.Now()
	dir, err := os.MkdirTemp("", "fedkeeper-bench-dns-")
	if err != nil {
		return nil, fmt.Errorf("make temporary directory: %w", err)
	}
	defer os.RemoveAll(dir)
	// The supernode logs a line for every member and session; only
	// warnings are worth showing.
	defer quietLogs(progress)()

	setupCtx, cancel := context.WithTimeout(ctx, dnsSetupLimit)
	defer cancel()
	sn, err := startSupernode(setupCtx, filepath.Join(dir, "supernode"), dnsSupernodeConfig())
	if err != nil {
		return nil, fmt.Errorf("start the supernode: %w", err)
	}
	defer sn.Close()
	plan := newDNSPlan(o.Services, o.Instances, sn)
	t0 := time.Now()
	if err := plan.register(setupCtx, sn); err != nil {
		return nil, err
	}
	fkAddr := sn.DNS.Addr()
	if err := plan.waitAnswered(setupCtx, fkAddr); err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "fedkeeper's nameserver on %s answers %d services on %d nodes, %.1fs after the first join\n",
		fkAddr, len(plan.services), len(plan.nodes), time.Since(t0).Seconds())

	zone, records := plan.zone()
	nsd, err := startNSD(setupCtx, filepath.Join(dir, "nsd"), plan.domain, zone, o.NSDServers, progress)
	if err != nil {
		return nil, err
	}
	defer nsd.stop(progress)
	queries := plan.queries()
	if err := dnsCompare(setupCtx, fkAddr, nsd.addr, queries); err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "fedkeeper and NSD give the same answers to the %d distinct queries\n", len(dnsDistinct(queries)))
	queryFile := filepath.Join(dir, "queries.txt")
	if err := os.WriteFile(queryFile, []byte(dnsQueryFile(queries)), 0o600); err != nil {
		return nil, fmt.Errorf("write the query file: %w", err)
	}

	servers := []struct{ name, addr string }{{"fedkeeper", fkAddr}, {"nsd", nsd.addr}}
	runs := make(map[string][]dnsperfStats)
	var dnsperfVersion string
	for r := 1; r <= o.Rounds; r++ {
		for _, s := range servers {
			st, err := runDnsperf(ctx, s.addr, queryFile, filepath.Join(dir, fmt.Sprintf("dnsperf-%s-%d.txt", s.name, r)), o)
			if err != nil {
				return nil, fmt.Errorf("dnsperf against %s, round %d: %w", s.name, r, err)
			}
			fmt.Fprintf(progress, "round %d %s: %.0f queries/s, %d of %d lost, average latency %.3f ms, %s\n",
				r, s.name, st.QPS, st.Lost, st.Sent, st.AvgLatency*1000, st.rcodeShares())
			if err := st.checkRcodes(); err != nil {
				return nil, fmt.Errorf("dnsperf against %s, round %d: %w", s.name, r, err)
			}
			runs[s.name] = append(runs[s.name], st)
			dnsperfVersion = st.Version
		}
	}

	res := Result{
		"scenario":        "dns",
		"services":        o.Services,
		"instances":       o.Instances,
		"nodes":           len(plan.nodes),
		"records":         records,
		"queries":         len(queries),
		"duration_s":      o.Duration.Seconds(),
		"rounds":          o.Rounds,
		"clients":         o.Clients,
		"threads":         o.Threads,
		"nsd_servers":     o.NSDServers,
		"nsd_version":     nsd.version,
		"dnsperf_version": dnsperfVersion,
	}
	qps := map[string]float64{}
	latency := map[string]float64{}
	for _, s := range servers {
		sts := runs[s.name]
		var lost int64
		for _, st := range sts {
			lost += st.Lost
		}
		qps[s.name] = median(sts, func(st dnsperfStats) float64 { return st.QPS })
		latency[s.name] = median(sts, func(st dnsperfStats) float64 { return st.AvgLatency })
		res[s.name+"_qps"] = fanoutRound(qps[s.name])
		res[s.name+"_lost"] = lost
		res[s.name+"_avg_latency_ms"] = round3(1000 * latency[s.name])
		res[s.name+"_response_bytes"] = median(sts, func(st dnsperfStats) float64 { return st.ResponseBytes })
	}
	if qps["nsd"] > 0 {
		res["ratio_qps"] = fanoutRound(qps["fedkeeper"] / qps["nsd"])
	}
	if latency["nsd"] > 0 {
		res["ratio_avg_latency"] = fanoutRound(latency["fedkeeper"] / latency["nsd"])
	}
	if rss, err := fanoutRSSMB(); err == nil {
		res["process_rss_mb"] = rss
	}
	res["total_s"] = seconds(time.Since(start))
	return res, nil
}

func (o DNSOptions) validate() error {
	switch {
	case o.Services < 1 || o.Services > 2000:
		return fmt.Errorf("--services must be between 1 and 2000, not %d", o.Services)
	case o.Instances < 1 || o.Instances > 16:
		// More would not fit one UDP answer with its glue.
		return fmt.Errorf("--instances must be between 1 and 16, not %d", o.Instances)
	case o.Duration < time.Second || o.Duration > 5*time.Minute || o.Duration%time.Second != 0:
		return fmt.Errorf("--duration must be whole seconds between 1s and 5m, not %s", o.Duration)
	case o.Rounds < 1 || o.Rounds > 5:
		return fmt.Errorf("--rounds must be between 1 and 5, not %d", o.Rounds)
	case o.Threads < 1 || o.Threads > 64:
		return fmt.Errorf("--threads must be between 1 and 64, not %d", o.Threads)
	case o.Clients < o.Threads || o.Clients > 1000:
		return fmt.Errorf("--clients must be between --threads (%d) and 1000, not %d", o.Threads, o.Clients)
	case o.NSDServers < 1 || o.NSDServers > 64:
		return fmt.Errorf("--nsd-servers must be between 1 and 64, not %d", o.NSDServers)
	}
	return nil
}

// dnsHost is a node of the plan: its name and IPv4 address.
type dnsHost struct {
	name, ip string
}

// dnsService is a service of the plan and the nodes (indexes into
// dnsPlan.nodes) its instances run on, all on the same port.
type dnsService struct {
	name  string
	port  int
	nodes []int
}

// dnsPlan is what the scenario registers with fedkeeper and writes into
// NSD's zone: the same records for both.
type dnsPlan struct {
	domain    string
	ttl       uint32
	supernode dnsHost
	nodes     []dnsHost
	services  []dnsService
}

// newDNSPlan is the plan for the supernode's domain, TTL and address.
func newDNSPlan(n, instances int, sn *supernode.Supernode) dnsPlan {
	return dnsPlanFor(n, instances,
		cmp.Or(sn.Config.DNS.Domain, supernode.DefaultDNSDomain),
		uint32(cmp.Or(sn.Config.DNS.TTL, supernode.DefaultDNSTTL)/time.Second),
		dnsHost{sn.Config.Name, membership.HostOf(strings.TrimPrefix(sn.URL(), "https://"))})
}

// dnsPlanFor spreads instances instances of each of n services over the
// members round-robin, so that no member runs two instances of one
// service and none holds more than services.MaxPerNode.
func dnsPlanFor(n, instances int, domain string, ttl uint32, sn dnsHost) dnsPlan {
	p := dnsPlan{domain: dns.CanonicalName(domain), ttl: ttl, supernode: sn}
	nodes := max(dnsMinNodes, instances, (n*instances+services.MaxPerNode-1)/services.MaxPerNode)
	for i := range nodes {
		p.nodes = append(p.nodes, dnsHost{fmt.Sprintf("node-%03d", i), fmt.Sprintf("10.0.%d.%d", i/250, 1+i%250)})
	}
	for s := range n {
		svc := dnsService{name: fmt.Sprintf("svc-%04d", s), port: 8000 + s}
		for k := range instances {
			svc.nodes = append(svc.nodes, (s*instances+k)%nodes)
		}
		p.services = append(p.services, svc)
	}
	return p
}

func (p dnsPlan) serviceName(s dnsService) string { return s.name + ".service." + p.domain }
func (p dnsPlan) nodeName(h dnsHost) string       { return h.name + ".node." + p.domain }

// register admits the plan's members, opens their sessions and registers
// their instances, all passing.
func (p dnsPlan) register(ctx context.Context, sn *supernode.Supernode) error {
	token, _, err := sn.Members.CreateToken(ctx, dnsProject, len(p.nodes), time.Hour, "bench")
	if err != nil {
		return fmt.Errorf("create a join token: %w", err)
	}
	reports := make([][]services.Report, len(p.nodes))
	for _, s := range p.services {
		for _, i := range s.nodes {
			reports[i] = append(reports[i], services.Report{
				Registration: services.Registration{Name: s.name, Port: s.port, Protocol: services.ProtocolTCP},
				Status:       health.Passing,
			})
		}
	}
	reg := services.NewRegistry(sn.Store.Client)
	for i, h := range p.nodes {
		key, err := pki.NewKey()
		if err != nil {
			return fmt.Errorf("key of %s: %w", h.name, err)
		}
		csr, err := pki.NewCSR(key, h.name)
		if err != nil {
			return fmt.Errorf("certificate request of %s: %w", h.name, err)
		}
		if _, err := sn.Members.Join(ctx, membership.JoinInput{Name: h.name, Token: token, CSR: string(csr),
			Profile: membership.Profile{Project: dnsProject, Address: net.JoinHostPort(h.ip, "7444")}}); err != nil {
			return fmt.Errorf("join %s: %w", h.name, err)
		}
		if _, err := sn.Members.OpenSession(ctx, h.name); err != nil {
			return fmt.Errorf("open the session of %s: %w", h.name, err)
		}
		node, err := sn.Members.Get(ctx, h.name)
		if err != nil {
			return fmt.Errorf("read member %s: %w", h.name, err)
		}
		if _, err := reg.Sync(ctx, node, reports[i]); err != nil {
			return fmt.Errorf("register the services of %s: %w", h.name, err)
		}
	}
	return nil
}

// waitAnswered waits until the nameserver at addr answers every service
// with all its instances: its view follows the store a little behind.
func (p dnsPlan) waitAnswered(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, dnsReadyLimit)
	defer cancel()
	for {
		var pending error
		for _, s := range p.services {
			m, err := dnsAsk(ctx, addr, p.serviceName(s), dns.TypeA)
			if err == nil && len(m.Answer) != len(s.nodes) {
				err = fmt.Errorf("%s answered with %d of its %d addresses", p.serviceName(s), len(m.Answer), len(s.nodes))
			}
			if err != nil {
				pending = err
				break
			}
		}
		if pending == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("fedkeeper's nameserver on %s does not answer every service after %s: %w", addr, dnsReadyLimit, pending)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// zone is the plan as an NSD zone file, with the number of its records:
// what fedkeeper answers, and its SOA and NS records.
func (p dnsPlan) zone() (string, int) {
	var sb strings.Builder
	records := 0
	rr := func(format string, args ...any) {
		fmt.Fprintf(&sb, format+"\n", args...)
		records++
	}
	fmt.Fprintf(&sb, "$TTL %d\n", p.ttl)
	ns := p.nodeName(p.supernode)
	rr("%s IN SOA %s hostmaster.%s 1 %s %d", p.domain, ns, p.domain, dnsSOATimers, p.ttl)
	rr("%s IN NS %s", p.domain, ns)
	rr("%s IN A %s", ns, p.supernode.ip)
	for _, h := range p.nodes {
		rr("%s IN A %s", p.nodeName(h), h.ip)
	}
	for _, s := range p.services {
		for _, i := range s.nodes {
			rr("%s IN A %s", p.serviceName(s), p.nodes[i].ip)
		}
		for _, i := range s.nodes {
			rr("%s IN SRV 1 1 %d %s", p.serviceName(s), s.port, p.nodeName(p.nodes[i]))
		}
	}
	return sb.String(), records
}

// dnsQuery is one line of dnsperf's query file.
type dnsQuery struct {
	name  string
	qtype uint16
}

// queries is the query file: blocks of service A queries, one SRV query,
// one node query and one name that does not exist, going round the
// services and nodes, with as many blocks as it takes to name each.
func (p dnsPlan) queries() []dnsQuery {
	blocks := max(dnsMinBlocks, (len(p.services)+dnsServiceA-1)/dnsServiceA, len(p.nodes))
	var out []dnsQuery
	a := 0
	for b := range blocks {
		for range dnsServiceA {
			out = append(out, dnsQuery{p.serviceName(p.services[a%len(p.services)]), dns.TypeA})
			a++
		}
		out = append(out, dnsQuery{p.serviceName(p.services[b%len(p.services)]), dns.TypeSRV})
		out = append(out, dnsQuery{p.nodeName(p.nodes[b%len(p.nodes)]), dns.TypeA})
		kind := "service"
		if b%2 == 1 {
			kind = "node"
		}
		out = append(out, dnsQuery{fmt.Sprintf("missing-%d.%s.%s", b, kind, p.domain), dns.TypeA})
	}
	return out
}

// dnsQueryFile is queries in dnsperf's format: a name and a type a line.
func dnsQueryFile(queries []dnsQuery) string {
	var sb strings.Builder
	for _, q := range queries {
		fmt.Fprintf(&sb, "%s %s\n", q.name, dns.TypeToString[q.qtype])
	}
	return sb.String()
}

func dnsDistinct(queries []dnsQuery) []dnsQuery {
	seen := map[dnsQuery]bool{}
	var out []dnsQuery
	for _, q := range queries {
		if !seen[q] {
			seen[q] = true
			out = append(out, q)
		}
	}
	return out
}

// dnsAsk asks addr one question over UDP with EDNS0, as dnsperf does.
func dnsAsk(ctx context.Context, addr, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg).SetQuestion(name, qtype)
	m.SetEdns0(dnsEDNSSize, false)
	c := &dns.Client{Net: "udp", Timeout: dnsAskTimeout}
	r, _, err := c.ExchangeContext(ctx, m, addr)
	if err != nil {
		return nil, fmt.Errorf("ask %s for %s %s: %w", addr, name, dns.TypeToString[qtype], err)
	}
	return r, nil
}

// dnsAnswer is the answer section of m as sorted text: answers with the
// same records compare equal whatever their order.
func dnsAnswer(m *dns.Msg) []string {
	if m == nil {
		return nil
	}
	out := make([]string, len(m.Answer))
	for i, rr := range m.Answer {
		out[i] = rr.String()
	}
	slices.Sort(out)
	return out
}

// dnsCompare asks both servers every distinct query and fails on the
// first answers that differ in code, authority, truncation or records.
func dnsCompare(ctx context.Context, fkAddr, nsdAddr string, queries []dnsQuery) error {
	for _, q := range dnsDistinct(queries) {
		fk, err := dnsAsk(ctx, fkAddr, q.name, q.qtype)
		if err != nil {
			return fmt.Errorf("fedkeeper: %w", err)
		}
		ns, err := dnsAsk(ctx, nsdAddr, q.name, q.qtype)
		if err != nil {
			return fmt.Errorf("NSD: %w", err)
		}
		if fk.Rcode != ns.Rcode || fk.Authoritative != ns.Authoritative || fk.Truncated || ns.Truncated ||
			!slices.Equal(dnsAnswer(fk), dnsAnswer(ns)) {
			return fmt.Errorf("fedkeeper and NSD answer %s %s differently:\nfedkeeper: %s, aa %v, tc %v\n%s\nNSD: %s, aa %v, tc %v\n%s",
				q.name, dns.TypeToString[q.qtype],
				dns.RcodeToString[fk.Rcode], fk.Authoritative, fk.Truncated, strings.Join(dnsAnswer(fk), "\n"),
				dns.RcodeToString[ns.Rcode], ns.Authoritative, ns.Truncated, strings.Join(dnsAnswer(ns), "\n"))
		}
	}
	return nil
}

var nsdVersionRE = regexp.MustCompile(`NSD version (\S+)`)

// nsdServer is an NSD process this bench started.
type nsdServer struct {
	*peerProcess
	addr    string
	version string
}

// startNSD writes a configuration and zone for domain in dir, starts NSD
// in the foreground on a free loopback port and waits until it answers
// the zone's SOA.
func startNSD(ctx context.Context, dir, domain, zone string, servers int, progress io.Writer) (*nsdServer, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("make NSD's directory: %w", err)
	}
	addr, err := supernode.FreeLoopbackPort()
	if err != nil {
		return nil, fmt.Errorf("a port for NSD: %w", err)
	}
	_, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	if err := os.WriteFile(filepath.Join(dir, "zone"), []byte(zone), 0o600); err != nil {
		return nil, fmt.Errorf("write NSD's zone: %w", err)
	}
	conf := filepath.Join(dir, "nsd.conf")
	if err := os.WriteFile(conf, []byte(nsdConfig(dir, domain, port, servers)), 0o600); err != nil {
		return nil, fmt.Errorf("write NSD's configuration: %w", err)
	}
	version := ""
	if out, err := exec.CommandContext(ctx, nsdPath, "-v").CombinedOutput(); err == nil {
		if m := nsdVersionRE.FindSubmatch(out); m != nil {
			version = string(m[1])
		}
	}
	peer, err := startPeer("NSD", filepath.Join(dir, "nsd.log"), exec.Command(nsdPath, "-d", "-c", conf))
	if err != nil {
		return nil, err
	}
	s := &nsdServer{peerProcess: peer, addr: addr, version: version}
	t0 := time.Now()
	if err := s.waitAnswering(ctx, domain); err != nil {
		s.stop(progress)
		return nil, fmt.Errorf("NSD did not start: %w; its log ends:\n%s", err, tailFile(s.log, 10))
	}
	fmt.Fprintf(progress, "NSD %s (pid %d, %d servers) answering on %s after %.1fs\n", s.version, s.cmd.Process.Pid, servers, s.addr, time.Since(t0).Seconds())
	return s, nil
}

// nsdConfig keeps every file of NSD in dir, runs it as the current user
// without chroot, and turns off what would make it answer other than
// fedkeeper: response rate limiting, and the NS records it adds to
// answers unless responses are minimal.
func nsdConfig(dir, domain string, port, servers int) string {
	return fmt.Sprintf(`server:
	ip-address: 127.0.0.1
	port: %d
	do-ip6: no
	server-count: %d
	reuseport: yes
	username: ""
	chroot: ""
	zonesdir: %q
	database: ""
	zonelistfile: %q
	xfrdfile: %q
	xfrdir: %q
	pidfile: %q
	logfile: %q
	verbosity: 1
	minimal-responses: yes
	rrl-ratelimit: 0
	rrl-whitelist-ratelimit: 0
remote-control:
	control-enable: no
zone:
	name: %q
	zonefile: "zone"
`, port, servers, dir, filepath.Join(dir, "zone.list"), filepath.Join(dir, "xfrd.state"), dir,
		filepath.Join(dir, "nsd.pid"), filepath.Join(dir, "nsd.log"), domain)
}

// waitAnswering asks for the zone's SOA until NSD answers it with
// authority.
func (s *nsdServer) waitAnswering(ctx context.Context, domain string) error {
	ctx, cancel := context.WithTimeout(ctx, dnsNSDLimit)
	defer cancel()
	var last error
	for {
		m, err := dnsAsk(ctx, s.addr, domain, dns.TypeSOA)
		switch {
		case err != nil:
			last = err
		case m.Rcode != dns.RcodeSuccess || !m.Authoritative || len(m.Answer) != 1:
			last = fmt.Errorf("SOA of %s answered %s with %d records, authoritative %v", domain, dns.RcodeToString[m.Rcode], len(m.Answer), m.Authoritative)
		default:
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("NSD exited (%v)", s.cmd.ProcessState)
		case <-ctx.Done():
			return fmt.Errorf("not answering after %s: %w", dnsNSDLimit, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// dnsperfStats are the figures of one dnsperf run.
type dnsperfStats struct {
	Version         string
	Sent, Completed int64
	Lost            int64
	// Rcodes counts the answers by response code.
	Rcodes map[string]int64
	QPS    float64
	// AvgLatency is in seconds; ResponseBytes is the average answer size.
	AvgLatency    float64
	ResponseBytes float64
}

// runDnsperf runs dnsperf against addr with the query file for the
// options' duration, clients and threads, its output going to logFile.
func runDnsperf(ctx context.Context, addr, queryFile, logFile string, o DNSOptions) (dnsperfStats, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return dnsperfStats{}, fmt.Errorf("server address %q: %w", addr, err)
	}
	ctx, cancel := context.WithTimeout(ctx, o.Duration+dnsperfSlack)
	defer cancel()
	// Timeouts are counted in the statistics; one line for each would
	// bury them.
	lf, err := os.Create(logFile)
	if err != nil {
		return dnsperfStats{}, fmt.Errorf("create dnsperf's log: %w", err)
	}
	cmd := exec.CommandContext(ctx, dnsperfPath, "-s", host, "-p", port, "-d", queryFile, "-e",
		"-l", strconv.Itoa(int(o.Duration/time.Second)), "-c", strconv.Itoa(o.Clients), "-T", strconv.Itoa(o.Threads),
		"-O", "suppress=timeouts")
	cmd.Stdout, cmd.Stderr = lf, lf
	err = cmd.Run()
	lf.Close()
	if err != nil {
		return dnsperfStats{}, fmt.Errorf("%w; its output ends:\n%s", err, tailFile(logFile, 15))
	}
	out, err := os.ReadFile(logFile)
	if err != nil {
		return dnsperfStats{}, fmt.Errorf("read dnsperf's output: %w", err)
	}
	st, err := parseDnsperf(string(out))
	if err != nil {
		return dnsperfStats{}, fmt.Errorf("%w; its output ends:\n%s", err, tailFile(logFile, 15))
	}
	return st, nil
}

// parseDnsperf reads the statistics dnsperf prints at the end of a run.
func parseDnsperf(out string) (dnsperfStats, error) {
	st := dnsperfStats{Rcodes: map[string]int64{}}
	seen := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if v, ok := strings.CutPrefix(line, "Version "); ok {
			st.Version = strings.TrimSpace(v)
			continue
		}
		label, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		fields := strings.Fields(value)
		if len(fields) == 0 {
			continue
		}
		var err error
		switch label {
		case "Queries sent":
			st.Sent, err = strconv.ParseInt(fields[0], 10, 64)
		case "Queries completed":
			st.Completed, err = strconv.ParseInt(fields[0], 10, 64)
		case "Queries lost":
			st.Lost, err = strconv.ParseInt(fields[0], 10, 64)
		case "Queries per second":
			st.QPS, err = strconv.ParseFloat(fields[0], 64)
		case "Average Latency (s)":
			st.AvgLatency, err = strconv.ParseFloat(fields[0], 64)
		case "Average packet size":
			// "request 48, response 110"
			if i := slices.Index(fields, "response"); i >= 0 && i+1 < len(fields) {
				st.ResponseBytes, err = strconv.ParseFloat(fields[i+1], 64)
			}
		case "Response codes":
			// "NOERROR 172484 (50.00%), NXDOMAIN 172484 (50.00%)"
			for part := range strings.SplitSeq(value, ",") {
				f := strings.Fields(part)
				if len(f) < 2 {
					continue
				}
				var n int64
				if n, err = strconv.ParseInt(f[1], 10, 64); err != nil {
					break
				}
				st.Rcodes[f[0]] = n
			}
		default:
			continue
		}
		if err != nil {
			return dnsperfStats{}, fmt.Errorf("dnsperf's %q line: %w", line, err)
		}
		seen[label] = true
	}
	for _, label := range []string{"Queries sent", "Queries lost", "Queries per second", "Average Latency (s)"} {
		if !seen[label] {
			return dnsperfStats{}, fmt.Errorf("no %q in dnsperf's output", label)
		}
	}
	return st, nil
}

// checkRcodes fails a run with answers other than NOERROR and NXDOMAIN,
// the only codes the query file calls for.
func (st dnsperfStats) checkRcodes() error {
	for code, n := range st.Rcodes {
		if code != "NOERROR" && code != "NXDOMAIN" {
			return fmt.Errorf("%d answers were %s (%s)", n, code, st.rcodeShares())
		}
	}
	return nil
}

// rcodeShares is "NOERROR 90.0%, NXDOMAIN 10.0%".
func (st dnsperfStats) rcodeShares() string {
	var parts []string
	for _, code := range slices.Sorted(maps.Keys(st.Rcodes)) {
		parts = append(parts, fmt.Sprintf("%s %.1f%%", code, 100*float64(st.Rcodes[code])/float64(max(st.Completed, 1))))
	}
	return strings.Join(parts, ", ")
}

// median of f over runs; the mean of the middle two for an even count.
func median[T any](runs []T, f func(T) float64) float64 {
	v := make([]float64, len(runs))
	for i, r := range runs {
		v[i] = f(r)
	}
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// dnsSupernodeConfig holds sessions and probes off for the whole run (see
// dnsHold).
func dnsSupernodeConfig() supernode.Config {
	cfg := supernode.Config{SessionTTL: dnsHold}
	cfg.Health.Interval = dnsHold
	return cfg
}
