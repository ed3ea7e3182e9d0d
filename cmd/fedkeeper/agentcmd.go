package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedkeeper/fedkeeper/agent"
)

func agentCmd() *cobra.Command {
	var (
		dir, token string
		flags      agent.Config
		lat, lon   float64
		endpoints  []string
	)
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the agent of a node: join the federation and stay a live member",
		Long: `Run the agent of a node. The first run joins the federation (with --token at
once, without one after an administrator approves) and saves the node's
identity and these flags in --data-dir; later runs need only --data-dir.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				return errors.New("--data-dir is required")
			}
			cfg, _, err := agent.LoadConfig(dir)
			if err != nil {
				return err
			}
			// Flags given now override what was saved.
			fl := cmd.Flags()
			set := func(name string, apply func()) {
				if fl.Changed(name) {
					apply()
				}
			}
			if cfg.Name == "" {
				cfg.LeaveOnExit = flags.LeaveOnExit
			}
			set("name", func() { cfg.Name = flags.Name })
			set("join", func() { cfg.Join = flags.Join })
			set("ca-hash", func() { cfg.CAHash = flags.CAHash })
			set("project", func() { cfg.Profile.Project = flags.Profile.Project })
			set("site", func() { cfg.Profile.Site = flags.Profile.Site })
			set("listen", func() { cfg.Listen = flags.Listen })
			set("advertise", func() { cfg.Profile.Address = flags.Profile.Address })
			set("lat", func() { cfg.Profile.Lat = &lat })
			set("lon", func() { cfg.Profile.Lon = &lon })
			set("leave-on-exit", func() { cfg.LeaveOnExit = flags.LeaveOnExit })
			if fl.Changed("endpoint") {
				cfg.Profile.Endpoints = map[string]string{}
				for _, e := range endpoints {
					kind, u, ok := strings.Cut(e, "=")
					if !ok {
						return fmt.Errorf("--endpoint %q must be KIND=URL", e)
					}
					cfg.Profile.Endpoints[kind] = u
				}
			}
			if cfg.Profile.Address == "" {
				cfg.Profile.Address = cfg.Listen
			}
			ctx := cmd.Context()
			ag, err := agent.Start(ctx, dir, cfg, token)
			if err != nil {
				return err
			}
			defer ag.Close()
			select {
			case <-ctx.Done():
			case <-ag.Fatal():
				return ag.Err()
			}
			if !cfg.LeaveOnExit {
				slog.Info("stopping; staying a member (leave_on_exit is off)")
				return nil
			}
			lctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return ag.Leave(lctx)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&dir, "data-dir", "", "directory for the node's identity and configuration")
	fl.StringVar(&flags.Name, "name", "", "node name (a DNS label)")
	fl.StringSliceVar(&flags.Join, "join", nil, "supernode API URL(s) to join through (https://HOST:PORT)")
	fl.StringVar(&flags.CAHash, "ca-hash", "", "federation CA hash (sha256:HEX) printed by init")
	fl.StringVar(&flags.Profile.Project, "project", "", "project the node belongs to")
	fl.StringVar(&token, "token", "", "join token; without one the join waits for approval")
	fl.StringVar(&flags.Profile.Site, "site", "", "site (organisation) running the node")
	fl.StringVar(&flags.Listen, "listen", "", "HOST:PORT of the agent's own API")
	fl.StringVar(&flags.Profile.Address, "advertise", "", "HOST:PORT others reach the agent at (default: --listen)")
	fl.Float64Var(&lat, "lat", 0, "latitude of the node, for the node map")
	fl.Float64Var(&lon, "lon", 0, "longitude of the node, for the node map")
	fl.StringSliceVar(&endpoints, "endpoint", nil, "service endpoint KIND=URL for the node map (e.g. IndexService=https://host/esg-search)")
	fl.BoolVar(&flags.LeaveOnExit, "leave-on-exit", true, "leave the federation when stopped by SIGTERM or Ctrl-C")
	return cmd
}

func leaveCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "leave",
		Short: "Take the node whose agent keeps its data in --data-dir out of the federation",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				return errors.New("--data-dir is required")
			}
			if err := agent.Leave(cmd.Context(), dir); err != nil {
				return err
			}
			fmt.Println("left the federation")
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "data-dir", "", "the agent's data directory")
	return cmd
}
