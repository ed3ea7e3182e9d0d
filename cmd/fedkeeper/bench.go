package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedkeeper/fedkeeper/bench"
	"github.com/fedkeeper/fedkeeper/ha"
)

func benchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Run a measured scenario; the last line of output is its figures as JSON",
	}
	var agents int
	join := &cobra.Command{
		Use:   "join",
		Short: "Time from agent start to admitted, for --agents agents joining at once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := bench.Join(cmd.Context(), agents, os.Stderr)
			if err != nil {
				return err
			}
			return printResult(res)
		},
	}
	join.Flags().IntVar(&agents, "agents", 100, "how many agents join at once")
	cmd.AddCommand(join)

	var trials int
	var deadAfter time.Duration
	failover := &cobra.Command{
		Use:   "failover",
		Short: "Time from killing the store leader to the first write, and to the standby's promotion",
		Long: `Run three voting supernodes and one standby as processes of this binary
on loopback; each trial kills the store leader with SIGKILL, times the first
acknowledged write and the standby's promotion, then restarts the killed
supernode and waits until it is back as the standby.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := bench.Failover(cmd.Context(), trials, deadAfter, os.Stderr)
			if err != nil {
				return err
			}
			return printResult(res)
		},
	}
	failover.Flags().IntVar(&trials, "trials", 20, "how many times the leader is killed")
	failover.Flags().DurationVar(&deadAfter, "dead-after", 3*time.Second, "how long a voter may be unreachable before the standby replaces it")
	cmd.AddCommand(failover)
	cmd.AddCommand(detectCmd(), membersCmd())
	cmd.AddCommand(configFanoutCmd(), dnsCmd(), haFailoverCmd())
	return cmd
}

func detectCmd() *cobra.Command {
	var trials, supernodes, threshold int
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "detect",
		Short: "Time from killing a member's agent to its critical event",
		Long: `Run --supernodes supernodes and one agent as processes of this binary on
loopback, the supernodes probing members every --interval and suspecting one
after --threshold failed probes in a row; each trial kills the agent with
SIGKILL, times its suspect and critical events (a second supernode confirms
before critical), restarts it and waits until it is passing again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := bench.Detect(cmd.Context(), trials, supernodes, interval, threshold, os.Stderr)
			if err != nil {
				return err
			}
			return printResult(res)
		},
	}
	cmd.Flags().IntVar(&trials, "trials", 20, "how many times the agent is killed")
	cmd.Flags().IntVar(&supernodes, "supernodes", 2, "how many supernodes probe (all voters)")
	cmd.Flags().DurationVar(&interval, "interval", time.Second, "probe interval of each member")
	cmd.Flags().IntVar(&threshold, "threshold", 3, "failed probes in a row before a member is suspect")
	return cmd
}

func membersCmd() *cobra.Command {
	var count, supernodes int
	var duration time.Duration
	cmd := &cobra.Command{
		Use:   "members",
		Short: "Load of --count members on the supernodes: CPU, memory, store writes, probes, detection",
		Long: `Run --supernodes supernodes as processes of this binary on loopback and
--count simulated members inside this process, each with its own key,
certificate, session and HTTPS server on a loopback address, speaking the
agent's protocol. Once all have joined and are passing, measure the
supernodes' CPU and memory, the store's write rate and the probe rate for
--duration; then stop one member and time its critical event.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := bench.Members(cmd.Context(), count, supernodes, duration, os.Stderr)
			if err != nil {
				return err
			}
			return printResult(res)
		},
	}
	cmd.Flags().IntVar(&count, "count", 1000, "how many members")
	cmd.Flags().IntVar(&supernodes, "supernodes", 3, "how many supernodes (all voters)")
	cmd.Flags().DurationVar(&duration, "duration", time.Minute, "how long the load is measured once all members are passing")
	return cmd
}

func configFanoutCmd() *cobra.Command {
	var agents, trials, publishers int
	cmd := &cobra.Command{
		Use:   "config-fanout",
		Short: "Time from a configuration publish to its files on the disks of --agents agents, and publishes per second; ZooKeeper as the peer",
		Long: `Run one supernode and --agents agents in this process on loopback, every
agent following the same component's configuration with blocking queries
and applying it to its own home directory. First, with no agent running,
count commits published per second by 1 and by --publishers-max
publishers, each to its own component, for at most 5s each. Then, for each
of --trials trials (after one warm-up), publish a commit of three small
files and take for every agent the time from the publish's acknowledgement
to its manifest listing the commit, which the agent writes once the files
are renamed into place and synced (followed with inotify); every agent's
files are then compared byte for byte with the commit.

The peer is ZooKeeper from Debian's zookeeper package: a standalone server
started from its jars on a free loopback port, with --agents watcher
sessions each watching one znode; a trial sets the znode to a payload as
large as the commit's files and takes the time from the set's
acknowledgement to every watcher having read the new data (a GetW after the
watch fires). Its sets per second are counted with 1 and --publishers-max
writers, each setting its own znode. If ZooKeeper cannot be started, the
figures say why in zookeeper_error.

The two do not do the same work: fedkeeper's agents write every commit's
files to disk atomically, with fsync, and report it; ZooKeeper's watchers
only read the new data into memory. Both servers sync their log before
acknowledging a write. A publish is also several store writes (one per new
file, then the commit), a ZooKeeper set one.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := bench.ConfigFanout(cmd.Context(), agents, trials, publishers, os.Stderr)
			if err != nil {
				return err
			}
			return printResult(res)
		},
	}
	cmd.Flags().IntVar(&agents, "agents", 100, "how many agents (and ZooKeeper watchers) follow the configuration")
	cmd.Flags().IntVar(&trials, "trials", 5, "how many commits are timed, after one warm-up")
	cmd.Flags().IntVar(&publishers, "publishers-max", 32, "concurrent publishers (and ZooKeeper writers) of the second throughput measure")
	return cmd
}

func dnsCmd() *cobra.Command {
	var o bench.DNSOptions
	cmd := &cobra.Command{
		Use:   "dns",
		Short: "Queries per second of fedkeeper's nameserver under dnsperf, with NSD serving the same records as the peer",
		Long: `Run one supernode in this process on loopback, admit members that each
have their own address and hold their sessions open, and register
--services services with --instances instances each, all passing,
through the service registry. Write the same records as a static zone
for NSD (Debian's nsd package), run it in the foreground on another
loopback port, and check that both servers give the same answers to
every distinct query of the query file: service A queries mostly, with
SRV queries, node queries and names that do not exist.

Then run dnsperf (Debian's dnsperf package) with EDNS0 for --duration
against fedkeeper and NSD in turns, --rounds times each; each server's
figures are the median of its runs (with two, their mean) and its lost
queries their sum. NSD runs --nsd-servers server processes, without
response rate limiting.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := bench.DNS(cmd.Context(), o, os.Stderr)
			if err != nil {
				return err
			}
			return printResult(res)
		},
	}
	cmd.Flags().IntVar(&o.Services, "services", 20, "how many services are registered")
	cmd.Flags().IntVar(&o.Instances, "instances", 5, "instances of each service, each on its own member")
	cmd.Flags().DurationVar(&o.Duration, "duration", 10*time.Second, "length of one dnsperf run, in whole seconds")
	cmd.Flags().IntVar(&o.Rounds, "rounds", 2, "dnsperf runs against each server, taken in turns")
	cmd.Flags().IntVar(&o.Clients, "clients", 4, "dnsperf clients (-c), each with its own socket")
	cmd.Flags().IntVar(&o.Threads, "threads", 1, "dnsperf thread pairs (-T)")
	cmd.Flags().IntVar(&o.NSDServers, "nsd-servers", runtime.NumCPU(), "NSD server processes (server-count); all CPUs by default, as fedkeeper may use")
	return cmd
}

func haFailoverCmd() *cobra.Command {
	var o bench.HAFailoverOptions
	cmd := &cobra.Command{
		Use:   "ha-failover",
		Short: "Time from killing an HA group's master to its successor's start, with keepalived as the peer",
		Long: `Run one supernode and two agents as processes of this binary on loopback,
both candidates of HA group "bench" (ranks 100 and 50, no preemption) with
--lease-ttl and --takeover-delay and a script that logs every call with
the time. Each of --trials trials waits until one agent is master with
its service started and the other a standby, kills the master's agent
with SIGKILL at a random point of its lease's renewal period, takes the
times of the killed master's stop (run by its watchdog) and of the
successor's start, and restarts the killed agent. A start while the
other node's service runs fails the bench.

The peer is keepalived from Debian's keepalived package: two daemons in
network namespaces joined by a veth pair, one VRRP instance with
priorities 100 and 50, advert_int 1, both starting as backups without
preemption, whose notify scripts log the same lines. Each trial kills the
master's daemon and its VRRP process with SIGKILL and takes the time of
the backup's notify_master. keepalived has no fencing: the figures count
the trials in which the killed master's virtual address was still on its
interface. If keepalived cannot run here, keepalived_error says why.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := bench.HAFailover(cmd.Context(), o, os.Stderr)
			if err != nil {
				return err
			}
			return printResult(res)
		},
	}
	cmd.Flags().IntVar(&o.Trials, "trials", 20, "how many times the master is killed, on each side")
	cmd.Flags().DurationVar(&o.LeaseTTL, "lease-ttl", ha.DefaultLeaseTTL, "the HA group's lease_ttl (whole seconds)")
	cmd.Flags().DurationVar(&o.TakeoverDelay, "takeover-delay", 0, "the HA group's takeover_delay")
	return cmd
}

// printResult writes a scenario's figures as one line of JSON on stdout.
func printResult(res bench.Result) error {
	b, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	_, err = fmt.Println(string(b))
	return err
}
