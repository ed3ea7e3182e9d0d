package bench

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/fedkeeper/fedkeeper/events"
	"github.com/fedkeeper/fedkeeper/internal/wait"
)

// newestEvent is the store revision of the newest event in the log, 0
// when there is none: the base from which a scenario looks for what
// happens next.
func (f *fleet) newestEvent(ctx context.Context) (int64, error) {
	var list []events.Event
	if err := f.do(ctx, 5*time.Second, http.MethodGet, "/v1/events?limit=1", nil, &list); err != nil {
		return 0, fmt.Errorf("read the newest event: %w", err)
	}
	if len(list) == 0 {
		return 0, nil
	}
	return list[len(list)-1].Revision, nil
}

// waitEvent follows the events of node written after revision base, with
// blocking queries, until one is accepted by want; it returns the node's
// events from base up to that one, oldest first. It gives up after limit,
// or as soon as a process of the fleet exits by itself.
//
// A blocking query on a node's events returns as soon as any node has a
// newer event, so waiting after base alone would spin while other nodes'
// events arrive. Each round therefore reads the newest revision first,
// then the node's events after base (which returns at once if anything
// is newer than base), then blocks for events after that newest revision:
// an event of the node is seen in the second read if it is no newer than
// that revision, or ends the third.
func (f *fleet) waitEvent(ctx context.Context, node string, base int64, limit time.Duration, want func(events.Event) bool) ([]events.Event, error) {
	deadline := time.Now().Add(limit)
	seen := map[int64]events.Event{}
	found := func(list []events.Event) ([]events.Event, bool) {
		for _, e := range list {
			if e.Node == node && e.Revision > base {
				seen[e.Revision] = e
			}
		}
		var all []events.Event
		for _, e := range seen {
			all = append(all, e)
		}
		slices.SortFunc(all, func(a, b events.Event) int { return int(a.Revision - b.Revision) })
		for i, e := range all {
			if want(e) {
				return all[:i+1], true
			}
		}
		return all, false
	}
	query := func(index int64) ([]events.Event, error) {
		w := min(time.Until(deadline), 10*time.Second)
		if w < 100*time.Millisecond {
			w = 100 * time.Millisecond
		}
		var list []events.Event
		path := fmt.Sprintf("/v1/events?node=%s&index=%d&wait=%dms", url.QueryEscape(node), index, w.Milliseconds())
		err := f.do(ctx, w+5*time.Second, http.MethodGet, path, nil, &list)
		return list, err
	}
	var last error
	for {
		if err := f.checkRunning(ctx); err != nil {
			return nil, err
		}
		top, err := f.newestEvent(ctx)
		if err == nil {
			var list []events.Event
			if list, err = query(base); err == nil {
				if all, ok := found(list); ok {
					return all, nil
				}
				if time.Now().Before(deadline) {
					if list, err = query(top); err == nil {
						if all, ok := found(list); ok {
							return all, nil
						}
					}
				}
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			all, _ := found(nil)
			var kinds []string
			for _, e := range all {
				kinds = append(kinds, e.Kind)
			}
			if last != nil {
				return nil, fmt.Errorf("not within %s; events of %s meanwhile: %v; last error: %w", limit, node, kinds, last)
			}
			return nil, fmt.Errorf("not within %s; events of %s meanwhile: %v", limit, node, kinds)
		}
		if err != nil && !wait.Sleep(ctx, fleetPoll) {
			return nil, ctx.Err()
		}
	}
}
