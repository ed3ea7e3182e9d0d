package nameserver

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// quietDirectory is the test directory without the record of look-ups,
// which would grow without bound over a fuzzing run.
type quietDirectory struct{ *fakeDirectory }

func (d quietDirectory) Service(name, project, tag string) ([]Target, bool) {
	targets, found := d.services[serviceKey(name, project, tag)]
	return targets, found
}

// fuzzDirectory adds to the test directory a service whose SRV answer,
// every target a long host name, outgrows even a TCP message.
func fuzzDirectory() Directory {
	d := newFakeDirectory()
	long := make([]Target, MaxAnswers+10)
	for i := range long {
		label := strings.Repeat("x", 60)
		long[i] = Target{Node: fmt.Sprintf("l%d", i), Host: fmt.Sprintf("h%d.%s.%s.%s.example.org", i, label, label, label), Port: 443}
	}
	d.services[serviceKey("long", "", "")] = long
	return quietDirectory{d}
}

// capture is a ResponseWriter that keeps the answer.
type capture struct{ msg *dns.Msg }

func (c *capture) LocalAddr() net.Addr  { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53} }
func (c *capture) RemoteAddr() net.Addr { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5353} }
func (c *capture) WriteMsg(m *dns.Msg) error {
	c.msg = m
	return nil
}
func (c *capture) Write([]byte) (int, error) { return 0, fmt.Errorf("raw write") }
func (c *capture) Close() error              { return nil }
func (c *capture) TsigStatus() error         { return nil }
func (c *capture) TsigTimersOnly(bool)       {}
func (c *capture) Hijack()                   {}

// udpLimit is the largest UDP answer a query may get: 512 bytes, or its
// EDNS0 buffer capped at ednsUDPSize (and never below 512, RFC 6891).
func udpLimit(req *dns.Msg) int {
	opt := req.IsEdns0()
	if opt == nil {
		return dns.MinMsgSize
	}
	return max(dns.MinMsgSize, min(int(opt.UDPSize()), ednsUDPSize))
}

// FuzzServe feeds raw messages through the path the library takes with a
// packet (header screen, unpack) into the handler, since a panic there
// takes the whole supernode down. Whatever reaches the handler must get
// one answer that packs, parses again, answers the same ID and, over UDP,
// fits the client's limit.
func FuzzServe(f *testing.F) {
	s, err := New(Config{Domain: "fedkeeper", Log: slog.New(slog.DiscardHandler)}, fuzzDirectory())
	if err != nil {
		f.Fatal(err)
	}
	for _, q := range []struct {
		name  string
		qtype uint16
		edns  uint16
	}{
		{"fedkeeper.", dns.TypeSOA, 0},
		{"fedkeeper.", dns.TypeNS, 1232},
		{"n1.node.fedkeeper.", dns.TypeA, 0},
		{"N4.Node.Fedkeeper.", dns.TypeAAAA, 0},
		{"web.service.fedkeeper.", dns.TypeA, 4096},
		{"v2.web.service.cms.fedkeeper.", dns.TypeAAAA, 0},
		{"_web._tcp.service.fedkeeper.", dns.TypeSRV, 0},
		{"big.service.fedkeeper.", dns.TypeA, 0},
		{"huge.service.fedkeeper.", dns.TypeSRV, 800},
		{"long.service.fedkeeper.", dns.TypeSRV, 0},
		{"odd.service.fedkeeper.", dns.TypeSRV, 100},
		{"cms.fedkeeper.", dns.TypeANY, 0},
		{"fedkeeper.", dns.TypeAXFR, 0},
		{"example.org.", dns.TypeA, 0},
		{"a\\000b.service.fedkeeper.", dns.TypeA, 0},
	} {
		req := new(dns.Msg).SetQuestion(q.name, q.qtype)
		if q.edns > 0 {
			req.SetEdns0(q.edns, true)
		}
		wire, err := req.Pack()
		if err != nil {
			f.Fatalf("%s: %v", q.name, err)
		}
		f.Add(wire, true)
		f.Add(wire, false)
	}
	badVers := new(dns.Msg).SetQuestion("web.service.fedkeeper.", dns.TypeA).SetEdns0(4096, false)
	badVers.IsEdns0().SetVersion(1)
	if wire, err := badVers.Pack(); err == nil {
		f.Add(wire, true)
	}
	chaos := new(dns.Msg).SetQuestion("version.bind.", dns.TypeTXT)
	chaos.Question[0].Qclass = dns.ClassCHAOS
	if wire, err := chaos.Pack(); err == nil {
		f.Add(wire, true)
	}

	f.Fuzz(func(t *testing.T, msg []byte, udp bool) {
		if len(msg) < headerLen {
			return
		}
		dh := dns.Header{
			Id:      binary.BigEndian.Uint16(msg[0:]),
			Bits:    binary.BigEndian.Uint16(msg[2:]),
			Qdcount: binary.BigEndian.Uint16(msg[4:]),
			Ancount: binary.BigEndian.Uint16(msg[6:]),
			Nscount: binary.BigEndian.Uint16(msg[8:]),
			Arcount: binary.BigEndian.Uint16(msg[10:]),
		}
		if s.accept(dh) != dns.MsgAccept {
			return
		}
		req := new(dns.Msg)
		if err := req.Unpack(msg); err != nil {
			return
		}
		w := &capture{}
		s.serve(w, req, udp)
		if w.msg == nil {
			t.Fatal("no answer")
		}
		wire, err := w.msg.Pack()
		if err != nil {
			t.Fatalf("answer does not pack: %v\n%v", err, w.msg)
		}
		if udp && len(wire) > udpLimit(req) {
			t.Fatalf("UDP answer of %d bytes, limit %d", len(wire), udpLimit(req))
		}
		back := new(dns.Msg)
		if err := back.Unpack(wire); err != nil {
			t.Fatalf("answer does not parse: %v", err)
		}
		if back.Id != req.Id || !back.Response {
			t.Fatalf("answer id %#x, QR %v; want id %#x, QR", back.Id, back.Response, req.Id)
		}
		if len(req.Question) != 1 && back.Rcode != dns.RcodeFormatError {
			t.Fatalf("a query without its question got %s, want FORMERR", dns.RcodeToString[back.Rcode])
		}
	})
}
