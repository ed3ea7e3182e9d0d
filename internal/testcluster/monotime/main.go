// Command monotime is the service that the mutual-exclusion tests run
// under HA masterships and lock holds. It stamps its life with the
// system's monotonic clock, which every process of the machine reads
// alike (network namespaces included), so that the lines of services run
// by different nodes can be ordered:
//
//	monotime LOG GROUP NODE
//
// appends "start GROUP NODE TOKEN NS" to LOG, TOKEN being
// $FEDKEEPER_FENCING_TOKEN and NS the clock in nanoseconds; then writes
// its process ID to GROUP-NODE-TOKEN.pid beside LOG; then appends a
// "beat" line every 100 ms. On SIGTERM or SIGINT it stops beating,
// appends "stop", removes the pid file and exits 0. Each line is one
// write to a file opened for appending, so lines of many services never
// mix; the start line comes before the service does anything, and the
// stop line after it has done its last, so logged intervals cover the
// real ones.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const beatEvery = 100 * time.Millisecond

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: monotime LOG GROUP NODE")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2], os.Args[3], os.Getenv("FEDKEEPER_FENCING_TOKEN")); err != nil {
		fmt.Fprintln(os.Stderr, "monotime:", err)
		os.Exit(1)
	}
}

func run(logPath, group, node, token string) error {
	// Before the start line: a stop asked for at any moment after it must
	// be logged.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	stamp := func(kind string) error {
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
			return err
		}
		_, err := fmt.Fprintf(log, "%s %s %s %s %d\n", kind, group, node, token, ts.Nano())
		return err
	}
	if err := stamp("start"); err != nil {
		return err
	}
	pidFile := filepath.Join(filepath.Dir(logPath), fmt.Sprintf("%s-%s-%s.pid", group, node, token))
	// Renamed into place: whoever sees the file can read the whole ID.
	if err := os.WriteFile(pidFile+".new", []byte(fmt.Sprintln(os.Getpid())), 0o644); err != nil {
		return err
	}
	if err := os.Rename(pidFile+".new", pidFile); err != nil {
		return err
	}
	tick := time.NewTicker(beatEvery)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			if err := stamp("stop"); err != nil {
				return err
			}
			return os.Remove(pidFile)
		case <-tick.C:
			if err := stamp("beat"); err != nil {
				return err
			}
		}
	}
}
