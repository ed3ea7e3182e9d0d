package membership

import (
	"bytes"
	"encoding/xml"
	"io"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fedkeeper/fedkeeper/pki"
)

// FuzzValidateName checks that the names ValidateName and ValidateProject
// accept are DNS labels, since they become DNS names, store keys and file
// names, and that every node name is also a valid project name.
func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"node1", "CMIP6", "a", "a-b", "-a", "a-", "a_b", "A", "..", "a/b", "é", strings.Repeat("a", 63), strings.Repeat("a", 64), "a\n"} {
		f.Add(s)
	}
	label := func(s string, upper bool) bool {
		if len(s) < 1 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
			return false
		}
		for _, c := range []byte(s) {
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || upper && 'A' <= c && c <= 'Z') {
				return false
			}
		}
		return true
	}
	f.Fuzz(func(t *testing.T, s string) {
		nameErr, projectErr := ValidateName(s), ValidateProject(s)
		if nameErr == nil && !label(s, false) {
			t.Fatalf("ValidateName accepted %q, which is no lowercase DNS label", s)
		}
		if projectErr == nil && !label(s, true) {
			t.Fatalf("ValidateProject accepted %q, which is no DNS label", s)
		}
		if nameErr == nil && projectErr != nil {
			t.Fatalf("node name %q is refused as a project: %v", s, projectErr)
		}
	})
}

// fuzzRegistration is registration.xml as a reader of it sees it.
type fuzzRegistration struct {
	Nodes []struct {
		ShortName string `xml:"shortName,attr"`
		Hostname  string `xml:"hostname,attr"`
		Org       string `xml:"organization,attr"`
		DN        string `xml:"dn,attr"`
		Manager   *struct {
			Endpoint string `xml:"endpoint,attr"`
		} `xml:"NodeManager"`
		Geo *struct {
			Lat string `xml:"lat,attr"`
			Lon string `xml:"lon,attr"`
		} `xml:"GeoLocation"`
		// Named, so that the elements of services below leave it out.
		CA       struct{} `xml:"CA"`
		Services []struct {
			XMLName  xml.Name
			Endpoint string `xml:"endpoint,attr"`
		} `xml:",any"`
	} `xml:"Node"`
}

// FuzzProfile checks what follows from a profile's validation: a valid
// profile gets its certificate signed (a refusal there would surface as an
// internal error rather than a 400), and renders as well-formed
// registration.xml from which the node's name, organization, host,
// location and endpoints read back unchanged. Fields are fuzzed one by
// one rather than as JSON, whose syntax the mutator mostly breaks; they
// are made valid UTF-8 the way the API's JSON decoding makes them.
func FuzzProfile(f *testing.F) {
	ca, err := pki.NewCA("esgf-test")
	if err != nil {
		f.Fatal(err)
	}
	svc := &Service{ca: ca}
	key, err := pki.NewKey()
	if err != nil {
		f.Fatal(err)
	}
	csrs := map[string]string{}
	csrFor := func(t *testing.T, name string) string {
		if csr, ok := csrs[name]; ok {
			return csr
		}
		csr, err := pki.NewCSR(key, name)
		if err != nil {
			t.Fatal(err)
		}
		if len(csrs) > 256 {
			clear(csrs)
		}
		csrs[name] = string(csr)
		return csrs[name]
	}
	for _, seed := range []struct {
		name, project, site, address, kind1, url1, kind2, url2 string
		lat, lon                                               float64
		geo                                                    bool
	}{
		{"node1", "CMIP6", "", "", "", "", "", "", 0, 0, false},
		{"dkrz-index", "CMIP6", "DKRZ Hamburg", "esgf.dkrz.de:7443", "IndexService", "https://esgf.dkrz.de/esg-search/search",
			"OODTFileManager", "https://esgf.dkrz.de:9000/", 53.5679, 9.9735, true},
		{"ipsl-data", "CORDEX", "IPSL", "192.0.2.44:7444", "GridFTPService", "gsiftp://esgf-node.ipsl.upmc.fr:2811/?a=1&b=2", "", "", 0, 0, false},
		{"v6", "obs4MIPs", "", "[2001:db8::1]:443", "ThreddsService", "https://[2001:db8::1]/thredds", "FrontEnd", "https://x/", -90, 180, true},
		{"amp", "x", "A & B <Lab> \"quoted\" 'single'", "a.example.org:1", "FrontEnd", "https://a.example.org/?x=1&y='2'", "", "", 0, 0, false},
		{"uni", "x", "Universit\u00e4t Hamburg \u4e2d\U0001f600", "", "", "", "", "", math.Copysign(0, -1), 1e-300, true},
		{"Bad_Name", "x", "", "host:0", "", "", "", "", 0, 0, false},
	} {
		f.Add(seed.name, seed.project, seed.site, seed.address, seed.kind1, seed.url1, seed.kind2, seed.url2, seed.lat, seed.lon, seed.geo)
	}
	f.Fuzz(func(t *testing.T, name, project, site, address, kind1, url1, kind2, url2 string, lat, lon float64, geo bool) {
		valid := func(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }
		p := Profile{Project: valid(project), Site: valid(site), Address: valid(address)}
		for _, e := range [][2]string{{kind1, url1}, {kind2, url2}} {
			if e[0] != "" {
				if p.Endpoints == nil {
					p.Endpoints = map[string]string{}
				}
				p.Endpoints[valid(e[0])] = valid(e[1])
			}
		}
		if geo {
			p.Lat, p.Lon = &lat, &lon
		}
		if p.Validate() != nil {
			return
		}
		if ValidateName(name) != nil {
			name = "node1"
		}
		checkCertificate(t, svc, name, p, csrFor(t, name))
		checkRegistration(t, name, p)
	})
}

// checkCertificate checks that a node with profile p gets a certificate
// for the host of its address, and for nothing else.
func checkCertificate(t *testing.T, svc *Service, name string, p Profile, csr string) {
	t.Helper()
	n, err := svc.issue(name, p, csr)
	if err != nil {
		t.Fatalf("a valid profile was refused its certificate: %v\nprofile %+v", err, p)
	}
	c, err := pki.ParseCert([]byte(n.CertPEM))
	if err != nil {
		t.Fatal(err)
	}
	var ips []string
	for _, ip := range c.IPAddresses {
		ips = append(ips, ip.String())
	}
	host := HostOf(p.Address)
	switch ip := net.ParseIP(host); {
	case p.Address == "":
		if len(ips)+len(c.DNSNames) != 0 {
			t.Fatalf("certificate without an address holds IPs %v and names %q", ips, c.DNSNames)
		}
	case ip != nil:
		if !slices.Equal(ips, []string{ip.String()}) || len(c.DNSNames) != 0 {
			t.Fatalf("certificate for address %q holds IPs %v and names %q", p.Address, ips, c.DNSNames)
		}
	default:
		if !slices.Equal(c.DNSNames, []string{host}) || len(ips) != 0 {
			t.Fatalf("certificate for address %q holds names %q and IPs %v", p.Address, c.DNSNames, ips)
		}
	}
}

// checkRegistration renders a node with profile p into registration.xml
// and reads it back.
func checkRegistration(t *testing.T, name string, p Profile) {
	t.Helper()
	joined := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	m := NodeMap{
		Federation:  "esgf-test",
		CAHash:      "sha256:" + strings.Repeat("ab", 32),
		Revision:    42,
		GeneratedAt: joined,
		Supernodes:  []string{"https://sn1.example.org:7443"},
		Nodes: []Node{
			{Name: "sn1", Role: RoleSupernode, Projects: []string{"CMIP6"}, Address: "sn1.example.org:7443", JoinedAt: joined},
			{Name: name, Role: RoleMember, Projects: []string{p.Project}, Site: p.Site, Address: p.Address,
				Endpoints: p.Endpoints, Lat: p.Lat, Lon: p.Lon, JoinedAt: joined},
		},
	}
	doc, err := m.RegistrationXML("1.0")
	if err != nil {
		t.Fatalf("RegistrationXML: %v", err)
	}
	dec := xml.NewDecoder(bytes.NewReader(doc))
	for {
		if _, err := dec.Token(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("registration.xml is not well-formed: %v\n%s", err, doc)
		}
	}
	var reg fuzzRegistration
	if err := xml.Unmarshal(doc, &reg); err != nil {
		t.Fatalf("parse registration.xml: %v\n%s", err, doc)
	}
	if len(reg.Nodes) != 2 {
		t.Fatalf("%d Node elements, want 2", len(reg.Nodes))
	}
	x := reg.Nodes[1]
	org := p.Site
	if org == "" {
		org = "unknown"
	}
	if x.ShortName != name || x.Org != org || x.Hostname != HostOf(p.Address) {
		t.Fatalf("node reads back as shortName %q organization %q hostname %q; want %q, %q, %q",
			x.ShortName, x.Org, x.Hostname, name, org, HostOf(p.Address))
	}
	if x.DN != "CN="+name+",OU=member,O=esgf-test" {
		t.Fatalf("dn %q", x.DN)
	}
	if (x.Manager == nil) != (p.Address == "") || x.Manager != nil && x.Manager.Endpoint != "https://"+p.Address {
		t.Fatalf("NodeManager %+v for address %q", x.Manager, p.Address)
	}
	if (x.Geo == nil) != (p.Lat == nil) {
		t.Fatalf("GeoLocation %+v for lat %v", x.Geo, p.Lat)
	}
	if x.Geo != nil {
		lat, err1 := strconv.ParseFloat(x.Geo.Lat, 64)
		lon, err2 := strconv.ParseFloat(x.Geo.Lon, 64)
		if err1 != nil || err2 != nil || lat != *p.Lat || lon != *p.Lon {
			t.Fatalf("GeoLocation %+v, want %v %v", x.Geo, *p.Lat, *p.Lon)
		}
	}
	got := map[string]string{}
	for _, s := range x.Services {
		if _, dup := got[s.XMLName.Local]; dup {
			t.Fatalf("service %s appears twice", s.XMLName.Local)
		}
		got[s.XMLName.Local] = s.Endpoint
	}
	want := map[string]string{}
	for kind, u := range p.Endpoints {
		if slices.Contains(esgfServices, kind) {
			want[kind] = u
		}
	}
	if len(got) != len(want) {
		t.Fatalf("service elements %v, want %v", got, want)
	}
	for kind, u := range want {
		if got[kind] != u {
			t.Fatalf("%s endpoint reads back as %q, want %q", kind, got[kind], u)
		}
	}
}
