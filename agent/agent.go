// Package agent is the part of fedkeeper that runs on every node: it joins
// the federation with a key it makes itself, keeps its identity in its data
// directory, and holds a lease-backed session so the federation knows it is
// alive.
//
// Data directory layout:
//
//	agent.yaml     configuration (see Config), written on first join
//	node.key       the node's private key; it never leaves this directory
//	node.crt       the node's certificate, signed by the federation CA
//	ca.crt         the federation CA, pinned by its hash at join time
//	services.json  services registered through the local API
//	agent.sock     the local API's Unix socket, for the node's own user
//
// The local API registers the node's services at run time:
//
//	GET    /v1/agent/services       every service with its status
//	PUT    /v1/agent/services/{id}  register a services.Registration
//	DELETE /v1/agent/services/{id}  deregister
//
// Services declared in agent.yaml are the operator's: the local API does
// not replace or delete them. A service lives in the federation as long as
// the node's session: an agent that stops without leaving takes its
// services with it once its session lapses.
package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/fedkeeper/fedkeeper/client"
	"github.com/fedkeeper/fedkeeper/ha"
	"github.com/fedkeeper/fedkeeper/health"
	"github.com/fedkeeper/fedkeeper/internal/atomicfile"
	"github.com/fedkeeper/fedkeeper/internal/version"
	"github.com/fedkeeper/fedkeeper/internal/wait"
	"github.com/fedkeeper/fedkeeper/membership"
	"github.com/fedkeeper/fedkeeper/metrics"
	"github.com/fedkeeper/fedkeeper/pki"
	"github.com/fedkeeper/fedkeeper/services"
)

// Config is an agent's configuration.
type Config struct {
	Name string `yaml:"name"`
	// Join lists supernode API URLs to join through; once joined, the agent
	// learns all supernodes from the node map.
	Join []string `yaml:"join"`
	// CAHash pins the federation CA (sha256:HEX): the agent trusts a
	// supernode only if it presents exactly that CA.
	CAHash string `yaml:"ca_hash"`
	// Profile is what the node says about itself.
	Profile membership.Profile `yaml:"profile"`
	// Listen is HOST:PORT of the agent's own API; empty for none.
	Listen string `yaml:"listen,omitempty"`
	// LeaveOnExit makes a stop by signal leave the federation (the
	// default); switch it off to keep the node's membership across an
	// upgrade or a planned restart.
	LeaveOnExit bool `yaml:"leave_on_exit"`
	// Checks are the node's self-checks; the agent adds one of its own
	// certificate.
	Checks []health.CheckConfig `yaml:"checks,omitempty"`
	// Components are the node's components whose configuration files the
	// agent keeps.
	Components []ComponentConfig `yaml:"components,omitempty"`
	// Services are the services the node runs, registered with the
	// federation while the agent's session lives.
	Services []services.Registration `yaml:"services,omitempty"`
	// HAGroups are the HA groups the node is a candidate of, to run their
	// service as master.
	HAGroups []ha.GroupConfig `yaml:"ha_groups,omitempty"`
}

// certCheckName is the self-check every agent runs on its own certificate.
const certCheckName = "agent-certificate"

// checks are the configured self-checks and the agent's own.
func (c Config) checks(dir string) []health.CheckConfig {
	return append(slices.Clone(c.Checks), health.CheckConfig{Name: certCheckName, Type: "cert", CertFile: filepath.Join(dir, certFile), MinDays: 14, Interval: time.Hour})
}

// declaredServices are the services of the configuration with their
// defaults filled in.
func (c Config) declaredServices() []services.Registration {
	regs := make([]services.Registration, len(c.Services))
	for i, r := range c.Services {
		regs[i] = r.WithDefaults(c.Profile.Project)
	}
	return regs
}

// Validate checks the configuration before anything is sent or written.
func (c Config) Validate() error {
	if err := membership.ValidateName(c.Name); err != nil {
		return err
	}
	if err := c.Profile.Validate(); err != nil {
		return err
	}
	if len(c.Join) == 0 {
		return errors.New("no supernode to join: give --join https://HOST:PORT")
	}
	for _, j := range c.Join {
		u, err := url.Parse(j)
		if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("join URL %q must be https://HOST:PORT", j)
		}
	}
	if _, err := pki.ParseHash(c.CAHash); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, comp := range c.Components {
		if err := comp.validate(); err != nil {
			return err
		}
		if seen[comp.Name] {
			return fmt.Errorf("component %s is declared twice", comp.Name)
		}
		seen[comp.Name] = true
	}
	// The agent's own check is named here only to keep its name reserved.
	if err := health.ValidateChecks(c.checks("/")); err != nil {
		return fmt.Errorf("checks: %w", err)
	}
	if err := services.ValidateSet(c.declaredServices()); err != nil {
		return fmt.Errorf("services: %w", err)
	}
	return validateHAGroups(c.HAGroups)
}

// File names in the data directory.
const (
	configFile = "agent.yaml"
	keyFile    = "node.key"
	certFile   = "node.crt"
	caFile     = "ca.crt"
)

// LoadConfig reads the configuration saved in dir; ok is false when there
// is none yet.
func LoadConfig(dir string) (cfg Config, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, configFile))
	if errors.Is(err, os.ErrNotExist) {
		return cfg, false, nil
	}
	if err != nil {
		return cfg, false, fmt.Errorf("read agent configuration: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return cfg, false, fmt.Errorf("%s: %w", filepath.Join(dir, configFile), err)
	}
	return cfg, true, nil
}

// SaveConfig writes the configuration into dir.
func SaveConfig(dir string, cfg Config) error {
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("encode agent configuration: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	return atomicfile.Write(filepath.Join(dir, configFile), b, 0o600)
}

// Agent is a running agent.
type Agent struct {
	cfg    Config
	dir    string
	log    *slog.Logger
	kp     *pki.KeyPair
	ca     *x509.Certificate
	client *client.Client
	srv    *http.Server
	// local serves the local API; svcs are the services it registers.
	local *http.Server
	svcs  *serviceTable
	ha    *haGroups

	stop    context.CancelFunc
	done    chan struct{}
	session *client.Session
	checks  *health.Runner
	// identityFromDisk is set when the node's identity was already in its
	// data directory: such a node may start while no supernode answers.
	identityFromDisk bool
	mu               sync.Mutex
	fatal            error
	fatalCh          chan struct{}
}

// Start joins the federation (or reuses the identity in dir), opens the
// node's session and keeps it alive in the background. It returns once the
// node is admitted and alive; a request waiting for approval keeps it
// waiting until ctx ends.
func Start(ctx context.Context, dir string, cfg Config, token string) (_ *Agent, err error) {
	a := &Agent{cfg: cfg, dir: dir, log: slog.Default().With("agent", cfg.Name), done: make(chan struct{}), fatalCh: make(chan struct{})}
	var ln, localLn net.Listener
	defer func() {
		if err != nil {
			closeListener(ln)
			closeListener(localLn)
		}
	}()
	if ln, err = a.listen(); err != nil {
		return nil, err
	}
	if err := a.cfg.Validate(); err != nil {
		return nil, fmt.Errorf("agent configuration: %w", err)
	}
	// Saved as given, so a free port picked now is picked afresh next time.
	if err := SaveConfig(dir, cfg); err != nil {
		return nil, err
	}
	if a.svcs, err = openServiceTable(dir, a.cfg.Profile.Project, a.cfg.declaredServices(), a.log); err != nil {
		return nil, err
	}
	if localLn, err = listenLocal(dir); err != nil {
		return nil, err
	}
	if err := a.join(ctx, token); err != nil {
		return nil, err
	}
	if a.session, err = client.OpenSession(ctx, a.client, a.log); err != nil {
		var apiErr *client.Error
		if errors.As(err, &apiErr) || !a.identityFromDisk {
			return nil, err
		}
		a.session = nil // opened in the background once a supernode answers
	}
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	a.checks = health.NewRunner(a.cfg.checks(absDir), a.log)
	a.serve(ln)
	runCtx, stop := context.WithCancel(context.Background())
	a.stop = stop
	go a.checks.Run(runCtx)
	if err := a.startComponents(runCtx); err != nil {
		stop()
		if a.srv != nil {
			a.srv.Close()
		}
		return nil, err
	}
	a.svcs.start(runCtx)
	go a.svcs.syncTo(runCtx, a.client, a.cfg.Name)
	a.serveLocal(localLn)
	a.startHA(runCtx)
	go a.run(runCtx)
	a.log.Info("agent running", "project", a.cfg.Profile.Project, "address", a.cfg.Profile.Address, "servers", a.client.Servers())
	return a, nil
}

// listen opens the agent API's listener, if it has a listen address. A
// port of 0 picks a free one, and the node's advertised address follows.
func (a *Agent) listen() (net.Listener, error) {
	if a.cfg.Listen == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen for the agent API on %s: %w", a.cfg.Listen, err)
	}
	if a.cfg.Profile.Address == "" || strings.HasSuffix(a.cfg.Profile.Address, ":0") {
		a.cfg.Profile.Address = ln.Addr().String()
	}
	return ln, nil
}

func closeListener(ln net.Listener) {
	if ln != nil {
		ln.Close()
	}
}

// join gets the node its identity, by reusing the one in the data
// directory or by asking to join, and brings its node record up to date.
func (a *Agent) join(ctx context.Context, token string) error {
	if err := a.identity(ctx, token); err != nil {
		return err
	}
	a.client = client.New(a.servers(), pki.APIClientTLS(a.kp, a.ca))
	err := a.client.Do(ctx, http.MethodPatch, "/v1/nodes/"+a.cfg.Name, a.cfg.Profile, nil)
	var apiErr *client.Error
	if errors.As(err, &apiErr) && apiErr.Code == "not_member" && token != "" {
		// Left or removed earlier, and given a token now: join afresh.
		a.log.Info("identity no longer valid; joining again with the token", "reason", apiErr.Message)
		forgetIdentity(a.dir)
		if err := a.identity(ctx, token); err != nil {
			return err
		}
		a.client = client.New(a.servers(), pki.APIClientTLS(a.kp, a.ca))
		err = a.client.Do(ctx, http.MethodPatch, "/v1/nodes/"+a.cfg.Name, a.cfg.Profile, nil)
	}
	if err != nil && !errors.As(err, &apiErr) && a.identityFromDisk {
		// The federation is out of reach, but this node knows who it is:
		// it starts from its last state (its configuration files stay in
		// place) and catches up when a supernode answers.
		a.log.Warn("no supernode reachable; starting from the last known state", "err", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("update own node record: %w", err)
	}
	return nil
}

// identity loads the node's key and certificate, or joins to get them.
func (a *Agent) identity(ctx context.Context, token string) error {
	kp, kerr := pki.LoadKeyPair(filepath.Join(a.dir, certFile), filepath.Join(a.dir, keyFile))
	caPEM, cerr := os.ReadFile(filepath.Join(a.dir, caFile))
	if kerr == nil && cerr == nil {
		ca, err := pki.ParseCert(caPEM)
		if err != nil {
			return fmt.Errorf("%s: %w", filepath.Join(a.dir, caFile), err)
		}
		if pki.Hash(ca.Raw) != a.cfg.CAHash {
			return fmt.Errorf("%s belongs to federation CA %s, not %s: use another --data-dir", a.dir, pki.Hash(ca.Raw), a.cfg.CAHash)
		}
		if kp.Cert.Subject.CommonName != a.cfg.Name {
			return fmt.Errorf("%s holds the identity of node %q, not %q", a.dir, kp.Cert.Subject.CommonName, a.cfg.Name)
		}
		a.kp, a.ca, a.identityFromDisk = kp, ca, true
		return nil
	}
	return a.requestCertificate(ctx, token)
}

// forgetIdentity drops the certificate of a node that is no longer a
// member; the key goes too, so a new join proves a fresh key.
func forgetIdentity(dir string) {
	for _, f := range []string{certFile, keyFile} {
		os.Remove(filepath.Join(dir, f))
	}
}

// requestCertificate sends a certificate request and waits to be admitted.
func (a *Agent) requestCertificate(ctx context.Context, token string) error {
	// The key is kept from the first attempt: after a crash while waiting
	// for approval, asking again with the same key finds the same request.
	key, err := loadOrMakeKey(filepath.Join(a.dir, keyFile))
	if err != nil {
		return err
	}
	csr, err := pki.NewCSR(key, a.cfg.Name)
	if err != nil {
		return err
	}
	in := membership.JoinInput{Name: a.cfg.Name, Profile: a.cfg.Profile, CSR: string(csr), Token: token}
	var c *client.Client
	announced := false
	for {
		var err error
		if c == nil {
			// Learn the CA by its hash first; then talk to the federation
			// checking every server's name and role against it.
			var ca *x509.Certificate
			if ca, err = client.FetchCA(ctx, a.cfg.Join, a.cfg.CAHash); err == nil {
				c = client.New(a.cfg.Join, pki.APIClientTLS(nil, ca))
				defer c.CloseIdle()
			}
		}
		var res membership.JoinResult
		if err == nil {
			err = c.DoIdempotent(ctx, http.MethodPost, "/v1/join?wait=30s", in, &res) // asking again is safe
		}
		if err != nil {
			var apiErr *client.Error
			if errors.As(err, &apiErr) || errors.Is(err, pki.ErrUntrustedServer) || ctx.Err() != nil {
				return fmt.Errorf("join: %w", err)
			}
			a.log.Warn("no supernode reachable to join; retrying", "err", err)
			if !wait.Sleep(ctx, 2*time.Second) {
				return fmt.Errorf("join: %w", ctx.Err())
			}
			continue
		}
		if res.Status != membership.StatusPending {
			return a.saveIdentity(key, res)
		}
		if !announced {
			a.log.Info("join request waiting for an administrator", "approve_with", "fedkeeper nodes approve "+a.cfg.Name)
			announced = true
		}
	}
}

// saveIdentity checks what the supernode sent before keeping it: the CA
// must be the pinned one and the certificate must be for our key.
func (a *Agent) saveIdentity(key crypto.Signer, res membership.JoinResult) error {
	cert, err := pki.ParseCert([]byte(res.CertPEM))
	if err != nil {
		return fmt.Errorf("certificate from supernode: %w", err)
	}
	ca, err := pki.ParseCert([]byte(res.CAPEM))
	if err != nil {
		return fmt.Errorf("CA certificate from supernode: %w", err)
	}
	if pki.Hash(ca.Raw) != a.cfg.CAHash {
		return fmt.Errorf("supernode sent CA %s, not the pinned %s", pki.Hash(ca.Raw), a.cfg.CAHash)
	}
	if err := cert.CheckSignatureFrom(ca); err != nil {
		return fmt.Errorf("certificate from supernode is not signed by the federation CA: %w", err)
	}
	if !pki.SameKey(cert.PublicKey, key.Public()) {
		return errors.New("certificate from supernode is not for this node's key")
	}
	if err := atomicfile.Write(filepath.Join(a.dir, caFile), pki.EncodeCert(ca.Raw), 0o644); err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(a.dir, certFile), pki.EncodeCert(cert.Raw), 0o644); err != nil {
		return err
	}
	a.kp, a.ca = &pki.KeyPair{Cert: cert, Key: key}, ca
	a.log.Info("admitted to the federation", "serial", pki.SerialHex(cert), "expires", cert.NotAfter)
	return nil
}

func loadOrMakeKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := pki.ParseKey(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read node key: %w", err)
	}
	k, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	pemKey, err := pki.EncodeKey(k)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Write(path, pemKey, 0o600); err != nil {
		return nil, err
	}
	return k, nil
}

// run keeps the session alive and follows the node map until stopped.
func (a *Agent) run(ctx context.Context) {
	defer close(a.done)
	go a.followNodeMap(ctx)
	for a.session == nil {
		s, err := client.OpenSession(ctx, a.client, a.log)
		if err == nil {
			a.session = s
			a.log.Info("federation reachable again; session open")
			a.svcs.sessionOpened()
			break
		}
		var apiErr *client.Error
		if errors.As(err, &apiErr) && apiErr.Code == "not_member" {
			a.setFatal(fmt.Errorf("%w: %w", client.ErrRemoved, err))
			return
		}
		if !wait.Sleep(ctx, 5*time.Second) {
			return
		}
	}
	a.session.OnOpen = a.svcs.sessionOpened
	if err := a.session.Keep(ctx); err != nil {
		a.setFatal(err)
	}
}

// nodeMapRefresh is how often an agent reads the node map to learn the
// current supernodes. The supernode set changes rarely, so a periodic read
// with jitter scales better than a blocking query, which would wake every
// agent on every change of any node.
const nodeMapRefresh = 30 * time.Second

// followNodeMap keeps the list of supernodes current, so that the agent
// can fail over to any of them.
func (a *Agent) followNodeMap(ctx context.Context) {
	for first := true; ; first = false {
		// Jitter spreads the reads of many agents started together; the
		// first read is at once, so the agent can fail over from the start.
		if !first && !wait.Sleep(ctx, nodeMapRefresh/2+rand.N(nodeMapRefresh)) {
			return
		}
		var m membership.NodeMap
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := a.client.Do(qctx, http.MethodGet, "/v1/nodemap", nil, &m)
		cancel()
		if err != nil {
			a.log.Debug("node map not fetched", "err", err)
			continue
		}
		servers := append(m.Supernodes, a.cfg.Join...)
		a.client.SetServers(servers)
		if !slices.Equal(m.Supernodes, a.knownSupernodes()) {
			b, _ := json.Marshal(m.Supernodes)
			if err := atomicfile.Write(filepath.Join(a.dir, supernodesFile), b, 0o644); err != nil {
				a.log.Warn("cannot save the list of supernodes", "err", err)
			}
		}
	}
}

// supernodesFile keeps the supernodes last seen in the node map, so that
// a restarted agent reaches the federation even if the supernodes it first
// joined through are gone.
const supernodesFile = "supernodes.json"

func (a *Agent) knownSupernodes() []string {
	var urls []string
	if b, err := os.ReadFile(filepath.Join(a.dir, supernodesFile)); err == nil {
		json.Unmarshal(b, &urls)
	}
	return urls
}

// servers lists whom to talk to: the supernodes last seen, then the ones
// configured to join through.
func (a *Agent) servers() []string {
	return append(a.knownSupernodes(), a.cfg.Join...)
}

func (a *Agent) setFatal(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fatal == nil {
		a.fatal = err
		close(a.fatalCh)
	}
}

// Fatal is closed when the agent can no longer work (it was removed from
// the federation); Err then says why.
func (a *Agent) Fatal() <-chan struct{} { return a.fatalCh }

// Err is the reason the agent stopped working, if it did.
func (a *Agent) Err() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.fatal
}

// serve runs the agent's own API on ln, if it has one.
func (a *Agent) serve(ln net.Listener) {
	if ln == nil {
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/live", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, "{\"status\":\"ok\",\"node\":%q}\n", a.cfg.Name)
	})
	mux.HandleFunc("GET /v1/health", a.serveHealth)
	// Metrics are host figures, served to any scraper like a node
	// exporter's; the supernode assigned to the node collects them.
	mux.Handle("GET /metrics", metrics.Handler(metrics.NewAgentRegistry(metrics.AgentOptions{
		DataDir: a.dir, Node: a.cfg.Name, Project: a.cfg.Profile.Project, Site: a.cfg.Profile.Site, Version: version.Version,
		Checks: a.checkSamples,
	})))
	a.srv = &http.Server{
		Handler:           mux,
		TLSConfig:         pki.ServerTLS(a.kp, a.ca),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
	}
	go a.srv.ServeTLS(ln, "", "")
}

// serveLocal runs the local API on ln.
func (a *Agent) serveLocal(ln net.Listener) {
	a.local = &http.Server{
		Handler:           a.svcs.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
	}
	go a.local.Serve(ln)
}

func (a *Agent) checkSamples() []metrics.CheckSample {
	var out []metrics.CheckSample
	for _, r := range a.checks.Results() {
		out = append(out, metrics.CheckSample{Name: r.Name, Type: r.Type, Status: string(r.Status)})
	}
	return out
}

// Health is the node's own view of its health: its self-checks.
func (a *Agent) Health() health.AgentHealth {
	results := a.checks.Results()
	return health.AgentHealth{Node: a.cfg.Name, Status: health.Overall(results), Checks: results}
}

// serveHealth answers supernodes' probes and administrators. Check output
// can tell an outsider too much about a site, so a federation certificate
// of a supernode or an administrator is required.
func (a *Agent) serveHealth(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintln(w, `{"error":"the health endpoint needs a supernode or administrator certificate","code":"no_certificate"}`)
		return
	}
	id, err := pki.IdentityOf(r.TLS.PeerCertificates[0])
	if err != nil || (id.Role != pki.RoleSupernode && id.Role != pki.RoleAdmin) {
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprintln(w, `{"error":"only supernodes and administrators may read a node's health","code":"forbidden"}`)
		return
	}
	json.NewEncoder(w).Encode(a.Health())
}

// Leave removes this node from the federation, once it has left its HA
// groups.
func (a *Agent) Leave(ctx context.Context) error {
	a.stopHA()
	return Leave(ctx, a.dir)
}

// Close stops the agent. Its session lapses after its TTL unless it left,
// and its services with it.
func (a *Agent) Close() {
	// Closing the listener removes the socket.
	a.local.Close()
	a.stopHA()
	if a.stop != nil {
		a.stop()
		<-a.done
	}
	if a.srv != nil {
		a.srv.Close()
	}
	a.client.CloseIdle()
}

// Leave removes the node whose identity is in dir from the federation and
// forgets that identity.
func Leave(ctx context.Context, dir string) error {
	cfg, ok, err := LoadConfig(dir)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s holds no agent", dir)
	}
	kp, err := pki.LoadKeyPair(filepath.Join(dir, certFile), filepath.Join(dir, keyFile))
	if err != nil {
		return fmt.Errorf("%s holds no node identity (already left?): %w", dir, err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, caFile))
	if err != nil {
		return fmt.Errorf("read federation CA: %w", err)
	}
	ca, err := pki.ParseCert(caPEM)
	if err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(dir, caFile), err)
	}
	c := client.New(cfg.Join, pki.APIClientTLS(kp, ca))
	defer c.CloseIdle()
	var m membership.NodeMap
	if err := c.Do(ctx, http.MethodGet, "/v1/nodemap", nil, &m); err == nil {
		c.SetServers(append(m.Supernodes, cfg.Join...))
	}
	if err := c.Do(ctx, http.MethodDelete, "/v1/nodes/"+cfg.Name, nil, nil); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	forgetIdentity(dir)
	slog.Info("left the federation", "node", cfg.Name)
	return nil
}
