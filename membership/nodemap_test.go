package membership

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestNodeMapListsAdmittedNodesAndSupernodeURLs(t *testing.T) {
	e := newEnv(t)
	for _, n := range []Node{
		{Name: "super-a", Role: RoleSupernode, Projects: []string{"CMIP6"}, Address: "127.0.0.1:7443"},
		{Name: "super-b", Role: RoleSupernode, Projects: []string{"CMIP6"}, Address: "esgf.dkrz.de:7443"},
		{Name: "super-c", Role: RoleSupernode, Projects: []string{"CMIP6"}}, // no address yet
	} {
		if err := e.svc.Bootstrap(e.ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	e.admit("node-1")
	if _, err := e.svc.Join(e.ctx, e.joiner("node-2", "CMIP6").in); err != nil { // pending
		t.Fatal(err)
	}
	if _, err := e.svc.Join(e.ctx, e.joiner("node-3", "CMIP6").in); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Deny(e.ctx, "node-3", "no"); err != nil {
		t.Fatal(err)
	}

	m, err := e.svc.NodeMap(e.ctx)
	if err != nil {
		t.Fatalf("NodeMap: %v", err)
	}
	if m.Federation != e.ca.Federation() || m.CAHash != e.ca.Hash() {
		t.Fatalf("map federation %q hash %q", m.Federation, m.CAHash)
	}
	var names []string
	for _, n := range m.Nodes {
		names = append(names, n.Name)
		if n.CertPEM != "" {
			t.Errorf("node %s carries its certificate in the map", n.Name)
		}
		if n.CertSerial == "" && n.Role == RoleMember {
			t.Errorf("node %s has no certificate serial in the map", n.Name)
		}
	}
	if want := []string{"node-1", "super-a", "super-b", "super-c"}; !slices.Equal(names, want) {
		t.Fatalf("map nodes %v, want %v (no pending or denied joins)", names, want)
	}
	if want := []string{"https://127.0.0.1:7443", "https://esgf.dkrz.de:7443"}; !slices.Equal(m.Supernodes, want) {
		t.Fatalf("supernode URLs %v, want %v", m.Supernodes, want)
	}
	_, rev, _ := e.svc.List(e.ctx)
	if m.Revision <= 0 || m.Revision > rev {
		t.Fatalf("map revision %d, store at %d", m.Revision, rev)
	}
	if time.Since(m.GeneratedAt) > time.Minute {
		t.Fatalf("map generated at %v", m.GeneratedAt)
	}

	// Approving the pending node puts it on the map and moves the revision.
	if _, err := e.svc.Approve(e.ctx, "node-2"); err != nil {
		t.Fatal(err)
	}
	m2, err := e.svc.NodeMap(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(m2.Nodes) != 5 || m2.Revision <= m.Revision {
		t.Fatalf("after approval: %d nodes at revision %d (was %d)", len(m2.Nodes), m2.Revision, m.Revision)
	}
}

func TestNodeMapNeedsFederationRecordAndEncodesEmptyListsAsArrays(t *testing.T) {
	e := newEnv(t)
	if _, err := e.svc.NodeMap(e.ctx); err == nil {
		t.Fatal("NodeMap without a federation record succeeded")
	}
	// The federation record exists but nobody else is admitted yet: the
	// supernode itself is the only node.
	if err := e.svc.Bootstrap(e.ctx, Node{Name: "super-a", Role: RoleSupernode}); err != nil {
		t.Fatal(err)
	}
	m, err := e.svc.NodeMap(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.Supernodes == nil || len(m.Supernodes) != 0 || len(m.Nodes) != 1 {
		t.Fatalf("map %+v", m)
	}
	js, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(js, []byte(`"supernodes":[]`)) {
		t.Fatalf("map JSON %s: supernodes is not an empty array", js)
	}
}

// xmllint validates doc against the ESGF schema and returns its complaint.
func xmllint(t *testing.T, doc []byte) error {
	t.Helper()
	path, err := exec.LookPath("xmllint")
	if err != nil {
		t.Skip("xmllint not on PATH (Debian: apt-get install libxml2-utils); cannot validate registration.xml against the ESGF schema")
	}
	file := filepath.Join(t.TempDir(), "registration.xml")
	if err := os.WriteFile(file, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(path, "--noout", "--schema", filepath.Join("testdata", "registration.xsd"), file).CombinedOutput()
	if err != nil {
		return &xmllintError{string(out)}
	}
	return nil
}

type xmllintError struct{ out string }

func (e *xmllintError) Error() string { return "xmllint: " + e.out }

// esgfMap is a node map with a supernode holding ESGF services and a
// location, a member at a named site, and a bare member.
func esgfMap() NodeMap {
	lat, lon := 53.5679, 9.9735
	joined := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	return NodeMap{
		Federation:  "esgf-test",
		CAHash:      "sha256:" + strings.Repeat("ab", 32),
		Revision:    42,
		GeneratedAt: time.Date(2026, 3, 2, 8, 30, 0, 0, time.UTC),
		Supernodes:  []string{"https://esgf.dkrz.de:7443"},
		Nodes: []Node{
			{
				Name: "dkrz-index", Role: RoleSupernode, Projects: []string{"CMIP6"}, Site: "DKRZ Hamburg",
				Address: "esgf.dkrz.de:7443", Lat: &lat, Lon: &lon, JoinedAt: joined,
				Endpoints: map[string]string{
					"IndexService":   "https://esgf.dkrz.de/esg-search/search",
					"ThreddsService": "https://esgf.dkrz.de/thredds",
					"FrontEnd":       "https://esgf.dkrz.de/",
					// Not an ESGF service: kept in the JSON map only.
					"OODTFileManager": "https://esgf.dkrz.de:9000/",
				},
			},
			{
				Name: "ipsl-data", Role: RoleMember, Projects: []string{"CMIP6", "CORDEX"}, Site: "IPSL",
				Address: "192.0.2.44:7444", JoinedAt: joined,
				Endpoints: map[string]string{
					"ThreddsService": "https://esgf-node.ipsl.upmc.fr/thredds",
					"GridFTPService": "gsiftp://esgf-node.ipsl.upmc.fr:2811/",
				},
			},
			{Name: "bare", Role: RoleStandby, Projects: []string{"obs4MIPs"}, JoinedAt: joined},
		},
	}
}

type parsedRegistration struct {
	XMLName   xml.Name `xml:"http://www.esgf.org/registry Registration"`
	TimeStamp int64    `xml:"timeStamp,attr"`
	Version   string   `xml:"version,attr"`
	Nodes     []struct {
		ShortName   string `xml:"shortName,attr"`
		Hostname    string `xml:"hostname,attr"`
		IP          string `xml:"ip,attr"`
		DN          string `xml:"dn,attr"`
		Org         string `xml:"organization,attr"`
		DefaultPeer string `xml:"defaultPeer,attr"`
		CA          struct {
			Hash     string `xml:"hash,attr"`
			Endpoint string `xml:"endpoint,attr"`
		} `xml:"CA"`
		Geo *struct {
			Lat string `xml:"lat,attr"`
			Lon string `xml:"lon,attr"`
		} `xml:"GeoLocation"`
		Index *struct {
			Endpoint string `xml:"endpoint,attr"`
		} `xml:"IndexService"`
		Thredds *struct {
			Endpoint string `xml:"endpoint,attr"`
		} `xml:"ThreddsService"`
		Manager *struct {
			Endpoint string `xml:"endpoint,attr"`
		} `xml:"NodeManager"`
	} `xml:"Node"`
}

func TestRegistrationXMLValidatesAgainstESGFSchema(t *testing.T) {
	m := esgfMap()
	doc, err := m.RegistrationXML("1.2.3")
	if err != nil {
		t.Fatalf("RegistrationXML: %v", err)
	}
	if err := xmllint(t, doc); err != nil {
		t.Fatalf("registration.xml does not validate: %v\n%s", err, doc)
	}

	var reg parsedRegistration
	if err := xml.Unmarshal(doc, &reg); err != nil {
		t.Fatalf("parse registration.xml: %v", err)
	}
	if reg.Version != "42" || reg.TimeStamp != m.GeneratedAt.UnixMilli() {
		t.Fatalf("Registration version %q timeStamp %d", reg.Version, reg.TimeStamp)
	}
	if len(reg.Nodes) != 3 {
		t.Fatalf("%d Node elements, want 3", len(reg.Nodes))
	}
	super, member, bare := reg.Nodes[0], reg.Nodes[1], reg.Nodes[2]
	if super.ShortName != "dkrz-index" || super.Hostname != "esgf.dkrz.de" || super.Org != "DKRZ Hamburg" {
		t.Errorf("supernode element %+v", super)
	}
	if super.DN != "CN=dkrz-index,OU=supernode,O=esgf-test" || member.DN != "CN=ipsl-data,OU=member,O=esgf-test" {
		t.Errorf("DNs %q, %q", super.DN, member.DN)
	}
	if bare.DN != "CN=bare,OU=supernode,O=esgf-test" {
		t.Errorf("standby DN %q: a standby holds a supernode certificate", bare.DN)
	}
	if super.Geo == nil || super.Geo.Lat != "53.5679" || super.Geo.Lon != "9.9735" {
		t.Errorf("GeoLocation %+v", super.Geo)
	}
	if super.Index == nil || super.Index.Endpoint != "https://esgf.dkrz.de/esg-search/search" {
		t.Errorf("IndexService %+v", super.Index)
	}
	if super.Thredds == nil || super.Thredds.Endpoint != "https://esgf.dkrz.de/thredds" {
		t.Errorf("ThreddsService %+v", super.Thredds)
	}
	if super.Manager == nil || super.Manager.Endpoint != "https://esgf.dkrz.de:7443" {
		t.Errorf("NodeManager %+v", super.Manager)
	}
	if bytes.Contains(doc, []byte("OODTFileManager")) {
		t.Error("a non-ESGF endpoint kind made it into registration.xml")
	}
	if member.IP != "192.0.2.44" || member.Hostname != "192.0.2.44" {
		t.Errorf("member hostname %q ip %q", member.Hostname, member.IP)
	}
	if member.Geo != nil || member.Index != nil {
		t.Errorf("member without location or index got GeoLocation %+v IndexService %+v", member.Geo, member.Index)
	}
	for _, n := range reg.Nodes {
		if n.CA.Hash != m.CAHash || n.CA.Endpoint != "https://esgf.dkrz.de:7443/v1/ca" {
			t.Errorf("node %s CA %+v", n.ShortName, n.CA)
		}
		if n.DefaultPeer != "esgf.dkrz.de" {
			t.Errorf("node %s defaultPeer %q", n.ShortName, n.DefaultPeer)
		}
	}
	if bare.Manager != nil || bare.Geo != nil || bare.Org != "unknown" {
		t.Errorf("bare node %+v", bare)
	}
}

func TestRegistrationXMLFromTheServiceValidates(t *testing.T) {
	e := newEnv(t)
	lat, lon := -33.87, 151.21
	if err := e.svc.Bootstrap(e.ctx, Node{
		Name: "super-a", Role: RoleSupernode, Projects: []string{"CMIP6"}, Site: "NCI", Address: "127.0.0.1:7443",
		Lat: &lat, Lon: &lon,
		Endpoints: map[string]string{"IndexService": "https://nci.example/esg-search", "ThreddsService": "https://nci.example/thredds"},
	}); err != nil {
		t.Fatal(err)
	}
	j := e.joiner("node-1", "CMIP6")
	j.in.Token = e.token("", 1)
	j.in.Profile.Site = `Site with "quotes" & <brackets>`
	j.in.Profile.Endpoints = map[string]string{"ThreddsService": "https://node-1.example/thredds?a=1&b=2"}
	if _, err := e.svc.Join(e.ctx, j.in); err != nil {
		t.Fatal(err)
	}
	bare := e.joiner("node-2", "CMIP6")
	bare.in.Token = e.token("", 1)
	bare.in.Profile = Profile{Project: "CMIP6"}
	if _, err := e.svc.Join(e.ctx, bare.in); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Join(e.ctx, e.joiner("node-3", "CMIP6").in); err != nil { // pending: not exported
		t.Fatal(err)
	}
	m, err := e.svc.NodeMap(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := m.RegistrationXML("dev")
	if err != nil {
		t.Fatal(err)
	}
	if err := xmllint(t, doc); err != nil {
		t.Fatalf("registration.xml does not validate: %v\n%s", err, doc)
	}
	var reg parsedRegistration
	if err := xml.Unmarshal(doc, &reg); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range reg.Nodes {
		names = append(names, n.ShortName)
	}
	if !slices.Equal(names, []string{"node-1", "node-2", "super-a"}) {
		t.Fatalf("exported nodes %v", names)
	}
	if reg.Nodes[0].Org != `Site with "quotes" & <brackets>` {
		t.Fatalf("organization did not survive escaping: %q", reg.Nodes[0].Org)
	}
}

// TestRegistrationSchemaCheckIsNotVacuous makes sure the validation above
// can fail: documents the schema forbids are refused.
func TestRegistrationSchemaCheckIsNotVacuous(t *testing.T) {
	doc, err := esgfMap().RegistrationXML("1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		doc  []byte
	}{
		{"required attribute missing", bytes.Replace(doc, []byte(` hostname="esgf.dkrz.de"`), nil, 1)},
		{"unknown element", bytes.Replace(doc, []byte("<NodeManager "), []byte("<NodeMangler "), 1)},
		{"wrong namespace", bytes.Replace(doc, []byte(RegistryNamespace), []byte("http://example.org/other"), 1)},
		{"non-numeric timeStamp", bytes.Replace(doc, []byte(`timeStamp="`), []byte(`timeStamp="x`), 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if bytes.Equal(tc.doc, doc) {
				t.Fatal("test setup: the document was not changed")
			}
			if err := xmllint(t, tc.doc); err == nil {
				t.Fatalf("xmllint accepted a broken document:\n%s", tc.doc)
			}
		})
	}
}

func TestRegistrationXMLNeedsANode(t *testing.T) {
	m := esgfMap()
	m.Nodes = nil
	if doc, err := m.RegistrationXML("1"); err == nil {
		t.Fatalf("RegistrationXML of an empty map = %s, want an error (the schema needs a Node)", doc)
	}
}
