// Package bench holds the measured scenarios behind "fedkeeper bench". Each
// scenario sets up what it measures on loopback, bounds its own load, and
// returns flat figures that are printed as one JSON object.
package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/fedkeeper/fedkeeper/agent"
	"github.com/fedkeeper/fedkeeper/membership"
	"github.com/fedkeeper/fedkeeper/supernode"
)

// Result is one scenario's figures, printed as flat JSON.
type Result map[string]any

// Join measures N agents joining one supernode at once with one token:
// the time from each agent's start to its admission with a live session.
func Join(ctx context.Context, agents int, progress io.Writer) (Result, error) {
	if agents < 1 || agents > 2000 {
		return nil, fmt.Errorf("--agents must be between 1 and 2000, not %d", agents)
	}
	dir, err := os.MkdirTemp("", "fedkeeper-bench-join-")
	if err != nil {
		return nil, fmt.Errorf("make temporary directory: %w", err)
	}
	defer os.RemoveAll(dir)
	sn, err := startSupernode(ctx, filepath.Join(dir, "supernode"), supernode.Config{})
	if err != nil {
		return nil, err
	}
	defer sn.Close()
	token, _, err := sn.Members.CreateToken(ctx, "bench", agents, time.Hour, "bench")
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "starting %d agents at once\n", agents)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	durations := make([]time.Duration, agents)
	running := make([]*agent.Agent, agents)
	errs := make([]error, agents)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range agents {
		wg.Go(func() {
			cfg := agent.Config{
				Name: fmt.Sprintf("bench-%04d", i), Join: []string{sn.URL()}, CAHash: sn.CA.Hash(),
				Profile: membership.Profile{Project: "bench", Site: "loopback"},
			}
			t0 := time.Now()
			running[i], errs[i] = agent.Start(ctx, filepath.Join(dir, cfg.Name), cfg, token)
			durations[i] = time.Since(t0)
		})
	}
	wg.Wait()
	total := time.Since(start)
	for _, a := range running {
		if a != nil {
			a.Close()
		}
	}
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("agent %d did not join: %w", i, err)
		}
	}
	nodes, _, err := sn.Members.List(ctx)
	if err != nil {
		return nil, err
	}
	alive := 0
	for _, n := range nodes {
		if n.Role == membership.RoleMember && n.Status == membership.StatusAlive {
			alive++
		}
	}
	if alive != agents {
		return nil, fmt.Errorf("%d agents started but %d members are alive", agents, alive)
	}
	slices.Sort(durations)
	return Result{
		"scenario":    "join",
		"agents":      agents,
		"p50_s":       seconds(quantile(durations, 0.50)),
		"p99_s":       seconds(quantile(durations, 0.99)),
		"max_s":       seconds(durations[len(durations)-1]),
		"total_s":     seconds(total),
		"joins_per_s": float64(agents) / total.Seconds(),
	}, nil
}

// startSupernode initialises and starts a one-supernode federation on free
// loopback ports.
func startSupernode(ctx context.Context, dir string, cfg supernode.Config) (*supernode.Supernode, error) {
	cfg.Name, cfg.Federation = "bench-supernode", "bench"
	if _, err := supernode.InitLoopback(dir, cfg); err != nil {
		return nil, err
	}
	return supernode.Start(ctx, dir)
}

// quantile of sorted durations, nearest rank.
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func seconds(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1e6
}

// round3 keeps three decimals of a figure.
func round3(v float64) float64 {
	return math.Round(v*1000) / 1000
}
