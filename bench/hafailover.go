package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fedkeeper/fedkeeper/agent"
	"github.com/fedkeeper/fedkeeper/coord"
	"github.com/fedkeeper/fedkeeper/ha"
	"github.com/fedkeeper/fedkeeper/internal/wait"
)

// keepalivedPath is the daemon of Debian's keepalived package.
const keepalivedPath = "/usr/sbin/keepalived"

// Shape and bounds of the ha-failover scenario.
const (
	haGroup   = "bench"
	haProject = "bench"
	// haPoll is how often the scripts' logs are read: it delays the
	// bench, not the figures, which are the scripts' own timestamps.
	haPoll = 10 * time.Millisecond
	// haSlack is added to the longest failover the settings allow:
	// process and store latency on a loaded machine.
	haSlack = 30 * time.Second
	// haMaxClockStep is how far the wall clock may drift from the
	// monotonic one during a trial before its figures are refused.
	haMaxClockStep = 20 * time.Millisecond

	// keepalived's side: two namespaces joined by a veth pair, one VRRP
	// instance in each. The namespaces see no other network, so any
	// prefix is free; this one is reserved for documentation.
	kaAdvertInt   = time.Second // keepalived's default advert_int
	kaRouterID    = 51
	kaPrefix      = "192.0.2."
	kaVIP         = kaPrefix + "100"
	kaIface       = "veth0"
	kaStartLimit  = 30 * time.Second // start to a master and a backup
	kaKillLimit   = 10 * time.Second // SIGKILL to exit
	kaCmdLimit    = 15 * time.Second // one ip command
	kaRejoinLimit = 15 * time.Second // restart to backup
)

// haRanks are the candidates' ranks, and keepalived's priorities: the
// first is the preferred master.
var haRanks = []int{100, 50}

// HAFailoverOptions are the settings of the ha-failover scenario.
type HAFailoverOptions struct {
	// Trials is how many times the master is killed, on each side.
	Trials int
	// LeaseTTL and TakeoverDelay are the HA group's lease_ttl and
	// takeover_delay; the defaults are the HA group's.
	LeaseTTL      time.Duration
	TakeoverDelay time.Duration
}

func (o HAFailoverOptions) validate() error {
	if o.Trials < 1 || o.Trials > 200 {
		return fmt.Errorf("--trials must be between 1 and 200, not %d", o.Trials)
	}
	if o.LeaseTTL < coord.MinTTL || o.LeaseTTL > time.Minute || o.LeaseTTL%time.Second != 0 {
		return fmt.Errorf("--lease-ttl must be whole seconds from %s to 1m, not %s", coord.MinTTL, o.LeaseTTL)
	}
	// A zero in agent.yaml is no setting: the group takes its default.
	if o.TakeoverDelay < 0 || o.TakeoverDelay > time.Minute {
		return fmt.Errorf("--takeover-delay must be from 0 to 1m, not %s", o.TakeoverDelay)
	}
	return nil
}

// groupConfig is the HA group of the candidate of rank, running script.
// A lease too short for the default script timeout gets a quarter of it:
// the watchdog must be able to stop the service within half a lease.
func (o HAFailoverOptions) groupConfig(rank int, script string) ha.GroupConfig {
	cfg := ha.GroupConfig{Name: haGroup, Rank: rank, Script: script, LeaseTTL: o.LeaseTTL, TakeoverDelay: o.TakeoverDelay}
	if (ha.WatchdogSpec{StopTimeout: ha.DefaultScriptTimeout}).Lead() >= o.LeaseTTL/2 {
		cfg.ScriptTimeout = o.LeaseTTL / 4
	}
	return cfg
}

// HAFailover measures how long an HA group has no service after its
// master dies: the time from SIGKILL of the master to its successor's
// "start", for fedkeeper's HA groups and for keepalived (VRRP) configured
// as the same group.
//
// fedkeeper: one supernode and one agent per rank run as processes of
// this binary on loopback, every agent a candidate of the group with a
// script that logs each call. Each trial waits until one agent is master
// with its service started and the other a standby, kills the master's
// agent with SIGKILL, takes the times of the killed master's "stop" (its
// watchdog's) and of the successor's "start", and restarts the killed
// agent, which stands again as a standby: preemption is off, so the
// agents take turns as master. A start while another node's service runs
// fails the bench.
//
// keepalived: one daemon per rank, each in its own network namespace,
// the two joined by a veth pair, with one VRRP instance whose notify
// scripts log the same lines (start on master, stop otherwise), both
// starting as backups without preemption. Each trial kills the master's
// daemon and its VRRP process with SIGKILL, as a crash would, and takes
// the time of the backup's "start"; the killed daemon is started again
// and waits as the backup. If keepalived cannot run here, the figures say
// why in keepalived_error.
//
// Every kill comes at a random point of the renewal (or advertisement)
// period after the group is steady. The scripts stamp their lines with
// the wall clock, which the bench reads at the kill; a trial in which the
// wall clock moved away from the monotonic one is refused.
func HAFailover(ctx context.Context, o HAFailoverOptions, progress io.Writer) (Result, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	f, err := newFleet("ha-failover", 1, len(haRanks), progress)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := &haFailover{fleet: f, o: o}
	return f.measure(ctx, h.run)
}

// haFailover is one run of the ha-failover scenario.
type haFailover struct {
	*fleet
	o HAFailoverOptions
}

func (h *haFailover) run(ctx context.Context) (Result, error) {
	cfg := h.o.groupConfig(haRanks[0], "").WithDefaults()
	res := Result{
		"scenario":         "ha-failover",
		"trials":           h.o.Trials,
		"candidates":       len(haRanks),
		"lease_ttl_s":      cfg.LeaseTTL.Seconds(),
		"takeover_delay_s": cfg.TakeoverDelay.Seconds(),
		"script_timeout_s": cfg.ScriptTimeout.Seconds(),
	}
	fk, err := h.fedkeeper(ctx, cfg)
	if err != nil {
		return nil, err
	}
	slices.Sort(fk.starts)
	slices.Sort(fk.stops)
	res["fedkeeper_p50_s"] = seconds(quantile(fk.starts, 0.50))
	res["fedkeeper_p99_s"] = seconds(quantile(fk.starts, 0.99))
	res["fedkeeper_max_s"] = seconds(fk.starts[len(fk.starts)-1])
	res["fedkeeper_min_s"] = seconds(fk.starts[0])
	res["fedkeeper_stop_p50_s"] = seconds(quantile(fk.stops, 0.50))
	res["fedkeeper_stop_max_s"] = seconds(fk.stops[len(fk.stops)-1])
	res["fedkeeper_min_gap_s"] = seconds(slices.Min(fk.gaps))

	ka, err := runKeepalived(ctx, filepath.Join(h.dir, "keepalived"), h.o.Trials, h.progress)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if err != nil {
		fmt.Fprintf(h.progress, "keepalived: %v\n", err)
		res["keepalived_error"] = err.Error()
		return res, nil
	}
	slices.Sort(ka.starts)
	res["keepalived_version"] = ka.version
	res["keepalived_advert_int_s"] = kaAdvertInt.Seconds()
	res["keepalived_p50_s"] = seconds(quantile(ka.starts, 0.50))
	res["keepalived_p99_s"] = seconds(quantile(ka.starts, 0.99))
	res["keepalived_max_s"] = seconds(ka.starts[len(ka.starts)-1])
	res["keepalived_min_s"] = seconds(ka.starts[0])
	res["keepalived_stale_vip_trials"] = ka.staleVIP
	res["ratio_p50"] = round3(quantile(fk.starts, 0.50).Seconds() / quantile(ka.starts, 0.50).Seconds())
	res["ratio_p99"] = round3(quantile(fk.starts, 0.99).Seconds() / quantile(ka.starts, 0.99).Seconds())
	return res, nil
}

// haFigures are one side's times from each kill to the successor's
// start; fedkeeper's also to the killed master's stop, and from that stop
// to the start (gaps); keepalived's how many times the killed master kept
// the virtual address, and its version.
type haFigures struct {
	starts, stops, gaps []time.Duration
	staleVIP            int
	version             string
}

// fedkeeper starts the supernode and the candidates and runs the trials;
// cfg is the group's configuration with its defaults.
func (h *haFailover) fedkeeper(ctx context.Context, cfg ha.GroupConfig) (haFigures, error) {
	var fig haFigures
	if err := h.startFederation(ctx, fedSpec{voters: 1}); err != nil {
		return fig, err
	}
	scriptLog := &haLog{path: filepath.Join(h.dir, "ha-fedkeeper.log")}
	script := filepath.Join(h.dir, "ha-fedkeeper.sh")
	if err := writeHAScript(script, scriptLog.path); err != nil {
		return fig, err
	}
	token, err := h.createToken(ctx, len(haRanks), haProject)
	if err != nil {
		return fig, err
	}
	var agents []*proc
	for i, rank := range haRanks {
		name := fmt.Sprintf("ha-%c", 'a'+i)
		// The agent keeps what it finds in its configuration and adds
		// its flags to it on the first start.
		ac := agent.Config{HAGroups: []ha.GroupConfig{h.o.groupConfig(rank, script)}}
		if err := agent.SaveConfig(filepath.Join(h.dir, name), ac); err != nil {
			return fig, err
		}
		a, err := h.startAgent(i, name, haProject, token)
		if err != nil {
			return fig, err
		}
		agents = append(agents, a)
		fmt.Fprintf(h.progress, "%s started at %s, rank %d in HA group %s\n", name, a.addr, rank, haGroup)
	}
	for trial := 1; trial <= h.o.Trials; trial++ {
		t, err := h.trial(ctx, scriptLog, agents, cfg)
		if err != nil {
			return fig, fmt.Errorf("fedkeeper trial %d: %w", trial, err)
		}
		fig.starts = append(fig.starts, t.start)
		fig.stops = append(fig.stops, t.stop)
		fig.gaps = append(fig.gaps, t.start-t.stop)
		fmt.Fprintf(h.progress, "fedkeeper trial %d/%d: killed master %s (token %d); its service stopped after %.3fs; %s started after %.3fs (token %d)\n",
			trial, h.o.Trials, t.killed.Node, t.killed.Token, t.stop.Seconds(), t.successor.Node, t.start.Seconds(), t.successor.Token)
	}
	return fig, nil
}

// haTrial is one failover: the master's last start, the successor's
// start, and their times from the kill.
type haTrial struct {
	killed, successor haEvent
	start, stop       time.Duration
}

// trial kills the master's agent once the group is steady, waits for the
// successor's start and the killed master's stop, and restarts the killed
// agent.
func (h *haFailover) trial(ctx context.Context, scriptLog *haLog, agents []*proc, cfg ha.GroupConfig) (haTrial, error) {
	var t haTrial
	master, err := h.waitSteady(ctx, scriptLog, agents)
	if err != nil {
		return t, err
	}
	t.killed = master
	victim := h.byName[master.Node]
	var successor *proc
	for _, a := range agents {
		if a != victim {
			successor = a
		}
	}
	// The master renews its lease every third of the TTL; a crash comes
	// at any point of that period.
	if !wait.Sleep(ctx, rand.N(cfg.LeaseTTL/3)) {
		return t, ctx.Err()
	}
	base := len(scriptLog.events)
	killedAt, err := h.kill(victim)
	if err != nil {
		return t, err
	}
	limit := cfg.LeaseTTL + cfg.TakeoverDelay + cfg.ScriptTimeout + haSlack
	if t.successor, err = scriptLog.waitFor(ctx, base, limit, h.checkRunning, haAction("start", successor.name)); err != nil {
		return t, fmt.Errorf("no start of %s after killing %s: %w", successor.name, victim.name, err)
	}
	stopped, err := scriptLog.waitFor(ctx, base, limit, h.checkRunning, haAction("stop", victim.name))
	if err != nil {
		return t, fmt.Errorf("no stop of %s after killing its agent: %w", victim.name, err)
	}
	if err := clockSteady(killedAt); err != nil {
		return t, err
	}
	if _, err := replayHA(scriptLog.events); err != nil {
		return t, err
	}
	if t.successor.Token <= master.Token {
		return t, fmt.Errorf("%s started with fencing token %d, not above the killed master's %d", t.successor.Node, t.successor.Token, master.Token)
	}
	t.start, t.stop = t.successor.Time.Sub(killedAt), stopped.Time.Sub(killedAt)
	if err := h.start(victim, victim.args); err != nil {
		return t, err
	}
	return t, nil
}

// waitSteady waits until the election has a master whose service the
// log shows started under its token, alone, and every other agent is a
// standby; it returns the master's start.
func (h *haFailover) waitSteady(ctx context.Context, scriptLog *haLog, agents []*proc) (haEvent, error) {
	deadline := time.Now().Add(fleetSteadyLimit)
	for {
		if err := h.checkRunning(ctx); err != nil {
			return haEvent{}, err
		}
		if err := scriptLog.read(); err != nil {
			return haEvent{}, err
		}
		running, err := replayHA(scriptLog.events)
		if err != nil {
			return haEvent{}, err
		}
		var e coord.Election
		err = h.do(ctx, 2*time.Second, http.MethodGet, "/v1/elections/"+coord.KindHA+"/"+haGroup, nil, &e)
		if err == nil {
			err = haSteady(e, running, agents)
			if err == nil {
				return running[0], nil
			}
		}
		if ctx.Err() != nil {
			return haEvent{}, ctx.Err()
		}
		if time.Now().After(deadline) {
			return haEvent{}, fmt.Errorf("HA group %s not steady after %s: %w", haGroup, fleetSteadyLimit, err)
		}
		if !wait.Sleep(ctx, fleetPoll) {
			return haEvent{}, ctx.Err()
		}
	}
}

// haSteady tells why the group is not steady yet, or nil.
func haSteady(e coord.Election, running []haEvent, agents []*proc) error {
	if e.Master == nil {
		return errors.New("no master")
	}
	if len(running) != 1 || running[0].Node != e.Master.Node || running[0].Token != e.Master.Token {
		return fmt.Errorf("master %s (token %d), but the services running are %v", e.Master.Node, e.Master.Token, running)
	}
	for _, a := range agents {
		want := ha.StateStandby
		if a.name == e.Master.Node {
			want = ha.StateMaster
		}
		i := slices.IndexFunc(e.Candidates, func(c coord.Candidate) bool { return c.Node == a.name })
		if i < 0 {
			return fmt.Errorf("%s is no candidate", a.name)
		}
		if c := e.Candidates[i]; c.State != want {
			return fmt.Errorf("%s is %s, not %s", a.name, c.State, want)
		}
	}
	return nil
}

// clockSteady refuses a trial begun at since if the wall clock, which
// stamps the scripts' lines, was set or slewed away from the monotonic
// clock meanwhile.
func clockSteady(since time.Time) error {
	now := time.Now()
	step := now.Round(0).Sub(since.Round(0)) - now.Sub(since)
	if step.Abs() > haMaxClockStep {
		return fmt.Errorf("the wall clock moved by %s against the monotonic clock during the trial; its times are not to be trusted", step)
	}
	return nil
}

// haEvent is one line of an HA script's log: ACTION GROUP NODE TOKEN
// TIME, the token "-" when there is none (keepalived) and the time as
// seconds since the epoch with microseconds.
type haEvent struct {
	Action, Group, Node string
	Token               int64
	Time                time.Time
}

func (e haEvent) String() string {
	return fmt.Sprintf("%s %s (token %d) at %s", e.Action, e.Node, e.Token, e.Time.Format("15:04:05.000000"))
}

// writeHAScript writes the script of an HA group (or of keepalived's
// notifications, which name the node as third argument) that appends one
// line per call to log. bash stamps it without a fork, from its own
// reading of the wall clock.
func writeHAScript(path, log string) error {
	bash, err := exec.LookPath("bash")
	if err != nil {
		return fmt.Errorf("the HA script needs bash: %w", err)
	}
	script := fmt.Sprintf(`#!%s
printf '%%s %%s %%s %%s %%s\n' "$1" "$2" "${3:-$%s}" "${%s:--}" "$EPOCHREALTIME" >>%s
`, bash, ha.EnvNode, ha.EnvFencingToken, shellQuote(log))
	if err := os.WriteFile(path, []byte(script), 0o700); err != nil {
		return fmt.Errorf("write the HA script: %w", err)
	}
	return nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// parseHAEvent reads one line of an HA script's log.
func parseHAEvent(line string) (haEvent, error) {
	f := strings.Fields(line)
	if len(f) != 5 {
		return haEvent{}, fmt.Errorf("HA script log line %q: want ACTION GROUP NODE TOKEN TIME", line)
	}
	e := haEvent{Action: f[0], Group: f[1], Node: f[2]}
	if f[3] != "-" {
		tok, err := strconv.ParseInt(f[3], 10, 64)
		if err != nil {
			return haEvent{}, fmt.Errorf("HA script log line %q: token: %w", line, err)
		}
		e.Token = tok
	}
	// The decimal separator is the locale's.
	sec, frac, ok := strings.Cut(strings.Replace(f[4], ",", ".", 1), ".")
	s, err := strconv.ParseInt(sec, 10, 64)
	if !ok || err != nil || len(frac) == 0 || len(frac) > 9 {
		return haEvent{}, fmt.Errorf("HA script log line %q: time %q is not SECONDS.FRACTION", line, f[4])
	}
	ns, err := strconv.ParseInt(frac+strings.Repeat("0", 9-len(frac)), 10, 64)
	if err != nil {
		return haEvent{}, fmt.Errorf("HA script log line %q: time %q is not SECONDS.FRACTION", line, f[4])
	}
	e.Time = time.Unix(s, ns)
	return e, nil
}

// replayHA goes through the events in the order of their times and
// returns the last start of every node whose service runs at the end. A
// start while another node's service runs is two masters at once: an
// error.
func replayHA(events []haEvent) ([]haEvent, error) {
	sorted := slices.Clone(events)
	slices.SortStableFunc(sorted, func(a, b haEvent) int { return a.Time.Compare(b.Time) })
	running := map[string]haEvent{}
	for _, e := range sorted {
		switch e.Action {
		case "start":
			for node, s := range running {
				if node != e.Node {
					return nil, fmt.Errorf("two masters at once: %s while %s had not stopped (%s)", e, node, s)
				}
			}
			running[e.Node] = e
		case "stop":
			delete(running, e.Node)
		}
	}
	out := make([]haEvent, 0, len(running))
	for _, e := range running {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b haEvent) int { return strings.Compare(a.Node, b.Node) })
	return out, nil
}

// haAction accepts the events of node doing action.
func haAction(action, node string) func(haEvent) bool {
	return func(e haEvent) bool { return e.Action == action && e.Node == node }
}

// haLog follows the log file an HA script appends to.
type haLog struct {
	path string
	off  int64
	// part is a line not yet whole.
	part   string
	events []haEvent
}

// read takes in the lines appended since the last read.
func (l *haLog) read() error {
	f, err := os.Open(l.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open the HA script's log: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(l.off, io.SeekStart); err != nil {
		return fmt.Errorf("read the HA script's log: %w", err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return fmt.Errorf("read the HA script's log: %w", err)
	}
	l.off += int64(len(b))
	lines := strings.Split(l.part+string(b), "\n")
	l.part = lines[len(lines)-1]
	for _, line := range lines[:len(lines)-1] {
		if strings.TrimSpace(line) == "" {
			continue
		}
		e, err := parseHAEvent(line)
		if err != nil {
			return err
		}
		l.events = append(l.events, e)
	}
	return nil
}

// waitFor reads the log until an event from index from on is accepted by
// want, for at most limit; check, if set, fails it early (a process that
// exited by itself).
func (l *haLog) waitFor(ctx context.Context, from int, limit time.Duration, check func(context.Context) error, want func(haEvent) bool) (haEvent, error) {
	deadline := time.Now().Add(limit)
	for {
		if check != nil {
			if err := check(ctx); err != nil {
				return haEvent{}, err
			}
		}
		if err := l.read(); err != nil {
			return haEvent{}, err
		}
		if i := slices.IndexFunc(l.events[min(from, len(l.events)):], want); i >= 0 {
			return l.events[from+i], nil
		}
		if time.Now().After(deadline) {
			return haEvent{}, fmt.Errorf("not within %s; lines meanwhile: %v", limit, l.events[min(from, len(l.events)):])
		}
		if !wait.Sleep(ctx, haPoll) {
			return haEvent{}, ctx.Err()
		}
	}
}

var keepalivedVersionRE = regexp.MustCompile(`Keepalived v(\S+)`)

// kaNode is one keepalived daemon and its namespace.
type kaNode struct {
	name, ns, conf, dir string
	priority            int
	p                   *peerProcess
	// started is when the daemon was last started.
	started time.Time
}

// kaRun is keepalived's side of the scenario.
type kaRun struct {
	ip       string
	nodes    []*kaNode
	log      *haLog
	progress io.Writer
}

// runKeepalived runs keepalived's trials in dir; its error says why
// keepalived could not be measured.
func runKeepalived(ctx context.Context, dir string, trials int, progress io.Writer) (haFigures, error) {
	var fig haFigures
	if os.Geteuid() != 0 {
		return fig, errors.New("keepalived needs network namespaces, which need root")
	}
	if _, err := os.Stat(keepalivedPath); err != nil {
		return fig, fmt.Errorf("%s is missing (%w); install Debian's package: apt-get install -y keepalived", keepalivedPath, err)
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		return fig, fmt.Errorf("keepalived's namespaces need the ip command (iproute2): %w", err)
	}
	if out, err := exec.CommandContext(ctx, keepalivedPath, "--version").CombinedOutput(); err == nil {
		if m := keepalivedVersionRE.FindSubmatch(out); m != nil {
			fig.version = string(m[1])
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fig, fmt.Errorf("make keepalived's directory: %w", err)
	}
	k := &kaRun{ip: ip, log: &haLog{path: filepath.Join(dir, "ha-keepalived.log")}, progress: progress}
	// Removed whatever happens, Ctrl-C included: the namespaces outlive
	// this process otherwise.
	defer k.close()
	if err := k.setUp(ctx, dir); err != nil {
		return fig, err
	}
	for trial := 1; trial <= trials; trial++ {
		start, stale, err := k.trial(ctx, trial, trials)
		if err != nil {
			return fig, fmt.Errorf("keepalived trial %d: %w", trial, err)
		}
		fig.starts = append(fig.starts, start)
		if stale {
			fig.staleVIP++
		}
	}
	return fig, nil
}

// setUp makes the namespaces and their link, and starts both daemons.
func (k *kaRun) setUp(ctx context.Context, dir string) error {
	script := filepath.Join(dir, "ha-keepalived.sh")
	if err := writeHAScript(script, k.log.path); err != nil {
		return err
	}
	for i, prio := range haRanks {
		name := fmt.Sprintf("ka-%c", 'a'+i)
		n := &kaNode{name: name, ns: fmt.Sprintf("fkha%d-%c", os.Getpid(), 'a'+i), dir: dir, priority: prio, conf: filepath.Join(dir, name+".conf")}
		// Recorded before it exists, so that close removes a half-made
		// namespace too.
		k.nodes = append(k.nodes, n)
		if _, err := k.ipCmd(ctx, "netns", "add", n.ns); err != nil {
			return fmt.Errorf("cannot create network namespaces here: %w", err)
		}
		if err := os.WriteFile(n.conf, []byte(keepalivedConf(n.name, n.priority, script)), 0o600); err != nil {
			return fmt.Errorf("write keepalived's configuration: %w", err)
		}
	}
	a, b := k.nodes[0], k.nodes[1]
	if _, err := k.ipCmd(ctx, "link", "add", kaIface, "netns", a.ns, "type", "veth", "peer", "name", kaIface, "netns", b.ns); err != nil {
		return fmt.Errorf("cannot link the namespaces: %w", err)
	}
	for i, n := range k.nodes {
		for _, args := range [][]string{
			{"addr", "add", fmt.Sprintf("%s%d/24", kaPrefix, i+1), "dev", kaIface},
			{"link", "set", "lo", "up"},
			{"link", "set", kaIface, "up"},
		} {
			if _, err := k.ipCmd(ctx, append([]string{"-n", n.ns}, args...)...); err != nil {
				return err
			}
		}
	}
	for _, n := range k.nodes {
		if err := k.start(n); err != nil {
			return err
		}
	}
	if _, err := k.waitSteady(ctx, kaStartLimit); err != nil {
		return fmt.Errorf("keepalived did not elect a master: %w", err)
	}
	return nil
}

// keepalivedConf is one node's VRRP instance: both start as backups and
// do not preempt, as fedkeeper's candidates, so the one not killed stays
// master; the notifications log start on master and stop on anything
// else.
func keepalivedConf(node string, priority int, script string) string {
	notify := func(action string) string {
		return fmt.Sprintf("%q", fmt.Sprintf("%s %s %s %s", script, action, haGroup, node))
	}
	return fmt.Sprintf(`global_defs {
	router_id %s
	script_user root
	enable_script_security
}
vrrp_instance %s {
	state BACKUP
	nopreempt
	interface %s
	virtual_router_id %d
	priority %d
	advert_int %d
	virtual_ipaddress {
		%s/24
	}
	notify_master %s
	notify_backup %s
	notify_fault %s
	notify_stop %s
}
`, node, haGroup, kaIface, kaRouterID, priority, int(kaAdvertInt/time.Second), kaVIP,
		notify("start"), notify("stop"), notify("stop"), notify("stop"))
}

// start runs n's daemon in the foreground in its namespace.
func (k *kaRun) start(n *kaNode) error {
	cmd := exec.Command(k.ip, "netns", "exec", n.ns, keepalivedPath, "--dont-fork", "--log-console", "--no-syslog", "--vrrp",
		"--use-file", n.conf, "--pid", filepath.Join(n.dir, n.name+".pid"), "--vrrp_pid", filepath.Join(n.dir, n.name+"-vrrp.pid"))
	n.started = time.Now()
	p, err := startPeer("keepalived "+n.name, filepath.Join(n.dir, n.name+".log"), cmd)
	if err != nil {
		return err
	}
	n.p = p
	return nil
}

// check fails if a daemon the bench did not kill has exited.
func (k *kaRun) check(context.Context) error {
	for _, n := range k.nodes {
		if n.p == nil {
			continue
		}
		select {
		case <-n.p.done:
			return fmt.Errorf("keepalived %s exited by itself; its log ends:\n%s", n.name, tailFile(n.p.log, 20))
		default:
		}
	}
	return nil
}

// waitSteady waits until one daemon's last line is a start and every
// other's is a stop written since its own start; it returns the master.
func (k *kaRun) waitSteady(ctx context.Context, limit time.Duration) (*kaNode, error) {
	deadline := time.Now().Add(limit)
	for {
		if err := k.check(ctx); err != nil {
			return nil, err
		}
		if err := k.log.read(); err != nil {
			return nil, err
		}
		master, err := k.steady()
		if err == nil {
			return master, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("not steady after %s: %w", limit, err)
		}
		if !wait.Sleep(ctx, haPoll) {
			return nil, ctx.Err()
		}
	}
}

// steady is the master once every daemon has spoken since its start,
// one last with a start and the others with a stop.
func (k *kaRun) steady() (*kaNode, error) {
	var master *kaNode
	for _, n := range k.nodes {
		last, ok := lastEvent(k.log.events, n.name)
		if !ok || last.Time.Before(n.started) {
			return nil, fmt.Errorf("%s has said nothing since its start", n.name)
		}
		if last.Action != "start" {
			continue
		}
		if master != nil {
			return nil, fmt.Errorf("both %s and %s are master", master.name, n.name)
		}
		master = n
	}
	if master == nil {
		return nil, errors.New("no master")
	}
	return master, nil
}

// lastEvent is node's latest event: notifications run in parallel, so
// the log's order may not be theirs.
func lastEvent(events []haEvent, node string) (haEvent, bool) {
	var last haEvent
	ok := false
	for _, e := range events {
		if e.Node == node && (!ok || !e.Time.Before(last.Time)) {
			last, ok = e, true
		}
	}
	return last, ok
}

// trial kills the master's daemon and its VRRP process once the pair is
// steady, waits for the backup's start, and starts the killed daemon
// again. It reports whether the killed master still held the virtual
// address when the backup took it: keepalived does not fence.
func (k *kaRun) trial(ctx context.Context, trial, trials int) (time.Duration, bool, error) {
	master, err := k.waitSteady(ctx, kaRejoinLimit)
	if err != nil {
		return 0, false, err
	}
	var backup *kaNode
	for _, n := range k.nodes {
		if n != master {
			backup = n
		}
	}
	// One advertisement for the backup to hear the master since its
	// start, then a random point of the advertisement period.
	if !wait.Sleep(ctx, kaAdvertInt+rand.N(kaAdvertInt)) {
		return 0, false, ctx.Err()
	}
	base := len(k.log.events)
	p := master.p
	master.p = nil
	killedAt := time.Now()
	// The whole process group: the parent alone dying makes its VRRP
	// process stop cleanly and hand over at once, which no crash does.
	if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		return 0, false, fmt.Errorf("kill keepalived %s: %w", master.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(kaKillLimit):
		return 0, false, fmt.Errorf("keepalived %s still running %s after SIGKILL", master.name, kaKillLimit)
	}
	started, err := k.log.waitFor(ctx, base, 4*kaAdvertInt+haSlack, k.check, haAction("start", backup.name))
	if err != nil {
		return 0, false, fmt.Errorf("no start of %s after killing %s: %w", backup.name, master.name, err)
	}
	if err := clockSteady(killedAt); err != nil {
		return 0, false, err
	}
	d := started.Time.Sub(killedAt)
	if d <= 0 {
		return 0, false, fmt.Errorf("%s was master before %s was killed (%s)", backup.name, master.name, started)
	}
	out, err := k.ipCmd(ctx, "-n", master.ns, "-o", "-4", "addr", "show", "dev", kaIface)
	if err != nil {
		return 0, false, err
	}
	stale := strings.Contains(out, " "+kaVIP+"/")
	if err := k.start(master); err != nil {
		return 0, false, err
	}
	fmt.Fprintf(k.progress, "keepalived trial %d/%d: killed master %s; %s started after %.3fs; virtual address still on %s: %v\n",
		trial, trials, master.name, backup.name, d.Seconds(), master.name, stale)
	return d, stale, nil
}

// close stops the daemons and removes the namespaces.
func (k *kaRun) close() {
	for _, n := range k.nodes {
		if n.p != nil {
			n.p.stop(k.progress)
		}
	}
	for _, n := range k.nodes {
		if err := k.removeNS(n.ns); err != nil {
			fmt.Fprintf(k.progress, "keepalived: %v\n", err)
		}
	}
}

// removeNS kills what is left in namespace ns and deletes it, if it
// exists.
func (k *kaRun) removeNS(ns string) error {
	ctx := context.Background()
	out, err := k.ipCmd(ctx, "netns", "pids", ns)
	if err != nil {
		return nil // never made
	}
	for f := range strings.FieldsSeq(out) {
		if pid, err := strconv.Atoi(f); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if _, err := k.ipCmd(ctx, "netns", "del", ns); err != nil {
		return fmt.Errorf("namespace %s left behind: %w", ns, err)
	}
	return nil
}

// ipCmd runs one ip command, bounded in time, and returns its output.
func (k *kaRun) ipCmd(ctx context.Context, args ...string) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, kaCmdLimit)
	defer cancel()
	out, err := exec.CommandContext(cctx, k.ip, args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
