// Package membership admits nodes to the federation and keeps their
// records: join requests, tokens, node records, sessions and the node map.
//
// Key space (below store.Root):
//
//	federation            Federation: name, CA hash, creation time
//	nodes/<name>          Node: one per admitted node, supernodes included
//	alive/<name>          Session: present while the node holds a live
//	                      session; bound to an etcd lease, so it vanishes
//	                      by itself when the node stops renewing
//	joins/<name>          JoinRequest waiting for an administrator
//	tokens/<sha256 hex>   Token: only the hash of a token is ever stored
package membership

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/fedkeeper/fedkeeper/store"
)

// Key prefixes of the records this package owns.
const (
	keyFederation = store.Root + "federation"
	prefixNodes   = store.Root + "nodes/"
	prefixAlive   = store.Root + "alive/"
	prefixJoins   = store.Root + "joins/"
	prefixTokens  = store.Root + "tokens/"
)

// Federation describes the federation itself.
type Federation struct {
	Name      string    `json:"name"`
	CAHash    string    `json:"ca_hash"`
	CreatedAt time.Time `json:"created_at"`
}

// Role is the part a node plays in the federation.
type Role string

// Node roles.
const (
	RoleSupernode Role = "supernode"
	RoleStandby   Role = "standby"
	RoleMember    Role = "member"
)

// Status is a node's state as the federation sees it.
type Status string

// Node statuses. A node is alive while it holds a session, gone when its
// session has lapsed, pending while its join request awaits approval.
const (
	StatusPending Status = "pending"
	StatusAlive   Status = "alive"
	StatusGone    Status = "gone"
	StatusDenied  Status = "denied"
)

// Node is the federation's record of one node.
type Node struct {
	Name     string   `json:"name"`
	Role     Role     `json:"role"`
	Projects []string `json:"projects"`
	Site     string   `json:"site,omitempty"`
	// Address is HOST:PORT of the node's API: the agent's for a member,
	// the federation API for a supernode.
	Address string `json:"address,omitempty"`
	// Endpoints maps service kinds (ESGF names such as IndexService or
	// ThreddsService) to URLs; they become the node's entries in
	// registration.xml.
	Endpoints map[string]string `json:"endpoints,omitempty"`
	Lat       *float64          `json:"lat,omitempty"`
	Lon       *float64          `json:"lon,omitempty"`
	// PeerURL is a supernode's store peer URL.
	PeerURL      string    `json:"peer_url,omitempty"`
	CertSerial   string    `json:"cert_serial"`
	CertNotAfter time.Time `json:"cert_not_after"`
	// CertPEM is the node's certificate, kept so that a joiner waiting for
	// approval can collect it; certificates are public.
	CertPEM  string    `json:"cert_pem,omitempty"`
	JoinedAt time.Time `json:"joined_at"`
	// Status is derived from the node's session when the record is read;
	// it is never stored.
	Status Status `json:"status,omitempty"`
	// Health is what the supernodes' probes and the node's self-checks
	// make of it (passing, warning, suspect, critical), with the reason;
	// filled in from the health records when the record is shown.
	Health       string `json:"health,omitempty"`
	HealthReason string `json:"health_reason,omitempty"`
}

// Profile is what a node says about itself: when joining, and later to
// update its own record.
type Profile struct {
	Project   string            `json:"project"`
	Site      string            `json:"site,omitempty"`
	Address   string            `json:"address,omitempty"`
	Endpoints map[string]string `json:"endpoints,omitempty"`
	Lat       *float64          `json:"lat,omitempty"`
	Lon       *float64          `json:"lon,omitempty"`
}

// JoinRequest is a node's request to join, kept while it waits for an
// administrator, and for a while after a denial so the node can learn of it.
type JoinRequest struct {
	Name        string    `json:"name"`
	Profile     Profile   `json:"profile"`
	CSR         string    `json:"csr"`
	RequestedAt time.Time `json:"requested_at"`
	Denied      bool      `json:"denied,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	// From is the network address the request came from, shown to the
	// administrator deciding on it.
	From string `json:"from,omitempty"`
}

// Token is a join token as stored: the secret itself is never kept.
type Token struct {
	Project string `json:"project,omitempty"`
	// Supernode is set on tokens that admit a supernode, not a member.
	Supernode *SupernodeGrant `json:"supernode,omitempty"`
	UsesLeft  int             `json:"uses_left"`
	ExpiresAt time.Time       `json:"expires_at"`
	CreatedBy string          `json:"created_by"`
	CreatedAt time.Time       `json:"created_at"`
}

// Session is the value of a node's alive key.
type Session struct {
	Lease int64     `json:"lease"`
	Since time.Time `json:"since"`
	TTL   int64     `json:"ttl_s"`
}

// ErrInvalid marks errors caused by bad input; the API answers them with 400.
var ErrInvalid = errors.New("invalid")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

var (
	nameRE      = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	projectRE   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
	kindRE      = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]{0,63}$`)
	hostLabelRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
)

// ValidateName checks a node name: a DNS label (lowercase letters, digits
// and inner hyphens, at most 63 characters), because node names become DNS
// names and file names.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return invalid("node name %q must be a DNS label: 1-63 lowercase letters, digits or inner hyphens", name)
	}
	return nil
}

// ValidateProject checks a project name (CMIP6, CORDEX, obs4MIPs ...): a DNS
// label in either case.
func ValidateProject(p string) error {
	if !projectRE.MatchString(p) {
		return invalid("project %q must be 1-63 letters, digits or inner hyphens", p)
	}
	return nil
}

// Validate checks everything a node may say about itself.
func (p Profile) Validate() error {
	if err := ValidateProject(p.Project); err != nil {
		return err
	}
	return p.validateDetails()
}

// validateDetails checks everything but the project, which only joining
// sets.
func (p Profile) validateDetails() error {
	if len(p.Site) > 128 || strings.ContainsFunc(p.Site, unprintable) {
		return invalid("site must be at most 128 printable characters")
	}
	if p.Address != "" {
		host, port, err := net.SplitHostPort(p.Address)
		if err != nil || !ValidHost(host) {
			return invalid("address %q must be HOST:PORT", p.Address)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return invalid("address %q has no valid port", p.Address)
		}
	}
	if (p.Lat == nil) != (p.Lon == nil) {
		return invalid("lat and lon must be given together")
	}
	if p.Lat != nil && !(*p.Lat >= -90 && *p.Lat <= 90) { // also refuses NaN
		return invalid("lat %v must be between -90 and 90", *p.Lat)
	}
	if p.Lon != nil && !(*p.Lon >= -180 && *p.Lon <= 180) {
		return invalid("lon %v must be between -180 and 180", *p.Lon)
	}
	if len(p.Endpoints) > 32 {
		return invalid("at most 32 endpoints")
	}
	for kind, u := range p.Endpoints {
		if !kindRE.MatchString(kind) {
			return invalid("endpoint kind %q must be a word of letters and digits", kind)
		}
		if len(u) == 0 || len(u) > 512 || strings.ContainsAny(u, " \"<>") || strings.ContainsFunc(u, unprintable) {
			return invalid("endpoint %s URL %q must be 1-512 printable characters without spaces, quotes or angle brackets", kind, u)
		}
	}
	return nil
}

// unprintable tells the characters a profile may not hold: control
// characters, and those XML cannot carry, since the profile ends up in
// registration.xml.
func unprintable(r rune) bool {
	return r < 0x20 || r == 0x7f || r == 0xfffe || r == 0xffff
}

// ValidHost tells an IP address or a DNS host name: the host of a node's
// address goes into its certificate, which can hold nothing else, and a
// service's address into DNS answers.
func ValidHost(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	if len(h) == 0 || len(h) > 253 {
		return false
	}
	for l := range strings.SplitSeq(h, ".") {
		if !hostLabelRE.MatchString(l) {
			return false
		}
	}
	return true
}

// AliveKey is the key of a node's session: records that must live only as
// long as the session (a node's registered services) are bound to the
// lease held there.
func AliveKey(name string) string { return prefixAlive + name }
