// Package ha keeps at most one master per HA group, and at most N holders
// per lock, from the nodes' side: leases kept alive through the API, a
// fence deadline that a holder never outlives, a watchdog process that
// enforces that deadline even when the holder itself is frozen or killed,
// and the HA group runner that drives start/stop/status scripts.
//
// The safety argument, in short: the store counts a lease's TTL from the
// moment it receives a renewal, which is after the holder sent it. So a
// holder that measures from the moment it sent its last successful
// renewal, on the system's monotonic clock, sees its lease end no later
// than the store does. It stops what it runs before that (the fence
// deadline); a successor can only win after the store has let the lease
// expire. Fencing tokens (store revisions) protect what remains: a
// resource that refuses tokens lower than one it has seen refuses a stale
// holder.
package ha

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fedkeeper/fedkeeper/api"
	"github.com/fedkeeper/fedkeeper/client"
)

// Mono reads the system's monotonic clock: the same clock in every
// process of the machine, so a deadline read in one process holds in
// another (the watchdog's), unlike Go's per-process monotonic readings.
func Mono() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(fmt.Sprintf("read the monotonic clock: %v", err))
	}
	return time.Duration(ts.Nano())
}

// ClockMargin covers the difference between the rates of this machine's
// clock and the store leader's, as a fraction of the TTL: clocks that run
// within 10% of each other cannot make a holder outlive its lease.
const ClockMargin = 10

// Lease is a lease held through the API and renewed in the background.
type Lease struct {
	c   *client.Client
	log *slog.Logger
	// ID is the lease as the API names it.
	ID  string
	TTL time.Duration

	mu sync.Mutex
	// validUntil is, on the monotonic clock, the moment the store may let
	// the lease expire at the earliest, less the clock margin.
	validUntil time.Duration
	lost       chan struct{}
	lostOnce   sync.Once
}

// Grant asks the federation for a lease of ttl.
func Grant(ctx context.Context, c *client.Client, ttl time.Duration, log *slog.Logger) (*Lease, error) {
	sent := Mono()
	var resp struct {
		ID  string `json:"id"`
		TTL int64  `json:"ttl_s"`
	}
	if err := c.Do(ctx, http.MethodPost, "/v1/leases", api.LeaseRequest{TTL: ttl}, &resp); err != nil {
		return nil, fmt.Errorf("grant a lease of %s: %w", ttl, err)
	}
	l := &Lease{c: c, log: log, ID: resp.ID, TTL: time.Duration(resp.TTL) * time.Second, lost: make(chan struct{})}
	l.validUntil = sent + l.safe()
	return l, nil
}

// safe is how long after sending a renewal the lease is surely alive.
func (l *Lease) safe() time.Duration { return l.TTL - l.TTL/ClockMargin }

// ValidUntil is the monotonic moment (see Mono) up to which the lease is
// surely alive, as far as this holder knows.
func (l *Lease) ValidUntil() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.validUntil
}

// Lost is closed once the lease is gone or can no longer be known alive.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

func (l *Lease) lose(why string) {
	l.lostOnce.Do(func() {
		l.log.Warn("lease lost", "lease", l.ID, "why", why)
		close(l.lost)
	})
}

// Keep renews the lease until ctx ends or the lease is lost, three times
// per TTL so that one lost renewal and a failover to another supernode fit
// in it. OnRenew, if set, is called with the new ValidUntil after each
// renewal.
func (l *Lease) Keep(ctx context.Context, onRenew func(validUntil time.Duration)) {
	t := time.NewTicker(l.TTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.lost:
			return
		case <-t.C:
		}
		if Mono() >= l.ValidUntil() {
			l.lose("not renewed in time")
			return
		}
		sent := Mono()
		rctx, cancel := context.WithTimeout(ctx, l.TTL/3)
		err := l.c.DoIdempotent(rctx, http.MethodPost, "/v1/leases/"+url.PathEscape(l.ID)+"/renew", struct{}{}, nil)
		cancel()
		var apiErr *client.Error
		switch {
		case err == nil:
			l.mu.Lock()
			l.validUntil = max(l.validUntil, sent+l.safe())
			v := l.validUntil
			l.mu.Unlock()
			if onRenew != nil {
				onRenew(v)
			}
		case errors.As(err, &apiErr) && (apiErr.Code == "lease_expired" || apiErr.Code == "not_member"):
			l.lose(apiErr.Message)
			return
		case ctx.Err() != nil:
			return
		default:
			l.log.Warn("lease renewal failed", "lease", l.ID, "err", err)
		}
	}
}

// Revoke ends the lease at once; whatever was bound to it goes with it.
func (l *Lease) Revoke(ctx context.Context) error {
	// Given up on purpose: not worth the warning of a loss.
	l.lostOnce.Do(func() { close(l.lost) })
	if err := l.c.Do(ctx, http.MethodDelete, "/v1/leases/"+url.PathEscape(l.ID), nil, nil); err != nil {
		return fmt.Errorf("revoke lease %s: %w", l.ID, err)
	}
	return nil
}
