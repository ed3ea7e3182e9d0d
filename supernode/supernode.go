// Package supernode wires a supernode together: the embedded store, the
// membership service and the HTTPS API, all under one data directory.
//
// Data directory layout:
//
//	supernode.yaml          configuration (see Config)
//	pki/ca.crt, ca.key      federation CA
//	pki/supernode.crt,.key  this supernode's API certificate
//	pki/store-ca.crt,.key   store CA (a sub-CA only supernodes hold)
//	pki/store.crt,.key      this supernode's store peer/client certificate
//	store/                  the embedded store's data
//	admin.creds             the first administrator's credentials
package supernode

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/fedkeeper/fedkeeper/api"
	"github.com/fedkeeper/fedkeeper/client"
	"github.com/fedkeeper/fedkeeper/configsync"
	"github.com/fedkeeper/fedkeeper/coord"
	"github.com/fedkeeper/fedkeeper/events"
	"github.com/fedkeeper/fedkeeper/health"
	"github.com/fedkeeper/fedkeeper/internal/atomicfile"
	"github.com/fedkeeper/fedkeeper/internal/wait"
	"github.com/fedkeeper/fedkeeper/kv"
	"github.com/fedkeeper/fedkeeper/membership"
	"github.com/fedkeeper/fedkeeper/metrics"
	"github.com/fedkeeper/fedkeeper/nameserver"
	"github.com/fedkeeper/fedkeeper/pki"
	"github.com/fedkeeper/fedkeeper/quorum"
	"github.com/fedkeeper/fedkeeper/services"
	"github.com/fedkeeper/fedkeeper/store"
)

// Config is a supernode's configuration file. Durations are written as Go
// durations ("15s"); zero means the documented default.
type Config struct {
	Name       string `yaml:"name"`
	Federation string `yaml:"federation"`
	Site       string `yaml:"site,omitempty"`
	// Listen is HOST:PORT of the federation API.
	Listen string `yaml:"listen"`
	// Advertise is HOST:PORT that others use to reach the API, when it
	// differs from Listen (a wildcard listen address, NAT).
	Advertise string `yaml:"advertise,omitempty"`
	// PeerListen is HOST:PORT of the store's peer traffic.
	PeerListen string `yaml:"peer_listen"`
	// StoreListen is HOST:PORT of the store's client port: loopback by
	// default, because fedkeeper itself needs none.
	StoreListen string `yaml:"store_listen"`

	// InitialCluster lists the store's members (NAME=PEERURL,...) for the
	// first start of a supernode that joined an existing federation.
	InitialCluster string `yaml:"initial_cluster,omitempty"`

	// Projects this supernode serves: its members are probed by it. Empty
	// serves every project that has no supernode of its own.
	Projects []string `yaml:"projects,omitempty"`

	// Quorum tunes health checks of supernodes and the autopilot.
	Quorum quorum.Config `yaml:"quorum,omitempty"`
	// Health tunes how members are probed.
	Health health.ProbeConfig `yaml:"health,omitempty"`
	// Events bounds the event log.
	Events EventsConfig `yaml:"events,omitempty"`
	// DNS configures the nameserver.
	DNS DNSConfig `yaml:"dns,omitempty"`
	// MetricsInterval is how often each member's metrics are scraped.
	MetricsInterval time.Duration `yaml:"metrics_interval,omitempty"`

	SessionTTL        time.Duration `yaml:"session_ttl,omitempty"`
	RequestTimeout    time.Duration `yaml:"request_timeout,omitempty"`
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval,omitempty"`
	ElectionTimeout   time.Duration `yaml:"election_timeout,omitempty"`
}

// EventsConfig bounds the event log; zero values mean the defaults.
type EventsConfig struct {
	MaxAge   time.Duration `yaml:"max_age,omitempty"`
	MaxCount int           `yaml:"max_count,omitempty"`
}

// DNSConfig configures the nameserver every supernode runs: the
// federation's health-aware DNS load balancer.
type DNSConfig struct {
	// Listen is HOST:PORT for UDP and TCP; the API's host and port + 3
	// by default. Port 53 is what resolvers delegated to it expect.
	Listen string `yaml:"listen,omitempty"`
	// Domain is the zone the nameserver answers for (DefaultDNSDomain);
	// delegate it, e.g. fed.example.org., to the supernodes.
	Domain string `yaml:"domain,omitempty"`
	// TTL of answers and of negative answers (DefaultDNSTTL): short, so
	// that clients look up again soon after an instance fails.
	TTL time.Duration `yaml:"ttl,omitempty"`
}

// DNS defaults.
const (
	DefaultDNSDomain = "fedkeeper."
	DefaultDNSTTL    = 5 * time.Second
)

// validate checks what fillDefaults does not: timings and addresses.
func (c Config) validate() error {
	if err := c.Health.Validate(); err != nil {
		return err
	}
	for _, p := range c.Projects {
		if err := membership.ValidateProject(p); err != nil {
			return fmt.Errorf("projects: %w", err)
		}
	}
	if c.Events.MaxAge < 0 || c.Events.MaxCount < 0 {
		return errors.New("events: max_age and max_count must not be negative")
	}
	if c.SessionTTL != 0 && c.SessionTTL < 3*time.Second {
		return fmt.Errorf("session_ttl %s is too short: at least 3s (nodes renew every third of it)", c.SessionTTL)
	}
	if c.RequestTimeout != 0 && c.RequestTimeout < 100*time.Millisecond {
		return fmt.Errorf("request_timeout %s is too short: at least 100ms", c.RequestTimeout)
	}
	if c.DNS.TTL < 0 || c.DNS.TTL%time.Second != 0 {
		return fmt.Errorf("dns ttl %s must be whole seconds, not negative", c.DNS.TTL)
	}
	// The nameserver is made only once the store runs: a domain it
	// refuses would stop the supernode only then, after Init wrote it.
	if err := (nameserver.Config{Domain: c.DNS.Domain, TTL: c.DNS.TTL}).Validate(); err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	q := c.Quorum
	if q.ProbeInterval < 0 || q.DeadAfter < 0 || q.TargetVoters < 0 {
		return errors.New("quorum timings and target_voters must not be negative")
	}
	if q.DeadAfter != 0 && q.DeadAfter < 3*max(q.ProbeInterval, quorum.DefaultProbeInterval) {
		return fmt.Errorf("quorum dead_after %s is too short: at least three probe intervals", q.DeadAfter)
	}
	if host, _, err := net.SplitHostPort(c.Listen); err == nil && c.Advertise == "" {
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			return fmt.Errorf("listen address %q is a wildcard: give --advertise HOST:PORT, the address others reach this supernode at", c.Listen)
		}
	}
	return nil
}

func (c Config) peerURL() string { return "https://" + c.PeerListen }

func (c Config) advertise() string {
	if c.Advertise != "" {
		return c.Advertise
	}
	return c.Listen
}

// File names inside the data directory.
const (
	configFile = "supernode.yaml"
	// CredentialsFile is the administrator credentials file init writes.
	CredentialsFile = "admin.creds"
)

func pkiPath(dir, name string) string { return filepath.Join(dir, "pki", name) }

func storeDir(dir string) string { return filepath.Join(dir, "store") }

// loadAuthority reads the federation CA and the store CA of a supernode.
func loadAuthority(dir string) (quorum.Authority, error) {
	ca, err := pki.LoadCA(pkiPath(dir, "ca.crt"), pkiPath(dir, "ca.key"))
	if err != nil {
		return quorum.Authority{}, err
	}
	storeCA, err := pki.LoadCA(pkiPath(dir, "store-ca.crt"), pkiPath(dir, "store-ca.key"))
	if err != nil {
		return quorum.Authority{}, err
	}
	return quorum.Authority{CA: ca, StoreCA: storeCA}, nil
}

// InitResult is what init reports to the operator.
type InitResult struct {
	CAHash          string
	CredentialsFile string
	APIURL          string
}

// Init creates a new federation whose first supernode keeps its data in
// dir. It refuses a directory that already holds a supernode.
func Init(dir string, cfg Config) (InitResult, error) {
	if err := membership.ValidateName(cfg.Name); err != nil {
		return InitResult{}, fmt.Errorf("supernode name: %w", err)
	}
	if cfg.Federation == "" {
		cfg.Federation = "fedkeeper"
	}
	if err := membership.ValidateProject(cfg.Federation); err != nil {
		return InitResult{}, fmt.Errorf("federation name: %w", err)
	}
	if err := fillDefaults(&cfg); err != nil {
		return InitResult{}, err
	}
	if err := cfg.validate(); err != nil {
		return InitResult{}, err
	}
	if _, err := os.Stat(filepath.Join(dir, configFile)); err == nil {
		return InitResult{}, fmt.Errorf("%s already holds a supernode (%s exists); choose another --data-dir", dir, configFile)
	}
	if err := os.MkdirAll(filepath.Join(dir, "pki"), 0o700); err != nil {
		return InitResult{}, fmt.Errorf("create data directory: %w", err)
	}
	ca, err := pki.NewCA(cfg.Federation)
	if err != nil {
		return InitResult{}, err
	}
	if err := pki.SaveKeyPair(pkiPath(dir, "ca.crt"), pkiPath(dir, "ca.key"), ca.Cert, ca.Key); err != nil {
		return InitResult{}, err
	}
	storeCA, err := ca.NewSubCA("store")
	if err != nil {
		return InitResult{}, err
	}
	if err := pki.SaveKeyPair(pkiPath(dir, "store-ca.crt"), pkiPath(dir, "store-ca.key"), storeCA.Cert, storeCA.Key); err != nil {
		return InitResult{}, err
	}
	admin, err := ca.Issue(pki.Request{Name: "admin", Role: pki.RoleAdmin})
	if err != nil {
		return InitResult{}, err
	}
	adminKey, err := pki.EncodeKey(admin.Key)
	if err != nil {
		return InitResult{}, err
	}
	apiURL := "https://" + cfg.advertise()
	creds := client.Credentials{
		Servers: []string{apiURL},
		CA:      string(ca.CertPEM()),
		Cert:    string(pki.EncodeCert(admin.Cert.Raw)),
		Key:     string(adminKey),
	}
	credsPath := filepath.Join(dir, CredentialsFile)
	if err := creds.Save(credsPath); err != nil {
		return InitResult{}, err
	}
	// The configuration goes last: its presence marks a complete init.
	if err := saveConfig(dir, cfg); err != nil {
		return InitResult{}, err
	}
	return InitResult{CAHash: ca.Hash(), CredentialsFile: credsPath, APIURL: apiURL}, nil
}

func saveConfig(dir string, cfg Config) error {
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("encode configuration: %w", err)
	}
	return atomicfile.Write(filepath.Join(dir, configFile), b, 0o600)
}

// InitLoopback is Init with free loopback ports for whichever of the API,
// peer, store and nameserver addresses cfg leaves empty: for dev mode,
// benchmarks and tests.
func InitLoopback(dir string, cfg Config) (InitResult, error) {
	for _, addr := range []*string{&cfg.Listen, &cfg.PeerListen, &cfg.StoreListen, &cfg.DNS.Listen} {
		if *addr != "" {
			continue
		}
		free, err := FreeLoopbackPort()
		if err != nil {
			return InitResult{}, err
		}
		*addr = free
	}
	return Init(dir, cfg)
}

// FreeLoopbackPort finds a 127.0.0.1 port free for both TCP and UDP, as a
// nameserver needs.
func FreeLoopbackPort() (string, error) {
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", fmt.Errorf("find a free loopback port: %w", err)
		}
		addr := ln.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err == nil {
			pc.Close()
			return addr, nil
		}
	}
	return "", errors.New("find a free loopback port: none free for both TCP and UDP")
}

// fillDefaults fills in the nameserver's zone and TTL, and the store's
// and the nameserver's addresses next to the API's: the peer port is the API port + 1 on the same host, the store
// client port the API port + 2 on loopback (on the API's own address when
// that is a loopback one, so that several supernodes can share a machine
// in tests), the nameserver the API port + 3 on the API's host.
func fillDefaults(cfg *Config) error {
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen address %q must be HOST:PORT: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65532 {
		return fmt.Errorf("listen address %q needs a port from 1 to 65532", cfg.Listen)
	}
	if cfg.PeerListen == "" {
		cfg.PeerListen = net.JoinHostPort(host, strconv.Itoa(port+1))
	}
	if cfg.StoreListen == "" {
		loopback := "127.0.0.1"
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			loopback = host
		}
		cfg.StoreListen = net.JoinHostPort(loopback, strconv.Itoa(port+2))
	}
	if cfg.DNS.Listen == "" {
		cfg.DNS.Listen = net.JoinHostPort(host, strconv.Itoa(port+3))
	}
	if cfg.DNS.Domain == "" {
		cfg.DNS.Domain = DefaultDNSDomain
	}
	if cfg.DNS.TTL == 0 {
		cfg.DNS.TTL = DefaultDNSTTL
	}
	return nil
}

// LoadConfig reads the supernode configuration in dir.
func LoadConfig(dir string) (Config, error) {
	var cfg Config
	b, err := os.ReadFile(filepath.Join(dir, configFile))
	if errors.Is(err, os.ErrNotExist) {
		return cfg, fmt.Errorf("%s holds no supernode; run fedkeeper init first", dir)
	}
	if err != nil {
		return cfg, fmt.Errorf("read supernode configuration: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return cfg, fmt.Errorf("%s: %w", filepath.Join(dir, configFile), err)
	}
	if err := membership.ValidateName(cfg.Name); err != nil {
		return cfg, fmt.Errorf("%s: name: %w", configFile, err)
	}
	if err := fillDefaults(&cfg); err != nil {
		return cfg, fmt.Errorf("%s: %w", configFile, err)
	}
	if err := cfg.validate(); err != nil {
		return cfg, fmt.Errorf("%s: %w", configFile, err)
	}
	return cfg, nil
}

// hostsFor lists the names a certificate for these addresses must carry.
func hostsFor(addrs ...string) []string {
	hosts := []string{"localhost", "127.0.0.1"}
	for _, a := range addrs {
		if h, _, err := net.SplitHostPort(a); err == nil && h != "" && h != "0.0.0.0" && h != "::" {
			hosts = append(hosts, h)
		}
	}
	if hn, err := os.Hostname(); err == nil {
		hosts = append(hosts, hn)
	}
	return hosts
}

// ensureCert reissues this supernode's certificate for role unless a valid
// one for the same names is on disk. A supernode holds the CA, so it signs
// its own; reissuing on start follows address changes in the config.
func ensureCert(ca *pki.CA, certFile, keyFile string, req pki.Request) (*pki.KeyPair, error) {
	if kp, err := pki.LoadKeyPair(certFile, keyFile); err == nil && time.Until(kp.Cert.NotAfter) > 30*24*time.Hour {
		if err := kp.Cert.CheckSignatureFrom(ca.Cert); err == nil && coversHosts(kp, req.Hosts) {
			return kp, nil
		}
	}
	kp, err := ca.Issue(req)
	if err != nil {
		return nil, err
	}
	if err := pki.SaveKeyPair(certFile, keyFile, kp.Cert, kp.Key); err != nil {
		return nil, err
	}
	return kp, nil
}

func coversHosts(kp *pki.KeyPair, hosts []string) bool {
	for _, h := range hosts {
		if kp.Cert.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

// Supernode is a running supernode.
type Supernode struct {
	Config  Config
	Store   *store.Store
	Members *membership.Service
	Quorum  *quorum.Service
	Prober  *health.Prober
	CA      *pki.CA
	// DNS is the nameserver; DNS.Addr() is where it listens.
	DNS *nameserver.Server

	dir  string
	log  *slog.Logger
	srv  *http.Server
	ctx  context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup
	errc chan error
}

// Start runs the supernode in dir until Close.
func Start(ctx context.Context, dir string) (*Supernode, error) {
	cfg, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	auth, err := loadAuthority(dir)
	if err != nil {
		return nil, err
	}
	apiCert, err := ensureCert(auth.CA, pkiPath(dir, "supernode.crt"), pkiPath(dir, "supernode.key"),
		pki.Request{Name: cfg.Name, Role: pki.RoleSupernode, Hosts: hostsFor(cfg.Listen, cfg.advertise())})
	if err != nil {
		return nil, fmt.Errorf("supernode certificate: %w", err)
	}
	if _, err := ensureCert(auth.StoreCA, pkiPath(dir, "store.crt"), pkiPath(dir, "store.key"),
		pki.Request{Name: cfg.Name, Role: pki.RoleSupernode, Hosts: hostsFor(cfg.PeerListen, cfg.StoreListen)}); err != nil {
		return nil, fmt.Errorf("store certificate: %w", err)
	}
	log := slog.Default().With("supernode", cfg.Name)
	peers := newPeerClient(dir, cfg, apiCert, auth.CA.Cert)
	initial, err := rejoinIfRemoved(ctx, dir, cfg, peers, log)
	if err != nil {
		return nil, err
	}
	st, err := store.Start(ctx, store.Config{
		Name:              cfg.Name,
		Dir:               storeDir(dir),
		PeerURL:           cfg.peerURL(),
		ClientURL:         "https://" + cfg.StoreListen,
		CertFile:          pkiPath(dir, "store.crt"),
		KeyFile:           pkiPath(dir, "store.key"),
		CAFile:            pkiPath(dir, "store-ca.crt"),
		InitialCluster:    initial,
		HeartbeatInterval: cfg.HeartbeatInterval,
		ElectionTimeout:   cfg.ElectionTimeout,
	})
	if err != nil {
		return nil, err
	}
	members := membership.New(st.Client, auth.CA)
	if cfg.SessionTTL > 0 {
		members.SessionTTL = cfg.SessionTTL
	}
	evlog := events.New(st.Client)
	members.Events, members.Self, members.RenewLease = evlog, cfg.Name, st.RenewLease
	q := quorum.New(cfg.Name, st, members, evlog, cfg.Quorum, pki.APIClientTLS(apiCert, auth.CA.Cert))

	runCtx, stop := context.WithCancel(context.Background())
	nodes := members.Cache(runCtx)
	prober := health.NewProber(cfg.Name, st.Client, nodes, q.Healthy, evlog, probeClient(apiCert, auth.CA.Cert), cfg.Health)
	reg, sm := metrics.NewSupernodeRegistry()
	view := services.NewView(runCtx, st.Client, nodes, log)
	ns, err := nameserver.New(nameserver.Config{
		Domain: cfg.DNS.Domain, TTL: cfg.DNS.TTL, Log: log,
		OnQuery: func(rcode string) { sm.DNSQueriesTotal.WithLabelValues(rcode).Inc() },
	}, view)
	if err != nil {
		stop()
		st.Close()
		return nil, fmt.Errorf("dns: %w", err)
	}
	if err := ns.Start(runCtx, cfg.DNS.Listen); err != nil {
		stop()
		st.Close()
		return nil, fmt.Errorf("start the nameserver on %s: %w", cfg.DNS.Listen, err)
	}
	scraper := metrics.NewScraper(metrics.NewHistory(metricsHistory, metricsMaxAge), cfg.metricsInterval())
	instrument(prober, scraper, sm)

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		stop()
		ns.Close()
		st.Close()
		return nil, fmt.Errorf("listen for the API on %s: %w", cfg.Listen, err)
	}
	srv := &http.Server{
		Handler: (&api.Server{
			Name: cfg.Name, Members: members, CA: auth.CA, Log: log, RequestTimeout: cfg.RequestTimeout,
			Quorum: q, Prober: prober, Authority: auth, Store: st, Events: evlog, KV: kv.New(st.Client),
			Metrics: metrics.Handler(reg), History: scraper.History, PeerClient: probeClient(apiCert, auth.CA.Cert),
			Config: configsync.New(st.Client), Services: services.NewRegistry(st.Client), ServiceView: view,
			Coord: coord.New(st.Client),
		}).Handler(),
		TLSConfig:         pki.ServerTLS(apiCert, auth.CA.Cert),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	sn := &Supernode{Config: cfg, Store: st, Members: members, Quorum: q, Prober: prober, CA: auth.CA, DNS: ns, dir: dir, log: log, srv: srv, ctx: runCtx, stop: stop, errc: make(chan error, 3)}
	go func() {
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			sn.errc <- fmt.Errorf("API server: %w", err)
		}
	}()
	self := membership.Node{
		Name: cfg.Name, Role: membership.RoleSupernode, Projects: append([]string{}, cfg.Projects...), Site: cfg.Site,
		Address: cfg.advertise(), PeerURL: cfg.peerURL(),
		CertSerial: pki.SerialHex(apiCert.Cert), CertNotAfter: apiCert.Cert.NotAfter.UTC(),
		CertPEM: string(pki.EncodeCert(apiCert.Cert.Raw)),
	}
	// The first supernode records the federation before it serves; one
	// that joined may still be catching up, so it keeps trying.
	if initial == "" && cfg.InitialCluster == "" {
		if err := members.Bootstrap(ctx, self); err != nil {
			sn.Close()
			return nil, err
		}
		if err := recordAuthority(ctx, st.Client, auth); err != nil {
			sn.Close()
			return nil, err
		}
	}
	sn.goRun(func(ctx context.Context) {
		retry(ctx, log, "record this supernode", func() error { return members.Bootstrap(ctx, self) })
	})
	sn.goRun(q.Run)
	sn.goRun(prober.Run)
	sn.goRun(func(ctx context.Context) {
		for wait.Sleep(ctx, time.Second) {
			hasLeader := st.Status().LeaderID != 0
			sm.StoreHasLeader.Set(boolGauge(hasLeader))
			// The nameserver answers from its view either way; without a
			// leader that view may be behind.
			sm.DNSStale.Set(boolGauge(!hasLeader))
		}
	})
	sn.goRun(func(ctx context.Context) { housekeeping(ctx, q, evlog, prober, cfg.Events, log) })
	sn.goRun(func(ctx context.Context) { sn.holdSession(ctx, peers) })
	sn.goRun(func(ctx context.Context) { peers.follow(ctx, members) })
	sn.goRun(func(ctx context.Context) {
		select {
		case err := <-st.Err():
			sn.errc <- fmt.Errorf("store failed: %w", err)
		case <-st.Stopped():
			sn.errc <- errors.New("the store stopped (removed from the federation's store?); restart to rejoin as a standby")
		case <-ctx.Done():
		}
	})
	log.Info("supernode running", "api", sn.URL(), "federation", auth.CA.Federation(), "ca_hash", auth.CA.Hash())
	return sn, nil
}

// goRun runs fn until the supernode closes.
func (sn *Supernode) goRun(fn func(ctx context.Context)) {
	sn.wg.Go(func() { fn(sn.ctx) })
}

// retry calls fn until it succeeds or ctx ends.
func retry(ctx context.Context, log *slog.Logger, what string, fn func() error) {
	for {
		err := fn()
		if err == nil || ctx.Err() != nil {
			return
		}
		log.Debug("will retry", "what", what, "err", err)
		if !wait.Sleep(ctx, 2*time.Second) {
			return
		}
	}
}

// holdSession keeps this supernode's own session, through the API like
// any node, so that a standby — whose store serves no writes — is alive too.
func (sn *Supernode) holdSession(ctx context.Context, peers *peerClient) {
	for ctx.Err() == nil {
		sess, err := client.OpenSession(ctx, peers.client, sn.log)
		if err != nil {
			sn.log.Debug("cannot open own session yet", "err", err)
			wait.Sleep(ctx, 2*time.Second)
			continue
		}
		if err := sess.Keep(ctx); err != nil {
			sn.log.Warn("own session ended", "err", err)
			wait.Sleep(ctx, 2*time.Second)
		}
	}
}

// housekeeping bounds the event log and drops the health records of nodes
// that left; only the store leader does it, once a minute.
func housekeeping(ctx context.Context, q *quorum.Service, evlog *events.Log, prober *health.Prober, cfg EventsConfig, log *slog.Logger) {
	maxAge, maxCount := cfg.MaxAge, cfg.MaxCount
	if maxAge == 0 {
		maxAge = DefaultEventMaxAge
	}
	if maxCount == 0 {
		maxCount = DefaultEventMaxCount
	}
	for wait.Sleep(ctx, time.Minute) {
		if !q.IsLeader() {
			continue
		}
		if n, err := evlog.Prune(ctx, maxAge, maxCount); err != nil {
			log.Warn("events not pruned", "err", err)
		} else if n > 0 {
			log.Info("old events pruned", "count", n)
		}
		if err := prober.Sweep(ctx); err != nil {
			log.Warn("health records not swept", "err", err)
		}
	}
}

// Event log bounds unless configured.
const (
	DefaultEventMaxAge   = 7 * 24 * time.Hour
	DefaultEventMaxCount = 10000
)

// How much of the members' metrics a supernode keeps: a sample per scrape,
// the last hour at most.
const (
	metricsHistory = 240
	metricsMaxAge  = time.Hour
	// DefaultMetricsInterval is how often a member's metrics are scraped.
	DefaultMetricsInterval = 15 * time.Second
)

func (c Config) metricsInterval() time.Duration {
	if c.MetricsInterval > 0 {
		return c.MetricsInterval
	}
	return DefaultMetricsInterval
}

// instrument connects the prober and the scraper to the supernode's own
// metrics.
func instrument(p *health.Prober, sc *metrics.Scraper, sm *metrics.SupernodeMetrics) {
	result := func(ok bool) string {
		if ok {
			return metrics.ResultOK
		}
		return metrics.ResultFail
	}
	p.OnProbe = func(ok bool, took time.Duration) {
		sm.ProbesTotal.WithLabelValues(result(ok)).Inc()
		sm.ProbeDuration.Observe(took.Seconds())
	}
	p.OnWrite = func() { sm.StoreWritesTotal.WithLabelValues("health").Inc() }
	p.OnAssigned = func(assigned map[string]bool) {
		sm.MembersAssigned.Set(float64(len(assigned)))
		sc.Forget(assigned)
	}
	p.Scrape = func(ctx context.Context, c *http.Client, n membership.Node) {
		project := ""
		if len(n.Projects) > 0 {
			project = n.Projects[0]
		}
		sc.Scrape(ctx, c, n.Name, project, n.Address)
	}
	sc.OnScrape = func(ok bool) { sm.ScrapesTotal.WithLabelValues(result(ok)).Inc() }
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// probeClient is the HTTP client supernodes probe agents with: it proves
// the supernode's identity and keeps connections to many agents open.
func probeClient(kp *pki.KeyPair, ca *x509.Certificate) *http.Client {
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:     pki.ClientTLS(kp, ca),
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     2 * time.Minute,
		TLSHandshakeTimeout: 5 * time.Second,
	}}
}

// URL is the API's URL.
func (sn *Supernode) URL() string { return "https://" + sn.Config.advertise() }

// Err reports a fatal error: the store failed or stopped.
func (sn *Supernode) Err() <-chan error { return sn.errc }

// Close stops the API, then the background work, then the store.
func (sn *Supernode) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sn.srv.Shutdown(ctx)
	sn.DNS.Close()
	sn.stop()
	sn.wg.Wait()
	sn.Store.Close()
}
