// Package services is the federation's service registry: the services
// each node runs (an index, a THREDDS server, an OpenID provider), where
// they listen and whether their own checks pass, so that components can
// look each other up and the nameserver can send clients to an instance
// that works.
//
// Key space (below store.Root):
//
//	services/<node>/<id>   Instance, bound to the node's session lease: an
//	                       instance lives exactly as long as the session of
//	                       the agent that registered it
//
// An agent owns the whole set of its node's instances and replaces it in
// one transaction whenever it changes (a registration, a deregistration, a
// check that changes status) and whenever its session is opened anew.
package services

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/fedkeeper/fedkeeper/health"
	"github.com/fedkeeper/fedkeeper/membership"
	"github.com/fedkeeper/fedkeeper/store"
)

const prefix = store.Root + "services/"

func key(node, id string) string { return prefix + node + "/" + id }

// Protocols an instance may speak.
const (
	ProtocolTCP   = "tcp"
	ProtocolUDP   = "udp"
	ProtocolHTTP  = "http"
	ProtocolHTTPS = "https"
)

var protocols = []string{ProtocolTCP, ProtocolUDP, ProtocolHTTP, ProtocolHTTPS}

// Limits of what one node may register.
const (
	MaxPerNode = 64
	maxTags    = 16
	maxPath    = 512
)

// ErrInvalid marks errors caused by a bad registration.
var ErrInvalid = errors.New("invalid")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// Registration is a service instance as an agent declares it, in its
// configuration file or through its local API.
type Registration struct {
	// ID names the instance on its node; it defaults to Name, so a node
	// that runs one instance of a service needs none.
	ID string `yaml:"id,omitempty" json:"id,omitempty"`
	// Name is the service's name, shared by its instances on every node:
	// a DNS label, since clients look it up as NAME.service.DOMAIN.
	Name string `yaml:"name" json:"name"`
	// Project defaults to the node's project.
	Project string `yaml:"project,omitempty" json:"project,omitempty"`
	// Address is an IP address or host name; it defaults to the host of
	// the node's own address. Only IP addresses are answered in A and
	// AAAA records.
	Address  string   `yaml:"address,omitempty" json:"address,omitempty"`
	Port     int      `yaml:"port" json:"port"`
	Protocol string   `yaml:"protocol,omitempty" json:"protocol,omitempty"`
	Path     string   `yaml:"path,omitempty" json:"path,omitempty"`
	Tags     []string `yaml:"tags,omitempty" json:"tags,omitempty"`
	// Checks are the service's own checks, run by the agent; the instance
	// is as healthy as its worst check and its node.
	Checks []health.CheckConfig `yaml:"checks,omitempty" json:"checks,omitempty"`
}

var labelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// WithDefaults fills in ID, Project (from the node's project) and
// Protocol.
func (r Registration) WithDefaults(project string) Registration {
	if r.ID == "" {
		r.ID = r.Name
	}
	if r.Project == "" {
		r.Project = project
	}
	if r.Protocol == "" {
		r.Protocol = ProtocolTCP
	}
	return r
}

// Validate checks a registration after WithDefaults; every error names the
// instance and the field.
func (r Registration) Validate() error {
	label := fmt.Sprintf("service %q", r.ID)
	if !labelRE.MatchString(r.Name) {
		return invalid("%s: name %q must be a DNS label: 1-63 lowercase letters, digits or inner hyphens", label, r.Name)
	}
	if !labelRE.MatchString(r.ID) {
		return invalid("%s: id must be a DNS label: 1-63 lowercase letters, digits or inner hyphens", label)
	}
	if err := membership.ValidateProject(r.Project); err != nil {
		return fmt.Errorf("%s: %w", label, err)
	}
	if r.Address != "" && !membership.ValidHost(r.Address) {
		return invalid("%s: address %q is neither an IP address nor a host name", label, r.Address)
	}
	if r.Port < 1 || r.Port > 65535 {
		return invalid("%s: port %d must be between 1 and 65535", label, r.Port)
	}
	if !slices.Contains(protocols, r.Protocol) {
		return invalid("%s: protocol %q must be one of %s", label, r.Protocol, strings.Join(protocols, ", "))
	}
	if len(r.Path) > maxPath || (r.Path != "" && !strings.HasPrefix(r.Path, "/")) ||
		strings.ContainsFunc(r.Path, func(c rune) bool { return c <= ' ' || c == 0x7f || strings.ContainsRune("\"<>\\", c) }) {
		return invalid("%s: path must start with / and be at most %d characters without spaces, quotes or angle brackets", label, maxPath)
	}
	// The path ends the instance's URL, which clients must be able to read.
	if r.Path != "" {
		if _, err := url.ParseRequestURI(r.Path); err != nil {
			return invalid("%s: path %q does not make a URL: %v", label, r.Path, err)
		}
	}
	if len(r.Tags) > maxTags {
		return invalid("%s: at most %d tags", label, maxTags)
	}
	for _, t := range r.Tags {
		if !labelRE.MatchString(t) {
			return invalid("%s: tag %q must be a DNS label: 1-63 lowercase letters, digits or inner hyphens", label, t)
		}
	}
	if err := health.ValidateChecks(r.Checks); err != nil {
		return fmt.Errorf("%s: %w", label, err)
	}
	return nil
}

// ValidateSet validates the registrations of one node: each one, their
// number, and that no two share an ID.
func ValidateSet(regs []Registration) error {
	if len(regs) > MaxPerNode {
		return invalid("a node may register at most %d services, got %d", MaxPerNode, len(regs))
	}
	seen := map[string]bool{}
	for _, r := range regs {
		if err := r.Validate(); err != nil {
			return err
		}
		if seen[r.ID] {
			return invalid("service id %q is registered twice", r.ID)
		}
		seen[r.ID] = true
	}
	return nil
}

// Instance is a registered instance as the registry stores it.
type Instance struct {
	Node     string   `json:"node"`
	ID       string   `json:"id"`
	Name     string   `json:"name"`
	Project  string   `json:"project"`
	Address  string   `json:"address,omitempty"`
	Port     int      `json:"port"`
	Protocol string   `json:"protocol"`
	Path     string   `json:"path,omitempty"`
	Tags     []string `json:"tags,omitempty"`
	// Checks is the status of the instance's own checks as its agent last
	// reported it; Output says what fails.
	Checks health.Status `json:"checks"`
	Output string        `json:"output,omitempty"`
	// Since is when the agent last changed the instance.
	Since time.Time `json:"since"`
}

// Report is an agent's word on one of its instances: the registration
// with the status of its checks.
type Report struct {
	Registration
	Status health.Status `json:"status"`
	Output string        `json:"output,omitempty"`
}

// instance turns a validated report of node into its stored form.
func (r Report) instance(node string, now time.Time) Instance {
	return Instance{
		Node: node, ID: r.ID, Name: r.Name, Project: r.Project, Address: r.Address, Port: r.Port,
		Protocol: r.Protocol, Path: r.Path, Tags: r.Tags, Checks: r.Status, Output: health.CutOutput(r.Output), Since: now,
	}
}

// Entry is an instance as a reader sees it: with the health of its node
// and the two combined.
type Entry struct {
	Instance
	// Host is Address, or the host of the node's address when the
	// instance has none.
	Host string `json:"host"`
	// NodeHealth is the node's status as the supernodes' probes see it,
	// empty until the first probe.
	NodeHealth health.Status `json:"node_health,omitempty"`
	// Status is the worse of the instance's checks and its node's health:
	// passing, warning or critical (a suspect node counts as critical).
	Status health.Status `json:"status"`
	// URL is where a client reaches the instance, for http and https.
	URL string `json:"url,omitempty"`
}

// Serving tells whether clients should be sent to the entry: a warning is
// a degraded instance that still serves, as it is for a node.
func (e Entry) Serving() bool { return e.Status != health.Critical }

// status combines an instance's own checks with its node's health.
func status(checks, node health.Status) health.Status {
	s := checks
	if node != "" {
		s = health.Worse(s, node)
	}
	if s != health.Passing && s != health.Warning {
		return health.Critical
	}
	return s
}

// url is the address of an http or https instance.
func (e Entry) url() string {
	if e.Protocol != ProtocolHTTP && e.Protocol != ProtocolHTTPS || e.Host == "" {
		return ""
	}
	return e.Protocol + "://" + net.JoinHostPort(e.Host, fmt.Sprint(e.Port)) + e.Path
}

// esgfKinds maps service names to the elements of ESGF's registration.xml
// they stand for, so that a node's registered services appear there.
var esgfKinds = map[string]string{
	"openid":        "OpenIDProvider",
	"frontend":      "FrontEnd",
	"index":         "IndexService",
	"attribute":     "AttributeService",
	"authorization": "AuthorizationService",
	"registration":  "RegistrationService",
	"oai":           "OAIRepository",
	"thredds":       "ThreddsService",
	"gridftp":       "GridFTPService",
	"metrics":       "MetricsService",
	"las":           "LASService",
	"myproxy":       "MyProxyService",
	"publishing":    "PublishingService",
	"relying-party": "RelyingPartyService",
}

// ESGFKind is the registration.xml element a service name stands for.
func ESGFKind(name string) (string, bool) {
	k, ok := esgfKinds[name]
	return k, ok
}
