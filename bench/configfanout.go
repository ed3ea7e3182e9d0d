package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fedkeeper/fedkeeper/agent"
	"github.com/fedkeeper/fedkeeper/api"
	"github.com/fedkeeper/fedkeeper/client"
	"github.com/fedkeeper/fedkeeper/configsync"
	"github.com/fedkeeper/fedkeeper/internal/wait"
	"github.com/fedkeeper/fedkeeper/membership"
	"github.com/fedkeeper/fedkeeper/supernode"
)

// Bounds and shape of the config-fanout scenario.
const (
	fanoutProject   = "bench"
	fanoutComponent = "bench"
	// fanoutJoinWorkers agents join at once; the join time is not
	// measured, so joins are spread to keep them well inside their
	// bounds. fanoutStartWorkers start at once from their identities.
	fanoutJoinWorkers  = 16
	fanoutStartWorkers = 64
	fanoutStartLimit   = 15 * time.Minute
	fanoutStartOne     = 2 * time.Minute
	fanoutCloseWorkers = 64
	// fanoutTrialLimit bounds one trial, from the publish to the last
	// agent (or watcher) holding the new commit, plus fanoutTrialPer for
	// each of them.
	fanoutTrialLimit = time.Minute
	fanoutTrialPer   = 100 * time.Millisecond
	// fanoutSettleLimit bounds the wait, after a trial, for every agent's
	// status report, so that the next trial starts from a quiet supernode.
	fanoutSettleLimit = time.Minute
	fanoutPause       = 500 * time.Millisecond
	// Publish and write throughput: each level runs for at most
	// fanoutRateFor or fanoutRateCount operations, whichever comes first.
	fanoutRateFor   = 5 * time.Second
	fanoutRateCount = 20000
	fanoutOpLimit   = 30 * time.Second
	// fanoutFDsEach is what one in-process agent holds open, both ends
	// counted since its supernode is in this process too: the
	// connections of its blocking query, its session and its reports.
	fanoutFDsEach  = 8
	fanoutFDsSpare = 1024
	fanoutManifest = "applied.json"
	// fanoutWatchReaders read manifests once inotify says they changed.
	fanoutWatchReaders = 4
)

// fanoutFileSizes are the files of every commit: a properties file, an
// XML file and a plain list, small as configuration files are. The peer
// stores their total size in one znode.
var fanoutFileSizes = []struct {
	path string
	size int
}{
	{"bench.properties", 256},
	{"conf/service.xml", 1024},
	{"conf/hosts.txt", 768},
}

// fanoutPayloadBytes is the size of one commit's files together.
func fanoutPayloadBytes() int {
	n := 0
	for _, f := range fanoutFileSizes {
		n += f.size
	}
	return n
}

// fanoutFiles are the files of one commit, each of its fixed size and
// marked with tag so that every commit differs in every file.
func fanoutFiles(tag string) []api.PublishFile {
	var out []api.PublishFile
	for _, f := range fanoutFileSizes {
		out = append(out, api.PublishFile{Path: f.path, Content: fanoutPad(fmt.Sprintf("# %s %s\n", f.path, tag), f.size)})
	}
	return out
}

// fanoutPad fills head up to size bytes with lines of filler.
func fanoutPad(head string, size int) []byte {
	b := []byte(head)
	for i := 0; len(b) < size; i++ {
		b = append(b, fmt.Sprintf("key.%d = value-%d\n", i, i)...)
	}
	b = b[:size]
	b[size-1] = '\n'
	return b
}

// fanoutKey names a set of files by their paths and SHA-256 sums, the
// way an agent's manifest lists what it applied.
func fanoutKey(hashes map[string]string) string {
	var sb strings.Builder
	for _, p := range slices.Sorted(maps.Keys(hashes)) {
		sb.WriteString(p + "=" + hashes[p] + "\n")
	}
	return sb.String()
}

func fanoutHashes(files []api.PublishFile) map[string]string {
	out := map[string]string{}
	for _, f := range files {
		sum := sha256.Sum256(f.Content)
		out[f.Path] = hex.EncodeToString(sum[:])
	}
	return out
}

// ConfigFanout measures how fast a published configuration commit reaches
// the disks of many agents, and how many commits per second a supernode
// takes, against ZooKeeper doing the same with watchers and sets.
//
// fedkeeper: one supernode and agents agents run in this process; every
// agent follows one component with blocking queries and applies each
// commit to its own home directory. A trial publishes a commit of a few
// small files and takes, for every agent, the time from the publish's
// acknowledgement to the agent's manifest (written once the files are
// renamed into place and synced) listing exactly the commit's files; the
// manifests are followed with inotify. Every agent's files are then
// compared byte for byte with the commit. Publish throughput is measured
// first, before any agent runs, with 1 and publishersMax publishers each
// publishing to its own component.
//
// ZooKeeper: a standalone server from Debian's package, agents watcher
// sessions each watching one znode; a trial sets the znode to a payload as
// large as the commit's files and takes the time from the set's
// acknowledgement to every watcher having read the new data. If ZooKeeper
// cannot run, fedkeeper's figures are returned with zookeeper_error.
func ConfigFanout(ctx context.Context, agents, trials, publishersMax int, progress io.Writer) (Result, error) {
	if agents < 1 || agents > 5000 {
		return nil, fmt.Errorf("--agents must be between 1 and 5000, not %d", agents)
	}
	if trials < 1 || trials > 100 {
		return nil, fmt.Errorf("--trials must be between 1 and 100, not %d", trials)
	}
	if publishersMax < 1 || publishersMax > 256 {
		return nil, fmt.Errorf("--publishers-max must be between 1 and 256, not %d", publishersMax)
	}
	need := uint64(fanoutFDsEach*agents + fanoutFDsSpare)
	if limit, err := fanoutRaiseNoFile(need); err != nil {
		return nil, fmt.Errorf("--agents %d needs about %d open files in this process (%d per agent: its connections to the supernode, both ends, since both run here), but RLIMIT_NOFILE is %d and cannot be raised: %v; at most about %d agents fit",
			agents, need, fanoutFDsEach, limit, err, (int(limit)-fanoutFDsSpare)/fanoutFDsEach)
	}
	levels := []int{1}
	if publishersMax > 1 {
		levels = append(levels, publishersMax)
	}
	res := Result{
		"scenario":      "config-fanout",
		"agents":        agents,
		"trials":        trials,
		"files":         len(fanoutFileSizes),
		"payload_bytes": fanoutPayloadBytes(),
	}
	t0 := time.Now()
	fk, err := fanoutFedkeeper(ctx, agents, trials, levels, progress)
	if err != nil {
		return nil, err
	}
	maps.Copy(res, fk)
	fmt.Fprintf(progress, "fedkeeper part done after %.1fs\n", time.Since(t0).Seconds())
	t1 := time.Now()
	zk, err := fanoutZookeeper(ctx, agents, trials, levels, progress)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		fmt.Fprintf(progress, "no ZooKeeper figures: %v\n", err)
		res["zookeeper_error"] = err.Error()
		return res, nil
	}
	fmt.Fprintf(progress, "ZooKeeper part done after %.1fs\n", time.Since(t1).Seconds())
	maps.Copy(res, zk)
	ratio := func(name, ours, theirs string) {
		a, ok1 := res[ours].(float64)
		b, ok2 := res[theirs].(float64)
		if ok1 && ok2 && b > 0 {
			res[name] = fanoutRound(a / b)
		}
	}
	ratio("ratio_p50", "p50_s", "zookeeper_p50_s")
	ratio("ratio_p99", "p99_s", "zookeeper_p99_s")
	ratio("ratio_max", "max_s", "zookeeper_max_s")
	for _, n := range levels {
		ratio(fmt.Sprintf("ratio_publish_per_s_%d", n), fmt.Sprintf("publish_per_s_%d", n), fmt.Sprintf("zookeeper_set_per_s_%d", n))
	}
	return res, nil
}

// fanoutRun is the fedkeeper side of one run.
type fanoutRun struct {
	dir      string
	progress io.Writer
	sn       *supernode.Supernode
	creds    client.Credentials
	admin    *client.Client
	agents   []*fanoutAgent
	watch    *fanoutWatch
	arrivals *fanoutArrivals
	// joinTime and startTime are how long the agents took to join, and
	// then to start with the component.
	joinTime, startTime time.Duration
}

// fanoutAgent is one in-process agent and where it keeps the component.
type fanoutAgent struct {
	name  string
	data  string // the agent's data directory
	home  string
	state string // the component's state directory, holding the manifest
	a     *agent.Agent
}

func fanoutFedkeeper(ctx context.Context, agents, trials int, levels []int, progress io.Writer) (Result, error) {
	dir, err := os.MkdirTemp("", "fedkeeper-bench-config-fanout-")
	if err != nil {
		return nil, fmt.Errorf("make temporary directory: %w", err)
	}
	defer os.RemoveAll(dir)
	// Agents and the supernode log through slog's default; thousands of
	// "configuration applied" lines would bury the progress and cost CPU
	// the agents need, so only warnings pass, a few of each kind.
	defer quietLogs(progress)()

	r := &fanoutRun{dir: dir, progress: progress}
	defer r.close()
	snDir := filepath.Join(dir, "supernode")
	if r.sn, err = startSupernode(ctx, snDir, supernode.Config{}); err != nil {
		return nil, fmt.Errorf("start the supernode: %w", err)
	}
	if r.creds, err = client.LoadCredentials(filepath.Join(snDir, supernode.CredentialsFile)); err != nil {
		return nil, err
	}
	if r.admin, err = r.creds.Client(); err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "supernode running at %s\n", r.sn.URL())

	res := Result{}
	// Throughput first, while no agent loads the supernode: each
	// publisher has its own component and its own connection.
	for _, n := range levels {
		rate, done, errs, firstErr := fanoutRate(ctx, n, func(w int) (func(ctx context.Context, seq int) error, func(), error) {
			return r.publisher(fmt.Sprintf("rate-%d-%d", n, w))
		})
		if done == 0 {
			return nil, fmt.Errorf("no commit published with %d publishers: %v", n, firstErr)
		}
		fmt.Fprintf(progress, "publish: %d publishers, %d commits, %.1f/s, %d errors\n", n, done, rate, errs)
		if errs > 0 {
			fmt.Fprintf(progress, "publish: first error: %v\n", firstErr)
			res[fmt.Sprintf("publish_errors_%d", n)] = errs
		}
		res[fmt.Sprintf("publish_per_s_%d", n)] = fanoutRound(rate)
	}

	if r.watch, err = newFanoutWatch(); err != nil {
		return nil, err
	}
	r.arrivals = newFanoutArrivals(agents)
	if err := r.startAgents(ctx, agents); err != nil {
		return nil, err
	}
	res["agents_join_s"] = seconds(r.joinTime)
	res["agents_start_s"] = seconds(r.startTime)
	go r.watch.run(fanoutWatchReaders, r.manifestChanged)

	var trialsSeen fanoutTrials
	limit := fanoutTrialLimit + time.Duration(agents)*fanoutTrialPer
	// Trial 0 is a warm-up: it brings every agent from no configuration
	// to the first commit, and is not counted.
	for t := 0; t <= trials; t++ {
		lat, err := r.trial(ctx, t, limit)
		if err != nil {
			return nil, err
		}
		label := trialsSeen.add(progress, "fedkeeper", "agents applied", t, lat)
		if err := r.settle(ctx); err != nil {
			fmt.Fprintf(progress, "fedkeeper %s: %v\n", label, err)
		}
		if !wait.Sleep(ctx, fanoutPause) {
			return nil, ctx.Err()
		}
	}
	if n := r.watch.overflows.Load(); n > 0 {
		res["inotify_overflows"] = n
	}
	if rss, err := fanoutRSSMB(); err == nil {
		res["process_rss_mb"] = rss
	}
	trialsSeen.figures(res, "")
	return res, nil
}

// fanoutTrials gathers the latencies of fan-out trials, fedkeeper's and
// ZooKeeper's alike. Trial 0 is a warm-up: shown, not counted.
type fanoutTrials struct {
	all   []time.Duration
	lasts []time.Duration // the slowest reader of each trial
}

// add counts trial t's latencies, shows them on progress as who's and
// what they measure, and returns the trial's label.
func (ft *fanoutTrials) add(progress io.Writer, who, what string, t int, lat []time.Duration) string {
	sorted := slices.Sorted(slices.Values(lat))
	label := fmt.Sprintf("trial %d", t)
	if t == 0 {
		label = "warm-up"
	} else {
		ft.all = append(ft.all, lat...)
		ft.lasts = append(ft.lasts, sorted[len(sorted)-1])
	}
	fmt.Fprintf(progress, "%s %s: %d %s, p50 %.3fs, p99 %.3fs, last %.3fs\n",
		who, label, len(lat), what, seconds(quantile(sorted, 0.5)), seconds(quantile(sorted, 0.99)), seconds(sorted[len(sorted)-1]))
	return label
}

// figures puts the counted trials' figures into res, their keys prefixed.
func (ft *fanoutTrials) figures(res Result, prefix string) {
	slices.Sort(ft.all)
	slices.Sort(ft.lasts)
	res[prefix+"p50_s"] = seconds(quantile(ft.all, 0.50))
	res[prefix+"p99_s"] = seconds(quantile(ft.all, 0.99))
	res[prefix+"max_s"] = seconds(ft.all[len(ft.all)-1])
	res[prefix+"last_p50_s"] = seconds(quantile(ft.lasts, 0.50))
}

// publisher is one publisher of the throughput measure: its own client
// (so its own connection) and its own component.
func (r *fanoutRun) publisher(component string) (func(ctx context.Context, seq int) error, func(), error) {
	c, err := r.creds.Client()
	if err != nil {
		return nil, nil, err
	}
	publish := func(ctx context.Context, seq int) error {
		in := api.PublishRequest{Component: component, Files: fanoutFiles(fmt.Sprintf("%s %d", component, seq)), Message: "bench"}
		var c2 configsync.Commit
		return c.Do(ctx, http.MethodPost, "/v1/config/"+fanoutProject+"/publish", in, &c2)
	}
	return publish, c.CloseIdle, nil
}

// startAgents brings up the agents in two rounds. First each joins with
// the token, a few at a time, and stops again, keeping its identity; then
// all start from their data directories with the component, more at a
// time, and follow its configuration. The joins are kept apart from the
// agents' configuration traffic: when they overlapped, with 1000 agents on
// two cores, an agent was refused as not a member right after its
// admission (the supernode answers authorizations from a node cache that
// follows the store a little behind) and, holding a token, joined again
// with a new key, which the supernode refused because its name was taken.
func (r *fanoutRun) startAgents(ctx context.Context, n int) error {
	token, _, err := r.sn.Members.CreateToken(ctx, fanoutProject, n, time.Hour, "bench")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, fanoutStartLimit)
	defer cancel()
	r.agents = make([]*fanoutAgent, n)
	for i := range n {
		name := fmt.Sprintf("fanout-%04d", i)
		data := filepath.Join(r.dir, "agents", name)
		r.agents[i] = &fanoutAgent{
			name:  name,
			data:  data,
			home:  filepath.Join(r.dir, "homes", name),
			state: filepath.Join(data, "config", fanoutProject, fanoutComponent),
		}
	}
	t0 := time.Now()
	fmt.Fprintf(r.progress, "joining %d agents, %d at a time\n", n, fanoutJoinWorkers)
	if err := r.eachAgent(ctx, fanoutJoinWorkers, "joined", func(ctx context.Context, i int) error {
		return r.joinAgent(ctx, i, token)
	}); err != nil {
		return err
	}
	r.joinTime = time.Since(t0)
	fmt.Fprintf(r.progress, "%d agents joined after %.1fs; starting them with component %s, %d at a time\n",
		n, r.joinTime.Seconds(), fanoutComponent, fanoutStartWorkers)
	t1 := time.Now()
	if err := r.eachAgent(ctx, fanoutStartWorkers, "running", r.startAgent); err != nil {
		return err
	}
	r.startTime = time.Since(t1)
	return nil
}

// eachAgent calls fn for every agent, workers at a time, and stops at the
// first error.
func (r *fanoutRun) eachAgent(ctx context.Context, workers int, done string, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n := len(r.agents)
	var next, finished atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range min(n, workers) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				actx, acancel := context.WithTimeout(ctx, fanoutStartOne)
				err := fn(actx, i)
				acancel()
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("agent %s: %w", r.agents[i].name, err)
					}
					mu.Unlock()
					cancel()
					return
				}
				if f := finished.Add(1); f%100 == 0 || f == int64(n) {
					fmt.Fprintf(r.progress, "%d agents %s\n", f, done)
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("%d of %d agents %s, then: %w", finished.Load(), n, done, firstErr)
	}
	if finished.Load() < int64(n) {
		return fmt.Errorf("%d of %d agents %s: %w", finished.Load(), n, done, ctx.Err())
	}
	return nil
}

// config is agent i's configuration, with or without its component.
func (r *fanoutRun) config(i int, component bool) agent.Config {
	fa := r.agents[i]
	cfg := agent.Config{
		Name: fa.name, Join: []string{r.sn.URL()}, CAHash: r.sn.CA.Hash(),
		Profile: membership.Profile{Project: fanoutProject, Site: "loopback"},
	}
	if component {
		cfg.Components = []agent.ComponentConfig{{Name: fanoutComponent, Home: fa.home}}
	}
	return cfg
}

// joinAgent joins agent i with the token and stops it again; its identity
// stays in its data directory.
func (r *fanoutRun) joinAgent(ctx context.Context, i int, token string) error {
	a, err := agent.Start(ctx, r.agents[i].data, r.config(i, false), token)
	if err != nil {
		return err
	}
	a.Close()
	return nil
}

// startAgent starts agent i from its identity, following the component,
// and follows its manifest. No token is given: an agent the supernode
// does not know any more fails instead of joining afresh.
func (r *fanoutRun) startAgent(ctx context.Context, i int) error {
	fa := r.agents[i]
	if err := os.MkdirAll(fa.home, 0o755); err != nil {
		return err
	}
	a, err := agent.Start(ctx, fa.data, r.config(i, true), "")
	if err != nil {
		return err
	}
	fa.a = a
	// The state directory exists once Start has returned.
	return r.watch.add(fa.state, i)
}

// manifestChanged reads agent i's manifest after inotify saw it replaced
// at the time at.
func (r *fanoutRun) manifestChanged(i int, at time.Time) {
	b, err := os.ReadFile(filepath.Join(r.agents[i].state, fanoutManifest))
	if err != nil {
		return
	}
	var m configsync.Applied
	if json.Unmarshal(b, &m) != nil {
		return
	}
	r.arrivals.mark(i, fanoutKey(m.Files), at)
}

// trial publishes commit t and waits until every agent's manifest lists
// it; it returns each agent's time from the publish's acknowledgement.
func (r *fanoutRun) trial(ctx context.Context, t int, limit time.Duration) ([]time.Duration, error) {
	files := fanoutFiles(fmt.Sprintf("trial %d at %s", t, time.Now().Format(time.RFC3339Nano)))
	r.arrivals.begin(fanoutKey(fanoutHashes(files)))
	in := api.PublishRequest{Component: fanoutComponent, Files: files, Message: fmt.Sprintf("config-fanout trial %d", t)}
	pctx, cancel := context.WithTimeout(ctx, fanoutOpLimit)
	var c configsync.Commit
	err := r.admin.Do(pctx, http.MethodPost, "/v1/config/"+fanoutProject+"/publish", in, &c)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("publish trial %d: %w", t, err)
	}
	acked := time.Now()
	if err := r.arrivals.wait(ctx, limit); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// Read every manifest once more, in case an event was lost.
		for i := range r.agents {
			r.manifestChanged(i, time.Now())
		}
		if missing := r.arrivals.missing(); len(missing) > 0 {
			return nil, fmt.Errorf("trial %d (commit %d): %d of %d agents had not applied it after %s; first %s: %s",
				t, c.Seq, len(missing), len(r.agents), limit, r.agents[missing[0]].name, r.describeAgent(missing[0]))
		}
	}
	lat := r.arrivals.latencies(acked)
	if err := r.verify(files); err != nil {
		return nil, fmt.Errorf("trial %d (commit %d): %w", t, c.Seq, err)
	}
	return lat, nil
}

// describeAgent says what an agent holds, to explain a trial that failed.
func (r *fanoutRun) describeAgent(i int) string {
	fa := r.agents[i]
	b, err := os.ReadFile(filepath.Join(fa.state, fanoutManifest))
	if err != nil {
		return err.Error()
	}
	var m configsync.Applied
	if err := json.Unmarshal(b, &m); err != nil {
		return err.Error()
	}
	s := "manifest at version " + m.Version
	if fa.a != nil {
		if err := fa.a.Err(); err != nil {
			s += "; agent stopped: " + err.Error()
		}
	}
	return s
}

// verify compares every agent's files with the commit's, byte for byte.
func (r *fanoutRun) verify(files []api.PublishFile) error {
	bad := 0
	var first string
	for _, fa := range r.agents {
		for _, f := range files {
			b, err := os.ReadFile(filepath.Join(fa.home, filepath.FromSlash(f.Path)))
			if err == nil && string(b) == string(f.Content) {
				continue
			}
			bad++
			if first == "" {
				if err == nil {
					err = errors.New("content differs")
				}
				first = fmt.Sprintf("%s %s: %v", fa.name, f.Path, err)
			}
		}
	}
	if bad > 0 {
		return fmt.Errorf("%d files on the agents' disks are not the commit's; first %s", bad, first)
	}
	return nil
}

// settle waits until every agent has reported the commit it applied, so
// that the reports of one trial do not load the next.
func (r *fanoutRun) settle(ctx context.Context) error {
	b, err := os.ReadFile(filepath.Join(r.agents[0].state, fanoutManifest))
	if err != nil {
		return err
	}
	var m configsync.Applied
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	deadline := time.Now().Add(fanoutSettleLimit)
	path := "/v1/config/" + fanoutProject + "/status?component=" + url.QueryEscape(fanoutComponent)
	reported := 0
	for {
		var list []configsync.Status
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := r.admin.Do(qctx, http.MethodGet, path, nil, &list)
		cancel()
		if err == nil {
			reported = 0
			for _, st := range list {
				if st.Version == m.Version && strings.HasPrefix(st.Node, "fanout-") {
					reported++
				}
			}
			if reported >= len(r.agents) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d agents reported version %s after %s (last error: %v)", reported, len(r.agents), m.Version, fanoutSettleLimit, err)
		}
		if !wait.Sleep(ctx, 200*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// close stops the agents and the supernode.
func (r *fanoutRun) close() {
	if r.watch != nil {
		r.watch.close()
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range fanoutCloseWorkers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(r.agents) {
					return
				}
				if a := r.agents[i].a; a != nil {
					a.Close()
				}
			}
		})
	}
	wg.Wait()
	if r.admin != nil {
		r.admin.CloseIdle()
	}
	if r.sn != nil {
		r.sn.Close()
	}
}

// fanoutArrivals records, for one trial, when each of n followers first
// held the wanted state.
type fanoutArrivals struct {
	mu   sync.Mutex
	want string
	at   []time.Time
	left int
	done chan struct{}
}

func newFanoutArrivals(n int) *fanoutArrivals {
	return &fanoutArrivals{at: make([]time.Time, n), done: make(chan struct{})}
}

// begin starts a trial whose followers should come to hold want; it is
// called before the write, so that a follower faster than the write's
// acknowledgement is counted too.
func (a *fanoutArrivals) begin(want string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.want = want
	clear(a.at)
	a.left = len(a.at)
	a.done = make(chan struct{})
}

// mark says follower i held got at the time t.
func (a *fanoutArrivals) mark(i int, got string, t time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if got != a.want || !a.at[i].IsZero() {
		return
	}
	a.at[i] = t
	a.left--
	if a.left == 0 {
		close(a.done)
	}
}

func (a *fanoutArrivals) wait(ctx context.Context, limit time.Duration) error {
	a.mu.Lock()
	done := a.done
	a.mu.Unlock()
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("not every follower after %s", limit)
	}
}

func (a *fanoutArrivals) missing() []int {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []int
	for i, t := range a.at {
		if t.IsZero() {
			out = append(out, i)
		}
	}
	return out
}

// latencies are the arrivals' times after acked; a follower that held the
// new state before the writer heard the acknowledgement counts as 0.
func (a *fanoutArrivals) latencies(acked time.Time) []time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]time.Duration, len(a.at))
	for i, t := range a.at {
		out[i] = max(0, t.Sub(acked))
	}
	return out
}

// fanoutRate runs workers workers, each made by mk, calling their
// operation until fanoutRateCount operations are done in all or
// fanoutRateFor has passed; it returns successful operations per second.
func fanoutRate(ctx context.Context, workers int, mk func(w int) (func(ctx context.Context, seq int) error, func(), error)) (rate float64, done, errs int64, firstErr error) {
	ops := make([]func(ctx context.Context, seq int) error, workers)
	for w := range workers {
		op, closeFn, err := mk(w)
		if err != nil {
			return 0, 0, 0, err
		}
		defer closeFn()
		ops[w] = op
	}
	var started, ok, failed atomic.Int64
	var errOnce sync.Once
	var wg sync.WaitGroup
	t0 := time.Now()
	deadline := t0.Add(fanoutRateFor)
	for w := range workers {
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(deadline) {
				seq := started.Add(1)
				if seq > fanoutRateCount {
					return
				}
				octx, cancel := context.WithTimeout(ctx, fanoutOpLimit)
				err := ops[w](octx, int(seq))
				cancel()
				if err != nil {
					failed.Add(1)
					errOnce.Do(func() { firstErr = err })
					continue
				}
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(t0)
	return float64(ok.Load()) / elapsed.Seconds(), ok.Load(), failed.Load(), firstErr
}

// fanoutRound keeps three significant decimals of a rate or ratio.
func fanoutRound(v float64) float64 {
	switch {
	case v >= 100:
		return math.Round(v*10) / 10
	case v >= 1:
		return math.Round(v*1000) / 1000
	}
	return math.Round(v*1e6) / 1e6
}

// fanoutRaiseNoFile raises this process's RLIMIT_NOFILE to need, as far as
// the hard limit allows; it returns the limit now in force.
func fanoutRaiseNoFile(need uint64) (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, fmt.Errorf("read RLIMIT_NOFILE: %w", err)
	}
	if rl.Cur >= need {
		return rl.Cur, nil
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: need, Max: max(rl.Max, need)}); err == nil {
		return need, nil
	}
	if rl.Max > rl.Cur {
		rl.Cur = rl.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	if rl.Cur >= need {
		return rl.Cur, nil
	}
	return rl.Cur, fmt.Errorf("hard limit %d", rl.Max)
}

// fanoutRSSMB is this process's resident memory in MiB.
func fanoutRSSMB() (float64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				return 0, err
			}
			return math.Round(kb/1024*10) / 10, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/self/status (%s)", runtime.GOOS)
}

// fanoutLog passes warnings and errors to the progress stream, the first
// few of each message only, and counts the rest.
type fanoutLog struct {
	s     *fanoutLogState
	attrs []slog.Attr
}

type fanoutLogState struct {
	mu     sync.Mutex
	out    io.Writer
	counts map[string]int
}

// fanoutLogShown is how many records of one message are shown.
const fanoutLogShown = 3

// quietLogs sends slog's default logger through a fanoutLog until the
// function it returns is called, which also prints the summary.
func quietLogs(progress io.Writer) (restore func()) {
	logs := newFanoutLog(progress)
	prev := slog.Default()
	slog.SetDefault(slog.New(logs))
	return func() {
		slog.SetDefault(prev)
		logs.summary()
	}
}

func newFanoutLog(out io.Writer) *fanoutLog {
	return &fanoutLog{s: &fanoutLogState{out: out, counts: map[string]int{}}}
}

func (h *fanoutLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h *fanoutLog) Handle(_ context.Context, rec slog.Record) error {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	h.s.counts[rec.Message]++
	if h.s.counts[rec.Message] > fanoutLogShown {
		return nil
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "log %s: %s", rec.Level, rec.Message)
	for _, a := range h.attrs {
		fmt.Fprintf(&sb, " %s", a)
	}
	rec.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&sb, " %s", a)
		return true
	})
	fmt.Fprintln(h.s.out, sb.String())
	return nil
}

func (h *fanoutLog) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &fanoutLog{s: h.s, attrs: append(slices.Clone(h.attrs), attrs...)}
}

func (h *fanoutLog) WithGroup(string) slog.Handler { return h }

// summary says how many records of each message were not shown.
func (h *fanoutLog) summary() {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	for _, msg := range slices.Sorted(maps.Keys(h.s.counts)) {
		if n := h.s.counts[msg]; n > fanoutLogShown {
			fmt.Fprintf(h.s.out, "log: %q %d times in all\n", msg, n)
		}
	}
}
