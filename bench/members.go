package bench

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fedkeeper/fedkeeper/client"
	"github.com/fedkeeper/fedkeeper/events"
	"github.com/fedkeeper/fedkeeper/health"
	"github.com/fedkeeper/fedkeeper/internal/version"
	"github.com/fedkeeper/fedkeeper/internal/wait"
	"github.com/fedkeeper/fedkeeper/membership"
	"github.com/fedkeeper/fedkeeper/metrics"
	"github.com/fedkeeper/fedkeeper/pki"
)

// Bounds of the members scenario.
const (
	membersProject = "bench"
	// membersJoinLimit bounds all joins; membersJoinOne one join with its
	// session.
	membersJoinLimit = 10 * time.Minute
	membersJoinOne   = time.Minute
	// membersJoinWorkers joins run at once through each supernode: the
	// supernode spends tokens one at a time anyway.
	membersJoinWorkers = 4
	// membersPassingLimit bounds the wait for every member to be passing,
	// plus membersPassingPer for each member.
	membersPassingLimit = 2 * time.Minute
	membersPassingPer   = 20 * time.Millisecond
	membersDetectLimit  = time.Minute
	membersSample       = 5 * time.Second
	// membersFDsEach is what one member holds open in this process: its
	// listener, the connection its supernode probes (and scrapes) it on,
	// and its session's connection to a supernode; membersFDsSpare is for
	// the rest of the process.
	membersFDsEach  = 3
	membersFDsSpare = 512
	// clockTicks is USER_HZ, the unit of CPU times in /proc/PID/stat.
	clockTicks = 100
)

// Members measures what a crowd of members costs the supernodes. The
// supernodes run as processes of this binary; the members are simulated
// in this process, each with its own key, certificate (joined with a
// token and a CSR), lease-backed session renewed as agents renew it, and
// HTTPS server on its own loopback address answering the supernodes'
// health probes and metrics scrapes. Once every member has joined and is
// passing, the supernodes' CPU time and memory, the store's revision and
// the probes served are sampled over the window; then one member stops
// answering and the time to its critical event is taken.
func Members(ctx context.Context, count, supernodes int, duration time.Duration, progress io.Writer) (Result, error) {
	if count < 1 || count > 100000 {
		return nil, fmt.Errorf("--count must be between 1 and 100000, not %d", count)
	}
	if supernodes < 1 || supernodes > 7 {
		return nil, fmt.Errorf("--supernodes must be between 1 and 7, not %d", supernodes)
	}
	if duration < 10*time.Second || duration > time.Hour {
		return nil, fmt.Errorf("--duration must be between 10s and 1h, not %s", duration)
	}
	limit, err := raiseFileLimit(uint64(membersFDsEach*count + membersFDsSpare))
	if err != nil {
		fit := (int(limit) - membersFDsSpare) / membersFDsEach
		return nil, fmt.Errorf("--count %d does not fit in this process's file descriptor limit: each simulated member holds %d open (its listener, the connection its supernode probes it on, its session's connection), about %d in all, but RLIMIT_NOFILE is %d and cannot be raised (%v); at most about %d members fit",
			count, membersFDsEach, membersFDsEach*count+membersFDsSpare, limit, err, max(fit, 0))
	}
	// A supernode holds a connection to each member it probes and from
	// each member whose session it serves, count/supernodes of each; it
	// inherits this process's limit.
	if perSN := uint64(2*((count+supernodes-1)/supernodes) + membersFDsSpare); perSN > limit {
		return nil, fmt.Errorf("--count %d with %d supernodes does not fit in the supernodes' file descriptor limit: each would hold about %d open (a probe and a session connection per member it serves), but RLIMIT_NOFILE is %d", count, supernodes, perSN, limit)
	}
	fmt.Fprintf(progress, "file descriptor limit of this process and its supernodes: %d\n", limit)
	f, err := newFleet("members", supernodes, 0, progress)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := &membersRun{fleet: f, count: count, supernodes: supernodes, duration: duration}
	r.warnings = &warnCounter{progress: progress}
	r.log = slog.New(r.warnings)
	defer r.stopMembers()
	return f.measure(ctx, r.run)
}

// raiseFileLimit raises RLIMIT_NOFILE to need if it is lower, and
// returns the limit in force.
func raiseFileLimit(need uint64) (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, fmt.Errorf("read RLIMIT_NOFILE: %w", err)
	}
	if rl.Cur >= need {
		return rl.Cur, nil
	}
	want := syscall.Rlimit{Cur: need, Max: max(rl.Max, need)}
	err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want)
	if err == nil {
		return need, nil
	}
	if rl.Max > rl.Cur {
		rl.Cur = rl.Max
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl) != nil {
			syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
		}
	}
	if rl.Max < need {
		err = fmt.Errorf("hard limit %d: %w", rl.Max, err)
	}
	return rl.Cur, err
}

// membersRun is one run of the members scenario.
type membersRun struct {
	*fleet
	count, supernodes int
	duration          time.Duration

	ca      *x509.Certificate
	tokens  []string
	members []*simMember
	mu      sync.Mutex // guards members while they join

	// probes and scrapes count the requests members answered.
	probes, scrapes atomic.Int64
	warnings        *warnCounter
	log             *slog.Logger
	// stopAll ends every member's session.
	stopAll context.CancelFunc
}

func (r *membersRun) run(ctx context.Context) (Result, error) {
	if err := r.startFederation(ctx, fedSpec{voters: r.supernodes}); err != nil {
		return nil, err
	}
	var err error
	if r.ca, err = pki.ParseCert([]byte(r.creds.CA)); err != nil {
		return nil, fmt.Errorf("federation CA: %w", err)
	}
	// One token per supernode, each spent through its own supernode:
	// spending one token from several supernodes at once only makes them
	// retry each other's conflicting updates.
	for range r.supernodes {
		token, err := r.createToken(ctx, r.count, membersProject)
		if err != nil {
			return nil, err
		}
		r.tokens = append(r.tokens, token)
	}
	runCtx, stop := context.WithCancel(context.Background())
	r.stopAll = stop
	joinStart := time.Now()
	if err := r.joinAll(ctx, runCtx); err != nil {
		return nil, err
	}
	joinTime := time.Since(joinStart)
	fmt.Fprintf(r.progress, "%d members joined with open sessions in %.1fs (%.0f/s)\n", r.count, joinTime.Seconds(), float64(r.count)/joinTime.Seconds())
	if err := r.waitPassing(ctx); err != nil {
		return nil, err
	}
	passingTime := time.Since(joinStart)
	fmt.Fprintf(r.progress, "all %d members passing %.1fs after the first join\n", r.count, passingTime.Seconds())

	w, err := r.measure(ctx)
	if err != nil {
		return nil, err
	}
	notPassing, err := r.notPassing(ctx)
	if err != nil {
		return nil, err
	}
	detect, err := r.detect(ctx)
	if err != nil {
		return nil, err
	}
	res := Result{
		"scenario":                    "members",
		"members":                     r.count,
		"supernodes":                  r.supernodes,
		"duration_s":                  seconds(w.elapsed),
		"join_s":                      seconds(joinTime),
		"passing_s":                   seconds(passingTime),
		"supernode_cpu_s_per_min_max": round3(w.cpuMax),
		"supernode_cpu_s_per_min_avg": round3(w.cpuAvg),
		"supernode_rss_mb_max":        round3(w.rssMax),
		"store_writes_per_min":        round3(w.writesPerMin),
		"probes_per_s":                round3(w.probesPerS),
		"scrapes_per_s":               round3(w.scrapesPerS),
		"bench_cpu_s_per_min":         round3(w.benchCPU),
		"bench_open_files_max":        w.openFiles,
		"not_passing_after":           notPassing,
		"session_warnings":            r.warnings.n.Load(),
		"detect_s":                    seconds(detect),
	}
	return res, nil
}

// joinAll joins every member, count/supernodes through each supernode,
// and opens its session; the sessions and servers run on runCtx.
func (r *membersRun) joinAll(ctx, runCtx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, membersJoinLimit)
	defer cancel()
	r.members = make([]*simMember, r.count)
	var joined atomic.Int64
	var firstErr error
	var errOnce sync.Once
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	var wg sync.WaitGroup
	for k := range r.supernodes {
		jc := client.New(rotate(r.urls, k), pki.APIClientTLS(nil, r.ca))
		defer jc.CloseIdle()
		for w := range membersJoinWorkers {
			wg.Go(func() {
				for i := k + w*r.supernodes; i < r.count; i += membersJoinWorkers * r.supernodes {
					if ctx.Err() != nil {
						return
					}
					m, err := r.join(ctx, runCtx, jc, k, i)
					if err != nil {
						fail(err)
						return
					}
					r.mu.Lock()
					r.members[i] = m
					r.mu.Unlock()
					joined.Add(1)
				}
			})
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	start := time.Now()
	tick := time.NewTicker(membersSample)
	defer tick.Stop()
	for {
		select {
		case <-done:
			if firstErr != nil {
				return r.joinError(firstErr, int(joined.Load()), start)
			}
			if ctx.Err() != nil && joined.Load() < int64(r.count) {
				if errors.Is(ctx.Err(), context.DeadlineExceeded) {
					return fmt.Errorf("time: only %d of %d members joined within %s (%.0f joins/s)", joined.Load(), r.count, membersJoinLimit, float64(joined.Load())/time.Since(start).Seconds())
				}
				return ctx.Err()
			}
			return nil
		case <-tick.C:
			n := joined.Load()
			fmt.Fprintf(r.progress, "joined %d/%d after %.0fs (%.0f/s)\n", n, r.count, time.Since(start).Seconds(), float64(n)/time.Since(start).Seconds())
			if err := r.checkRunning(ctx); err != nil {
				fail(err)
			}
		}
	}
}

// joinError names the limit a failed join hit, when it is one.
func (r *membersRun) joinError(err error, joined int, start time.Time) error {
	var apiErr *client.Error
	switch {
	case errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE):
		return fmt.Errorf("file descriptors: ran out after %d of %d members joined: %w", joined, r.count, err)
	case errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("ports: ran out of loopback ports after %d of %d members joined: %w", joined, r.count, err)
	case errors.As(err, &apiErr) && (apiErr.Status == http.StatusGatewayTimeout || apiErr.Status == http.StatusServiceUnavailable),
		strings.Contains(err.Error(), "TLS handshake timeout"):
		return fmt.Errorf("time: the supernodes stopped keeping up (store requests or handshakes timing out) after %d of %d members joined (%.0f joins/s): %w", joined, r.count, float64(joined)/time.Since(start).Seconds(), err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("time: a join took longer than %s after %d of %d members joined (%.0f joins/s): %w", membersJoinOne, joined, r.count, float64(joined)/time.Since(start).Seconds(), err)
	}
	return fmt.Errorf("after %d of %d members joined: %w", joined, r.count, err)
}

// rotate is urls starting from the k-th.
func rotate(urls []string, k int) []string {
	k %= len(urls)
	return append(append([]string{}, urls[k:]...), urls[:k]...)
}

// simMember is one simulated member: an agent reduced to its protocol.
type simMember struct {
	r      *membersRun
	name   string
	addr   string
	health []byte
	srv    *http.Server
	c      *client.Client
	// stop ends its session; kept is closed when the session has ended.
	stop context.CancelFunc
	kept chan struct{}

	metricsOnce sync.Once
	metrics     http.Handler
}

// join makes member i's key, listens on its address, joins with a CSR
// and token through supernode k, serves, and opens its session.
func (r *membersRun) join(ctx, runCtx context.Context, jc *client.Client, k, i int) (*simMember, error) {
	ctx, cancel := context.WithTimeout(ctx, membersJoinOne)
	defer cancel()
	m := &simMember{r: r, name: fmt.Sprintf("m%05d", i), kept: make(chan struct{})}
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	csr, err := pki.NewCSR(key, m.name)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(r.memberHost(i), "0"))
	if err != nil {
		return nil, fmt.Errorf("listen for member %s: %w", m.name, err)
	}
	m.addr = ln.Addr().String()
	in := membership.JoinInput{
		Name:    m.name,
		Profile: membership.Profile{Project: membersProject, Site: "loopback", Address: m.addr},
		CSR:     string(csr),
		Token:   r.tokens[k],
	}
	var res membership.JoinResult
	for attempt := 0; ; attempt++ {
		// Asking again with the same key is safe: it returns the state.
		err = jc.DoIdempotent(ctx, http.MethodPost, "/v1/join", in, &res)
		var apiErr *client.Error
		if err == nil || attempt == 5 || !errors.As(err, &apiErr) || (apiErr.Status != http.StatusConflict && apiErr.Status != http.StatusServiceUnavailable) {
			break
		}
		if !wait.Sleep(ctx, 200*time.Millisecond) {
			break
		}
	}
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("join %s: %w", m.name, err)
	}
	if res.Status != membership.StatusAlive {
		ln.Close()
		return nil, fmt.Errorf("join %s: admitted as %q, not alive", m.name, res.Status)
	}
	cert, err := pki.ParseCert([]byte(res.CertPEM))
	if err != nil || !pki.SameKey(cert.PublicKey, key.Public()) {
		ln.Close()
		return nil, fmt.Errorf("join %s: no certificate for its key (%v)", m.name, err)
	}
	kp := &pki.KeyPair{Cert: cert, Key: key}
	m.health, _ = json.Marshal(health.AgentHealth{Node: m.name, Status: health.Passing, Checks: []health.Result{}})
	// Serving before the session opens: supernodes probe a member as
	// soon as its record exists.
	m.srv = &http.Server{
		Handler:           m,
		TLSConfig:         pki.ServerTLS(kp, r.ca),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       3 * time.Minute,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go m.srv.ServeTLS(ln, "", "")
	m.c = client.New(rotate(r.urls, k), pki.APIClientTLS(kp, r.ca))
	sess, err := client.OpenSession(ctx, m.c, r.log.With("member", m.name))
	if err != nil {
		m.srv.Close()
		return nil, fmt.Errorf("member %s: %w", m.name, err)
	}
	sctx, stop := context.WithCancel(runCtx)
	m.stop = stop
	go func() {
		defer close(m.kept)
		if err := sess.Keep(sctx); err != nil {
			r.log.Warn("session ended", "member", m.name, "err", err)
		}
	}()
	return m, nil
}

// ServeHTTP answers what supernodes ask an agent: its health, as an agent
// does only to a supernode or administrator, and its metrics.
func (m *simMember) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	switch {
	case req.Method == http.MethodGet && req.URL.Path == "/v1/health":
		m.r.probes.Add(1)
		w.Header().Set("Content-Type", "application/json")
		if req.TLS == nil || len(req.TLS.PeerCertificates) == 0 {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if id, err := pki.IdentityOf(req.TLS.PeerCertificates[0]); err != nil || (id.Role != pki.RoleSupernode && id.Role != pki.RoleAdmin) {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		w.Write(m.health)
	case req.Method == http.MethodGet && req.URL.Path == "/metrics":
		m.r.scrapes.Add(1)
		m.metricsOnce.Do(func() {
			m.metrics = metrics.Handler(metrics.NewAgentRegistry(metrics.AgentOptions{
				Node: m.name, Project: membersProject, Site: "loopback", Version: version.Version,
				Checks: func() []metrics.CheckSample { return nil },
			}))
		})
		m.metrics.ServeHTTP(w, req)
	case req.Method == http.MethodGet && req.URL.Path == "/v1/live":
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, "{\"status\":\"ok\",\"node\":%q}\n", m.name)
	default:
		http.NotFound(w, req)
	}
}

// halt stops the member as a kill would: its server and its session.
func (m *simMember) halt() {
	m.stop()
	m.srv.Close()
	m.c.CloseIdle()
}

// stopMembers stops every member that joined.
func (r *membersRun) stopMembers() {
	if r.stopAll != nil {
		r.stopAll()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.members {
		if m != nil {
			m.srv.Close()
			m.c.CloseIdle()
		}
	}
}

// healthRecords are the federation's health records of all nodes.
func (r *membersRun) healthRecords(ctx context.Context) (map[string]health.Record, error) {
	var recs map[string]health.Record
	err := r.do(ctx, 30*time.Second, http.MethodGet, "/v1/health", nil, &recs)
	return recs, err
}

// notPassing counts the members whose health is not passing.
func (r *membersRun) notPassing(ctx context.Context) (int, error) {
	recs, err := r.healthRecords(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, m := range r.members {
		if recs[m.name].Status != health.Passing {
			n++
		}
	}
	return n, nil
}

// waitPassing waits until every member is passing.
func (r *membersRun) waitPassing(ctx context.Context) error {
	limit := membersPassingLimit + time.Duration(r.count)*membersPassingPer
	deadline := time.Now().Add(limit)
	var last error
	for {
		if err := r.checkRunning(ctx); err != nil {
			return err
		}
		n, err := r.notPassing(ctx)
		if err == nil && n == 0 {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("%d of %d members not passing", n, r.count)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !errors.Is(err, last) {
			fmt.Fprintf(r.progress, "waiting for the members to be passing: %v\n", err)
		}
		last = err
		if time.Now().After(deadline) {
			return fmt.Errorf("time: not every member passing within %s: %w", limit, last)
		}
		if !wait.Sleep(ctx, 2*time.Second) {
			return ctx.Err()
		}
	}
}

// window is what the measuring window found.
type window struct {
	elapsed                 time.Duration
	cpuMax, cpuAvg, rssMax  float64
	writesPerMin            float64
	probesPerS, scrapesPerS float64
	benchCPU                float64
	// openFiles is the most this process held open.
	openFiles int
}

// measure samples the supernodes and the store over the window.
func (r *membersRun) measure(ctx context.Context) (window, error) {
	var w window
	sns := r.supernodeProcs()
	cpu0 := make([]uint64, len(sns))
	for i, p := range sns {
		t, err := cpuTicks(p.pid())
		if err != nil {
			return w, err
		}
		cpu0[i] = t
	}
	self0, err := cpuTicks(os.Getpid())
	if err != nil {
		return w, err
	}
	rev0, err := r.revision(ctx)
	if err != nil {
		return w, err
	}
	probes0, scrapes0 := r.probes.Load(), r.scrapes.Load()
	start := time.Now()
	fmt.Fprintf(r.progress, "measuring for %s\n", r.duration)
	rss := make([]float64, len(sns))
	for {
		if n, err := openFiles(); err == nil {
			w.openFiles = max(w.openFiles, n)
		}
		for i, p := range sns {
			mb, err := rssMB(p.pid())
			if err != nil {
				return w, err
			}
			rss[i] = max(rss[i], mb)
		}
		if err := r.checkRunning(ctx); err != nil {
			return w, err
		}
		left := r.duration - time.Since(start)
		if left <= 0 {
			break
		}
		if el := time.Since(start).Seconds(); el >= 1 {
			fmt.Fprintf(r.progress, "  %3.0fs: %.0f probes/s, %.1f scrapes/s, supernode RSS %s MB, %d session warnings, %d files open here\n",
				el, float64(r.probes.Load()-probes0)/el, float64(r.scrapes.Load()-scrapes0)/el, formatFloats(rss), r.warnings.n.Load(), w.openFiles)
		}
		if !wait.Sleep(ctx, min(left, membersSample)) {
			return w, ctx.Err()
		}
	}
	w.elapsed = time.Since(start)
	minutes := w.elapsed.Minutes()
	var sum float64
	for i, p := range sns {
		t, err := cpuTicks(p.pid())
		if err != nil {
			return w, err
		}
		perMin := float64(t-cpu0[i]) / clockTicks / minutes
		sum += perMin
		w.cpuMax = max(w.cpuMax, perMin)
		w.rssMax = max(w.rssMax, rss[i])
		fmt.Fprintf(r.progress, "%s: %.2f CPU s/min, RSS up to %.0f MB\n", p.name, perMin, rss[i])
	}
	w.cpuAvg = sum / float64(len(sns))
	self1, err := cpuTicks(os.Getpid())
	if err != nil {
		return w, err
	}
	w.benchCPU = float64(self1-self0) / clockTicks / minutes
	rev1, err := r.revision(ctx)
	if err != nil {
		return w, err
	}
	w.writesPerMin = float64(rev1-rev0) / minutes
	w.probesPerS = float64(r.probes.Load()-probes0) / w.elapsed.Seconds()
	w.scrapesPerS = float64(r.scrapes.Load()-scrapes0) / w.elapsed.Seconds()
	fmt.Fprintf(r.progress, "store revision %d -> %d; this process (members) %.2f CPU s/min\n", rev0, rev1, w.benchCPU)
	return w, nil
}

func formatFloats(v []float64) string {
	var parts []string
	for _, x := range v {
		parts = append(parts, strconv.FormatFloat(x, 'f', 0, 64))
	}
	return strings.Join(parts, "/")
}

// revision is the newest store revision any supernode reports.
func (r *membersRun) revision(ctx context.Context) (int64, error) {
	list, err := r.list(ctx)
	if err != nil {
		return 0, fmt.Errorf("read the store revision: %w", err)
	}
	var rev int64
	for _, sn := range list {
		rev = max(rev, sn.Revision)
	}
	return rev, nil
}

// detect stops one member as a kill would and times its critical event.
func (r *membersRun) detect(ctx context.Context) (time.Duration, error) {
	m := r.members[r.count/2]
	base, err := r.newestEvent(ctx)
	if err != nil {
		return 0, err
	}
	stopped := time.Now()
	m.halt()
	evs, err := r.waitEvent(ctx, m.name, base, membersDetectLimit, func(e events.Event) bool { return e.Kind == string(health.Critical) })
	if err != nil {
		return 0, fmt.Errorf("no critical event for the stopped member %s: %w", m.name, err)
	}
	crit := evs[len(evs)-1]
	d := crit.Time.Sub(stopped)
	fmt.Fprintf(r.progress, "stopped %s: critical after %.3fs (%s), seen after %.3fs\n", m.name, d.Seconds(), crit.Message, time.Since(stopped).Seconds())
	return d, nil
}

// cpuTicks is a process's user and system CPU time in clock ticks.
func cpuTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("CPU time of process %d: %w", pid, err)
	}
	// The command name, in parentheses, may hold spaces: fields are
	// counted after its closing parenthesis, from field 3 (state).
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("CPU time of process %d: short /proc/%d/stat", pid, pid)
	}
	utime, err1 := strconv.ParseUint(fields[11], 10, 64)
	stime, err2 := strconv.ParseUint(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("CPU time of process %d: bad /proc/%d/stat", pid, pid)
	}
	return utime + stime, nil
}

// openFiles counts the file descriptors this process holds.
func openFiles() (int, error) {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	return len(names), err
}

// rssMB is a process's resident set size in MB.
func rssMB(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("memory of process %d: %w", pid, err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			if err != nil {
				return 0, fmt.Errorf("memory of process %d: %q", pid, line)
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("memory of process %d: no VmRSS", pid)
}

// warnCounter is the members' log: it counts warnings (failed session
// renewals, mostly) and shows the first few and every thousandth.
type warnCounter struct {
	n        atomic.Int64
	progress io.Writer
}

func (h *warnCounter) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h *warnCounter) Handle(_ context.Context, rec slog.Record) error {
	n := h.n.Add(1)
	if n <= 5 || n%1000 == 0 {
		msg := rec.Message
		rec.Attrs(func(a slog.Attr) bool {
			msg += " " + a.String()
			return true
		})
		fmt.Fprintf(h.progress, "member warning #%d: %s\n", n, msg)
	}
	return nil
}

func (h *warnCounter) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &attrHandler{h: h, attrs: attrs}
}

func (h *warnCounter) WithGroup(string) slog.Handler { return h }

// attrHandler keeps a logger's attributes (the member's name) for the
// warnings shown.
type attrHandler struct {
	h     *warnCounter
	attrs []slog.Attr
}

func (a *attrHandler) Enabled(ctx context.Context, l slog.Level) bool { return a.h.Enabled(ctx, l) }

func (a *attrHandler) Handle(ctx context.Context, rec slog.Record) error {
	rec = rec.Clone()
	rec.AddAttrs(a.attrs...)
	return a.h.Handle(ctx, rec)
}

func (a *attrHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &attrHandler{h: a.h, attrs: append(append([]slog.Attr{}, a.attrs...), attrs...)}
}

func (a *attrHandler) WithGroup(string) slog.Handler { return a }
