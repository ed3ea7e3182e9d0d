package membership

import (
	"context"
	"encoding/xml"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

// NodeMap is the map of the federation every node can download: who is in
// it, where, and which supernodes to talk to.
type NodeMap struct {
	Federation string `json:"federation"`
	CAHash     string `json:"ca_hash"`
	// Revision is the store revision the map was read at; it only grows.
	Revision    int64     `json:"revision"`
	GeneratedAt time.Time `json:"generated_at"`
	// Supernodes are the API URLs of the supernodes, voters first, then
	// standbys, for clients to fail over between.
	Supernodes []string `json:"supernodes"`
	Nodes      []Node   `json:"nodes"`
	// Links are the supernodes' views of the links between them.
	Links []Link `json:"links"`
}

// NodeMap builds the node map from the admitted nodes (join requests are
// not part of it).
func (s *Service) NodeMap(ctx context.Context) (NodeMap, error) {
	fed, err := s.Federation(ctx)
	if err != nil {
		return NodeMap{}, fmt.Errorf("read federation record: %w", err)
	}
	nodes, rev, err := s.List(ctx)
	if err != nil {
		return NodeMap{}, err
	}
	m := NodeMap{Federation: fed.Name, CAHash: fed.CAHash, Revision: rev, GeneratedAt: time.Now().UTC(), Supernodes: []string{}, Nodes: []Node{}}
	var standbys []string
	for _, n := range nodes {
		if n.Status == StatusPending || n.Status == StatusDenied {
			continue
		}
		// Certificates are public, but the map is downloaded often and
		// does not need them.
		n.CertPEM = ""
		switch {
		case n.Address == "":
		case n.Role == RoleSupernode:
			m.Supernodes = append(m.Supernodes, "https://"+n.Address)
		case n.Role == RoleStandby:
			standbys = append(standbys, "https://"+n.Address)
		}
		m.Nodes = append(m.Nodes, n)
	}
	// Standbys come last: they answer only once promoted.
	m.Supernodes = append(m.Supernodes, standbys...)
	if m.Links, err = s.Links(ctx); err != nil {
		return NodeMap{}, err
	}
	return m, nil
}

// RegistryNamespace is the XML namespace of ESGF's registration.xml.
const RegistryNamespace = "http://www.esgf.org/registry"

// RegistrationVersion is the version of ESGF's registration schema the
// export follows.
const RegistrationVersion = "0.2"

// esgfServices are the endpoint kinds that registration.xml has an element
// for; other endpoint kinds stay in the JSON node map only.
var esgfServices = []string{
	"OpenIDProvider", "FrontEnd", "IndexService", "AttributeService", "AuthorizationService",
	"RegistrationService", "OAIRepository", "ThreddsService", "GridFTPService", "MetricsService",
	"LASService", "MyProxyService", "PublishingService", "RelyingPartyService",
}

type xmlRegistration struct {
	XMLName   xml.Name  `xml:"http://www.esgf.org/registry Registration"`
	TimeStamp int64     `xml:"timeStamp,attr"`
	Version   string    `xml:"version,attr"`
	Nodes     []xmlNode `xml:"Node"`
}

type xmlNode struct {
	Organization  string `xml:"organization,attr"`
	Namespace     string `xml:"namespace,attr"`
	NodePeerGroup string `xml:"nodePeerGroup,attr"`
	Hostname      string `xml:"hostname,attr"`
	IP            string `xml:"ip,attr"`
	DN            string `xml:"dn,attr"`
	ShortName     string `xml:"shortName,attr"`
	LongName      string `xml:"longName,attr,omitempty"`
	TimeStamp     int64  `xml:"timeStamp,attr"`
	Version       string `xml:"version,attr"`
	NodeType      string `xml:"nodeType,attr,omitempty"`
	AdminPeer     string `xml:"adminPeer,attr,omitempty"`
	DefaultPeer   string `xml:"defaultPeer,attr"`

	CA          *xmlCA          `xml:"CA"`
	GeoLocation *xmlGeo         `xml:"GeoLocation"`
	NodeManager *xmlEndpoint    `xml:"NodeManager"`
	Services    []xmlServiceElt `xml:",any"`
}

type xmlCA struct {
	Endpoint string `xml:"endpoint,attr"`
	Hash     string `xml:"hash,attr"`
}

type xmlGeo struct {
	Endpoint string `xml:"endpoint,attr"`
	Lat      string `xml:"lat,attr"`
	Lon      string `xml:"lon,attr"`
}

type xmlEndpoint struct {
	Endpoint string `xml:"endpoint,attr"`
}

type xmlServiceElt struct {
	XMLName  xml.Name
	Endpoint string `xml:"endpoint,attr"`
}

// RegistrationXML renders the node map as ESGF's registration.xml
// (schema version 0.2). The mapping is documented in docs/api.md.
func (m NodeMap) RegistrationXML(version string) ([]byte, error) {
	defaultPeer := ""
	if len(m.Supernodes) > 0 {
		defaultPeer = HostOf(strings.TrimPrefix(m.Supernodes[0], "https://"))
	}
	caEndpoint := ""
	if len(m.Supernodes) > 0 {
		caEndpoint = m.Supernodes[0] + "/v1/ca"
	}
	reg := xmlRegistration{TimeStamp: m.GeneratedAt.UnixMilli(), Version: strconv.FormatInt(m.Revision, 10)}
	for _, n := range m.Nodes {
		host := HostOf(n.Address)
		ip := ""
		if net.ParseIP(host) != nil {
			ip = host
		}
		org := n.Site
		if org == "" {
			org = "unknown"
		}
		x := xmlNode{
			Organization:  org,
			Namespace:     "org." + m.Federation + "." + strings.ToLower(strings.Join(strings.Fields(org), "-")),
			NodePeerGroup: m.Federation,
			Hostname:      host,
			IP:            ip,
			DN:            fmt.Sprintf("CN=%s,OU=%s,O=%s", n.Name, pkiRole(n.Role), m.Federation),
			ShortName:     n.Name,
			LongName:      n.Name + " (" + org + ")",
			TimeStamp:     n.JoinedAt.UnixMilli(),
			Version:       version,
			NodeType:      string(n.Role),
			AdminPeer:     defaultPeer,
			DefaultPeer:   defaultPeer,
			CA:            &xmlCA{Endpoint: caEndpoint, Hash: m.CAHash},
		}
		if n.Address != "" {
			x.NodeManager = &xmlEndpoint{Endpoint: "https://" + n.Address}
		}
		if n.Lat != nil && n.Lon != nil {
			x.GeoLocation = &xmlGeo{
				Lat: strconv.FormatFloat(*n.Lat, 'f', -1, 64),
				Lon: strconv.FormatFloat(*n.Lon, 'f', -1, 64),
			}
		}
		for _, kind := range esgfServices {
			if u, ok := n.Endpoints[kind]; ok {
				x.Services = append(x.Services, xmlServiceElt{XMLName: xml.Name{Local: kind}, Endpoint: u})
			}
		}
		reg.Nodes = append(reg.Nodes, x)
	}
	if len(reg.Nodes) == 0 {
		return nil, fmt.Errorf("registration.xml needs at least one node")
	}
	out, err := xml.MarshalIndent(reg, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("render registration.xml: %w", err)
	}
	return append([]byte(xml.Header), append(out, '\n')...), nil
}

// pkiRole is the role written in a node's certificate.
func pkiRole(r Role) string {
	if slices.Contains([]Role{RoleSupernode, RoleStandby}, r) {
		return "supernode"
	}
	return "member"
}

// HostOf is the host part of a HOST:PORT address, or addr itself when it
// has no port.
func HostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}
