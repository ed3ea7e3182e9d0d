package services

import (
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/fedkeeper/fedkeeper/health"
)

// FuzzRegistration checks what follows from a registration's validation:
// a valid one is refused as a duplicate of itself in a set, its stored
// form keeps a readable output within bounds, and the URL it is reached at
// (which ends up in registration.xml) parses back to its own protocol,
// host and port and holds no character XML or a URL cannot carry.
// Strings are made valid UTF-8 the way the API's JSON decoding makes them.
func FuzzRegistration(f *testing.F) {
	f.Add("", "thredds", "", "", 443, "https", "/thredds", "v5", "passing", "ok", uint16(1))
	f.Add("w2", "web", "CMIP6", "192.0.2.7", 8080, "http", "", "", "warning", "slow: ", uint16(700))
	f.Add("", "index", "", "2001:db8::1", 8983, "http", "/solr/?q=a&b=c", "", "critical", "\u00e9\u4e2d", uint16(800))
	f.Add("", "gridftp", "obs4MIPs", "Data.Example.ORG.", 2811, "tcp", "", "a", "passing", "", uint16(0))
	f.Add("", "a", "", "host_name", 0, "udp", "x", "A", "", "", uint16(0))
	f.Add("", "a", "", "::ffff:192.0.2.1", 65535, "https", "/%41", "", "", "", uint16(0))
	f.Fuzz(func(t *testing.T, id, name, project, address string, port int, protocol, path, tag, status, out string, times uint16) {
		valid := func(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }
		rep := Report{
			Registration: Registration{ID: valid(id), Name: valid(name), Project: valid(project), Address: valid(address),
				Port: port, Protocol: valid(protocol), Path: valid(path)},
			Status: health.Status(valid(status)),
			Output: strings.Repeat(valid(out), int(times)),
		}
		if tag != "" {
			rep.Tags = []string{valid(tag)}
		}
		rep.Registration = rep.WithDefaults("CMIP6")
		if rep.Validate() != nil {
			return
		}
		if ValidateSet([]Registration{rep.Registration, rep.Registration}) == nil {
			t.Fatalf("a set with %q twice is valid", rep.ID)
		}
		inst := rep.instance("node1", time.Now())
		if len(inst.Output) > health.MaxOutput || !utf8.ValidString(inst.Output) {
			t.Fatalf("stored output of %d bytes, valid UTF-8 %v", len(inst.Output), utf8.ValidString(inst.Output))
		}
		if !strings.HasPrefix(rep.Output, inst.Output) || len(inst.Output) < min(len(rep.Output), health.MaxOutput-utf8.UTFMax) {
			t.Fatalf("stored output is not the start of the report's")
		}
		host := inst.Address
		if host == "" {
			host = "192.0.2.1"
		}
		e := Entry{Instance: inst, Host: host}
		u := e.url()
		if (u != "") != (rep.Protocol == ProtocolHTTP || rep.Protocol == ProtocolHTTPS) {
			t.Fatalf("%s instance has URL %q", rep.Protocol, u)
		}
		if u == "" {
			return
		}
		if strings.ContainsAny(u, " \"<>\\") || strings.ContainsFunc(u, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Fatalf("URL %q holds a character an endpoint may not", u)
		}
		p, err := url.Parse(u)
		if err != nil {
			t.Fatalf("URL %q does not parse: %v", u, err)
		}
		if p.Scheme != rep.Protocol || p.Port() != strconv.Itoa(rep.Port) || !sameHost(p.Hostname(), host) || p.User != nil {
			t.Fatalf("URL %q reads as %s://%s@%s:%s; want %s://%s:%d", u, p.Scheme, p.User, p.Hostname(), p.Port(), rep.Protocol, host, rep.Port)
		}
	})
}

// sameHost compares hosts as a URL holds them: names without regard to
// case or a final dot, addresses by value.
func sameHost(a, b string) bool {
	if ia, ib := net.ParseIP(a), net.ParseIP(b); ia != nil || ib != nil {
		return ia != nil && ia.Equal(ib)
	}
	return strings.EqualFold(strings.TrimSuffix(a, "."), strings.TrimSuffix(b, "."))
}
