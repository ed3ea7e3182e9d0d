package bench

import (
	"net"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/fedkeeper/fedkeeper/services"
)

// dnsperfOutput is what dnsperf 2.10 prints for a run.
const dnsperfOutput = `DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 127.0.0.1 -p 15353 -d q -l 3 -c 4 -e
[Status] Sending queries (to 127.0.0.1:15353)
[Status] Started at: Sun Nov 22 04:47:50 2026
[Status] Stopping after 3.000000 seconds
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         344968
  Queries completed:    344960 (100.00%)
  Queries lost:         8 (0.00%)

  Response codes:       NOERROR 310464 (90.00%), NXDOMAIN 34496 (10.00%)
  Average packet size:  request 48, response 110
  Run time (s):         3.000294
  Queries per second:   114978.065483

  Average Latency (s):  0.000325 (min 0.000012, max 0.005193)
  Latency StdDev (s):   0.000340

`

func TestParseDnsperfReadsTheStatistics(t *testing.T) {
	st, err := parseDnsperf(dnsperfOutput)
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != "2.10.0" || st.Sent != 344968 || st.Completed != 344960 || st.Lost != 8 ||
		st.QPS != 114978.065483 || st.AvgLatency != 0.000325 || st.ResponseBytes != 110 {
		t.Errorf("stats = %+v", st)
	}
	if len(st.Rcodes) != 2 || st.Rcodes["NOERROR"] != 310464 || st.Rcodes["NXDOMAIN"] != 34496 {
		t.Errorf("response codes = %v", st.Rcodes)
	}
	if err := st.checkRcodes(); err != nil {
		t.Errorf("checkRcodes: %v", err)
	}
	if got, want := st.rcodeShares(), "NOERROR 90.0%, NXDOMAIN 10.0%"; got != want {
		t.Errorf("rcodeShares = %q, want %q", got, want)
	}
}

func TestParseDnsperfRefusesIncompleteOutput(t *testing.T) {
	cut := dnsperfOutput[:strings.Index(dnsperfOutput, "  Queries per second")]
	if _, err := parseDnsperf(cut); err == nil || !strings.Contains(err.Error(), "Queries per second") {
		t.Errorf("parse without QPS: %v", err)
	}
	bad := strings.Replace(dnsperfOutput, "Queries lost:         8", "Queries lost:         x", 1)
	if _, err := parseDnsperf(bad); err == nil || !strings.Contains(err.Error(), "Queries lost") {
		t.Errorf("parse with a bad count: %v", err)
	}
}

func TestCheckRcodesRefusesOtherCodes(t *testing.T) {
	st, err := parseDnsperf(strings.Replace(dnsperfOutput, "NXDOMAIN 34496 (10.00%)", "NXDOMAIN 34000 (9.86%), SERVFAIL 496 (0.14%)", 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.checkRcodes(); err == nil || !strings.Contains(err.Error(), "496 answers were SERVFAIL") {
		t.Errorf("checkRcodes = %v", err)
	}
}

func TestDNSPlanSpreadsInstancesOverNodes(t *testing.T) {
	for _, tc := range []struct{ services, instances, nodes int }{
		{20, 5, 10},
		{1, 16, 16},
		{2000, 16, 500},
	} {
		p := dnsPlanFor(tc.services, tc.instances, "fedkeeper", 5, dnsHost{"sn", "127.0.0.1"})
		if len(p.nodes) != tc.nodes {
			t.Errorf("%d services of %d instances: %d nodes, want %d", tc.services, tc.instances, len(p.nodes), tc.nodes)
		}
		perNode := make([]int, len(p.nodes))
		for _, s := range p.services {
			seen := map[int]bool{}
			for _, i := range s.nodes {
				if seen[i] {
					t.Fatalf("service %s twice on node %d", s.name, i)
				}
				seen[i] = true
				perNode[i]++
			}
		}
		for i, n := range perNode {
			if n > services.MaxPerNode {
				t.Errorf("node %d holds %d instances, more than %d", i, n, services.MaxPerNode)
			}
		}
		ips := map[string]bool{}
		for _, h := range p.nodes {
			if ips[h.ip] {
				t.Errorf("address %s given twice", h.ip)
			}
			ips[h.ip] = true
		}
	}
}

func TestDNSZoneHoldsThePlansRecords(t *testing.T) {
	p := dnsPlanFor(3, 2, "fed.example.org", 5, dnsHost{"sn", "127.0.0.1"})
	zone, records := p.zone()
	// SOA, NS, the supernode's A, 10 nodes' A, 3 services of 2 A and 2 SRV.
	if want := 3 + 10 + 3*4; records != want {
		t.Errorf("%d records, want %d", records, want)
	}
	zp := dns.NewZoneParser(strings.NewReader(zone), "", "zone")
	byType := map[uint16]int{}
	n := 0
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		n++
		byType[rr.Header().Rrtype]++
		if rr.Header().Ttl != 5 {
			t.Errorf("TTL of %s", rr)
		}
		if !dns.IsSubDomain("fed.example.org.", rr.Header().Name) {
			t.Errorf("%s is outside the zone", rr)
		}
	}
	if err := zp.Err(); err != nil {
		t.Fatalf("zone does not parse: %v\n%s", err, zone)
	}
	if n != records || byType[dns.TypeSOA] != 1 || byType[dns.TypeNS] != 1 || byType[dns.TypeA] != 1+10+6 || byType[dns.TypeSRV] != 6 {
		t.Errorf("records by type %v, %d in all:\n%s", byType, n, zone)
	}
	for _, want := range []string{
		"fed.example.org. IN SOA sn.node.fed.example.org. hostmaster.fed.example.org. 1 ",
		"sn.node.fed.example.org. IN A 127.0.0.1\n",
		"node-000.node.fed.example.org. IN A 10.0.0.1\n",
		"svc-0001.service.fed.example.org. IN A 10.0.0.3\n",
		"svc-0001.service.fed.example.org. IN SRV 1 1 8001 node-003.node.fed.example.org.\n",
	} {
		if !strings.Contains(zone, want) {
			t.Errorf("zone lacks %q:\n%s", want, zone)
		}
	}
}

func TestDNSQueriesMixAndCoverage(t *testing.T) {
	p := dnsPlanFor(1000, 1, "fedkeeper.", 5, dnsHost{"sn", "127.0.0.1"})
	qs := p.queries()
	if want := 143 * dnsBlock; len(qs) != want {
		t.Fatalf("%d queries, want %d", len(qs), want)
	}
	named := map[string]bool{}
	var serviceA, srv, nodeA, missing int
	for _, q := range qs {
		named[q.name] = true
		switch {
		case strings.HasPrefix(q.name, "missing-"):
			missing++
		case q.qtype == dns.TypeSRV:
			srv++
		case strings.HasSuffix(q.name, ".node.fedkeeper."):
			nodeA++
		default:
			serviceA++
		}
	}
	if serviceA != 7*143 || srv != 143 || nodeA != 143 || missing != 143 {
		t.Errorf("service A %d, SRV %d, node A %d, missing %d", serviceA, srv, nodeA, missing)
	}
	for _, s := range p.services {
		if !named[p.serviceName(s)] {
			t.Errorf("service %s never asked", s.name)
		}
	}
	for _, h := range p.nodes {
		if !named[p.nodeName(h)] {
			t.Errorf("node %s never asked", h.name)
		}
	}
	file := dnsQueryFile(qs[:dnsBlock])
	if want := "svc-0000.service.fedkeeper. A\n"; !strings.HasPrefix(file, want) || !strings.Contains(file, "svc-0000.service.fedkeeper. SRV\n") ||
		!strings.HasSuffix(file, "missing-0.service.fedkeeper. A\n") {
		t.Errorf("query file:\n%s", file)
	}
	if d := dnsDistinct(qs); len(d) >= len(qs) || len(d) < len(p.services) {
		t.Errorf("%d distinct queries of %d", len(d), len(qs))
	}
}

func TestMedian(t *testing.T) {
	id := func(v float64) float64 { return v }
	if got := median([]float64{3, 1, 2}, id); got != 2 {
		t.Errorf("median of 3 = %v", got)
	}
	if got := median([]float64{4, 1}, id); got != 2.5 {
		t.Errorf("median of 2 = %v", got)
	}
}

// dnsTestServer answers every A query with addrs, in that order.
func dnsTestServer(t *testing.T, addrs ...string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg).SetReply(req)
		m.Authoritative = true
		for _, a := range addrs {
			rr, _ := dns.NewRR(req.Question[0].Name + " 5 IN A " + a)
			m.Answer = append(m.Answer, rr)
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

func TestDNSCompareIgnoresOrderOnly(t *testing.T) {
	ctx := t.Context()
	a := dnsTestServer(t, "10.0.0.1", "10.0.0.2")
	b := dnsTestServer(t, "10.0.0.2", "10.0.0.1")
	c := dnsTestServer(t, "10.0.0.1", "10.0.0.3")
	qs := []dnsQuery{{"svc-0000.service.fedkeeper.", dns.TypeA}}
	if err := dnsCompare(ctx, a, b, qs); err != nil {
		t.Errorf("same records in another order: %v", err)
	}
	if err := dnsCompare(ctx, a, c, qs); err == nil || !strings.Contains(err.Error(), "differently") {
		t.Errorf("other records: %v", err)
	}
}
