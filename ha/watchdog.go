package ha

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A watchdog is a separate process that stops what a holder runs (an HA
// group's service, a locked command) when the holder's lease may end. A
// holder frozen by SIGSTOP or a debugger, or killed with SIGKILL, cannot
// stop anything itself; its watchdog, in its own session so that signals
// to the holder's process group miss it, can. The holder tells it the
// monotonic moment its lease is surely alive until (ValidUntil) after
// every renewal; the watchdog fences — runs the stop command, kills the
// process group — early enough to be done by then. When the holder dies,
// its end of the pipe closes, and the watchdog fences at once.
//
// Protocol on the watchdog's standard input, one line each:
//
//	until <ns>     the lease is alive until this Mono() reading
//	guard <pgid>   a script of the holder's runs in this process group:
//	               killed first when fencing, so that a start script of a
//	               frozen holder cannot launch the service after the stop
//	unguard <pgid> that script has ended
//	disarm         the holder stopped the service itself: exit, doing nothing

// WatchdogSpec says what a watchdog does when it fences.
type WatchdogSpec struct {
	// Stop is run, if set, with StopTimeout; its process group is killed
	// if it runs longer.
	Stop []string
	// KillGroup, if set, is a process group killed with SIGTERM, then
	// SIGKILL once StopTimeout (counted from the start of fencing) is up.
	KillGroup int
	// StopTimeout bounds the fencing; the watchdog starts it that long
	// (plus a margin) before the lease's end.
	StopTimeout time.Duration
}

// fenceMargin is kept between the end of fencing and the end of the lease,
// for the scheduling of the watchdog itself.
const fenceMargin = 250 * time.Millisecond

// Lead is how long before a lease's end a holder with this spec stops:
// the watchdog fences then, and the holder must no longer act as holder.
func (s WatchdogSpec) Lead() time.Duration { return s.StopTimeout + fenceMargin }

// Args renders the spec as arguments of the watchdog command.
func (s WatchdogSpec) Args() []string {
	args := []string{"--stop-timeout", s.StopTimeout.String()}
	if s.KillGroup > 0 {
		args = append(args, "--kill-group", strconv.Itoa(s.KillGroup))
	}
	return append(append(args, "--"), s.Stop...)
}

// Watchdog is the holder's handle on its watchdog process.
type Watchdog struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	mu   sync.Mutex
	done chan struct{}
}

// StartWatchdog starts exe (the fedkeeper binary) as the watchdog of a
// lease alive until validUntil, with argsPrefix naming its subcommand and
// env the environment of the stop command.
func StartWatchdog(exe string, argsPrefix []string, spec WatchdogSpec, env []string, validUntil time.Duration) (*Watchdog, error) {
	cmd := exec.Command(exe, append(append([]string{}, argsPrefix...), spec.Args()...)...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	// Its own session: a signal to the holder's process group does not
	// reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("watchdog pipe: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the watchdog: %w", err)
	}
	w := &Watchdog{cmd: cmd, in: in, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(w.done)
	}()
	if err := w.Extend(validUntil); err != nil {
		w.cmd.Process.Kill()
		return nil, err
	}
	return w, nil
}

// Extend tells the watchdog the lease is alive until validUntil.
func (w *Watchdog) Extend(validUntil time.Duration) error {
	return w.send(fmt.Sprintf("until %d\n", validUntil.Nanoseconds()))
}

// Guard has the watchdog kill process group pgid, before anything else,
// if it fences while the group runs.
func (w *Watchdog) Guard(pgid int) error { return w.send(fmt.Sprintf("guard %d\n", pgid)) }

// Unguard tells the watchdog that process group pgid has ended.
func (w *Watchdog) Unguard(pgid int) error { return w.send(fmt.Sprintf("unguard %d\n", pgid)) }

// Disarm ends the watchdog without fencing, once the holder has stopped
// its service itself, and waits for it to exit.
func (w *Watchdog) Disarm() {
	w.send("disarm\n")
	select {
	case <-w.done:
	case <-time.After(5 * time.Second):
		w.cmd.Process.Kill()
		<-w.done
	}
}

// Done is closed when the watchdog has exited: disarmed, or after fencing.
func (w *Watchdog) Done() <-chan struct{} { return w.done }

func (w *Watchdog) send(line string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := io.WriteString(w.in, line); err != nil {
		return fmt.Errorf("tell the watchdog: %w", err)
	}
	return nil
}

// RunWatchdog is the watchdog process: it reads the holder's lines from
// in and fences per spec when the lease nears its end or in closes
// without a disarm. It returns once it has fenced or been disarmed.
func RunWatchdog(ctx context.Context, in io.Reader, spec WatchdogSpec, log *slog.Logger) error {
	type msg struct {
		until          time.Duration
		guard, unguard int
		disarm         bool
		eof            bool
	}
	msgs := make(chan msg, 16)
	go func() {
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 1 && f[0] == "disarm" {
				msgs <- msg{disarm: true}
				return
			}
			if len(f) == 2 {
				n, err := strconv.ParseInt(f[1], 10, 64)
				switch {
				case err != nil:
				case f[0] == "until":
					msgs <- msg{until: time.Duration(n)}
					continue
				case f[0] == "guard" && n > 1:
					msgs <- msg{guard: int(n)}
					continue
				case f[0] == "unguard" && n > 1:
					msgs <- msg{unguard: int(n)}
					continue
				}
			}
			log.Error("watchdog: a line it does not understand; fencing now", "line", sc.Text())
			break
		}
		msgs <- msg{eof: true}
	}()
	var until time.Duration
	guarded := map[int]bool{}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case m := <-msgs:
			switch {
			case m.disarm:
				return nil
			case m.eof:
				log.Warn("watchdog: the holder is gone; fencing now")
				return fence(ctx, spec, guarded, log)
			case m.guard > 0:
				guarded[m.guard] = true
				continue
			case m.unguard > 0:
				delete(guarded, m.unguard)
				continue
			}
			// A lease only ever lasts longer; an old line arriving late
			// must not shorten nor stretch what is known.
			until = max(until, m.until)
		case <-timer.C:
		case <-ctx.Done():
			return fence(context.WithoutCancel(ctx), spec, guarded, log)
		}
		left := until - spec.Lead() - Mono()
		if left <= 0 {
			log.Warn("watchdog: the lease may end before a stop would finish; fencing now", "lead", spec.Lead())
			return fence(ctx, spec, guarded, log)
		}
		timer.Reset(left)
	}
}

// fence stops what the holder runs, within spec.StopTimeout: first the
// holder's scripts still running, then the service.
func fence(ctx context.Context, spec WatchdogSpec, guarded map[int]bool, log *slog.Logger) error {
	// The stop command and the kill share StopTimeout: Lead counts on it.
	deadline := time.Now().Add(spec.StopTimeout)
	var errs []error
	for pgid := range guarded {
		if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("kill script process group %d: %w", pgid, err))
		}
	}
	if len(spec.Stop) > 0 {
		if err := RunBounded(ctx, spec.Stop, nil, spec.StopTimeout, nil); err != nil {
			errs = append(errs, fmt.Errorf("stop command: %w", err))
		}
	}
	if spec.KillGroup > 0 {
		if err := KillGroup(spec.KillGroup, time.Until(deadline)); err != nil {
			errs = append(errs, err)
		}
	}
	err := errors.Join(errs...)
	if err != nil {
		log.Error("watchdog: fencing failed", "err", err)
	} else {
		log.Warn("watchdog: fenced")
	}
	return err
}

// RunBounded runs argv with env (nil: this process's) in its own process
// group, killing the group if it outlasts timeout or ctx ends. With a
// watchdog, the group is guarded by it (see Watchdog.Guard) from before
// the command runs until it has ended.
func RunBounded(ctx context.Context, argv []string, env []string, timeout time.Duration, wd *Watchdog) error {
	g, err := startGated(argv, env, nil, os.Stderr)
	if err != nil {
		return err
	}
	pgid := g.proc.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- g.proc.Wait() }()
	if wd != nil {
		if err := wd.Guard(pgid); err != nil {
			g.cancel()
			<-exited
			return fmt.Errorf("%s not run: %w", argv[0], err)
		}
		defer wd.Unguard(pgid)
	}
	if err := g.letGo(); err != nil {
		return fmt.Errorf("%s not run: %w", argv[0], errors.Join(err, <-exited))
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case err := <-exited:
		return err
	case <-timer.C:
		err = fmt.Errorf("%s: killed after %s", argv[0], timeout)
	case <-ctx.Done():
		err = fmt.Errorf("%s: killed: %w", argv[0], context.Cause(ctx))
	}
	syscall.Kill(-pgid, syscall.SIGKILL)
	<-exited
	return err
}

// gateScript holds a command back until it is let go: its starter writes
// a line to descriptor 3 then. If the starter dies first, the line never
// comes and the command never runs, so nothing runs unguarded.
const gateScript = `read -r ok <&3 || exit 125; exec "$@" 3<&-`

// gated is a command started in a process group of its own and held at
// its gate.
type gated struct {
	proc *exec.Cmd
	gate *os.File
}

// startGated starts argv behind the gate, with env (nil: this process's)
// and the given standard input and output.
func startGated(argv, env []string, stdin io.Reader, out io.Writer) (*gated, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("pipe to hold %s back: %w", argv[0], err)
	}
	proc := exec.Command("/bin/sh", append([]string{"-c", gateScript, "fedkeeper"}, argv...)...)
	proc.Env = env
	proc.Stdin, proc.Stdout, proc.Stderr = stdin, out, out
	proc.ExtraFiles = []*os.File{r}
	proc.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = proc.Start()
	r.Close()
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	return &gated{proc: proc, gate: w}, nil
}

// letGo lets the command run.
func (g *gated) letGo() error {
	defer g.gate.Close()
	if _, err := g.gate.Write([]byte("go\n")); err != nil {
		return fmt.Errorf("let %s go: %w", g.proc.Args[3], err)
	}
	return nil
}

// cancel makes the command exit at its gate without running.
func (g *gated) cancel() { g.gate.Close() }

// KillGroup ends process group pgid: SIGTERM, then SIGKILL if any of it is
// left after grace.
func KillGroup(pgid int, grace time.Duration) error {
	if err := syscall.Kill(-pgid, syscall.SIGTERM); errors.Is(err, syscall.ESRCH) {
		return nil
	}
	for deadline := time.Now().Add(grace); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
			return nil
		}
	}
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill process group %d: %w", pgid, err)
	}
	return nil
}

// watchdogSlot holds the watchdog of whatever a lease currently guards,
// if anything, so that the lease's renewals, which come from another
// goroutine, reach it.
type watchdogSlot struct {
	mu  sync.Mutex
	wd  *Watchdog
	log *slog.Logger
}

func (s *watchdogSlot) set(wd *Watchdog) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wd = wd
}

// extend passes a renewal of the lease on to the watchdog, if one runs.
func (s *watchdogSlot) extend(validUntil time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wd == nil {
		return
	}
	if err := s.wd.Extend(validUntil); err != nil {
		s.log.Warn("watchdog not told of a lease renewal", "err", err)
	}
}
