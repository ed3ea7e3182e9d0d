package ha_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/fedkeeper/fedkeeper/ha"
)

// guarded is what a watchdog guards in these tests: a process in a group
// of its own, and a stop command that leaves a file behind.
type guarded struct {
	pgid int
	// died is when the process exited, on the monotonic clock.
	died chan time.Duration
	// stopped is the file the stop command writes.
	stopped string
}

func startGuarded(t *testing.T) *guarded {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g := &guarded{pgid: cmd.Process.Pid, died: make(chan time.Duration, 1), stopped: filepath.Join(t.TempDir(), "stopped")}
	go func() {
		cmd.Wait()
		g.died <- ha.Mono()
	}()
	t.Cleanup(func() { syscall.Kill(-g.pgid, syscall.SIGKILL) })
	return g
}

func (g *guarded) spec() ha.WatchdogSpec {
	return ha.WatchdogSpec{Stop: []string{"sh", "-c", "echo stopped > " + g.stopped}, KillGroup: g.pgid, StopTimeout: 300 * time.Millisecond}
}

func (g *guarded) wasStopped() bool {
	_, err := os.Stat(g.stopped)
	return err == nil
}

func TestWatchdogFencesOnlyWhenTheLeaseMayEnd(t *testing.T) {
	lead := (&guarded{}).spec().Lead()
	tests := []struct {
		name string
		// holder talks to the watchdog from t0 on, and returns the window
		// in which the guarded process must die (zero: it must live).
		holder func(w io.WriteCloser, t0 time.Duration) (after, before time.Duration)
	}{
		{"fences Lead before the lease's end, not earlier", func(w io.WriteCloser, t0 time.Duration) (time.Duration, time.Duration) {
			fmt.Fprintf(w, "until %d\n", t0+1500*time.Millisecond)
			return t0 + 1500*time.Millisecond - lead, t0 + 1500*time.Millisecond
		}},
		{"fences at once when the holder is gone", func(w io.WriteCloser, t0 time.Duration) (time.Duration, time.Duration) {
			fmt.Fprintf(w, "until %d\n", t0+time.Minute)
			w.Close()
			return t0, t0 + 500*time.Millisecond
		}},
		{"a late until does not shorten the lease", func(w io.WriteCloser, t0 time.Duration) (time.Duration, time.Duration) {
			fmt.Fprintf(w, "until %d\nuntil %d\n", t0+2*time.Second, t0+100*time.Millisecond)
			return t0 + 2*time.Second - lead, t0 + 2*time.Second
		}},
		{"fences a frozen holder before the lease it last renewed ends", func(w io.WriteCloser, t0 time.Duration) (time.Duration, time.Duration) {
			var end time.Duration
			for range 5 {
				end = ha.Mono() + 1200*time.Millisecond
				fmt.Fprintf(w, "until %d\n", end)
				time.Sleep(100 * time.Millisecond)
			}
			return end - lead, end
		}},
		{"fences at once on a line it does not understand", func(w io.WriteCloser, t0 time.Duration) (time.Duration, time.Duration) {
			fmt.Fprintf(w, "until %d\nextend a lot\n", t0+time.Minute)
			return t0, t0 + 500*time.Millisecond
		}},
		{"does nothing once disarmed", func(w io.WriteCloser, t0 time.Duration) (time.Duration, time.Duration) {
			fmt.Fprintf(w, "until %d\ndisarm\n", t0+time.Second)
			return 0, 0
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := startGuarded(t)
			r, w := io.Pipe()
			defer w.Close()
			returned := make(chan error, 1)
			go func() {
				returned <- ha.RunWatchdog(context.Background(), r, g.spec(), slog.New(slog.NewTextHandler(io.Discard, nil)))
			}()
			after, before := tc.holder(w, ha.Mono())
			if before == 0 {
				if err := <-returned; err != nil {
					t.Fatalf("disarmed watchdog: %v", err)
				}
				select {
				case <-g.died:
					t.Fatal("a disarmed watchdog killed the process")
				case <-time.After(time.Second):
				}
				if g.wasStopped() {
					t.Error("a disarmed watchdog ran the stop command")
				}
				return
			}
			select {
			case died := <-g.died:
				if died < after || died > before {
					t.Errorf("process died %s after the window opened, which is %s long", died-after, before-after)
				}
			case <-time.After(before - ha.Mono() + time.Second):
				t.Fatal("process still alive after its window")
			}
			if err := <-returned; err != nil {
				t.Errorf("fencing: %v", err)
			}
			if !g.wasStopped() {
				t.Error("the stop command did not run")
			}
		})
	}
}

func TestWatchdogProcessOutlivesItsHolderAndFencesThen(t *testing.T) {
	g := startGuarded(t)
	spec := g.spec()
	// The holder here is the test; a watchdog process it started sees it
	// gone when its standard input closes.
	cmd := exec.Command(os.Args[0], append(append([]string{}, watchdogArgs...), spec.Args()...)...)
	cmd.Env = append(os.Environ(), ha.EnvFencingToken+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(in, "until %d\n", ha.Mono()+time.Minute)
	select {
	case <-g.died:
		t.Fatal("the watchdog fenced with a minute of lease left")
	case <-time.After(500 * time.Millisecond):
	}
	gone := ha.Mono()
	in.Close()
	select {
	case died := <-g.died:
		if died-gone > time.Second {
			t.Errorf("fenced %s after the holder went", died-gone)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the watchdog did not fence after its holder went")
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("watchdog process: %v", err)
	}
}

func TestStartedWatchdogIsExtendedAndDisarmed(t *testing.T) {
	g := startGuarded(t)
	env := append(os.Environ(), ha.EnvFencingToken+"=1")
	wd, err := ha.StartWatchdog(os.Args[0], watchdogArgs, g.spec(), env, ha.Mono()+time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// Extended in time, the watchdog lets the process run past the first
	// deadline.
	for range 8 {
		if err := wd.Extend(ha.Mono() + time.Second); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	wd.Disarm()
	select {
	case <-wd.Done():
	default:
		t.Fatal("Disarm returned before the watchdog exited")
	}
	select {
	case <-g.died:
		t.Fatal("the process died although its watchdog was extended, then disarmed")
	case <-time.After(1500 * time.Millisecond):
	}
	if g.wasStopped() {
		t.Error("the stop command ran")
	}
}

func TestFencingKillsTheHoldersGuardedScriptsBeforeTheStop(t *testing.T) {
	g := startGuarded(t)
	env := append(os.Environ(), ha.EnvFencingToken+"=1")
	// The lease ends soon after the script starts, and nobody renews it:
	// the holder is frozen.
	wd, err := ha.StartWatchdog(os.Args[0], watchdogArgs, g.spec(), env, ha.Mono()+g.spec().Lead()+700*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	// A start script that will go on launching the service after a fence
	// if nothing kills it: its holder, frozen, would not.
	launched := filepath.Join(t.TempDir(), "launched")
	ran := make(chan error, 1)
	go func() {
		ran <- ha.RunBounded(context.Background(), []string{"sh", "-c", "sleep 2; echo late > " + launched}, nil, time.Minute, wd)
	}()
	select {
	case <-wd.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the watchdog did not fence")
	}
	select {
	case err := <-ran:
		if err == nil {
			t.Error("the guarded script ran to its end")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the guarded script was not killed")
	}
	time.Sleep(2500 * time.Millisecond)
	if _, err := os.Stat(launched); err == nil {
		t.Error("the guarded script launched the service after the fence")
	}
	if !g.wasStopped() {
		t.Error("the stop command did not run")
	}
}
