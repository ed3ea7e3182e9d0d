package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/fedkeeper/fedkeeper/internal/wait"
)

// The ZooKeeper peer of config-fanout: a standalone server of Debian's
// zookeeper package, run from its jars by this process.
const (
	zkJar          = "/usr/share/java/zookeeper.jar"
	zkLogJar       = "/usr/share/java/slf4j-simple.jar"
	zkMain         = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
	zkStartLimit   = time.Minute
	zkSession      = 30 * time.Second
	zkConnectLimit = 30 * time.Second
	zkConnectors   = 32
	zkRoot         = "/fedkeeper-bench"
	zkConfigNode   = zkRoot + "/config"
)

// fanoutZookeeper measures ZooKeeper the way fanoutFedkeeper measures
// fedkeeper: write throughput with each level of writers, then watchers
// sessions each watching the same znode while a writer sets it.
func fanoutZookeeper(ctx context.Context, watchers, trials int, levels []int, progress io.Writer) (Result, error) {
	dir, err := os.MkdirTemp("", "fedkeeper-bench-zookeeper-")
	if err != nil {
		return nil, fmt.Errorf("make temporary directory: %w", err)
	}
	defer os.RemoveAll(dir)
	srv, err := startZookeeper(ctx, dir, progress)
	if err != nil {
		return nil, err
	}
	defer srv.stop(progress)

	res := Result{}
	if v := srv.version(); v != "" {
		res["zookeeper_version"] = v
	}
	admin, err := srv.connect(ctx, zkConnectLimit)
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	payload := fanoutPad("initial\n", fanoutPayloadBytes())
	for _, p := range []string{zkRoot, zkConfigNode} {
		if _, err := admin.Create(p, payload, zk.FlagPersistent, zk.WorldACL(zk.PermAll)); err != nil && !errors.Is(err, zk.ErrNodeExists) {
			return nil, fmt.Errorf("ZooKeeper create %s: %w", p, err)
		}
	}

	for _, n := range levels {
		rate, done, errs, firstErr := fanoutRate(ctx, n, func(w int) (func(ctx context.Context, seq int) error, func(), error) {
			c, err := srv.connect(ctx, zkConnectLimit)
			if err != nil {
				return nil, nil, err
			}
			path := fmt.Sprintf("%s/rate-%d-%d", zkRoot, n, w)
			if _, err := c.Create(path, nil, zk.FlagPersistent, zk.WorldACL(zk.PermAll)); err != nil && !errors.Is(err, zk.ErrNodeExists) {
				c.Close()
				return nil, nil, fmt.Errorf("ZooKeeper create %s: %w", path, err)
			}
			set := func(ctx context.Context, seq int) error {
				_, err := c.Set(path, fanoutPad(fmt.Sprintf("%s %d\n", path, seq), fanoutPayloadBytes()), -1)
				return err
			}
			return set, c.Close, nil
		})
		if done == 0 {
			return nil, fmt.Errorf("no ZooKeeper set succeeded with %d writers: %v", n, firstErr)
		}
		fmt.Fprintf(progress, "ZooKeeper set: %d writers, %d sets, %.1f/s, %d errors\n", n, done, rate, errs)
		if errs > 0 {
			fmt.Fprintf(progress, "ZooKeeper set: first error: %v\n", firstErr)
			res[fmt.Sprintf("zookeeper_set_errors_%d", n)] = errs
		}
		res[fmt.Sprintf("zookeeper_set_per_s_%d", n)] = fanoutRound(rate)
	}

	// The watchers: each its own session, as each agent is its own node.
	fmt.Fprintf(progress, "connecting %d ZooKeeper watcher sessions, %d at a time\n", watchers, zkConnectors)
	conns := make([]*zk.Conn, watchers)
	defer func() {
		var wg sync.WaitGroup
		for _, c := range conns {
			if c != nil {
				wg.Go(c.Close)
			}
		}
		wg.Wait()
	}()
	var next atomic.Int64
	var connectErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range min(watchers, zkConnectors) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= watchers {
					return
				}
				c, err := srv.connect(ctx, zkConnectLimit)
				if err != nil {
					mu.Lock()
					connectErr = fmt.Errorf("watcher session %d: %w", i, err)
					mu.Unlock()
					next.Store(int64(watchers))
					return
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	if connectErr != nil {
		return nil, connectErr
	}
	arrivals := newFanoutArrivals(watchers)
	stop := make(chan struct{})
	var getErrors atomic.Int64
	var watching sync.WaitGroup
	defer func() {
		close(stop)
		watching.Wait()
	}()
	for i, c := range conns {
		watching.Go(func() {
			for {
				// The watch's idiom: read and arm, wait for the change, and
				// read again (which arms the next watch).
				data, _, ch, err := c.GetW(zkConfigNode)
				if err != nil {
					select {
					case <-stop:
						return
					default:
					}
					getErrors.Add(1)
					select {
					case <-stop:
						return
					case <-time.After(100 * time.Millisecond):
					}
					continue
				}
				arrivals.mark(i, string(data), time.Now())
				select {
				case <-ch:
				case <-stop:
					return
				}
			}
		})
	}

	var trialsSeen fanoutTrials
	limit := fanoutTrialLimit + time.Duration(watchers)*fanoutTrialPer
	for t := 0; t <= trials; t++ {
		payload := fanoutPad(fmt.Sprintf("trial %d at %s\n", t, time.Now().Format(time.RFC3339Nano)), fanoutPayloadBytes())
		arrivals.begin(string(payload))
		if _, err := admin.Set(zkConfigNode, payload, -1); err != nil {
			return nil, fmt.Errorf("ZooKeeper set, trial %d: %w", t, err)
		}
		acked := time.Now()
		if err := arrivals.wait(ctx, limit); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("ZooKeeper trial %d: %d of %d watchers had not read the new data after %s (%d failed reads)",
				t, len(arrivals.missing()), watchers, limit, getErrors.Load())
		}
		trialsSeen.add(progress, "ZooKeeper", "watchers read", t, arrivals.latencies(acked))
		if !wait.Sleep(ctx, fanoutPause) {
			return nil, ctx.Err()
		}
	}
	if n := getErrors.Load(); n > 0 {
		res["zookeeper_get_errors"] = n
	}
	trialsSeen.figures(res, "zookeeper_")
	return res, nil
}

// zkServer is a ZooKeeper server process this bench started.
type zkServer struct {
	*peerProcess
	addr string
}

// startZookeeper writes a standalone configuration in dir, with a free
// loopback client port and the data directory there, starts the server
// and waits until it gives a session.
func startZookeeper(ctx context.Context, dir string, progress io.Writer) (*zkServer, error) {
	java, err := exec.LookPath("java")
	if err != nil {
		return nil, fmt.Errorf("ZooKeeper needs java, not found: %w", err)
	}
	if _, err := os.Stat(zkJar); err != nil {
		return nil, fmt.Errorf("ZooKeeper is not installed (%s: %v); install Debian's package: apt-get install -y zookeeper", zkJar, errors.Unwrap(err))
	}
	// zookeeper.jar names its dependencies in its manifest; older layouts
	// keep more jars in /usr/share/zookeeper. slf4j-simple, if there,
	// makes the server's warnings reach its log.
	cp := []string{zkJar}
	for _, pattern := range []string{"/usr/share/zookeeper/*.jar", "/usr/share/zookeeper/lib/*.jar"} {
		m, _ := filepath.Glob(pattern)
		cp = append(cp, m...)
	}
	if _, err := os.Stat(zkLogJar); err == nil {
		cp = append(cp, zkLogJar)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("find a free loopback port for ZooKeeper: %w", err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	ln.Close()
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, err
	}
	// Writes are synced to the transaction log before they are
	// acknowledged (forceSync), as fedkeeper's store syncs its log;
	// the admin server is off, so that only the client port is used.
	conf := fmt.Sprintf(`tickTime=2000
dataDir=%s
clientPort=%d
clientPortAddress=127.0.0.1
maxClientCnxns=0
forceSync=yes
admin.enableServer=false
4lw.commands.whitelist=srvr
`, data, addr.Port)
	cfgFile := filepath.Join(dir, "zoo.cfg")
	if err := os.WriteFile(cfgFile, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	peer, err := startPeer("ZooKeeper", filepath.Join(dir, "zookeeper.log"), exec.Command(java, "-cp", strings.Join(cp, ":"),
		"-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-Dzookeeper.admin.enableServer=false",
		zkMain, cfgFile))
	if err != nil {
		return nil, err
	}
	s := &zkServer{peerProcess: peer, addr: addr.String()}
	t0 := time.Now()
	c, err := s.connect(ctx, zkStartLimit)
	if err != nil {
		s.stop(progress)
		return nil, fmt.Errorf("ZooKeeper did not start: %w; its log ends:\n%s", err, tailFile(s.log, 10))
	}
	c.Close()
	fmt.Fprintf(progress, "ZooKeeper (pid %d) serving on %s after %.1fs\n", s.cmd.Process.Pid, s.addr, time.Since(t0).Seconds())
	return s, nil
}

// connect opens a session, waiting for it at most limit.
func (s *zkServer) connect(ctx context.Context, limit time.Duration) (*zk.Conn, error) {
	ready := make(chan struct{})
	var once sync.Once
	c, _, err := zk.Connect([]string{s.addr}, zkSession, zk.WithLogger(zkQuiet{}), zk.WithEventCallback(func(ev zk.Event) {
		if ev.State == zk.StateHasSession {
			once.Do(func() { close(ready) })
		}
	}))
	if err != nil {
		return nil, err
	}
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-ready:
		return c, nil
	case <-s.done:
		err = fmt.Errorf("the ZooKeeper server exited (%v)", s.cmd.ProcessState)
	case <-ctx.Done():
		err = ctx.Err()
	case <-t.C:
		err = fmt.Errorf("no ZooKeeper session after %s", limit)
	}
	c.Close()
	return nil, err
}

// version asks the server for its version with the srvr command.
func (s *zkServer) version() string {
	c, err := net.DialTimeout("tcp", s.addr, 5*time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("srvr")); err != nil {
		return ""
	}
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Zookeeper version: "); ok {
			// "3.8.0-${mvngit.commit.id}, built on ...": Debian's build
			// leaves the commit unexpanded.
			v, _, _ = strings.Cut(v, ",")
			v, _, _ = strings.Cut(v, "-")
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// zkQuiet drops the ZooKeeper client's own log lines (one per session
// connected, a thousand of them).
type zkQuiet struct{}

func (zkQuiet) Printf(string, ...any) {}
