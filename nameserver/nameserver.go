// Package nameserver is the health-aware authoritative DNS server that runs
// on every supernode, so that clients spread across the federation's sites
// by plain DNS: each answer lists the currently serving instances of a
// service, shuffled afresh, with a short TTL. It never recurses.
//
// Names are matched without regard to case. Within the configured DOMAIN:
//
//	DOMAIN                            SOA; NS naming every supernode as NODE.node.DOMAIN, with glue
//	NODE.node.DOMAIN                  A/AAAA of the node's address, or a CNAME to its host name
//	NAME.service.DOMAIN               A/AAAA of the serving instances; SRV to NODE.node.DOMAIN:PORT
//	TAG.NAME.service.DOMAIN           the same, restricted to instances with that tag
//	NAME.service.PROJECT.DOMAIN       the same, restricted to a project
//	TAG.NAME.service.PROJECT.DOMAIN   restricted to both
//	_NAME._tcp.service[.PROJECT].DOMAIN and _NAME._udp...   SRV only (RFC 2782 form)
//
// An SRV record points to the host name itself when an instance's host is a
// name rather than an address. SRV answers carry the targets' addresses in
// the additional section, so a client needs no second query.
//
// The intermediate names (node.DOMAIN, service.DOMAIN, any single label
// PROJECT.DOMAIN, service.PROJECT.DOMAIN, _tcp.service.DOMAIN, ...) exist
// with no records: they answer NOERROR with no data rather than NXDOMAIN,
// because resolvers that minimise query names (RFC 7816) ask for them first
// and, by RFC 8020, take NXDOMAIN to mean that nothing below exists. Since
// the Directory cannot list projects, every single label below DOMAIN is
// taken to be one. The labels node and service are therefore reserved: a
// project cannot be called either.
//
// Other names inside DOMAIN answer NXDOMAIN, and a known name with no records
// of the asked type NOERROR with no data; both carry the zone's SOA in the
// authority section for negative caching. Names outside DOMAIN are REFUSED.
// Queries of type ANY get the single synthesized HINFO "RFC8482" record of
// RFC 8482, which answers cheaply and cannot be used for amplification; zone
// transfers (AXFR, IXFR) and classes other than IN (CHAOS version queries
// included) are REFUSED; opcodes other than QUERY get NOTIMP, and messages
// without exactly one question or that cannot be parsed get FORMERR.
//
// UDP answers fit the client's limit: 512 bytes, or its EDNS0 buffer size
// capped at 1232 bytes (the size that avoids IP fragmentation on common
// paths); a longer answer drops whole records and sets TC, and the same query
// over TCP gets every record. However many instances a service has, an
// answer holds at most MaxAnswers records, a fresh random choice each time.
package nameserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// Target is one place a name points to.
type Target struct {
	Node string // node name, a DNS label; SRV targets are Node.node.DOMAIN
	Host string // IPv4 or IPv6 literal, or a host name (answered in SRV only, never as A/AAAA)
	Port int    // 0 for node look-ups
}

// Directory is what the nameserver answers from: the supernode's in-memory
// view of the registry, which keeps its last known state when the store
// loses its quorum. It is called from concurrent queries and must not block
// on the network. Names reach it in lower case, as DNS matching ignores
// case, so it must match them likewise (a project registered as "CMS" is
// asked for as "cms").
type Directory interface {
	// Service returns the serving instances of a service, in any order;
	// found is false when no instance of the service (with that project
	// and tag, when given) is registered at all.
	Service(name, project, tag string) (targets []Target, found bool)
	// Node returns the host of a node's address.
	Node(name string) (host string, found bool)
	// Nameservers lists the supernodes answering for the domain (for NS
	// records and the SOA's MNAME), in a stable order.
	Nameservers() []Target
	// Serial is the SOA serial: it grows when the view changes.
	Serial() uint32
}

// Config configures a Server.
type Config struct {
	// Domain is the zone the server is authoritative for, e.g.
	// "fedkeeper."; it is taken in lower case and fully qualified.
	Domain string
	// TTL is the TTL of every record and of negative answers, in whole
	// seconds; zero means DefaultTTL. It is short so that clients soon stop
	// using an instance that fails.
	TTL time.Duration
	// Log receives the server's messages; nil means slog.Default().
	Log *slog.Logger
	// OnQuery, if set, is called once per answered query with the response
	// code's name (NOERROR, NXDOMAIN, FORMERR ...), including the FORMERR
	// and NOTIMP answers to messages that never reach a lookup (for
	// metrics). It is called from concurrent queries.
	OnQuery func(rcode string)
}

const (
	// DefaultTTL is the TTL used when Config.TTL is zero.
	DefaultTTL = 5 * time.Second
	// MaxAnswers bounds the records of one answer, so that a service with
	// thousands of instances cannot turn a query into megabytes; each
	// answer is a fresh random choice among them.
	MaxAnswers = 256

	// ednsUDPSize caps the UDP answers to EDNS0 clients, after DNS Flag Day
	// 2020: larger datagrams risk IP fragmentation, which gets dropped or
	// spoofed; such clients retry over TCP instead.
	ednsUDPSize = 1232
	// readUDPSize is the largest query read over UDP: queries are small,
	// and a longer one is cut and answered FORMERR.
	readUDPSize = dns.DefaultMsgSize
	// headerLen is the size of a DNS message header.
	headerLen = 12
	// bindAttempts is how many free UDP ports are tried when the port is
	// chosen by the system and TCP's twin turns out to be taken.
	bindAttempts = 10
	// shutdownTimeout bounds how long stopping waits for queries in flight.
	shutdownTimeout = 5 * time.Second

	// The SOA timers only matter to secondaries, and there are none: every
	// supernode answers from its own view. They take common values.
	soaRefresh = 3600
	soaRetry   = 600
	soaExpire  = 14 * 86400
)

// Server is an authoritative DNS server for one domain. Start it once; Close
// stops it.
type Server struct {
	domain       string
	domainLabels int
	ttl          uint32
	dir          Directory
	log          *slog.Logger
	onQuery      func(rcode string)

	mu        sync.Mutex
	started   bool
	addr      string
	closing   chan struct{}
	closeOnce sync.Once
	done      chan struct{} // closed once every serving goroutine has returned
	err       error         // why serving stopped, read after done
}

// Validate checks the domain and the TTL as New does, for a configuration
// checked long before its server is made.
func (cfg Config) Validate() error {
	// Serving the root would leave no name to refuse.
	if !isHostName(dns.CanonicalName(cfg.Domain)) {
		return fmt.Errorf("nameserver: domain %q is not a host-style domain name below the root (letters, digits, - and _)", cfg.Domain)
	}
	if ttl := cfg.TTL; ttl < 0 || ttl%time.Second != 0 || ttl > math.MaxInt32*time.Second {
		return fmt.Errorf("nameserver: TTL %s is not a whole number of seconds from 1s to 2^31-1s", cfg.TTL)
	}
	return nil
}

// New returns a server for cfg that answers from dir, once started.
func New(cfg Config, dir Directory) (*Server, error) {
	if dir == nil {
		return nil, errors.New("nameserver: no directory")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	domain := dns.CanonicalName(cfg.Domain)
	ttl := cfg.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	return &Server{
		domain:       domain,
		domainLabels: dns.CountLabel(domain),
		ttl:          uint32(ttl / time.Second),
		dir:          dir,
		log:          log.With("component", "nameserver", "domain", domain),
		onQuery:      cfg.OnQuery,
		closing:      make(chan struct{}),
		done:         make(chan struct{}),
	}, nil
}

// Start binds addr ("host:port") for both UDP and TCP on the same port and
// serves them until ctx ends or Close is called. Port 0 lets the system pick
// a free UDP port, on which TCP is then bound; Addr tells which. Start
// returns once both are serving.
func (s *Server) Start(ctx context.Context, addr string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.closing:
		return errors.New("nameserver: start: server is closed")
	default:
	}
	if s.started {
		return errors.New("nameserver: start: already started")
	}
	pc, ln, err := listen(ctx, addr)
	if err != nil {
		return err
	}
	servers := []*dns.Server{
		s.dnsServer("udp", &dns.Server{PacketConn: pc, UDPSize: readUDPSize}),
		s.dnsServer("tcp", &dns.Server{Listener: ln}),
	}
	running := make(chan struct{}, len(servers))
	served := make(chan error, len(servers))
	for _, srv := range servers {
		srv.NotifyStartedFunc = func() { running <- struct{}{} }
		go func() {
			err := srv.ActivateAndServe()
			if err != nil {
				s.log.Error("dns serving stopped", "net", srv.Net, "err", err)
			}
			served <- err
		}()
	}
	for range servers {
		select {
		case <-running:
		case err := <-served:
			// The other loop fails on its closed socket, if it got that far.
			pc.Close()
			ln.Close()
			<-served
			return fmt.Errorf("nameserver: serve %s: %w", addr, err)
		}
	}
	s.started = true
	s.addr = pc.LocalAddr().String()
	s.log.Info("dns serving", "addr", s.addr)
	go s.stopWhenDone(ctx, servers, served)
	return nil
}

// dnsServer completes the settings shared by the UDP and TCP servers.
func (s *Server) dnsServer(network string, srv *dns.Server) *dns.Server {
	srv.Net = network
	udp := network == "udp"
	srv.Handler = dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) { s.serve(w, req, udp) })
	srv.MsgAcceptFunc = s.accept
	srv.MsgInvalidFunc = s.invalid
	return srv
}

// stopWhenDone shuts the servers down when ctx ends or Close is called, and
// records why they stopped once their loops have returned.
func (s *Server) stopWhenDone(ctx context.Context, servers []*dns.Server, served <-chan error) {
	defer close(s.done)
	select {
	case <-ctx.Done():
	case <-s.closing:
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	var errs []error
	for _, srv := range servers {
		if err := srv.ShutdownContext(shutdownCtx); err != nil {
			errs = append(errs, fmt.Errorf("nameserver: shut down %s: %w", srv.Net, err))
		}
	}
	for range servers {
		if err := <-served; err != nil {
			errs = append(errs, fmt.Errorf("nameserver: serve: %w", err))
		}
	}
	s.err = errors.Join(errs...)
	s.log.Info("dns stopped", "addr", s.addr)
}

// listen binds UDP and TCP on one port. When the system picks the port, the
// TCP twin of a free UDP port may be taken, so a few ports are tried.
func listen(ctx context.Context, addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("nameserver: listen address %q: %w", addr, err)
	}
	attempts := 1
	if port == "" || port == "0" {
		attempts = bindAttempts
	}
	var lc net.ListenConfig
	for attempt := 1; ; attempt++ {
		pc, err := lc.ListenPacket(ctx, "udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("nameserver: listen udp %s: %w", addr, err)
		}
		_, udpPort, err := net.SplitHostPort(pc.LocalAddr().String())
		if err != nil {
			pc.Close()
			return nil, nil, fmt.Errorf("nameserver: bound udp address %s: %w", pc.LocalAddr(), err)
		}
		tcpAddr := net.JoinHostPort(host, udpPort)
		ln, err := lc.Listen(ctx, "tcp", tcpAddr)
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if attempt >= attempts || !errors.Is(err, syscall.EADDRINUSE) {
			return nil, nil, fmt.Errorf("nameserver: listen tcp %s: %w", tcpAddr, err)
		}
	}
}

// Addr returns the address the server is bound to, or "" before Start.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Close stops the server if it is running and waits until every goroutine
// it started has returned, queries in flight included. It returns why
// serving stopped, if not because it was told to. Close may be called more
// than once, and after the context given to Start has ended.
func (s *Server) Close() error {
	s.closeOnce.Do(func() { close(s.closing) })
	s.mu.Lock()
	started := s.started
	s.mu.Unlock()
	if !started {
		return nil
	}
	<-s.done
	return s.err
}

// accept screens a message before it is parsed, so that only standard
// queries with a single question reach a lookup; the library answers the
// others itself, so they are counted here.
func (s *Server) accept(dh dns.Header) dns.MsgAcceptAction {
	action := dns.DefaultMsgAcceptFunc(dh)
	// NOTIFY is for secondaries, and this server is no one's.
	if action == dns.MsgAccept && int(dh.Bits>>11)&0xF != dns.OpcodeQuery {
		action = dns.MsgRejectNotImplemented
	}
	switch action {
	case dns.MsgReject:
		s.count(dns.RcodeFormatError)
	case dns.MsgRejectNotImplemented:
		s.count(dns.RcodeNotImplemented)
	}
	return action
}

// invalid is told of messages that could not be parsed. The library answers
// FORMERR to those with a whole header and drops shorter ones, which cannot
// even be told apart from noise.
func (s *Server) invalid(m []byte, err error) {
	s.log.Debug("malformed dns message", "bytes", len(m), "err", err)
	if len(m) >= headerLen {
		s.count(dns.RcodeFormatError)
	}
}

// count reports an answer's rcode to Config.OnQuery.
func (s *Server) count(rcode int) {
	if s.onQuery != nil {
		s.onQuery(rcodeName(rcode))
	}
}

// rcodeName names an rcode. The library's table gives 16 as BADSIG, the
// TSIG error sharing BADVERS's number; this server signs nothing, so its
// 16 is always BADVERS.
func rcodeName(rcode int) string {
	if rcode == dns.RcodeBadVers {
		return "BADVERS"
	}
	if name, ok := dns.RcodeToString[rcode]; ok {
		return name
	}
	return strconv.Itoa(rcode)
}

// serve answers one query that passed accept.
func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg, udp bool) {
	resp := s.respond(req, udp)
	// Counted before it is sent, like the answers the library sends itself.
	s.count(resp.Rcode)
	if err := w.WriteMsg(resp); err != nil {
		s.log.Debug("dns answer not sent", "remote", w.RemoteAddr().String(), "err", err)
	}
	var q dns.Question
	if len(req.Question) == 1 {
		q = req.Question[0]
	}
	s.log.Debug("dns query", "name", q.Name, "type", dns.TypeToString[q.Qtype], "rcode", dns.RcodeToString[resp.Rcode],
		"answers", len(resp.Answer), "truncated", resp.Truncated, "udp", udp, "remote", w.RemoteAddr().String())
}

// respond builds the answer to req, sized for its transport.
func (s *Server) respond(req *dns.Msg, udp bool) *dns.Msg {
	// accept sees only the header's count: a message that ends right
	// after its header unpacks with no question at all.
	if len(req.Question) != 1 {
		return new(dns.Msg).SetRcodeFormatError(req)
	}
	resp := new(dns.Msg).SetReply(req)
	opt := req.IsEdns0()
	if opt != nil && opt.Version() != 0 {
		resp.Rcode = dns.RcodeBadVers
	} else {
		s.resolve(req.Question[0], resp)
	}
	size := dns.MaxMsgSize
	if opt != nil {
		resp.SetEdns0(ednsUDPSize, opt.Do())
		if udp {
			size = int(min(opt.UDPSize(), ednsUDPSize))
		}
	} else if udp {
		size = dns.MinMsgSize
	}
	// Even TCP needs it: host-name SRV targets can outgrow a message.
	// Truncate also compresses names, but only when the answer would not
	// fit otherwise: compression costs time on every answer.
	resp.Truncate(size)
	return resp
}

// resolve fills resp with the answer to q.
func (s *Server) resolve(q dns.Question, resp *dns.Msg) {
	name := dns.CanonicalName(q.Name)
	switch {
	case q.Qclass != dns.ClassINET, !dns.IsSubDomain(s.domain, name):
		resp.Rcode = dns.RcodeRefused
		return
	case q.Qtype == dns.TypeAXFR, q.Qtype == dns.TypeIXFR:
		resp.Rcode = dns.RcodeRefused
		return
	}
	resp.Authoritative = true
	labels := dns.SplitDomainName(name)
	records, exists := s.lookup(q.Name, labels[:len(labels)-s.domainLabels])
	switch {
	case !exists:
		resp.Rcode = dns.RcodeNameError
	case q.Qtype == dns.TypeANY:
		resp.Answer = []dns.RR{&dns.HINFO{Hdr: s.header(q.Name, dns.TypeHINFO), Cpu: "RFC8482"}}
	default:
		resp.Answer, resp.Extra = records(q.Qtype)
	}
	if len(resp.Answer) == 0 {
		resp.Ns = []dns.RR{s.soa(s.domain)}
	}
}

// records builds the answer and additional records of one type at a name.
type records func(qtype uint16) (answer, extra []dns.RR)

// noRecords is what the names that only lead to others hold.
func noRecords(uint16) (answer, extra []dns.RR) { return nil, nil }

// lookup finds what the zone holds at owner, whose labels below the domain
// are given in lower case; exists is false for names that do not exist.
func (s *Server) lookup(owner string, labels []string) (rrs records, exists bool) {
	n := len(labels)
	switch {
	case n == 0:
		return s.apex(owner), true
	case labels[n-1] == "node":
		switch n {
		case 1:
			return noRecords, true
		case 2:
			host, found := s.dir.Node(labels[0])
			if !found {
				return nil, false
			}
			return s.node(owner, host), true
		}
		return nil, false
	case labels[n-1] == "service":
		return s.service(owner, labels[:n-1], "")
	case n >= 2 && labels[n-2] == "service":
		return s.service(owner, labels[:n-2], labels[n-1])
	case n == 1:
		return noRecords, true
	}
	return nil, false
}

// apex holds the zone's SOA and NS records.
func (s *Server) apex(owner string) records {
	return func(qtype uint16) (answer, extra []dns.RR) {
		switch qtype {
		case dns.TypeSOA:
			return []dns.RR{s.soa(owner)}, nil
		case dns.TypeNS:
			servers := s.dir.Nameservers()
			return pick(len(servers), func(i int) (record, bool) {
				name, ok := s.nodeName(servers[i].Node)
				if !ok {
					return record{}, false
				}
				rec := record{rr: &dns.NS{Hdr: s.header(owner, dns.TypeNS), Ns: name}}
				if ip, _ := parseHost(servers[i].Host); ip.IsValid() {
					rec.glue = s.address(name, ip)
				}
				return rec, true
			})
		}
		return nil, nil
	}
}

// node holds a node's address, or a CNAME to its host name, which stands
// in for records of every type.
func (s *Server) node(owner, host string) records {
	return func(qtype uint16) (answer, extra []dns.RR) {
		ip, name := parseHost(host)
		switch {
		case ip.IsValid():
			if rr := s.address(owner, ip); rr.Header().Rrtype == qtype {
				return []dns.RR{rr}, nil
			}
		case name != "":
			return []dns.RR{&dns.CNAME{Hdr: s.header(owner, dns.TypeCNAME), Target: name}}, nil
		}
		return nil, nil
	}
}

// service finds the instances a service name stands for. labels are those
// before "service": NAME, TAG.NAME or _NAME._tcp (or _udp), which answers
// SRV only.
func (s *Server) service(owner string, labels []string, project string) (rrs records, exists bool) {
	var name, tag string
	srvOnly := false
	switch len(labels) {
	case 0:
		return noRecords, true
	case 1:
		if isProtoLabel(labels[0]) {
			return noRecords, true
		}
		name = labels[0]
	case 2:
		if isProtoLabel(labels[1]) && len(labels[0]) > 1 && labels[0][0] == '_' {
			name, srvOnly = labels[0][1:], true
		} else {
			tag, name = labels[0], labels[1]
		}
	default:
		return nil, false
	}
	targets, found := s.dir.Service(name, project, tag)
	if !found {
		return nil, false
	}
	return func(qtype uint16) (answer, extra []dns.RR) {
		switch {
		case qtype == dns.TypeSRV:
			return pick(len(targets), func(i int) (record, bool) { return s.srv(owner, targets[i]) })
		case srvOnly:
			return nil, nil
		}
		return pick(len(targets), func(i int) (record, bool) {
			ip, _ := parseHost(targets[i].Host)
			if !ip.IsValid() {
				return record{}, false
			}
			rr := s.address(owner, ip)
			return record{rr: rr}, rr.Header().Rrtype == qtype
		})
	}, true
}

// isProtoLabel tells the protocol labels of RFC 2782 names.
func isProtoLabel(label string) bool {
	return label == "_tcp" || label == "_udp"
}

// srv builds the SRV record of an instance, pointing to its node's name
// with the instance's address as glue, or to its host name.
func (s *Server) srv(owner string, t Target) (record, bool) {
	if t.Port < 1 || t.Port > math.MaxUint16 {
		return record{}, false
	}
	ip, target := parseHost(t.Host)
	if ip.IsValid() {
		var ok bool
		if target, ok = s.nodeName(t.Node); !ok {
			return record{}, false
		}
	} else if target == "" {
		return record{}, false
	}
	rec := record{rr: &dns.SRV{Hdr: s.header(owner, dns.TypeSRV), Priority: 1, Weight: 1, Port: uint16(t.Port), Target: target}}
	if ip.IsValid() {
		rec.glue = s.address(target, ip)
	}
	return rec, true
}

// record is an answer record with the address record, if any, that saves
// the client a query for its target.
type record struct {
	rr   dns.RR
	glue dns.RR
}

// pick builds records from n sources in a fresh random order, so that
// clients spread across sites, and keeps at most MaxAnswers distinct ones,
// the answer's glue going to the additional section. build reports false
// for sources that give no record. Building stops once the answer is full,
// so a huge service costs little more than a permutation of its size.
func pick(n int, build func(i int) (record, bool)) (answer, extra []dns.RR) {
	seen := make(map[string]bool)
	for _, i := range rand.Perm(n) {
		if len(answer) == MaxAnswers {
			break
		}
		rec, ok := build(i)
		if !ok {
			continue
		}
		key := rec.rr.String()
		if seen[key] {
			continue
		}
		seen[key] = true
		answer = append(answer, rec.rr)
		if rec.glue == nil {
			continue
		}
		if key := rec.glue.String(); !seen[key] {
			seen[key] = true
			extra = append(extra, rec.glue)
		}
	}
	return answer, extra
}

// soa is the zone's SOA record, whose minimum is the negative-caching TTL.
func (s *Server) soa(owner string) dns.RR {
	mname := "ns." + s.domain
	if servers := s.dir.Nameservers(); len(servers) > 0 {
		if name, ok := s.nodeName(servers[0].Node); ok {
			mname = name
		}
	}
	return &dns.SOA{
		Hdr:     s.header(owner, dns.TypeSOA),
		Ns:      mname,
		Mbox:    "hostmaster." + s.domain,
		Serial:  s.dir.Serial(),
		Refresh: soaRefresh,
		Retry:   soaRetry,
		Expire:  soaExpire,
		Minttl:  s.ttl,
	}
}

// address is the A or AAAA record of ip, whichever its family calls for.
func (s *Server) address(owner string, ip netip.Addr) dns.RR {
	if ip.Is4() {
		return &dns.A{Hdr: s.header(owner, dns.TypeA), A: ip.AsSlice()}
	}
	return &dns.AAAA{Hdr: s.header(owner, dns.TypeAAAA), AAAA: ip.AsSlice()}
}

// header is the header every record shares but for its owner and type.
func (s *Server) header(owner string, rrtype uint16) dns.RR_Header {
	return dns.RR_Header{Name: owner, Rrtype: rrtype, Class: dns.ClassINET, Ttl: s.ttl}
}

// nodeName is NODE.node.DOMAIN, if node is a single label that makes a
// valid name.
func (s *Server) nodeName(node string) (string, bool) {
	if node == "" || strings.Contains(node, ".") {
		return "", false
	}
	name := strings.ToLower(node) + ".node." + s.domain
	return name, isHostName(name)
}

// parseHost tells an address from a host name: ip is valid for address
// literals (IPv4-mapped ones taken as IPv4), name is the fully qualified
// lower-case host name otherwise, and both are zero for hosts that are
// neither.
func parseHost(host string) (ip netip.Addr, name string) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.Unmap().WithZone(""), ""
	}
	if name = dns.CanonicalName(host); !isHostName(name) {
		return netip.Addr{}, ""
	}
	return netip.Addr{}, name
}

// isHostName tells whether a fully qualified lower-case name lies below the
// root and is made of letters, digits, - and _ only: the DNS allows any byte
// in a label, but other names are mistakes here and would read badly in
// answers.
func isHostName(name string) bool {
	if _, ok := dns.IsDomainName(name); !ok || name == "." {
		return false
	}
	return strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789-_.") == ""
}
