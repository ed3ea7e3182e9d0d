package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/fedkeeper/fedkeeper/events"
	"github.com/fedkeeper/fedkeeper/health"
	"github.com/fedkeeper/fedkeeper/internal/wait"
)

const (
	detectProject = "bench"
	detectAgent   = "detect-agent"
	// detectHealthLimit bounds an agent's (re)start to its health passing.
	detectHealthLimit = time.Minute
	// detectSlack is added to the longest detection the probe timing
	// allows: process and store latency on a loaded machine.
	detectSlack = 30 * time.Second
)

// Detect measures how long the federation takes to declare a member
// critical after its agent dies: supernodes run as processes of this
// binary with the given probe interval and failure threshold (written
// into their supernode.yaml: no flag sets them), and one agent process
// joins as a member. Each trial waits for the member to be passing and
// then a random part of the probe interval, kills its agent with SIGKILL,
// and takes the times of its "suspect" and "critical" events (as the
// supernodes stamped them) from the kill; then it restarts the agent from
// its data directory and waits for it to be passing again.
func Detect(ctx context.Context, trials, supernodes int, interval time.Duration, threshold int, progress io.Writer) (Result, error) {
	if trials < 1 || trials > 200 {
		return nil, fmt.Errorf("--trials must be between 1 and 200, not %d", trials)
	}
	if supernodes < 1 || supernodes > 5 {
		return nil, fmt.Errorf("--supernodes must be between 1 and 5, not %d", supernodes)
	}
	if interval < 100*time.Millisecond || interval > 10*time.Second {
		return nil, fmt.Errorf("--interval must be between 100ms and 10s, not %s", interval)
	}
	if threshold < 1 || threshold > 20 {
		return nil, fmt.Errorf("--threshold must be between 1 and 20, not %d", threshold)
	}
	f, err := newFleet("detect", supernodes, 1, progress)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	d := &detect{fleet: f, trials: trials, supernodes: supernodes, interval: interval, threshold: threshold}
	return f.measure(ctx, d.run)
}

// detect is one run of the detect scenario.
type detect struct {
	*fleet
	trials, supernodes int
	interval           time.Duration
	threshold          int
}

// limit is how long a trial waits for the critical event: the probe
// rounds until the threshold, the confirmation, and slack.
func (d *detect) limit() time.Duration {
	timeout := min(health.DefaultProbeTimeout, d.interval)
	round := max(d.interval, timeout)
	if d.supernodes < 2 {
		return time.Duration(2*d.threshold+1)*round + detectSlack
	}
	return time.Duration(d.threshold+1)*round + 2*timeout + time.Second + detectSlack
}

func (d *detect) run(ctx context.Context) (Result, error) {
	spec := fedSpec{
		voters: d.supernodes,
		config: fmt.Sprintf("health:\n  interval: %s\n  failure_threshold: %d\n", d.interval, d.threshold),
	}
	if err := d.startFederation(ctx, spec); err != nil {
		return nil, err
	}
	token, err := d.createToken(ctx, 1, detectProject)
	if err != nil {
		return nil, err
	}
	agent, err := d.startAgent(0, detectAgent, detectProject, token)
	if err != nil {
		return nil, err
	}
	if err := d.waitHealth(ctx, agent.name, string(health.Passing), detectHealthLimit); err != nil {
		return nil, err
	}
	fmt.Fprintf(d.progress, "%s joined and is passing at %s\n", agent.name, agent.addr)
	var criticals, suspects, recoveries []time.Duration
	unconfirmed := 0
	for trial := 1; trial <= d.trials; trial++ {
		t, err := d.trial(ctx, agent)
		if err != nil {
			return nil, fmt.Errorf("trial %d: %w", trial, err)
		}
		criticals = append(criticals, t.critical)
		if t.suspected {
			suspects = append(suspects, t.suspect)
		}
		recoveries = append(recoveries, t.recovery)
		note := ""
		if !t.confirmed {
			unconfirmed++
			note = " (not confirmed by a second supernode)"
		}
		suspect := "no suspect event"
		if t.suspected {
			suspect = fmt.Sprintf("suspect after %.3fs", t.suspect.Seconds())
		}
		fmt.Fprintf(d.progress, "trial %d/%d: killed %s; %s; critical after %.3fs%s, seen after %.3fs; passing again %.3fs after its restart\n",
			trial, d.trials, agent.name, suspect, t.critical.Seconds(), note, t.seen.Seconds(), t.recovery.Seconds())
	}
	slices.Sort(criticals)
	slices.Sort(suspects)
	slices.Sort(recoveries)
	res := Result{
		"scenario":          "detect",
		"trials":            d.trials,
		"supernodes":        d.supernodes,
		"interval_s":        d.interval.Seconds(),
		"failure_threshold": d.threshold,
		"p50_s":             seconds(quantile(criticals, 0.50)),
		"p99_s":             seconds(quantile(criticals, 0.99)),
		"max_s":             seconds(criticals[len(criticals)-1]),
		"p50_recovery_s":    seconds(quantile(recoveries, 0.50)),
		"unconfirmed":       unconfirmed,
	}
	if len(suspects) > 0 {
		res["p50_suspect_s"] = seconds(quantile(suspects, 0.50))
		res["max_suspect_s"] = seconds(suspects[len(suspects)-1])
	}
	return res, nil
}

type detectTrial struct {
	// suspect and critical are the events' times from the kill; seen is
	// when this bench learnt of the critical one.
	suspect, critical, seen time.Duration
	// recovery is from the agent's restart to its health passing.
	recovery  time.Duration
	suspected bool
	confirmed bool
}

// trial kills the agent, waits for its critical event, restarts it and
// waits until it is passing again.
func (d *detect) trial(ctx context.Context, agent *proc) (detectTrial, error) {
	var t detectTrial
	if !agent.running() {
		if err := d.start(agent, agent.args); err != nil {
			return t, err
		}
	}
	if err := d.waitHealth(ctx, agent.name, string(health.Passing), detectHealthLimit); err != nil {
		return t, err
	}
	// Passing is seen just after a probe; a fault comes at any point of
	// the probe interval.
	if !wait.Sleep(ctx, rand.N(d.interval)) {
		return t, ctx.Err()
	}
	base, err := d.newestEvent(ctx)
	if err != nil {
		return t, err
	}
	killedAt, err := d.kill(agent)
	if err != nil {
		return t, err
	}
	evs, err := d.waitEvent(ctx, agent.name, base, d.limit(), func(e events.Event) bool { return e.Kind == string(health.Critical) })
	if err != nil {
		return t, fmt.Errorf("no critical event for %s after its kill: %w", agent.name, err)
	}
	t.seen = time.Since(killedAt)
	for _, e := range evs {
		switch e.Kind {
		case string(health.Suspect):
			if !t.suspected {
				t.suspect, t.suspected = e.Time.Sub(killedAt), true
			}
		case string(health.Critical):
			t.critical = e.Time.Sub(killedAt)
			t.confirmed = strings.Contains(e.Message, "confirmed by")
		}
	}
	restarted := time.Now()
	if err := d.start(agent, agent.args); err != nil {
		return t, err
	}
	if err := d.waitHealth(ctx, agent.name, string(health.Passing), detectHealthLimit); err != nil {
		return t, fmt.Errorf("after restarting %s: %w", agent.name, err)
	}
	t.recovery = time.Since(restarted)
	return t, nil
}
