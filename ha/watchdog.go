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
//	until <ns>   the lease is alive until this Mono() reading
//	disarm       the holder stopped the service itself: exit, doing nothing

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
		until  time.Duration
		disarm bool
		eof    bool
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
			if len(f) == 2 && f[0] == "until" {
				if ns, err := strconv.ParseInt(f[1], 10, 64); err == nil {
					msgs <- msg{until: time.Duration(ns)}
					continue
				}
			}
			log.Error("watchdog: a line it does not understand; fencing now", "line", sc.Text())
			break
		}
		msgs <- msg{eof: true}
	}()
	var until time.Duration
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
				return fence(ctx, spec, log)
			}
			// A lease only ever lasts longer; an old line arriving late
			// must not shorten nor stretch what is known.
			until = max(until, m.until)
		case <-timer.C:
		case <-ctx.Done():
			return fence(context.WithoutCancel(ctx), spec, log)
		}
		left := until - spec.Lead() - Mono()
		if left <= 0 {
			log.Warn("watchdog: the lease may end before a stop would finish; fencing now", "lead", spec.Lead())
			return fence(ctx, spec, log)
		}
		timer.Reset(left)
	}
}

// fence stops what the holder runs, within spec.StopTimeout.
func fence(ctx context.Context, spec WatchdogSpec, log *slog.Logger) error {
	// The stop command and the kill share StopTimeout: Lead counts on it.
	deadline := time.Now().Add(spec.StopTimeout)
	var errs []error
	if len(spec.Stop) > 0 {
		if err := RunBounded(ctx, spec.Stop, nil, spec.StopTimeout); err != nil {
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
// group, killing the group if it outlasts timeout.
func RunBounded(ctx context.Context, argv []string, env []string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("%s: killed after %s", argv[0], timeout)
	}
	return err
}

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
