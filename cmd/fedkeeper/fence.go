package main

import (
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedkeeper/fedkeeper/ha"
)

// fenceCmd is the watchdog process that HA groups and locks start beside
// what they run (see ha.RunWatchdog); people do not run it.
func fenceCmd() *cobra.Command {
	var spec ha.WatchdogSpec
	cmd := &cobra.Command{
		Use:    "fence [flags] [-- STOP-COMMAND...]",
		Short:  "Watchdog that stops a lease holder's work when its lease may end (started by fedkeeper itself)",
		Hidden: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			spec.Stop = args
			return ha.RunWatchdog(cmd.Context(), os.Stdin, spec, slog.Default().With("component", "watchdog", "pid", os.Getpid()))
		},
	}
	cmd.Flags().DurationVar(&spec.StopTimeout, "stop-timeout", 10*time.Second, "how long stopping may take")
	cmd.Flags().IntVar(&spec.KillGroup, "kill-group", 0, "process group to kill when fencing")
	return cmd
}
