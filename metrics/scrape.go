package metrics

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// Scraper collects members' metrics into a History, at most once per
// interval per member however often it is asked: supernodes ask on every
// probe round and keep the probe rate and the scrape rate apart.
type Scraper struct {
	History  *History
	Interval time.Duration
	// OnScrape, when set, is told of every scrape: for the supernode's own
	// metrics.
	OnScrape func(ok bool)

	mu   sync.Mutex
	last map[string]time.Time
}

// NewScraper returns a scraper filling h every interval.
func NewScraper(h *History, interval time.Duration) *Scraper {
	return &Scraper{History: h, Interval: interval, last: map[string]time.Time{}}
}

// Scrape fetches https://addr/metrics of node with c unless it was fetched
// less than an interval ago. Failures are counted and otherwise ignored:
// the probe, not the scrape, decides a node's health.
func (s *Scraper) Scrape(ctx context.Context, c *http.Client, node, project, addr string) {
	now := time.Now()
	s.mu.Lock()
	if now.Sub(s.last[node]) < s.Interval {
		s.mu.Unlock()
		return
	}
	s.last[node] = now
	s.mu.Unlock()
	err := s.fetch(ctx, c, node, project, addr)
	if s.OnScrape != nil {
		s.OnScrape(err == nil)
	}
}

func (s *Scraper) fetch(ctx context.Context, c *http.Client, node, project, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, min(s.Interval, 5*time.Second))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/metrics", nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("metrics of %s: HTTP %d", node, resp.StatusCode)
	}
	families, err := Parse(resp.Body)
	if err != nil {
		return fmt.Errorf("metrics of %s: %w", node, err)
	}
	s.History.Add(node, project, time.Now(), families)
	return nil
}

// Forget drops what the scraper knows of nodes not in keep: members that
// left or moved to another supernode.
func (s *Scraper) Forget(keep map[string]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for node := range s.last {
		if !keep[node] {
			delete(s.last, node)
			s.History.Forget(node)
		}
	}
}
