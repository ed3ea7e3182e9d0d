package supernode

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/fedkeeper/fedkeeper/api"
	"github.com/fedkeeper/fedkeeper/client"
	"github.com/fedkeeper/fedkeeper/internal/atomicfile"
	"github.com/fedkeeper/fedkeeper/internal/wait"
	"github.com/fedkeeper/fedkeeper/membership"
	"github.com/fedkeeper/fedkeeper/pki"
	"github.com/fedkeeper/fedkeeper/quorum"
	"github.com/fedkeeper/fedkeeper/store"
)

// peersFile remembers the other supernodes' API URLs, so that a supernode
// that was down can ask them, before it opens its store, whether it is
// still one of them.
const peersFile = "peers.json"

// peerClient talks to the federation API as this supernode: itself first,
// then the others.
type peerClient struct {
	dir    string
	self   string
	tls    *tls.Config
	client *client.Client
}

func newPeerClient(dir string, cfg Config, kp *pki.KeyPair, ca *x509.Certificate) *peerClient {
	self := "https://" + cfg.advertise()
	tlsCfg := pki.APIClientTLS(kp, ca)
	return &peerClient{dir: dir, self: self, tls: tlsCfg, client: client.New(append([]string{self}, readPeers(dir)...), tlsCfg)}
}

func readPeers(dir string) []string {
	var peers []string
	b, err := os.ReadFile(filepath.Join(dir, peersFile))
	if err == nil {
		json.Unmarshal(b, &peers)
	}
	return peers
}

// others lists the known supernodes other than this one.
func (p *peerClient) others() []string {
	var out []string
	for _, s := range p.client.Servers() {
		if s != p.self {
			out = append(out, s)
		}
	}
	return out
}

// follow keeps the list of supernodes current, on disk and in the client.
func (p *peerClient) follow(ctx context.Context, members *membership.Service) {
	for {
		nodes, err := members.Supernodes(ctx)
		if err == nil {
			urls := []string{p.self}
			for _, n := range nodes {
				if n.Address != "" {
					urls = append(urls, "https://"+n.Address)
				}
			}
			p.client.SetServers(urls)
			if others := p.others(); !slices.Equal(others, readPeers(p.dir)) {
				b, _ := json.Marshal(others)
				if err := atomicfile.Write(filepath.Join(p.dir, peersFile), b, 0o600); err != nil {
					slog.Warn("cannot save the list of supernodes", "err", err)
				}
			}
		}
		if !wait.Sleep(ctx, 2*time.Second) {
			return
		}
	}
}

// rejoinIfRemoved handles a supernode coming back after the autopilot
// removed it from the store while it was unreachable: its old store data
// is useless, so it is set aside and the supernode rejoins as a standby
// learner. It returns the initial cluster to start the store with, or ""
// to open the store as it is on disk.
func rejoinIfRemoved(ctx context.Context, dir string, cfg Config, peers *peerClient, log *slog.Logger) (string, error) {
	if _, err := os.Stat(filepath.Join(storeDir(dir), "member")); err != nil {
		// No store yet: a joined supernode's first start.
		return cfg.InitialCluster, nil
	}
	others := peers.others()
	if len(others) == 0 {
		return "", nil
	}
	c := client.New(others, peers.tls)
	defer c.CloseIdle()
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var list []quorum.Supernode
	if err := c.Do(qctx, http.MethodGet, "/v1/supernodes", nil, &list); err != nil {
		// Nobody to ask (all down, or all starting at once): open the store
		// as it is; its peers will tell it if it was removed.
		log.Info("no other supernode answered; opening the store as it is", "err", err)
		return "", nil
	}
	members := map[string]string{}
	resumed := false
	for _, sn := range list {
		switch {
		case sn.PeerURL == cfg.peerURL() && sn.Name == "":
			// Added back as a learner, but the store never started: a
			// rejoin that was cut short. Finish it.
			resumed = true
		case sn.Name == cfg.Name || sn.PeerURL == cfg.peerURL():
			return "", nil
		case sn.Name != "":
			members[sn.Name] = sn.PeerURL
		}
	}
	var initial string
	if resumed {
		members[cfg.Name] = cfg.peerURL()
		initial = store.InitialCluster(members)
		log.Warn("resuming a rejoin as a standby that was cut short")
	} else {
		log.Warn("this supernode was removed from the store while away; rejoining as a standby")
		var resp api.RejoinResponse
		if err := retryUnavailable(ctx, log, func(ctx context.Context) error {
			return c.Do(ctx, http.MethodPost, "/v1/supernodes/"+cfg.Name+"/rejoin", struct{}{}, &resp)
		}); err != nil {
			return "", fmt.Errorf("rejoin the store: %w", err)
		}
		initial = resp.InitialCluster
	}
	aside := storeDir(dir) + ".removed-" + time.Now().UTC().Format("20060102T150405")
	if err := os.Rename(storeDir(dir), aside); err != nil {
		return "", fmt.Errorf("set the old store aside: %w", err)
	}
	log.Info("old store data set aside", "path", aside)
	return initial, nil
}

// retryUnavailable calls fn until it succeeds, fails for good, or two
// minutes pass. The store refuses new members for a moment after each
// change of membership (several supernodes added or rejoining in a row):
// that answer is 503, and worth waiting out, as is no answer at all.
func retryUnavailable(ctx context.Context, log *slog.Logger, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		err := fn(ctx)
		var apiErr *client.Error
		if err == nil || errors.As(err, &apiErr) && apiErr.Status != http.StatusServiceUnavailable {
			return err
		}
		log.Info("the federation cannot take this supernode right now; retrying", "err", err)
		if !wait.Sleep(ctx, 2*time.Second) {
			return err
		}
	}
}

// JoinConfig says how a new supernode joins an existing federation.
type JoinConfig struct {
	Config
	// Join lists API URLs of existing supernodes.
	Join   []string
	CAHash string
	Token  string
}

// Join makes dir the data directory of a supernode admitted by an existing
// federation (see quorum.Service.Add): it makes its keys, sends requests
// for its certificates, and writes what it receives. Start then runs it.
func Join(ctx context.Context, dir string, jc JoinConfig) error {
	cfg := jc.Config
	if err := membership.ValidateName(cfg.Name); err != nil {
		return fmt.Errorf("supernode name: %w", err)
	}
	if err := fillDefaults(&cfg); err != nil {
		return err
	}
	if jc.Token == "" || len(jc.Join) == 0 || jc.CAHash == "" {
		return errors.New("joining an existing federation needs --join, --ca-hash and --token")
	}
	if _, err := os.Stat(filepath.Join(dir, configFile)); err == nil {
		return fmt.Errorf("%s already holds a supernode; start it without --join", dir)
	}
	ca, err := client.FetchCA(ctx, jc.Join, jc.CAHash)
	if err != nil {
		return fmt.Errorf("reach the federation: %w", err)
	}
	apiKey, err := pki.NewKey()
	if err != nil {
		return err
	}
	storeKey, err := pki.NewKey()
	if err != nil {
		return err
	}
	apiCSR, err := pki.NewCSR(apiKey, cfg.Name)
	if err != nil {
		return err
	}
	storeCSR, err := pki.NewCSR(storeKey, cfg.Name)
	if err != nil {
		return err
	}
	c := client.New(jc.Join, pki.APIClientTLS(nil, ca))
	defer c.CloseIdle()
	var resp quorum.JoinResponse
	req := quorum.JoinRequest{Name: cfg.Name, Token: jc.Token, Advertise: cfg.advertise(), APICSR: string(apiCSR), StoreCSR: string(storeCSR)}
	if err := retryUnavailable(ctx, slog.Default(), func(ctx context.Context) error {
		return c.Do(ctx, http.MethodPost, "/v1/supernodes/join", req, &resp)
	}); err != nil {
		return fmt.Errorf("join the federation: %w", err)
	}
	if resp.PeerURL != cfg.peerURL() {
		return fmt.Errorf("the administrator added this supernode with peer URL %s, but it would listen at %s: use --peer-listen", resp.PeerURL, cfg.peerURL())
	}
	if err := saveJoinedPKI(dir, resp, apiKey, storeKey, jc.CAHash); err != nil {
		return err
	}
	cfg.Federation = resp.Federation
	cfg.InitialCluster = resp.InitialCluster
	b, _ := json.Marshal(jc.Join)
	if err := atomicfile.Write(filepath.Join(dir, peersFile), b, 0o600); err != nil {
		return err
	}
	return saveConfig(dir, cfg)
}

// saveJoinedPKI checks what the admitting supernode sent and writes it:
// both CAs with their keys, and this supernode's two certificates for the
// keys it made.
func saveJoinedPKI(dir string, resp quorum.JoinResponse, apiKey, storeKey crypto.Signer, caHash string) error {
	parse := func(what, certPEM, keyPEM string) (*pki.KeyPair, error) {
		cert, err := pki.ParseCert([]byte(certPEM))
		if err != nil {
			return nil, fmt.Errorf("%s from the federation: %w", what, err)
		}
		if keyPEM == "" {
			return &pki.KeyPair{Cert: cert}, nil
		}
		key, err := pki.ParseKey([]byte(keyPEM))
		if err != nil {
			return nil, fmt.Errorf("%s key from the federation: %w", what, err)
		}
		return &pki.KeyPair{Cert: cert, Key: key}, nil
	}
	ca, err := parse("CA", resp.CACert, resp.CAKey)
	if err != nil {
		return err
	}
	if pki.Hash(ca.Cert.Raw) != caHash {
		return fmt.Errorf("%w: the federation sent a CA that is not %s", pki.ErrUntrustedServer, caHash)
	}
	storeCA, err := parse("store CA", resp.StoreCACert, resp.StoreCAKey)
	if err != nil {
		return err
	}
	apiCert, err := parse("API certificate", resp.APICert, "")
	if err != nil {
		return err
	}
	storeCert, err := parse("store certificate", resp.StoreCert, "")
	if err != nil {
		return err
	}
	if !pki.SameKey(apiCert.Cert.PublicKey, apiKey.Public()) || !pki.SameKey(storeCert.Cert.PublicKey, storeKey.Public()) {
		return errors.New("the federation sent certificates for keys this supernode did not make")
	}
	if err := os.MkdirAll(filepath.Join(dir, "pki"), 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	for _, kp := range []struct {
		name string
		cert *x509.Certificate
		key  crypto.Signer
	}{
		{"ca", ca.Cert, ca.Key}, {"store-ca", storeCA.Cert, storeCA.Key},
		{"supernode", apiCert.Cert, apiKey}, {"store", storeCert.Cert, storeKey},
	} {
		if err := pki.SaveKeyPair(pkiPath(dir, kp.name+".crt"), pkiPath(dir, kp.name+".key"), kp.cert, kp.key); err != nil {
			return err
		}
	}
	return nil
}
