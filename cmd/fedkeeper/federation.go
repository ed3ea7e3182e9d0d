package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/fedkeeper/fedkeeper/agent"
	"github.com/fedkeeper/fedkeeper/api"
	"github.com/fedkeeper/fedkeeper/internal/atomicfile"
	"github.com/fedkeeper/fedkeeper/membership"
	"github.com/fedkeeper/fedkeeper/quorum"
	"github.com/fedkeeper/fedkeeper/supernode"
)

func initCmd() *cobra.Command {
	var dir string
	var cfg supernode.Config
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a new federation whose first supernode keeps its data in --data-dir",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				return errors.New("--data-dir is required")
			}
			res, err := supernode.Init(dir, cfg)
			if err != nil {
				return err
			}
			fmt.Printf("federation %q created; first supernode %q\n", orDefault(cfg.Federation, "fedkeeper"), cfg.Name)
			fmt.Printf("CA hash:      %s\n", res.CAHash)
			fmt.Printf("credentials:  %s\n", res.CredentialsFile)
			fmt.Printf("start it:     fedkeeper supernode --data-dir %s\n", dir)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&cfg.Name, "name", "", "name of the first supernode (a DNS label)")
	fl.StringVar(&dir, "data-dir", "", "directory for the supernode's data")
	fl.StringVar(&cfg.Listen, "listen", "", "HOST:PORT of the federation API")
	fl.StringVar(&cfg.Federation, "federation", "fedkeeper", "name of the federation")
	fl.StringVar(&cfg.Advertise, "advertise", "", "HOST:PORT others reach the API at, if not --listen")
	fl.StringVar(&cfg.PeerListen, "peer-listen", "", "HOST:PORT of store peer traffic (default: API port + 1)")
	fl.StringVar(&cfg.StoreListen, "store-listen", "", "HOST:PORT of the store client port (default: 127.0.0.1, API port + 2)")
	fl.DurationVar(&cfg.SessionTTL, "session-ttl", 0, "how long a node stays alive without renewing its session (default 15s)")
	quorumFlags(fl, &cfg.Quorum, &cfg.Projects)
	dnsFlags(fl, &cfg.DNS)
	fl.StringVar(&cfg.Site, "site", "", "site (organisation) running the supernode")
	cmd.MarkFlagRequired("name")
	cmd.MarkFlagRequired("listen")
	return cmd
}

// quorumFlags sets the autopilot's timings and the projects a supernode
// serves when it is created. Every supernode keeps its own copy of the
// timings: give all of them the same values.
func quorumFlags(fl *pflag.FlagSet, q *quorum.Config, projects *[]string) {
	fl.StringSliceVar(projects, "projects", nil, "projects whose members this supernode probes (default: every project without a supernode of its own)")
	fl.DurationVar(&q.DeadAfter, "dead-after", 0, "how long a voter may be unreachable before a standby replaces it (default 30s)")
	fl.DurationVar(&q.ProbeInterval, "probe-interval", 0, "how often supernodes check each other (default 1s)")
	fl.IntVar(&q.TargetVoters, "target-voters", 0, "how many voting supernodes the autopilot keeps (default 3)")
}

// dnsFlags configure the supernode's nameserver when it is created.
func dnsFlags(fl *pflag.FlagSet, d *supernode.DNSConfig) {
	fl.StringVar(&d.Listen, "dns-listen", "", "HOST:PORT of the nameserver, UDP and TCP (default: API host, API port + 3)")
	fl.StringVar(&d.Domain, "dns-domain", "", "zone the nameserver answers for (default "+supernode.DefaultDNSDomain+")")
	fl.DurationVar(&d.TTL, "dns-ttl", 0, "TTL of DNS answers, whole seconds (default 5s)")
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func supernodeCmd(admin *adminFlags) *cobra.Command {
	var dir string
	var jc supernode.JoinConfig
	cmd := &cobra.Command{
		Use:   "supernode",
		Short: "Run a supernode: the replicated store and the federation API",
		Long: `Run a supernode. --data-dir made by init starts the federation's first
supernode; a new supernode joins an existing federation once with --join,
--ca-hash, --token (from "supernode add"), --name and --listen, and later
starts need only --data-dir.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				return errors.New("--data-dir is required")
			}
			ctx := cmd.Context()
			if len(jc.Join) > 0 {
				if err := supernode.Join(ctx, dir, jc); err != nil {
					return err
				}
			} else if changed := joinOnlyFlags(cmd); len(changed) > 0 {
				return fmt.Errorf("%s only apply when joining with --join; a supernode's settings are in %s/supernode.yaml", strings.Join(changed, ", "), dir)
			}
			sn, err := supernode.Start(ctx, dir)
			if err != nil {
				return err
			}
			defer sn.Close()
			select {
			case <-ctx.Done():
				slog.Info("stopping supernode")
				return nil
			case err := <-sn.Err():
				return err
			}
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&dir, "data-dir", "", "the supernode's data directory")
	fl.StringSliceVar(&jc.Join, "join", nil, "API URL(s) of existing supernodes, to join a federation")
	fl.StringVar(&jc.CAHash, "ca-hash", "", "federation CA hash (sha256:HEX), with --join")
	fl.StringVar(&jc.Token, "token", "", "supernode token from 'supernode add', with --join")
	fl.StringVar(&jc.Name, "name", "", "name of this supernode, with --join")
	fl.StringVar(&jc.Listen, "listen", "", "HOST:PORT of the federation API, with --join")
	fl.StringVar(&jc.Advertise, "advertise", "", "HOST:PORT others reach the API at, if not --listen")
	fl.StringVar(&jc.PeerListen, "peer-listen", "", "HOST:PORT of store peer traffic (default: API port + 1)")
	fl.StringVar(&jc.StoreListen, "store-listen", "", "HOST:PORT of the store client port (default: 127.0.0.1, API port + 2)")
	fl.StringVar(&jc.Site, "site", "", "site (organisation) running the supernode, with --join")
	fl.DurationVar(&jc.SessionTTL, "session-ttl", 0, "how long a node stays alive without renewing its session (default 15s), with --join")
	quorumFlags(fl, &jc.Quorum, &jc.Projects)
	dnsFlags(fl, &jc.DNS)

	var peerURL string
	var standby bool
	add := &cobra.Command{
		Use:   "add NAME",
		Short: "Admit a new supernode; prints the token it joins with",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := admin.client()
			if err != nil {
				return err
			}
			var resp api.AddSupernodeResponse
			if err := c.Do(cmd.Context(), http.MethodPost, "/v1/supernodes", api.AddSupernodeRequest{Name: args[0], PeerURL: peerURL, Standby: standby}, &resp); err != nil {
				return err
			}
			fmt.Println(resp.Token)
			fmt.Fprintf(os.Stderr, "start it with: fedkeeper supernode --data-dir DIR --join %s --ca-hash HASH --token TOKEN --name %s --listen HOST:PORT\n", strings.Join(c.Servers(), ","), args[0])
			return nil
		},
	}
	admin.register(add)
	add.Flags().StringVar(&peerURL, "peer-url", "", "store peer URL of the new supernode (https://HOST:PORT)")
	add.Flags().BoolVar(&standby, "standby", false, "keep it a standby: replicating, not voting, promoted when a voter dies")
	add.MarkFlagRequired("peer-url")
	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Take a supernode out of the store and the federation (refused if it would cost the quorum)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := admin.client()
			if err != nil {
				return err
			}
			if err := c.Do(cmd.Context(), http.MethodDelete, "/v1/supernodes/"+args[0], nil, nil); err != nil {
				return err
			}
			fmt.Printf("%s removed\n", args[0])
			return nil
		},
	}
	admin.register(remove)
	cmd.AddCommand(add, remove)
	return cmd
}

// joinOnlyFlags lists the flags given to "supernode" that only joining
// uses: without --join they would be silently ignored.
func joinOnlyFlags(cmd *cobra.Command) []string {
	var changed []string
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if f.Name != "data-dir" && f.Name != "log-level" {
			changed = append(changed, "--"+f.Name)
		}
	})
	return changed
}

func supernodesCmd(admin *adminFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "supernodes", Short: "Show the supernodes"}
	admin.register(cmd)
	list := &cobra.Command{Use: "list", Short: "List supernodes: voter or standby, health, leader, lag", Args: cobra.NoArgs}
	out := outputFlag(list)
	list.RunE = func(cmd *cobra.Command, args []string) error {
		return show(cmd, admin, *out, "/v1/supernodes", func(sns []quorum.Supernode) error {
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tKIND\tHEALTHY\tLEADER\tLAG\tLAST CONTACT\tPEER URL")
			for _, sn := range sns {
				last := "-"
				if !sn.LastContact.IsZero() {
					last = time.Since(sn.LastContact).Round(100*time.Millisecond).String() + " ago"
				}
				fmt.Fprintf(tw, "%s\t%s\t%v\t%v\t%d\t%s\t%s\n", dash(sn.Name), sn.Kind(), sn.Healthy, sn.Leader, sn.RevisionLag, last, sn.PeerURL)
			}
			return tw.Flush()
		})
	}
	cmd.AddCommand(list)
	return cmd
}

func snapshotCmd(admin *adminFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "snapshot", Short: "Save the federation's store to a file, or rebuild a federation from one"}
	save := &cobra.Command{
		Use:   "save FILE",
		Short: "Save a consistent snapshot of the whole store (it holds the CA keys: keep it safe)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := admin.client()
			if err != nil {
				return err
			}
			b, err := c.Raw(cmd.Context(), http.MethodGet, "/v1/snapshot", nil)
			if err != nil {
				return err
			}
			if len(b) == 0 {
				return errors.New("the supernode sent an empty snapshot; nothing saved")
			}
			if err := atomicfile.Write(args[0], b, 0o600); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "saved %d bytes to %s\n", len(b), args[0])
			return nil
		},
	}
	admin.register(save)
	var dir string
	var cfg supernode.Config
	restore := &cobra.Command{
		Use:   "restore FILE",
		Short: "Rebuild a one-supernode federation in an empty --data-dir from a snapshot",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				return errors.New("--data-dir is required")
			}
			if err := supernode.Restore(cmd.Context(), args[0], dir, cfg); err != nil {
				return err
			}
			fmt.Printf("restored; start it with: fedkeeper supernode --data-dir %s\n", dir)
			return nil
		},
	}
	fl := restore.Flags()
	fl.StringVar(&dir, "data-dir", "", "empty directory for the restored supernode")
	fl.StringVar(&cfg.Name, "name", "", "name of the restored supernode")
	fl.StringVar(&cfg.Listen, "listen", "", "HOST:PORT of its API")
	fl.StringVar(&cfg.Advertise, "advertise", "", "HOST:PORT others reach the API at, if not --listen")
	fl.StringVar(&cfg.PeerListen, "peer-listen", "", "HOST:PORT of store peer traffic (default: API port + 1)")
	fl.StringVar(&cfg.StoreListen, "store-listen", "", "HOST:PORT of the store client port (default: 127.0.0.1, API port + 2)")
	restore.MarkFlagRequired("name")
	restore.MarkFlagRequired("listen")
	cmd.AddCommand(save, restore)
	return cmd
}

func devCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a one-supernode federation with one agent on loopback, for trying fedkeeper out",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if dir == "" {
				tmp, err := os.MkdirTemp("", "fedkeeper-dev-")
				if err != nil {
					return fmt.Errorf("make temporary data directory: %w", err)
				}
				defer os.RemoveAll(tmp)
				dir = tmp
			}
			snDir := filepath.Join(dir, "supernode")
			if _, err := supernode.LoadConfig(snDir); err != nil {
				if _, err := supernode.InitLoopback(snDir, supernode.Config{Name: "dev-supernode", Federation: "dev"}); err != nil {
					return err
				}
			}
			sn, err := supernode.Start(ctx, snDir)
			if err != nil {
				return err
			}
			defer sn.Close()
			token, _, err := sn.Members.CreateToken(ctx, "", 1, time.Hour, "dev")
			if err != nil {
				return err
			}
			agentDir := filepath.Join(dir, "agent")
			acfg, ok, err := agent.LoadConfig(agentDir)
			if err != nil {
				return err
			}
			if !ok {
				acfg = agent.Config{
					Name: "dev-agent", Join: []string{sn.URL()}, CAHash: sn.CA.Hash(), Listen: "127.0.0.1:0",
					Profile: membership.Profile{Project: "dev", Site: "localhost"}, LeaveOnExit: true,
				}
			}
			ag, err := agent.Start(ctx, agentDir, acfg, token)
			if err != nil {
				return err
			}
			creds := filepath.Join(snDir, supernode.CredentialsFile)
			fmt.Printf("fedkeeper dev federation %q is running (Ctrl-C stops it)\n", sn.CA.Federation())
			fmt.Printf("API:          %s\n", sn.URL())
			fmt.Printf("credentials:  %s\n", creds)
			fmt.Printf("CA hash:      %s\n", sn.CA.Hash())
			fmt.Printf("DNS:          %s (zone %s)\n", sn.DNS.Addr(), sn.Config.DNS.Domain)
			fmt.Printf("data:         %s\n", dir)
			fmt.Printf("try:          FEDKEEPER_CREDENTIALS=%s fedkeeper nodes list\n", creds)
			dnsHost, dnsPort, _ := net.SplitHostPort(sn.DNS.Addr())
			fmt.Printf("              dig @%s -p %s %s.node.%s\n", dnsHost, dnsPort, acfg.Name, sn.Config.DNS.Domain)
			select {
			case <-ctx.Done():
			case err := <-sn.Err():
				ag.Close()
				return fmt.Errorf("store failed: %w", err)
			}
			fmt.Println("stopping")
			lctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := ag.Leave(lctx); err != nil {
				slog.Warn("agent could not leave", "err", err)
			}
			ag.Close()
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "data-dir", "", "keep the dev federation's data here (default: a temporary directory, removed at exit)")
	return cmd
}
