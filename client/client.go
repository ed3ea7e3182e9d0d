// Package client talks to the federation API over mutual TLS. The admin CLI
// and agents use it; it fails over between supernodes by itself.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/fedkeeper/fedkeeper/internal/atomicfile"
	"github.com/fedkeeper/fedkeeper/pki"
)

// Error is an error answer of the API.
type Error struct {
	Status  int    `json:"-"`
	Message string `json:"error"`
	Code    string `json:"code"`
}

func (e *Error) Error() string { return fmt.Sprintf("%s (%s, HTTP %d)", e.Message, e.Code, e.Status) }

// Client calls the federation API.
type Client struct {
	http *http.Client

	mu      sync.Mutex
	servers []string
	// current is the index of the server that answered last; requests go
	// there first so a client sticks to one supernode while it is healthy.
	current int
}

// New returns a client for the given server URLs (https://HOST:PORT).
func New(servers []string, cfg *tls.Config) *Client {
	tr := &http.Transport{
		TLSClientConfig:     cfg,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 5 * time.Second,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}
	return &Client{http: &http.Client{Transport: tr}, servers: uniq(servers)}
}

// uniq drops repeated servers, keeping the first of each.
func uniq(servers []string) []string {
	var out []string
	for _, s := range servers {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// SetServers replaces the server list (duplicates dropped), keeping the
// current server first if it is still listed.
func (c *Client) SetServers(servers []string) {
	servers = uniq(servers)
	if len(servers) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := c.servers[c.current]
	c.servers = servers
	c.current = 0
	for i, s := range c.servers {
		if s == cur {
			c.current = i
		}
	}
}

// Servers returns the server list.
func (c *Client) Servers() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.servers...)
}

// Do sends a JSON request and decodes a JSON answer into out (unless nil).
// When a server cannot be reached the next one is tried. A write whose
// fate is unknown (the server took it but did not answer in time) is not
// sent again to another server, for it may still be applied: repeating it
// could undo a later write. Use DoIdempotent for requests that are safe to
// repeat.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	return c.decode(method, path, out)(c.send(ctx, method, path, in, method == http.MethodGet))
}

// DoIdempotent is Do for a request that may safely be applied twice, such
// as renewing a session: it is tried on the next server whatever happened
// on the last.
func (c *Client) DoIdempotent(ctx context.Context, method, path string, in, out any) error {
	return c.decode(method, path, out)(c.send(ctx, method, path, in, true))
}

func (c *Client) decode(method, path string, out any) func([]byte, error) error {
	return func(body []byte, err error) error {
		if err != nil || out == nil {
			return err
		}
		if err := json.Unmarshal(body, out); err != nil {
			return fmt.Errorf("decode answer of %s %s: %w", method, path, err)
		}
		return nil
	}
}

// Raw is Do without decoding the answer.
func (c *Client) Raw(ctx context.Context, method, path string, in any) ([]byte, error) {
	return c.send(ctx, method, path, in, method == http.MethodGet)
}

func (c *Client) send(ctx context.Context, method, path string, in any, idempotent bool) ([]byte, error) {
	var payload []byte
	if in != nil {
		var err error
		if payload, err = json.Marshal(in); err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
	}
	c.mu.Lock()
	servers, start := append([]string(nil), c.servers...), c.current
	c.mu.Unlock()
	if len(servers) == 0 {
		return nil, errors.New("no federation server known")
	}
	var errs []error
	for i := range servers {
		idx := (start + i) % len(servers)
		// Leave each remaining server a fair share of the caller's time, so
		// that one that hangs (paused, cut off) cannot use it all up.
		actx, cancel := ctx, context.CancelFunc(func() {})
		if dl, ok := ctx.Deadline(); ok {
			actx, cancel = context.WithTimeout(ctx, time.Until(dl)/time.Duration(len(servers)-i))
		}
		body, err := c.once(actx, servers[idx], method, path, payload)
		cancel()
		switch outcome(err) {
		case answered:
			c.setCurrent(servers, idx)
			return body, err
		case unknown:
			// The next request starts with the next server, whether or not
			// this one is repeated there.
			c.setCurrent(servers, (idx+1)%len(servers))
			if !idempotent {
				return nil, fmt.Errorf("outcome unknown, not repeated elsewhere: %w", err)
			}
		}
		if ctx.Err() != nil {
			return nil, err
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("no federation server answered: %w", errors.Join(errs...))
}

func (c *Client) setCurrent(servers []string, idx int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if slices.Equal(c.servers, servers) {
		c.current = idx
	}
}

type requestOutcome int

const (
	// answered: the server decided; its answer is final.
	answered requestOutcome = iota
	// notTaken: the request certainly had no effect (no connection, or
	// the server said it could not take it); another server may be asked.
	notTaken
	// unknown: the request may or may not have had an effect.
	unknown
)

func outcome(err error) requestOutcome {
	var apiErr *Error
	var opErr *net.OpError
	switch {
	case err == nil:
		return answered
	case errors.As(err, &apiErr) && apiErr.Status == http.StatusServiceUnavailable:
		return notTaken
	case errors.As(err, &apiErr) && apiErr.Status == http.StatusGatewayTimeout:
		return unknown
	case errors.As(err, &apiErr):
		return answered
	case errors.As(err, &opErr) && opErr.Op == "dial", errors.Is(err, pki.ErrUntrustedServer):
		return notTaken
	default:
		return unknown
	}
}

func (c *Client) once(ctx context.Context, server, method, path string, payload []byte) ([]byte, error) {
	return roundTrip(ctx, c.http, method, strings.TrimSuffix(server, "/")+path, payload)
}

// Call makes one JSON exchange with one server, for callers that address a
// particular node rather than the federation: probes and confirmations
// between supernodes and agents. An error answer is an *Error.
func Call(ctx context.Context, hc *http.Client, method, url string, in, out any) error {
	var payload []byte
	if in != nil {
		var err error
		if payload, err = json.Marshal(in); err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
	}
	body, err := roundTrip(ctx, hc, method, url, payload)
	if err != nil || out == nil {
		return err
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("decode answer of %s %s: %w", method, url, err)
	}
	return nil
}

// roundTrip sends one request and reads its answer (at most 64 MiB).
func roundTrip(ctx context.Context, hc *http.Client, method, url string, payload []byte) ([]byte, error) {
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read answer of %s %s: %w", method, url, err)
	}
	if resp.StatusCode >= 300 {
		e := &Error{Status: resp.StatusCode}
		if json.Unmarshal(body, e) != nil || e.Message == "" {
			e.Message, e.Code = strings.TrimSpace(string(body)), "http_"+fmt.Sprint(resp.StatusCode)
		}
		return nil, e
	}
	return body, nil
}

// CloseIdle drops idle connections.
func (c *Client) CloseIdle() { c.http.CloseIdleConnections() }

// Credentials is what an administrator needs to reach the federation: the
// server URLs, the CA to trust and the administrator's own key pair, all in
// one file.
type Credentials struct {
	Servers []string `yaml:"servers"`
	CA      string   `yaml:"ca"`
	Cert    string   `yaml:"cert"`
	Key     string   `yaml:"key"`
}

// Save writes the credentials file, readable by its owner only.
func (cr Credentials) Save(path string) error {
	b, err := yaml.Marshal(cr)
	if err != nil {
		return fmt.Errorf("encode credentials: %w", err)
	}
	return atomicfile.Write(path, b, 0o600)
}

// LoadCredentials reads a credentials file.
func LoadCredentials(path string) (Credentials, error) {
	var cr Credentials
	b, err := os.ReadFile(path)
	if err != nil {
		return cr, fmt.Errorf("read credentials: %w", err)
	}
	if err := yaml.Unmarshal(b, &cr); err != nil {
		return cr, fmt.Errorf("credentials file %s: %w", path, err)
	}
	if len(cr.Servers) == 0 || cr.CA == "" || cr.Cert == "" || cr.Key == "" {
		return cr, fmt.Errorf("credentials file %s must have servers, ca, cert and key", path)
	}
	return cr, nil
}

// Client makes a client from the credentials.
func (cr Credentials) Client() (*Client, error) {
	return cr.ClientFor(cr.Servers)
}

// ClientFor makes a client with the credentials' identity for the given
// servers, for instance one alone, so that requests cannot fail over.
func (cr Credentials) ClientFor(servers []string) (*Client, error) {
	ca, err := pki.ParseCert([]byte(cr.CA))
	if err != nil {
		return nil, fmt.Errorf("credentials ca: %w", err)
	}
	cert, err := pki.ParseCert([]byte(cr.Cert))
	if err != nil {
		return nil, fmt.Errorf("credentials cert: %w", err)
	}
	key, err := pki.ParseKey([]byte(cr.Key))
	if err != nil {
		return nil, fmt.Errorf("credentials key: %w", err)
	}
	return New(servers, pki.APIClientTLS(&pki.KeyPair{Cert: cert, Key: key}, ca)), nil
}

// FetchCA learns the federation CA from any of servers, accepting it only
// if its hash is caHash. The handshake also proves that the server holds a
// certificate of that CA; callers then talk to the federation with
// APIClientTLS, which checks the server's name too.
func FetchCA(ctx context.Context, servers []string, caHash string) (*x509.Certificate, error) {
	hash, err := pki.ParseHash(caHash)
	if err != nil {
		return nil, err
	}
	var ca *x509.Certificate
	var mu sync.Mutex
	c := New(servers, pki.PinnedTLS(hash, func(found *x509.Certificate) {
		mu.Lock()
		ca = found
		mu.Unlock()
	}))
	defer c.CloseIdle()
	if _, err := c.Raw(ctx, http.MethodGet, "/v1/live", nil); err != nil {
		return nil, err
	}
	mu.Lock()
	defer mu.Unlock()
	if ca == nil {
		return nil, fmt.Errorf("%w: no server proved it belongs to the federation with CA %s", pki.ErrUntrustedServer, caHash)
	}
	return ca, nil
}
