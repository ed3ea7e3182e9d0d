package ha

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/fedkeeper/fedkeeper/api"
	"github.com/fedkeeper/fedkeeper/client"
	"github.com/fedkeeper/fedkeeper/coord"
)

// StandForRole stands for coordinator role name with rank on a new lease
// of ttl, and returns once this node is the role's master. A role has no
// script and no takeover delay: its master runs something (see Hold.Run)
// and gives the role up when done, and the highest-ranked candidate
// (ties by node name) then acquires it. The others acquire too once the
// role has stayed without master for a TTL, so that a candidate that
// never acquires cannot hold the role up. Waiting ends, withdrawing the
// candidacy, when ctx ends or the lease is lost.
//
// A node stands once per role: a second process of the same node takes
// the candidacy over, and the first one's waiting ends with ErrHoldLost.
func StandForRole(ctx context.Context, c *client.Client, name string, rank int, ttl time.Duration, log *slog.Logger) (*Hold, error) {
	if err := coord.ValidateName(coord.KindRole, name); err != nil {
		return nil, err
	}
	var me struct {
		Name string `json:"name"`
	}
	if err := c.Do(ctx, http.MethodGet, "/v1/whoami", nil, &me); err != nil {
		return nil, fmt.Errorf("learn this node's name: %w", err)
	}
	h, err := newHold(ctx, c, coord.KindRole, name, ttl, log)
	if err != nil {
		return nil, err
	}
	path := "/v1/elections/" + coord.KindRole + "/" + url.PathEscape(name)
	h.leave = func(ctx context.Context) error {
		return c.Do(ctx, http.MethodPost, path+"/resign", api.LeaseBody{Lease: h.Lease.ID}, nil)
	}
	// Standing is safe to repeat: it writes the same candidacy.
	stand := func(ctx context.Context, state string) error {
		err := c.DoIdempotent(ctx, http.MethodPut, path+"/candidates/"+url.PathEscape(me.Name),
			api.StandRequest{Lease: h.Lease.ID, Rank: rank, State: state}, nil)
		if h.leaseGone(err) {
			err = fmt.Errorf("%w: %w", ErrHoldLost, err)
		}
		if err != nil {
			return fmt.Errorf("stand for role %s as %s: %w", name, state, err)
		}
		return nil
	}
	err = h.await(ctx, func(ctx context.Context) (int64, error) {
		if err := stand(ctx, StateStandby); err != nil {
			return 0, err
		}
		h.log.Info("standing", "node", me.Name, "rank", rank, "lease", h.Lease.ID)
		var token int64
		// masterless is since when the role has been seen without master.
		var masterless time.Time
		err := Follow(ctx, c, path, ttl, h.log, func(e coord.Election) (bool, error) {
			if e.Master != nil {
				// An acquisition whose answer was lost shows here.
				if e.Master.Lease == h.Lease.ID {
					token = e.Master.Token
					return true, nil
				}
				masterless = time.Time{}
				return false, nil
			}
			var mine *coord.Candidate
			for i, cd := range e.Candidates {
				if cd.Node == me.Name {
					mine = &e.Candidates[i]
				}
			}
			switch {
			case mine == nil:
				return false, fmt.Errorf("%w: the candidacy of %s for role %s is gone", ErrHoldLost, me.Name, name)
			case mine.Lease != h.Lease.ID:
				return false, fmt.Errorf("%w: another process of %s stands for role %s (lease %s)", ErrHoldLost, me.Name, name, mine.Lease)
			}
			if masterless.IsZero() {
				masterless = time.Now()
			}
			if e.Candidates[0].Node != me.Name && time.Since(masterless) < ttl {
				return false, nil
			}
			var m coord.Master
			err := c.Do(ctx, http.MethodPost, path+"/acquire", api.LeaseBody{Lease: h.Lease.ID}, &m)
			var apiErr *client.Error
			switch {
			case err == nil:
				token = m.Token
				return true, nil
			case errors.As(err, &apiErr) && apiErr.Code == "taken":
				return false, nil
			case errors.As(err, &apiErr) && apiErr.Status < http.StatusInternalServerError:
				return false, fmt.Errorf("%w: acquire role %s: %v", ErrHoldLost, name, err)
			default:
				// The next answer tells whether it took.
				h.log.Warn("role not acquired; trying again", "err", err)
				return false, nil
			}
		})
		if err != nil {
			return 0, err
		}
		// The candidacy shows the mastership too; the election itself is
		// what counts, so a failure here is no reason to give up.
		if err := stand(ctx, StateMaster); err != nil {
			h.log.Warn("master state not shown", "err", err)
		}
		return token, nil
	})
	if err != nil {
		return nil, err
	}
	return h, nil
}
