package nameserver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// fakeDirectory answers from fixed maps; a service key present with no
// targets is a service whose instances are all failing.
type fakeDirectory struct {
	services map[string][]Target // by serviceKey
	nodes    map[string]string
	ns       []Target
	serial   uint32

	mu     sync.Mutex
	lookup []string // the Service calls, as serviceKey
}

func serviceKey(name, project, tag string) string { return name + "/" + project + "/" + tag }

func (d *fakeDirectory) Service(name, project, tag string) ([]Target, bool) {
	key := serviceKey(name, project, tag)
	d.mu.Lock()
	d.lookup = append(d.lookup, key)
	d.mu.Unlock()
	targets, found := d.services[key]
	return targets, found
}

func (d *fakeDirectory) Node(name string) (string, bool) {
	host, found := d.nodes[name]
	return host, found
}

func (d *fakeDirectory) Nameservers() []Target { return d.ns }

func (d *fakeDirectory) Serial() uint32 { return d.serial }

func (d *fakeDirectory) lookups() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.lookup)
}

// manyTargets returns n instances on distinct IPv4 addresses.
func manyTargets(n int) []Target {
	targets := make([]Target, n)
	for i := range targets {
		targets[i] = Target{Node: fmt.Sprintf("big%d", i), Host: fmt.Sprintf("10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff), Port: 9000}
	}
	return targets
}

func newFakeDirectory() *fakeDirectory {
	web := []Target{
		{Node: "n1", Host: "192.0.2.1", Port: 8080},
		{Node: "n2", Host: "192.0.2.2", Port: 8080},
		{Node: "n3", Host: "2001:db8::3", Port: 8080},
		{Node: "n4", Host: "Web4.Example.org", Port: 443},
	}
	return &fakeDirectory{
		services: map[string][]Target{
			serviceKey("web", "", ""):      web,
			serviceKey("web", "cms", ""):   web[:1],
			serviceKey("web", "", "v2"):    web[1:2],
			serviceKey("web", "cms", "v2"): web[1:2],
			serviceKey("down", "", ""):     nil,
			serviceKey("v4only", "", ""):   {{Node: "n1", Host: "192.0.2.1", Port: 80}},
			// Two instances on one host, and one listed twice.
			serviceKey("dup", "", ""): {
				{Node: "n1", Host: "192.0.2.1", Port: 80},
				{Node: "n1", Host: "192.0.2.1", Port: 81},
				{Node: "n1", Host: "192.0.2.1", Port: 81},
			},
			// Instances that cannot make an SRV record, or any record.
			serviceKey("odd", "", ""): {
				{Node: "", Host: "192.0.2.7", Port: 80},
				{Node: "n8", Host: "192.0.2.8", Port: 0},
				{Node: "n9", Host: "no such host!", Port: 80},
				{Node: "n10", Host: "::ffff:192.0.2.10", Port: 80},
			},
			serviceKey("five", "", ""): manyTargets(5),
			serviceKey("big", "", ""):  manyTargets(200),
			serviceKey("huge", "", ""): manyTargets(1000),
		},
		nodes: map[string]string{
			"n1": "192.0.2.1",
			"n3": "2001:db8::3",
			"n4": "web4.example.org",
		},
		ns: []Target{
			{Node: "sn1", Host: "192.0.2.53"},
			{Node: "sn2", Host: "2001:db8::53"},
		},
		serial: 42,
	}
}

// startServer serves dir on 127.0.0.1 with a system-chosen port until the
// test ends.
func startServer(t *testing.T, cfg Config, dir Directory) *Server {
	t.Helper()
	if cfg.Domain == "" {
		cfg.Domain = "fedkeeper"
	}
	cfg.Log = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := New(cfg, dir)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := s.Start(t.Context(), "127.0.0.1:0"); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func exchange(t *testing.T, addr, network string, req *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 2 * time.Second}
	resp, _, err := c.Exchange(req, addr)
	if err != nil {
		t.Fatalf("%s query %s: %v", network, req.Question[0].String(), err)
	}
	return resp
}

func query(t *testing.T, addr, network, name string, qtype uint16) *dns.Msg {
	t.Helper()
	return exchange(t, addr, network, new(dns.Msg).SetQuestion(name, qtype))
}

// rrStrings renders records in a stable order, without OPT records.
func rrStrings(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		if rr.Header().Rrtype != dns.TypeOPT {
			out = append(out, rr.String())
		}
	}
	slices.Sort(out)
	return out
}

// zone renders records written in zone-file form the way rrStrings does.
func zone(t *testing.T, lines ...string) []string {
	t.Helper()
	var rrs []dns.RR
	for _, line := range lines {
		rr, err := dns.NewRR(line)
		if err != nil {
			t.Fatalf("bad expected record %q: %v", line, err)
		}
		rrs = append(rrs, rr)
	}
	return rrStrings(rrs)
}

const soaRecord = "fedkeeper. 5 IN SOA sn1.node.fedkeeper. hostmaster.fedkeeper. 42 3600 600 1209600 5"

func TestAnswers(t *testing.T) {
	s := startServer(t, Config{}, newFakeDirectory())
	tests := []struct {
		name     string
		qname    string
		qtype    uint16
		qclass   uint16 // IN when zero
		rcode    int
		answer   []string
		extra    []string
		negative bool // the SOA is in the authority section
	}{
		{name: "service A lists the IPv4 instances", qname: "web.service.fedkeeper.", qtype: dns.TypeA,
			answer: []string{"web.service.fedkeeper. 5 IN A 192.0.2.1", "web.service.fedkeeper. 5 IN A 192.0.2.2"}},
		{name: "service AAAA lists the IPv6 instances", qname: "web.service.fedkeeper.", qtype: dns.TypeAAAA,
			answer: []string{"web.service.fedkeeper. 5 IN AAAA 2001:db8::3"}},
		{name: "service SRV points to node names with glue, or to host names", qname: "web.service.fedkeeper.", qtype: dns.TypeSRV,
			answer: []string{
				"web.service.fedkeeper. 5 IN SRV 1 1 8080 n1.node.fedkeeper.",
				"web.service.fedkeeper. 5 IN SRV 1 1 8080 n2.node.fedkeeper.",
				"web.service.fedkeeper. 5 IN SRV 1 1 8080 n3.node.fedkeeper.",
				"web.service.fedkeeper. 5 IN SRV 1 1 443 web4.example.org.",
			},
			extra: []string{
				"n1.node.fedkeeper. 5 IN A 192.0.2.1",
				"n2.node.fedkeeper. 5 IN A 192.0.2.2",
				"n3.node.fedkeeper. 5 IN AAAA 2001:db8::3",
			}},
		{name: "matching ignores case and the answer keeps the question's", qname: "WEB.Service.FedKeeper.", qtype: dns.TypeAAAA,
			answer: []string{"WEB.Service.FedKeeper. 5 IN AAAA 2001:db8::3"}},
		{name: "project restricts", qname: "web.service.cms.fedkeeper.", qtype: dns.TypeA,
			answer: []string{"web.service.cms.fedkeeper. 5 IN A 192.0.2.1"}},
		{name: "tag restricts", qname: "v2.web.service.fedkeeper.", qtype: dns.TypeA,
			answer: []string{"v2.web.service.fedkeeper. 5 IN A 192.0.2.2"}},
		{name: "tag and project restrict", qname: "v2.web.service.cms.fedkeeper.", qtype: dns.TypeSRV,
			answer: []string{"v2.web.service.cms.fedkeeper. 5 IN SRV 1 1 8080 n2.node.fedkeeper."},
			extra:  []string{"n2.node.fedkeeper. 5 IN A 192.0.2.2"}},
		{name: "RFC 2782 name answers SRV", qname: "_web._tcp.service.cms.fedkeeper.", qtype: dns.TypeSRV,
			answer: []string{"_web._tcp.service.cms.fedkeeper. 5 IN SRV 1 1 8080 n1.node.fedkeeper."},
			extra:  []string{"n1.node.fedkeeper. 5 IN A 192.0.2.1"}},
		{name: "RFC 2782 name has no addresses", qname: "_web._udp.service.fedkeeper.", qtype: dns.TypeA, negative: true},
		{name: "duplicate records are answered once", qname: "dup.service.fedkeeper.", qtype: dns.TypeA,
			answer: []string{"dup.service.fedkeeper. 5 IN A 192.0.2.1"}},
		{name: "instances on one host differ in SRV by port", qname: "dup.service.fedkeeper.", qtype: dns.TypeSRV,
			answer: []string{"dup.service.fedkeeper. 5 IN SRV 1 1 80 n1.node.fedkeeper.", "dup.service.fedkeeper. 5 IN SRV 1 1 81 n1.node.fedkeeper."},
			extra:  []string{"n1.node.fedkeeper. 5 IN A 192.0.2.1"}},
		{name: "unusable instances are left out of SRV", qname: "odd.service.fedkeeper.", qtype: dns.TypeSRV,
			answer: []string{"odd.service.fedkeeper. 5 IN SRV 1 1 80 n10.node.fedkeeper."},
			extra:  []string{"n10.node.fedkeeper. 5 IN A 192.0.2.10"}},
		{name: "addresses need no node name and IPv4-mapped ones are IPv4", qname: "odd.service.fedkeeper.", qtype: dns.TypeA,
			answer: []string{"odd.service.fedkeeper. 5 IN A 192.0.2.7", "odd.service.fedkeeper. 5 IN A 192.0.2.8", "odd.service.fedkeeper. 5 IN A 192.0.2.10"}},
		{name: "service with every instance failing has no data", qname: "down.service.fedkeeper.", qtype: dns.TypeA, negative: true},
		{name: "service without instances of the family has no data", qname: "v4only.service.fedkeeper.", qtype: dns.TypeAAAA, negative: true},
		{name: "service without records of the type has no data", qname: "web.service.fedkeeper.", qtype: dns.TypeTXT, negative: true},
		{name: "unknown service does not exist", qname: "nosuch.service.fedkeeper.", qtype: dns.TypeA, rcode: dns.RcodeNameError, negative: true},
		{name: "unknown tag does not exist", qname: "v9.web.service.fedkeeper.", qtype: dns.TypeA, rcode: dns.RcodeNameError, negative: true},
		{name: "unknown project does not exist", qname: "web.service.atlas.fedkeeper.", qtype: dns.TypeA, rcode: dns.RcodeNameError, negative: true},
		{name: "names below a tag do not exist", qname: "x.v2.web.service.fedkeeper.", qtype: dns.TypeA, rcode: dns.RcodeNameError, negative: true},
		{name: "node A", qname: "n1.node.fedkeeper.", qtype: dns.TypeA,
			answer: []string{"n1.node.fedkeeper. 5 IN A 192.0.2.1"}},
		{name: "node AAAA", qname: "n3.node.fedkeeper.", qtype: dns.TypeAAAA,
			answer: []string{"n3.node.fedkeeper. 5 IN AAAA 2001:db8::3"}},
		{name: "node without an address of the family has no data", qname: "n1.node.fedkeeper.", qtype: dns.TypeAAAA, negative: true},
		{name: "node with a host name is a CNAME", qname: "n4.node.fedkeeper.", qtype: dns.TypeA,
			answer: []string{"n4.node.fedkeeper. 5 IN CNAME web4.example.org."}},
		{name: "unknown node does not exist", qname: "n2.node.fedkeeper.", qtype: dns.TypeA, rcode: dns.RcodeNameError, negative: true},
		{name: "names below a node do not exist", qname: "x.n1.node.fedkeeper.", qtype: dns.TypeA, rcode: dns.RcodeNameError, negative: true},
		{name: "apex SOA", qname: "fedkeeper.", qtype: dns.TypeSOA, answer: []string{soaRecord}},
		{name: "apex NS names the supernodes with glue", qname: "fedkeeper.", qtype: dns.TypeNS,
			answer: []string{"fedkeeper. 5 IN NS sn1.node.fedkeeper.", "fedkeeper. 5 IN NS sn2.node.fedkeeper."},
			extra:  []string{"sn1.node.fedkeeper. 5 IN A 192.0.2.53", "sn2.node.fedkeeper. 5 IN AAAA 2001:db8::53"}},
		{name: "apex has no address", qname: "fedkeeper.", qtype: dns.TypeA, negative: true},
		{name: "node. exists for resolvers that minimise names", qname: "node.fedkeeper.", qtype: dns.TypeA, negative: true},
		{name: "service. exists for resolvers that minimise names", qname: "service.fedkeeper.", qtype: dns.TypeNS, negative: true},
		{name: "a project exists for resolvers that minimise names", qname: "cms.fedkeeper.", qtype: dns.TypeA, negative: true},
		{name: "a project's service. exists for resolvers that minimise names", qname: "service.cms.fedkeeper.", qtype: dns.TypeA, negative: true},
		{name: "_tcp.service. exists for resolvers that minimise names", qname: "_tcp.service.fedkeeper.", qtype: dns.TypeA, negative: true},
		{name: "other names in the zone do not exist", qname: "a.b.fedkeeper.", qtype: dns.TypeA, rcode: dns.RcodeNameError, negative: true},
		{name: "ANY gets the RFC 8482 HINFO", qname: "web.service.fedkeeper.", qtype: dns.TypeANY,
			answer: []string{`web.service.fedkeeper. 5 IN HINFO "RFC8482" ""`}},
		{name: "ANY of an unknown name does not exist", qname: "nosuch.service.fedkeeper.", qtype: dns.TypeANY, rcode: dns.RcodeNameError, negative: true},
		{name: "names outside the domain are refused", qname: "www.example.org.", qtype: dns.TypeA, rcode: dns.RcodeRefused},
		{name: "a domain that only ends like ours is refused", qname: "notfedkeeper.", qtype: dns.TypeA, rcode: dns.RcodeRefused},
		{name: "the root is refused", qname: ".", qtype: dns.TypeNS, rcode: dns.RcodeRefused},
		{name: "CHAOS is refused", qname: "version.bind.", qtype: dns.TypeTXT, qclass: dns.ClassCHAOS, rcode: dns.RcodeRefused},
		{name: "other classes in the domain are refused", qname: "web.service.fedkeeper.", qtype: dns.TypeA, qclass: dns.ClassANY, rcode: dns.RcodeRefused},
		{name: "zone transfers are refused", qname: "fedkeeper.", qtype: dns.TypeAXFR, rcode: dns.RcodeRefused},
	}
	for _, network := range []string{"udp", "tcp"} {
		for _, tt := range tests {
			t.Run(network+"/"+tt.name, func(t *testing.T) {
				req := new(dns.Msg).SetQuestion(tt.qname, tt.qtype)
				if tt.qclass != 0 {
					req.Question[0].Qclass = tt.qclass
				}
				resp := exchange(t, s.Addr(), network, req)
				if resp.Rcode != tt.rcode {
					t.Errorf("rcode = %s, want %s", dns.RcodeToString[resp.Rcode], dns.RcodeToString[tt.rcode])
				}
				inZone := tt.rcode != dns.RcodeRefused
				if resp.Authoritative != inZone {
					t.Errorf("AA = %v, want %v", resp.Authoritative, inZone)
				}
				if resp.RecursionAvailable || resp.Truncated {
					t.Errorf("RA = %v, TC = %v; want neither", resp.RecursionAvailable, resp.Truncated)
				}
				if got, want := rrStrings(resp.Answer), zone(t, tt.answer...); !slices.Equal(got, want) {
					t.Errorf("answer:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
				}
				if got, want := rrStrings(resp.Extra), zone(t, tt.extra...); !slices.Equal(got, want) {
					t.Errorf("additional:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
				}
				var ns []string
				if tt.negative {
					ns = []string{soaRecord}
				}
				if got, want := rrStrings(resp.Ns), zone(t, ns...); !slices.Equal(got, want) {
					t.Errorf("authority:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
				}
			})
		}
	}
}

func TestDirectoryGetsLowerCaseNames(t *testing.T) {
	dir := newFakeDirectory()
	s := startServer(t, Config{}, dir)
	query(t, s.Addr(), "udp", "V2.Web.SERVICE.Cms.fedkeeper.", dns.TypeA)
	if got, want := dir.lookups(), []string{serviceKey("web", "cms", "v2")}; !slices.Equal(got, want) {
		t.Errorf("Service lookups = %q, want %q", got, want)
	}
}

func TestNegativeAnswersFollowFound(t *testing.T) {
	dir := &fakeDirectory{services: map[string][]Target{serviceKey("known", "", ""): {}}}
	s := startServer(t, Config{}, dir)
	for _, tt := range []struct {
		qname string
		rcode int
	}{
		{"known.service.fedkeeper.", dns.RcodeSuccess},
		{"unknown.service.fedkeeper.", dns.RcodeNameError},
	} {
		resp := query(t, s.Addr(), "udp", tt.qname, dns.TypeA)
		if resp.Rcode != tt.rcode || len(resp.Answer) != 0 {
			t.Errorf("%s: rcode %s with %d answers, want %s with none", tt.qname, dns.RcodeToString[resp.Rcode], len(resp.Answer), dns.RcodeToString[tt.rcode])
		}
		// With no nameservers known, the SOA still names a primary.
		if len(resp.Ns) != 1 || resp.Ns[0].(*dns.SOA).Ns != "ns.fedkeeper." {
			t.Errorf("%s: authority %v, want the SOA naming ns.fedkeeper.", tt.qname, resp.Ns)
		}
	}
}

func TestConfiguredTTL(t *testing.T) {
	s := startServer(t, Config{Domain: "Fed.Example.", TTL: 30 * time.Second}, newFakeDirectory())
	resp := query(t, s.Addr(), "udp", "web.service.fed.example.", dns.TypeA)
	if len(resp.Answer) == 0 {
		t.Fatalf("no answer: %v", resp)
	}
	for _, rr := range resp.Answer {
		if rr.Header().Ttl != 30 {
			t.Errorf("TTL of %s = %d, want 30", rr, rr.Header().Ttl)
		}
	}
	resp = query(t, s.Addr(), "udp", "nosuch.service.fed.example.", dns.TypeA)
	if soa, ok := resp.Ns[0].(*dns.SOA); !ok || soa.Minttl != 30 || soa.Hdr.Ttl != 30 {
		t.Errorf("negative answer's authority = %v, want an SOA with TTL and minimum 30", resp.Ns)
	}
}

func TestNewValidatesConfig(t *testing.T) {
	dir := newFakeDirectory()
	for _, tt := range []struct {
		name string
		cfg  Config
		dir  Directory
	}{
		{"empty domain", Config{}, dir},
		{"root domain", Config{Domain: "."}, dir},
		{"domain with empty label", Config{Domain: "a..b"}, dir},
		{"domain with spaces", Config{Domain: "fed keeper."}, dir},
		{"domain with a label over 63 bytes", Config{Domain: strings.Repeat("a", 64) + ".org."}, dir},
		{"negative TTL", Config{Domain: "fedkeeper.", TTL: -time.Second}, dir},
		{"fractional TTL", Config{Domain: "fedkeeper.", TTL: 1500 * time.Millisecond}, dir},
		{"TTL beyond 31 bits", Config{Domain: "fedkeeper.", TTL: (1 << 31) * time.Second}, dir},
		{"no directory", Config{Domain: "fedkeeper."}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg, tt.dir); err == nil {
				t.Errorf("New(%+v) succeeded, want an error", tt.cfg)
			}
		})
	}
}

func TestShuffledAnswers(t *testing.T) {
	s := startServer(t, Config{}, newFakeDirectory())
	// With 5 instances, the chance that one is never first in 200 answers
	// is below 5 * (4/5)^200, about 2e-19.
	for _, tt := range []struct {
		qtype uint16
		first func(dns.RR) string
	}{
		{dns.TypeA, func(rr dns.RR) string { return rr.(*dns.A).A.String() }},
		{dns.TypeSRV, func(rr dns.RR) string { return rr.(*dns.SRV).Target }},
	} {
		firsts := map[string]int{}
		for range 200 {
			resp := query(t, s.Addr(), "udp", "five.service.fedkeeper.", tt.qtype)
			if len(resp.Answer) != 5 {
				t.Fatalf("%d answers, want 5", len(resp.Answer))
			}
			firsts[tt.first(resp.Answer[0])]++
		}
		if len(firsts) != 5 {
			t.Errorf("%s: first records over 200 answers = %v, want each of the 5 instances at least once", dns.TypeToString[tt.qtype], firsts)
		}
	}
}

func TestTruncation(t *testing.T) {
	s := startServer(t, Config{}, newFakeDirectory())
	withEDNS := func(size uint16) *dns.Msg {
		return new(dns.Msg).SetQuestion("big.service.fedkeeper.", dns.TypeA).SetEdns0(size, false)
	}
	for _, tt := range []struct {
		name    string
		network string
		req     *dns.Msg
		limit   int // largest answer allowed, or 0 for a complete one
	}{
		{"UDP without EDNS0 fits 512 bytes", "udp", new(dns.Msg).SetQuestion("big.service.fedkeeper.", dns.TypeA), 512},
		{"UDP with a small EDNS0 buffer fits 512 bytes", "udp", withEDNS(100), 512},
		{"UDP with EDNS0 fits the client's buffer", "udp", withEDNS(800), 800},
		{"UDP with a large EDNS0 buffer is capped", "udp", withEDNS(4096), ednsUDPSize},
		{"TCP gets every record", "tcp", new(dns.Msg).SetQuestion("big.service.fedkeeper.", dns.TypeA), 0},
		{"TCP with EDNS0 gets every record", "tcp", withEDNS(1232), 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			wire, err := tt.req.Pack()
			if err != nil {
				t.Fatal(err)
			}
			raw := rawExchange(t, s.Addr(), tt.network, wire)
			if raw == nil {
				t.Fatal("no answer")
			}
			resp := new(dns.Msg)
			if err := resp.Unpack(raw); err != nil {
				t.Fatalf("answer does not parse (records cut in half?): %v", err)
			}
			if (tt.req.IsEdns0() != nil) != (resp.IsEdns0() != nil) {
				t.Errorf("answer's OPT = %v, want one exactly when the query had one", resp.IsEdns0())
			}
			if tt.limit == 0 {
				if resp.Truncated || len(resp.Answer) != 200 {
					t.Errorf("TC = %v with %d answers, want all 200 untruncated", resp.Truncated, len(resp.Answer))
				}
				return
			}
			if !resp.Truncated || len(resp.Answer) == 0 || len(resp.Answer) >= 200 {
				t.Errorf("TC = %v with %d answers, want TC with some but not all of 200", resp.Truncated, len(resp.Answer))
			}
			if len(raw) > tt.limit {
				t.Errorf("answer of %d bytes, want at most %d", len(raw), tt.limit)
			}
			// Filling the buffer means no whole record more would fit.
			if len(raw) < tt.limit-100 {
				t.Errorf("answer of %d bytes leaves the client's %d mostly unused", len(raw), tt.limit)
			}
		})
	}
}

func TestEDNS(t *testing.T) {
	s := startServer(t, Config{}, newFakeDirectory())
	req := new(dns.Msg).SetQuestion("web.service.fedkeeper.", dns.TypeA).SetEdns0(4096, true)
	resp := exchange(t, s.Addr(), "udp", req)
	opt := resp.IsEdns0()
	if opt == nil || opt.UDPSize() != ednsUDPSize || !opt.Do() || opt.Version() != 0 {
		t.Errorf("OPT = %v, want version 0, UDP size %d and the DO bit echoed", opt, ednsUDPSize)
	}
	if len(resp.Answer) != 2 {
		t.Errorf("%d answers, want 2", len(resp.Answer))
	}

	req = new(dns.Msg).SetQuestion("web.service.fedkeeper.", dns.TypeA).SetEdns0(4096, false)
	req.IsEdns0().SetVersion(1)
	resp = exchange(t, s.Addr(), "udp", req)
	if resp.Rcode != dns.RcodeBadVers || len(resp.Answer) != 0 || resp.IsEdns0() == nil || resp.IsEdns0().Version() != 0 {
		t.Errorf("EDNS version 1: rcode %s, %d answers, OPT %v; want BADVERS with an OPT of version 0", dns.RcodeToString[resp.Rcode], len(resp.Answer), resp.IsEdns0())
	}
}

func TestAnswersAreCapped(t *testing.T) {
	s := startServer(t, Config{}, newFakeDirectory())
	union := map[string]bool{}
	for range 3 {
		resp := query(t, s.Addr(), "tcp", "huge.service.fedkeeper.", dns.TypeA)
		if len(resp.Answer) != MaxAnswers {
			t.Fatalf("%d answers, want MaxAnswers = %d", len(resp.Answer), MaxAnswers)
		}
		for _, rr := range resp.Answer {
			union[rr.String()] = true
		}
	}
	// Each answer is a fresh choice, so all instances get their share.
	if len(union) <= MaxAnswers {
		t.Errorf("3 answers hold %d distinct records, want more than one answer's %d", len(union), MaxAnswers)
	}
	resp := query(t, s.Addr(), "tcp", "huge.service.fedkeeper.", dns.TypeSRV)
	if len(resp.Answer) != MaxAnswers || len(resp.Extra) != MaxAnswers {
		t.Errorf("SRV: %d answers and %d glue records, want %d of each", len(resp.Answer), len(resp.Extra), MaxAnswers)
	}
}

// rawExchange sends one message and returns the answer, or nil when none
// comes within a short while.
func rawExchange(t *testing.T, addr, network string, msg []byte) []byte {
	t.Helper()
	conn, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return rawRoundTrip(t, conn, msg)
}

// rawRoundTrip sends msg on conn, framed for TCP when conn is a stream.
func rawRoundTrip(t *testing.T, conn net.Conn, msg []byte) []byte {
	t.Helper()
	conn.SetDeadline(time.Now().Add(300 * time.Millisecond))
	_, stream := conn.(*net.TCPConn)
	if stream {
		msg = append(binary.BigEndian.AppendUint16(nil, uint16(len(msg))), msg...)
	}
	if _, err := conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, dns.MaxMsgSize)
	if stream {
		if _, err := io.ReadFull(conn, buf[:2]); err != nil {
			return nil
		}
		n := binary.BigEndian.Uint16(buf)
		if _, err := io.ReadFull(conn, buf[:n]); err != nil {
			t.Fatalf("reading a %d-byte answer: %v", n, err)
		}
		return buf[:n]
	}
	n, err := conn.Read(buf)
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

// wireQuery is a well-formed query for web.service.fedkeeper. A.
func wireQuery(t *testing.T) []byte {
	t.Helper()
	req := new(dns.Msg).SetQuestion("web.service.fedkeeper.", dns.TypeA)
	req.Id = 0xbeef
	wire, err := req.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return wire
}

// malformed lists messages that must not be answered normally, with the
// rcode they get, or -1 when they get no answer at all.
func malformed(t *testing.T) []struct {
	name  string
	msg   []byte
	rcode int
} {
	valid := wireQuery(t)
	question := valid[12:]
	withHeader := func(flags, qdcount uint16, rest []byte) []byte {
		h := binary.BigEndian.AppendUint16(nil, 0xbeef)
		h = binary.BigEndian.AppendUint16(h, flags)
		h = binary.BigEndian.AppendUint16(h, qdcount)
		h = append(h, 0, 0, 0, 0, 0, 0)
		return append(h, rest...)
	}
	return []struct {
		name  string
		msg   []byte
		rcode int
	}{
		{"garbage shorter than a header", []byte{0xde, 0xad, 0xbe, 0xef, 0x01}, -1},
		{"garbage after a header", withHeader(0, 1, []byte{63, 'a', 'b', 0xff}), dns.RcodeFormatError},
		{"two questions", withHeader(0, 2, append(slices.Clone(question), question...)), dns.RcodeFormatError},
		{"no question", withHeader(0, 0, nil), dns.RcodeFormatError},
		{"a header claiming 65535 questions", withHeader(0, 65535, question), dns.RcodeFormatError},
		{"truncated question", valid[:len(valid)-3], dns.RcodeFormatError},
		{"a response", withHeader(1<<15, 1, question), -1},
		{"opcode NOTIFY", withHeader(dns.OpcodeNotify<<11, 1, question), dns.RcodeNotImplemented},
		{"opcode UPDATE", withHeader(dns.OpcodeUpdate<<11, 1, question), dns.RcodeNotImplemented},
		{"opcode STATUS", withHeader(dns.OpcodeStatus<<11, 1, question), dns.RcodeNotImplemented},
	}
}

func TestMalformedQueries(t *testing.T) {
	s := startServer(t, Config{}, newFakeDirectory())
	for _, network := range []string{"udp", "tcp"} {
		// One connection for all, so that TCP shows it survives them.
		conn, err := net.Dial(network, s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		for _, tt := range malformed(t) {
			t.Run(network+"/"+tt.name, func(t *testing.T) {
				raw := rawRoundTrip(t, conn, tt.msg)
				switch {
				case tt.rcode < 0 && raw != nil:
					t.Errorf("got a %d-byte answer, want none", len(raw))
				case tt.rcode >= 0 && raw == nil:
					t.Errorf("no answer, want %s", dns.RcodeToString[tt.rcode])
				case tt.rcode >= 0:
					resp := new(dns.Msg)
					if err := resp.Unpack(raw); err != nil {
						t.Fatalf("answer does not parse: %v", err)
					}
					if resp.Rcode != tt.rcode || resp.Id != 0xbeef || !resp.Response || len(resp.Answer) != 0 {
						t.Errorf("answer id %#x, QR %v, rcode %s, %d records; want id 0xbeef, QR, %s, none",
							resp.Id, resp.Response, dns.RcodeToString[resp.Rcode], len(resp.Answer), dns.RcodeToString[tt.rcode])
					}
				}
				resp := new(dns.Msg)
				if raw := rawRoundTrip(t, conn, wireQuery(t)); raw == nil || resp.Unpack(raw) != nil || resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 2 {
					t.Errorf("the next well-formed query got %v, want 2 answers", resp)
				}
			})
		}
	}
}

func TestOnQueryCountsEveryAnswer(t *testing.T) {
	var mu sync.Mutex
	var rcodes []string
	s := startServer(t, Config{OnQuery: func(rcode string) {
		mu.Lock()
		rcodes = append(rcodes, rcode)
		mu.Unlock()
	}}, newFakeDirectory())
	var want []string
	for _, tt := range []struct {
		qname string
		rcode int
	}{
		{"web.service.fedkeeper.", dns.RcodeSuccess},
		{"nosuch.service.fedkeeper.", dns.RcodeNameError},
		{"example.org.", dns.RcodeRefused},
	} {
		query(t, s.Addr(), "udp", tt.qname, dns.TypeA)
		want = append(want, rcodeName(tt.rcode))
	}
	for _, tt := range malformed(t) {
		rawExchange(t, s.Addr(), "udp", tt.msg)
		if tt.rcode >= 0 {
			want = append(want, rcodeName(tt.rcode))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(rcodes, want) {
		t.Errorf("OnQuery got rcodes %v, want %v", rcodes, want)
	}
}

// waitFor polls cond for up to two seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

func refusesTCP(addr string) bool {
	conn, err := net.Dial("tcp", addr)
	if err == nil {
		conn.Close()
	}
	return err != nil
}

func TestCloseStopsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	s, err := New(Config{Domain: "fedkeeper."}, newFakeDirectory())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	query(t, s.Addr(), "udp", "web.service.fedkeeper.", dns.TypeA)
	query(t, s.Addr(), "tcp", "web.service.fedkeeper.", dns.TypeA)
	// An idle TCP client must not hold the server up.
	idle, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	rawRoundTrip(t, idle, wireQuery(t))

	start := time.Now()
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Close took %s with an idle TCP client", took)
	}
	idle.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := idle.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("idle TCP client read %v, want EOF as the server closed it", err)
	}
	if !refusesTCP(s.Addr()) {
		t.Error("TCP still accepts connections after Close")
	}
	c := &dns.Client{Net: "udp", Timeout: 200 * time.Millisecond}
	if _, _, err := c.Exchange(new(dns.Msg).SetQuestion("web.service.fedkeeper.", dns.TypeA), s.Addr()); err == nil {
		t.Error("UDP still answers after Close")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	waitFor(t, fmt.Sprintf("goroutines are back to %d", before), func() bool { return runtime.NumGoroutine() <= before })
}

func TestContextEndStopsServing(t *testing.T) {
	s, err := New(Config{Domain: "fedkeeper."}, newFakeDirectory())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	if err := s.Start(ctx, "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	query(t, s.Addr(), "tcp", "web.service.fedkeeper.", dns.TypeA)
	cancel()
	waitFor(t, "TCP refuses connections", func() bool { return refusesTCP(s.Addr()) })
	// Its port is free again, UDP's included.
	pc, err := net.ListenPacket("udp", s.Addr())
	if err != nil {
		t.Errorf("UDP port still bound after the context ended: %v", err)
	} else {
		pc.Close()
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close after the context ended: %v", err)
	}
}

func TestStartMisuse(t *testing.T) {
	s, err := New(Config{Domain: "fedkeeper."}, newFakeDirectory())
	if err != nil {
		t.Fatal(err)
	}
	if s.Addr() != "" {
		t.Errorf("Addr before Start = %q, want empty", s.Addr())
	}
	if err := s.Start(t.Context(), "no port"); err == nil {
		t.Error("Start on an address without a port succeeded")
	}
	if err := s.Start(t.Context(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context(), "127.0.0.1:0"); err == nil {
		t.Error("second Start succeeded")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context(), "127.0.0.1:0"); err == nil {
		t.Error("Start after Close succeeded")
	}

	unstarted, err := New(Config{Domain: "fedkeeper."}, newFakeDirectory())
	if err != nil {
		t.Fatal(err)
	}
	if err := unstarted.Close(); err != nil {
		t.Errorf("Close before Start: %v", err)
	}
}

func TestStartFailsWhenTCPPortIsTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s, err := New(Config{Domain: "fedkeeper."}, newFakeDirectory())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context(), ln.Addr().String()); err == nil {
		s.Close()
		t.Fatal("Start on a taken TCP port succeeded")
	}
	// The UDP socket bound on the way is released.
	pc, err := net.ListenPacket("udp", ln.Addr().String())
	if err != nil {
		t.Errorf("UDP port kept after the failed Start: %v", err)
	} else {
		pc.Close()
	}
}
