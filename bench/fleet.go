package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fedkeeper/fedkeeper/client"
	"github.com/fedkeeper/fedkeeper/internal/wait"
	"github.com/fedkeeper/fedkeeper/membership"
	"github.com/fedkeeper/fedkeeper/quorum"
)

// Bounds of the processes a fleet runs: every wait gives up after its
// bound, so that a federation that does not come up or heal fails the
// bench instead of hanging it.
const (
	fleetPoll         = 100 * time.Millisecond
	fleetLiveLimit    = time.Minute      // process start to /v1/live
	fleetSteadyLimit  = 90 * time.Second // start or restart to the federation's shape
	fleetCommandLimit = time.Minute      // init, supernode add, token create
	fleetStopLimit    = 30 * time.Second // SIGTERM to exit
	fleetKillLimit    = 10 * time.Second // SIGKILL to exit
	fleetRestartDelay = time.Second      // before restarting a process that exited
	fleetMaxRestarts  = 10               // of the supervised process, per trial

	// Every supernode listens for the API on its own loopback address at
	// fleetAPIPort, for store peers at +1 and store clients at +2; agents
	// listen at fleetAgentPort on theirs.
	fleetAPIPort   = "7420"
	fleetPeerPort  = "7421"
	fleetStorePort = "7422"
	fleetAgentPort = "7430"

	// Last byte of the loopback addresses in a fleet's block: supernodes
	// from 1, agents from agentHostBase, in-process members from
	// memberHostBase.
	agentHostBase  = 101
	memberHostBase = 151
	maxHostsInRole = 50
)

// fedSpec is the shape of a federation a fleet starts.
type fedSpec struct {
	// voters and standbys: the first supernode is made by init, the others
	// are added and joined; the last standbys of them as standbys.
	voters, standbys int
	// deadAfter is given to every supernode as --dead-after, unless zero.
	deadAfter time.Duration
	// args are more flags for init and for every joining supernode.
	args []string
	// config is YAML appended to every supernode's supernode.yaml before it
	// serves, for settings no flag sets. A joined supernode has its file
	// written by its join, so it is joined, stopped, given the extra
	// settings and started again.
	config string
}

func (s fedSpec) size() int { return s.voters + s.standbys }

// fleet owns the fedkeeper processes of one bench run, supernodes and
// agents, on loopback addresses of one block, and the administrator's
// client to their federation.
type fleet struct {
	bin      string
	dir      string
	progress io.Writer
	// block is "127.X.Y." of the fleet's loopback addresses.
	block string

	procs  []*proc
	byName map[string]*proc

	creds     client.Credentials
	credsFile string
	caHash    string
	urls      []string
	admin     *client.Client
	// voters and standbys the federation should have when it is steady.
	voters, standbys int

	// supervised is restarted when it exits by itself, the way a service
	// manager would (Restart=on-failure); restarts counts those restarts
	// in this trial, and failedRejoins in all trials.
	supervised    *proc
	restarts      int
	failedRejoins int
}

// proc is one fedkeeper process: a supernode or an agent.
type proc struct {
	kind string // "supernode" or "agent"
	name string
	dir  string
	// url is a supernode's API URL; addr an agent's API address.
	url  string
	addr string
	log  string
	// args start the process again from its data directory.
	args []string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	exitErr error
	// killed is set when the bench kills or stops it on purpose.
	killed bool
}

// newFleet makes a fleet of this binary in a new temporary directory,
// with a block of loopback addresses for supernodes hosts supernodes and
// agents agents. Close it to stop its processes and remove the directory.
func newFleet(scenario string, supernodes, agents int, progress io.Writer) (*fleet, error) {
	if supernodes > maxHostsInRole || agents > maxHostsInRole {
		return nil, fmt.Errorf("at most %d supernodes and %d agents on loopback", maxHostsInRole, maxHostsInRole)
	}
	bin, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this binary to run supernodes: %w", err)
	}
	block, err := freeBlock(supernodes, agents)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "fedkeeper-bench-"+scenario+"-")
	if err != nil {
		return nil, fmt.Errorf("make temporary directory: %w", err)
	}
	return &fleet{bin: bin, dir: dir, progress: progress, block: block, byName: map[string]*proc{}}, nil
}

// Close kills every process still running and removes the fleet's
// directory.
func (f *fleet) Close() {
	f.stopAll()
	os.RemoveAll(f.dir)
}

// freeBlock picks a block of loopback addresses, chosen from the process
// ID away from the blocks the test clusters use, whose supernode and
// agent ports are free.
func freeBlock(supernodes, agents int) (string, error) {
	pid := os.Getpid()
	for try := range 20 {
		block := fmt.Sprintf("127.%d.%d.", 210+pid%40, (pid/40+try)%250)
		free := true
		check := func(host string, ports ...string) {
			for _, port := range ports {
				if !free {
					return
				}
				ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
				if err != nil {
					free = false
					return
				}
				ln.Close()
			}
		}
		for i := range supernodes {
			check(fmt.Sprintf("%s%d", block, 1+i), fleetAPIPort, fleetPeerPort, fleetStorePort)
		}
		for i := range agents {
			check(fmt.Sprintf("%s%d", block, agentHostBase+i), fleetAgentPort)
		}
		if free {
			return block, nil
		}
	}
	return "", fmt.Errorf("no free block of loopback addresses for %d supernodes (ports %s-%s) and %d agents (port %s)",
		supernodes, fleetAPIPort, fleetStorePort, agents, fleetAgentPort)
}

func (f *fleet) supernodeHost(i int) string { return fmt.Sprintf("%s%d", f.block, 1+i) }
func (f *fleet) agentHost(i int) string     { return fmt.Sprintf("%s%d", f.block, agentHostBase+i) }

// memberHost is one of the addresses of in-process members; they listen
// on ports the system picks.
func (f *fleet) memberHost(i int) string {
	return fmt.Sprintf("%s%d", f.block, memberHostBase+i%(255-memberHostBase))
}

var caHashRE = regexp.MustCompile(`CA hash:\s+(sha256:[0-9a-f]{64})`)

// startFederation makes the federation: sn1 by init, the others as voters
// and then standbys, each admitted with "supernode add" and joined with
// --join, and waits until the autopilot has made it the spec's healthy
// voters and standbys.
func (f *fleet) startFederation(ctx context.Context, spec fedSpec) error {
	t0 := time.Now()
	f.voters, f.standbys = spec.voters, spec.standbys
	for i := range spec.size() {
		f.urls = append(f.urls, "https://"+net.JoinHostPort(f.supernodeHost(i), fleetAPIPort))
	}
	var common []string
	if spec.deadAfter > 0 {
		common = append(common, "--dead-after", spec.deadAfter.String())
	}
	common = append(common, spec.args...)
	first := filepath.Join(f.dir, "sn1")
	out, err := f.command(ctx, append([]string{"init", "--name", "sn1", "--data-dir", first, "--listen", net.JoinHostPort(f.supernodeHost(0), fleetAPIPort)}, common...)...)
	if err != nil {
		return err
	}
	m := caHashRE.FindStringSubmatch(out)
	if m == nil {
		return fmt.Errorf("fedkeeper init printed no CA hash:\n%s", out)
	}
	f.caHash = m[1]
	f.credsFile = filepath.Join(first, "admin.creds")
	if f.creds, err = client.LoadCredentials(f.credsFile); err != nil {
		return err
	}
	if f.admin, err = f.creds.Client(); err != nil {
		return err
	}
	if err := appendConfig(first, spec.config); err != nil {
		return err
	}
	sn1 := &proc{kind: "supernode", name: "sn1", dir: first, url: f.urls[0], args: []string{"supernode", "--data-dir", first}}
	if err := f.start(sn1, sn1.args); err != nil {
		return err
	}
	if err := f.waitLive(ctx, sn1); err != nil {
		return err
	}
	fmt.Fprintf(f.progress, "sn1 started at %s\n", sn1.url)
	for i := 1; i < spec.size(); i++ {
		name := fmt.Sprintf("sn%d", i+1)
		host := f.supernodeHost(i)
		standby := i >= spec.voters
		args := []string{"supernode", "add", name, "--peer-url", "https://" + net.JoinHostPort(host, fleetPeerPort), "--credentials", f.credsFile}
		if standby {
			args = append(args, "--standby")
		}
		out, err := f.command(ctx, args...)
		if err != nil {
			return err
		}
		fields := strings.Fields(out)
		if len(fields) == 0 {
			return fmt.Errorf("fedkeeper supernode add %s printed no token", name)
		}
		token := fields[len(fields)-1]
		dir := filepath.Join(f.dir, name)
		sn := &proc{kind: "supernode", name: name, dir: dir, url: f.urls[i], args: []string{"supernode", "--data-dir", dir}}
		join := append([]string{"supernode", "--data-dir", dir, "--join", f.urls[0], "--ca-hash", f.caHash, "--token", token,
			"--name", name, "--listen", net.JoinHostPort(host, fleetAPIPort)}, common...)
		if err := f.start(sn, join); err != nil {
			return err
		}
		if err := f.waitLive(ctx, sn); err != nil {
			return err
		}
		if spec.config != "" {
			// The join wrote supernode.yaml; the extra settings take effect
			// from the next start.
			if err := f.stop(sn); err != nil {
				return err
			}
			if err := appendConfig(dir, spec.config); err != nil {
				return err
			}
			if err := f.start(sn, sn.args); err != nil {
				return err
			}
			if err := f.waitLive(ctx, sn); err != nil {
				return err
			}
		}
		kind := "voter"
		if standby {
			kind = "standby"
		}
		fmt.Fprintf(f.progress, "%s joined as a %s at %s\n", name, kind, sn.url)
	}
	f.admin.SetServers(f.urls)
	if _, err := f.waitSteady(ctx, ""); err != nil {
		return err
	}
	fmt.Fprintf(f.progress, "federation ready: %s and %s after %.1fs\n",
		count(spec.voters, "voter"), count(spec.standbys, "standby"), time.Since(t0).Seconds())
	return nil
}

// count is "1 voter", "3 voters".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// appendConfig adds YAML to a supernode's configuration file.
func appendConfig(dir, extra string) error {
	if extra == "" {
		return nil
	}
	path := filepath.Join(dir, "supernode.yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read supernode configuration: %w", err)
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		b = append(b, '\n')
	}
	if err := os.WriteFile(path, append(b, extra...), 0o600); err != nil {
		return fmt.Errorf("write supernode configuration: %w", err)
	}
	return nil
}

// supernodeProcs are the fleet's supernode processes.
func (f *fleet) supernodeProcs() []*proc {
	var out []*proc
	for _, p := range f.procs {
		if p.kind == "supernode" {
			out = append(out, p)
		}
	}
	return out
}

// createToken makes a join token for uses members of project, with the
// CLI as an operator would.
func (f *fleet) createToken(ctx context.Context, uses int, project string) (string, error) {
	out, err := f.command(ctx, "token", "create", "--uses", fmt.Sprint(uses), "--project", project, "--credentials", f.credsFile)
	if err != nil {
		return "", err
	}
	fields := strings.Fields(out)
	if len(fields) == 0 {
		return "", errors.New("fedkeeper token create printed no token")
	}
	return fields[0], nil
}

// startAgent runs the agent of a new member, the i-th agent of the fleet,
// which joins with token; it keeps its membership when it stops, so it
// can be killed and started again from its data directory.
func (f *fleet) startAgent(i int, name, project, token string) (*proc, error) {
	dir := filepath.Join(f.dir, name)
	addr := net.JoinHostPort(f.agentHost(i), fleetAgentPort)
	a := &proc{kind: "agent", name: name, dir: dir, addr: addr, args: []string{"agent", "--data-dir", dir}}
	join := []string{"agent", "--data-dir", dir, "--join", strings.Join(f.urls, ","), "--ca-hash", f.caHash, "--token", token,
		"--name", name, "--project", project, "--listen", addr, "--leave-on-exit=false"}
	if err := f.start(a, join); err != nil {
		return nil, err
	}
	return a, nil
}

// running reports whether the process is running.
func (p *proc) running() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// pid is the process ID of the running process.
func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// errorKind shortens an error to what tells kinds apart: the API's code
// and status, or the transport error without addresses.
func errorKind(err error) string {
	var apiErr *client.Error
	if errors.As(err, &apiErr) {
		msg := apiErr.Message
		if i := strings.LastIndex(msg, ": "); i >= 0 {
			msg = msg[i+2:]
		}
		return fmt.Sprintf("HTTP %d %s: %s", apiErr.Status, apiErr.Code, msg)
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "connection refused"):
		return "connection refused"
	case strings.Contains(msg, "deadline exceeded") || strings.Contains(msg, "Timeout"):
		return "timeout"
	}
	return msg
}

// do is one administrator request, bounded by limit.
func (f *fleet) do(ctx context.Context, limit time.Duration, method, path string, in, out any) error {
	rctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	return f.admin.Do(rctx, method, path, in, out)
}

// list asks the federation for its supernodes.
func (f *fleet) list(ctx context.Context) ([]quorum.Supernode, error) {
	var list []quorum.Supernode
	err := f.do(ctx, time.Second, http.MethodGet, "/v1/supernodes", nil, &list)
	return list, err
}

// poll lists the supernodes until check accepts the list, for at most
// limit; it fails early if a process exits by itself.
func (f *fleet) poll(ctx context.Context, limit time.Duration, check func([]quorum.Supernode) error) error {
	deadline := time.Now().Add(limit)
	var last error
	for {
		if err := f.checkRunning(ctx); err != nil {
			return err
		}
		list, err := f.list(ctx)
		if err == nil {
			err = check(list)
			if err == nil {
				return nil
			}
			err = fmt.Errorf("%w; supernodes: %s", err, describe(list))
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		last = err
		if time.Now().After(deadline) {
			return fmt.Errorf("not so after %s: %w", limit, last)
		}
		if !wait.Sleep(ctx, fleetPoll) {
			return ctx.Err()
		}
	}
}

// waitSteady waits until the federation has its healthy voters, one of
// them the leader, and its healthy standbys, all of them ours; back is a
// supernode that must be among them (it was just restarted).
func (f *fleet) waitSteady(ctx context.Context, back string) ([]quorum.Supernode, error) {
	var steady []quorum.Supernode
	err := f.poll(ctx, fleetSteadyLimit, func(list []quorum.Supernode) error {
		voters, standbys, leaders := 0, 0, 0
		for _, sn := range list {
			if p := f.byName[sn.Name]; p == nil || p.kind != "supernode" {
				return fmt.Errorf("store member %q (%s) is none of ours", sn.Name, sn.PeerURL)
			}
			switch {
			case !sn.Healthy:
				return fmt.Errorf("%s is not healthy", sn.Name)
			case sn.Voter:
				voters++
				if sn.Leader {
					leaders++
				}
			case sn.Standby:
				standbys++
			default:
				return fmt.Errorf("%s is a learner, not yet a voter", sn.Name)
			}
		}
		if voters != f.voters || standbys != f.standbys || leaders != 1 {
			return fmt.Errorf("%d voters, %d standbys, %d leaders", voters, standbys, leaders)
		}
		if back != "" && !slices.ContainsFunc(list, func(sn quorum.Supernode) bool { return sn.Name == back }) {
			return fmt.Errorf("%s is not back", back)
		}
		steady = list
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("federation not back to %d healthy voters and %d healthy standby: %w", f.voters, f.standbys, err)
	}
	return steady, nil
}

func describe(list []quorum.Supernode) string {
	var parts []string
	for _, sn := range list {
		kind := sn.Kind()
		if sn.Leader {
			kind += ",leader"
		}
		if !sn.Healthy {
			kind += ",unhealthy"
		}
		name := sn.Name
		if name == "" {
			name = "(unstarted " + sn.PeerURL + ")"
		}
		parts = append(parts, name+"="+kind)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// nodeHealth is a node's health as the federation records it ("" before
// the first probe).
func (f *fleet) nodeHealth(ctx context.Context, name string) (string, error) {
	var n membership.Node
	if err := f.do(ctx, 2*time.Second, http.MethodGet, "/v1/nodes/"+name, nil, &n); err != nil {
		return "", err
	}
	return n.Health, nil
}

// waitHealth waits, for at most limit, until the node's health is want;
// it fails early if a process exits by itself.
func (f *fleet) waitHealth(ctx context.Context, name, want string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last error
	for {
		if err := f.checkRunning(ctx); err != nil {
			return err
		}
		h, err := f.nodeHealth(ctx, name)
		if err == nil {
			if h == want {
				return nil
			}
			err = fmt.Errorf("health is %q", h)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		last = err
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not %s after %s: %w", name, want, limit, last)
		}
		if !wait.Sleep(ctx, fleetPoll) {
			return ctx.Err()
		}
	}
}

// command runs a short fedkeeper command and returns its standard output.
func (f *fleet) command(ctx context.Context, args ...string) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, fleetCommandLimit)
	defer cancel()
	cmd := exec.CommandContext(cctx, f.bin, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("fedkeeper %s: %v: %s", strings.Join(redact(args), " "), err, strings.TrimSpace(errOut.String()))
	}
	return out.String(), nil
}

// redact hides a token in a command line shown in an error.
func redact(args []string) []string {
	out := slices.Clone(args)
	for i := range out {
		if i > 0 && out[i-1] == "--token" {
			out[i] = "REDACTED"
		}
	}
	return out
}

// start runs a process with args, its output appended to its log.
func (f *fleet) start(p *proc, args []string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("start %s: still running", p.name)
		}
	}
	p.log = filepath.Join(f.dir, p.name+".log")
	lf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open log of %s: %w", p.name, err)
	}
	fmt.Fprintf(lf, "=== %s fedkeeper %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(redact(args), " "))
	cmd := exec.Command(f.bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	if f.byName[p.name] == nil {
		f.procs = append(f.procs, p)
		f.byName[p.name] = p
	}
	done := make(chan struct{})
	p.cmd, p.done, p.exitErr, p.killed = cmd, done, nil, false
	go func() {
		err := cmd.Wait()
		lf.Close()
		p.mu.Lock()
		p.exitErr = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// kill sends SIGKILL to the process and waits until it is gone; it
// returns when the signal was sent.
func (f *fleet) kill(p *proc) (time.Time, error) {
	return f.signal(p, syscall.SIGKILL, fleetKillLimit)
}

// stop asks the process to stop with SIGTERM and waits until it is gone.
func (f *fleet) stop(p *proc) error {
	_, err := f.signal(p, syscall.SIGTERM, fleetStopLimit)
	return err
}

func (f *fleet) signal(p *proc, sig syscall.Signal, limit time.Duration) (time.Time, error) {
	p.mu.Lock()
	p.killed = true
	cmd, done := p.cmd, p.done
	at := time.Now()
	err := cmd.Process.Signal(sig)
	p.mu.Unlock()
	if err != nil {
		return at, fmt.Errorf("signal %s: %w", p.name, err)
	}
	select {
	case <-done:
		return at, nil
	case <-time.After(limit):
		return at, fmt.Errorf("%s still running %s after %s", p.name, limit, sig)
	}
}

// checkRunning fails if a process the bench did not kill has exited,
// unless it is the supervised one, which is started again.
func (f *fleet) checkRunning(ctx context.Context) error {
	for _, p := range f.procs {
		p.mu.Lock()
		done, killed, exitErr := p.done, p.killed, p.exitErr
		p.mu.Unlock()
		select {
		case <-done:
		default:
			continue
		}
		if killed {
			continue
		}
		if p != f.supervised || f.restarts >= fleetMaxRestarts {
			return fmt.Errorf("%s %s exited by itself (%v) after %d restarts; its log ends:\n%s", p.kind, p.name, exitErr, f.restarts, tailFile(p.log, 20))
		}
		f.restarts++
		f.failedRejoins++
		fmt.Fprintf(f.progress, "%s exited by itself (%v: %s); restarting it in %s\n", p.name, exitErr, lastError(p.log), fleetRestartDelay)
		if !wait.Sleep(ctx, fleetRestartDelay) {
			return ctx.Err()
		}
		if err := f.start(p, p.args); err != nil {
			return err
		}
	}
	return nil
}

// lastError is the error a fedkeeper process printed last in its log.
func lastError(path string) string {
	b, _ := os.ReadFile(path)
	msg := "no error printed"
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "fedkeeper: "); ok {
			msg = rest
		}
	}
	return msg
}

// waitLive waits until the supernode's liveness endpoint answers.
func (f *fleet) waitLive(ctx context.Context, p *proc) error {
	c, err := f.creds.Client()
	if err != nil {
		return err
	}
	c.SetServers([]string{p.url})
	defer c.CloseIdle()
	deadline := time.Now().Add(fleetLiveLimit)
	for {
		if err := f.checkRunning(ctx); err != nil {
			return err
		}
		lctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := c.Raw(lctx, http.MethodGet, "/v1/live", nil)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not live after %s: %w", p.name, fleetLiveLimit, err)
		}
		if !wait.Sleep(ctx, fleetPoll) {
			return ctx.Err()
		}
	}
}

// stopAll kills every process still running.
func (f *fleet) stopAll() {
	for _, p := range f.procs {
		p.mu.Lock()
		cmd, done := p.cmd, p.done
		p.killed = true
		p.mu.Unlock()
		select {
		case <-done:
			continue
		default:
		}
		cmd.Process.Kill()
		select {
		case <-done:
		case <-time.After(fleetKillLimit):
			fmt.Fprintf(f.progress, "%s %s (pid %d) still running %s after SIGKILL\n", p.kind, p.name, cmd.Process.Pid, fleetKillLimit)
		}
	}
}

// measure runs a scenario on the fleet, adds its total time, and on a
// failure that was not a cancellation shows the processes' logs.
func (f *fleet) measure(ctx context.Context, run func(context.Context) (Result, error)) (Result, error) {
	start := time.Now()
	res, err := run(ctx)
	if err != nil {
		if ctx.Err() == nil {
			f.dumpLogs()
		}
		return nil, err
	}
	res["total_s"] = seconds(time.Since(start))
	return res, nil
}

// dumpLogs shows the end of every process's log, to explain a failure.
func (f *fleet) dumpLogs() {
	for _, p := range f.procs {
		fmt.Fprintf(f.progress, "--- end of the log of %s ---\n%s\n", p.name, tailFile(p.log, 30))
	}
}

func tailFile(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	parts := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}
