package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"
)

// ErrRemoved says the node is no longer a member of the federation.
var ErrRemoved = errors.New("removed from the federation")

// Session is a node's lease-backed session, held through the API so that
// it survives the loss of any one supernode: the lease lives in the
// replicated store and any supernode renews it.
type Session struct {
	// OnOpen, if set, is called after Keep has opened a new session in
	// place of one that lapsed: whatever the node had bound to the old
	// lease is gone and must be registered again. (The first session is
	// open when OpenSession returns.) Set it before calling Keep.
	OnOpen func()

	c     *Client
	log   *slog.Logger
	lease int64
	ttl   time.Duration
}

// OpenSession starts the session of the node whose certificate c uses.
func OpenSession(ctx context.Context, c *Client, log *slog.Logger) (*Session, error) {
	s := &Session{c: c, log: log}
	if err := s.open(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Session) open(ctx context.Context) error {
	var resp struct {
		Lease int64 `json:"lease"`
		TTL   int64 `json:"ttl_s"`
	}
	// Opening again replaces the session, so a repeat is harmless.
	if err := s.c.DoIdempotent(ctx, http.MethodPost, "/v1/session", struct{}{}, &resp); err != nil {
		return fmt.Errorf("open session: %w", err)
	}
	if resp.TTL < 1 {
		return fmt.Errorf("open session: supernode granted a TTL of %ds", resp.TTL)
	}
	s.lease, s.ttl = resp.Lease, time.Duration(resp.TTL)*time.Second
	return nil
}

// Keep renews the session until ctx ends (returning nil) or the node is
// removed from the federation (returning an error wrapping ErrRemoved).
// A lapsed session is opened anew.
func (s *Session) Keep(ctx context.Context) error {
	for {
		// Renewing three times per lease survives one lost renewal and a
		// failover to another supernode.
		t := time.NewTimer(s.ttl / 3)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, s.ttl/3)
		err := s.c.DoIdempotent(rctx, http.MethodPost, "/v1/session/renew", map[string]int64{"lease": s.lease}, nil)
		cancel()
		var apiErr *Error
		switch {
		case err == nil:
		case errors.As(err, &apiErr) && apiErr.Code == "session_expired":
			s.log.Warn("session expired; opening a new one")
			if err := s.open(ctx); err != nil {
				if ctx.Err() == nil {
					s.log.Warn("cannot open a new session", "err", err)
				}
			} else if s.OnOpen != nil {
				s.OnOpen()
			}
		case errors.As(err, &apiErr) && apiErr.Code == "not_member":
			return fmt.Errorf("%w: %w", ErrRemoved, err)
		case ctx.Err() != nil:
			return nil
		default:
			s.log.Warn("session renewal failed", "err", err)
		}
	}
}
