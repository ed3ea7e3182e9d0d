package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/fedkeeper/fedkeeper/api"
	"github.com/fedkeeper/fedkeeper/internal/wait"
	"github.com/fedkeeper/fedkeeper/quorum"
)

// Bounds of the failover scenario: every wait gives up after its bound,
// so that a federation that does not heal fails the bench instead of
// hanging it. The fleet bounds process starts and the federation's
// return to its shape.
const (
	failoverWriteTimeout = 500 * time.Millisecond // one write, across all servers
	failoverWriteLimit   = 30 * time.Second       // kill to first acknowledged write
	failoverMaxWrites    = 20000                  // write attempts per trial
	failoverSettle       = 5 * time.Second        // see setUp
	failoverVoters       = 3
	failoverStandbys     = 1
)

// Failover measures how long the federation cannot take writes after its
// store leader is killed with SIGKILL, and how long the autopilot takes
// to promote the standby in the dead voter's place. It runs four
// supernodes as real processes of this binary on loopback: three voters
// and one standby. Each trial kills the leader, writes until a write
// succeeds, waits for the standby's promotion and the dead voter's
// removal, restarts the killed supernode (which rejoins as the standby)
// and waits for three healthy voters and one healthy standby again. A
// restarted supernode that exits by itself (a refused rejoin) is started
// again after a second, as a service manager would, and counted in
// failed_rejoins.
func Failover(ctx context.Context, trials int, deadAfter time.Duration, progress io.Writer) (Result, error) {
	if trials < 1 || trials > 200 {
		return nil, fmt.Errorf("--trials must be between 1 and 200, not %d", trials)
	}
	if deadAfter < time.Second || deadAfter > time.Minute {
		return nil, fmt.Errorf("--dead-after must be between 1s and 1m, not %s", deadAfter)
	}
	f, err := newFleet("failover", failoverVoters+failoverStandbys, 0, progress)
	if err != nil {
		return nil, err
	}
	// Every process started is killed on the way out, whatever the way:
	// success, error, or a cancelled ctx (Ctrl-C).
	defer f.Close()
	fo := &failover{fleet: f, deadAfter: deadAfter}
	return f.measure(ctx, func(ctx context.Context) (Result, error) { return fo.run(ctx, trials) })
}

// failover is one run of the failover scenario.
type failover struct {
	*fleet
	deadAfter time.Duration
}

func (fo *failover) run(ctx context.Context, trials int) (Result, error) {
	if err := fo.setUp(ctx); err != nil {
		return nil, err
	}
	failovers := make([]time.Duration, 0, trials)
	var promotions []time.Duration
	var recoveries []time.Duration
	writeErrors := map[string]int{}
	for trial := 1; trial <= trials; trial++ {
		t, err := fo.trial(ctx, trial, trials, writeErrors)
		if err != nil {
			return nil, fmt.Errorf("trial %d: %w", trial, err)
		}
		failovers = append(failovers, t.failover)
		if t.promoted {
			promotions = append(promotions, t.promotion)
		}
		recoveries = append(recoveries, t.recovery)
	}
	if len(writeErrors) > 0 {
		fmt.Fprintln(fo.progress, "write errors seen while the leader was down:")
		keys := make([]string, 0, len(writeErrors))
		for k := range writeErrors {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(fo.progress, "  %5d  %s\n", writeErrors[k], k)
		}
	}
	slices.Sort(failovers)
	slices.Sort(promotions)
	slices.Sort(recoveries)
	res := Result{
		"scenario":       "failover",
		"trials":         trials,
		"supernodes":     failoverVoters,
		"standbys":       failoverStandbys,
		"dead_after_s":   fo.deadAfter.Seconds(),
		"p50_failover_s": seconds(quantile(failovers, 0.50)),
		"p99_failover_s": seconds(quantile(failovers, 0.99)),
		"max_failover_s": seconds(failovers[len(failovers)-1]),
		"p50_recovery_s": seconds(quantile(recoveries, 0.50)),
		"max_recovery_s": seconds(recoveries[len(recoveries)-1]),
		"failed_rejoins": fo.failedRejoins,
	}
	if len(promotions) > 0 {
		res["promotions"] = len(promotions)
		res["p50_promotion_s"] = seconds(quantile(promotions, 0.50))
		res["p99_promotion_s"] = seconds(quantile(promotions, 0.99))
		res["max_promotion_s"] = seconds(promotions[len(promotions)-1])
	}
	return res, nil
}

// setUp makes the federation of three voters and one standby, then gives
// the supernodes time to learn each other's addresses.
func (fo *failover) setUp(ctx context.Context) error {
	spec := fedSpec{voters: failoverVoters, standbys: failoverStandbys, deadAfter: fo.deadAfter}
	if err := fo.startFederation(ctx, spec); err != nil {
		return err
	}
	// A supernode saves the others' addresses, which it needs to rejoin
	// after the autopilot removed it, periodically (every 2s at this
	// writing: supernode/peers.go, follow). The first supernode, killed
	// before it saved them once, opens its old store, is refused as
	// removed, and cannot rejoin however often it is restarted.
	fmt.Fprintf(fo.progress, "waiting %s for every supernode to learn the others' addresses\n", failoverSettle)
	if !wait.Sleep(ctx, failoverSettle) {
		return ctx.Err()
	}
	return nil
}

type trialResult struct {
	failover, promotion, recovery time.Duration
	promoted                      bool
}

// trial kills the store leader and measures until the federation is whole
// again.
func (fo *failover) trial(ctx context.Context, trial, trials int, writeErrors map[string]int) (trialResult, error) {
	var res trialResult
	list, err := fo.waitSteady(ctx, "")
	if err != nil {
		return res, err
	}
	var leader, standby string
	for _, sn := range list {
		if sn.Leader {
			leader = sn.Name
		}
		if sn.Standby && !sn.Voter {
			standby = sn.Name
		}
	}
	victim := fo.byName[leader]
	if victim == nil {
		return res, fmt.Errorf("the leader %q is not one of the supernodes this bench started", leader)
	}
	// A write before the kill: the federation takes writes, and the
	// client's connections are warm.
	if err := fo.writeUntilOK(ctx, fmt.Sprintf("trial-%d-before", trial), time.Now(), nil); err != nil {
		return res, fmt.Errorf("write before the kill: %w", err)
	}

	killedAt, err := fo.kill(victim)
	if err != nil {
		return res, err
	}
	if err := fo.writeUntilOK(ctx, fmt.Sprintf("trial-%d-after", trial), killedAt, writeErrors); err != nil {
		return res, fmt.Errorf("no write succeeded after killing the leader %s: %w", leader, err)
	}
	res.failover = time.Since(killedAt)

	// The autopilot promotes the standby once the dead voter has been
	// unreachable for dead_after, then removes the dead voter.
	limit := fo.deadAfter + 60*time.Second
	if standby != "" {
		err := fo.poll(ctx, limit, func(list []quorum.Supernode) error {
			for _, sn := range list {
				if sn.Name == standby && sn.Voter {
					return nil
				}
			}
			return fmt.Errorf("standby %s not promoted", standby)
		})
		if err != nil {
			return res, fmt.Errorf("after killing the leader %s: %w", leader, err)
		}
		res.promotion, res.promoted = time.Since(killedAt), true
	}
	removedPoll := func(list []quorum.Supernode) error {
		for _, sn := range list {
			if sn.Name == leader {
				return fmt.Errorf("dead voter %s still a store member (voter=%v healthy=%v)", leader, sn.Voter, sn.Healthy)
			}
		}
		return nil
	}
	if err := fo.poll(ctx, limit, removedPoll); err != nil {
		return res, err
	}
	removed := time.Since(killedAt)

	// The killed supernode comes back as the standby.
	if err := fo.start(victim, victim.args); err != nil {
		return res, err
	}
	fo.supervised, fo.restarts = victim, 0
	_, err = fo.waitSteady(ctx, leader)
	fo.supervised = nil
	if err != nil {
		return res, fmt.Errorf("after restarting %s: %w", leader, err)
	}
	res.recovery = time.Since(killedAt)
	promo := "no standby to promote"
	if res.promoted {
		promo = fmt.Sprintf("standby %s promoted after %.3fs", standby, res.promotion.Seconds())
	}
	fmt.Fprintf(fo.progress, "trial %d/%d: killed leader %s; first write after %.3fs; %s; %s removed after %.3fs; whole again after %.3fs\n",
		trial, trials, leader, res.failover.Seconds(), promo, leader, removed.Seconds(), res.recovery.Seconds())
	return res, nil
}

// writeUntilOK writes the bench key until a write is acknowledged, in a
// tight loop bounded in attempts and in time from since.
func (fo *failover) writeUntilOK(ctx context.Context, value string, since time.Time, errs map[string]int) error {
	var last error
	for attempt := range failoverMaxWrites {
		if time.Since(since) > failoverWriteLimit {
			return fmt.Errorf("none in %s (%d attempts); last error: %w", failoverWriteLimit, attempt, last)
		}
		wctx, cancel := context.WithTimeout(ctx, failoverWriteTimeout)
		err := fo.admin.Do(wctx, http.MethodPut, "/v1/kv/bench/failover", api.PutKVRequest{Value: fmt.Sprintf("%s-%d", value, attempt)}, nil)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		last = err
		if errs != nil {
			errs[errorKind(err)]++
		}
		if !wait.Sleep(ctx, 5*time.Millisecond) {
			return ctx.Err()
		}
	}
	return fmt.Errorf("none in %d attempts; last error: %w", failoverMaxWrites, last)
}
