package bench

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// peerStopLimit is how long a peer server gets to stop after each signal.
const peerStopLimit = 10 * time.Second

// peerProcess is a server from Debian the bench measures fedkeeper
// against (ZooKeeper, NSD), run in its own process group with its output
// in a log file.
type peerProcess struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
}

// startPeer starts cmd as the peer called name, its output appended to
// logFile.
func startPeer(name, logFile string, cmd *exec.Cmd) (*peerProcess, error) {
	lf, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open %s's log: %w", name, err)
	}
	cmd.Stdout, cmd.Stderr = lf, lf
	// Its own process group, so that the processes it forks can be killed
	// with it if it does not stop.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &peerProcess{name: name, log: logFile, cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

// stop ends the peer with SIGTERM, or its whole process group with
// SIGKILL if it lingers.
func (p *peerProcess) stop(progress io.Writer) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(peerStopLimit):
	}
	fmt.Fprintf(progress, "%s (pid %d) still running %s after SIGTERM; killing it\n", p.name, p.cmd.Process.Pid, peerStopLimit)
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(peerStopLimit):
		fmt.Fprintf(progress, "%s (pid %d) still running after SIGKILL\n", p.name, p.cmd.Process.Pid)
	}
}
