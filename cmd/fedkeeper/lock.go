package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedkeeper/fedkeeper/client"
	"github.com/fedkeeper/fedkeeper/coord"
	"github.com/fedkeeper/fedkeeper/ha"
)

// exitNotAcquired is the exit status when --timeout passes first:
// EX_TEMPFAIL, as lockf(1) uses for the same.
const exitNotAcquired = 75

// holdFlags are the flags of the commands that run a command under a hold.
type holdFlags struct {
	ttl, timeout, grace time.Duration
}

func (f *holdFlags) register(cmd *cobra.Command, what string) {
	fl := cmd.Flags()
	fl.DurationVar(&f.ttl, "ttl", 10*time.Second, "lease TTL (whole seconds): how long a holder that stops renewing (frozen, killed, cut off) keeps the "+what)
	fl.DurationVar(&f.timeout, "timeout", 0, fmt.Sprintf("give up if the %s is not had within this long (exit status %d); 0 waits for ever", what, exitNotAcquired))
	fl.DurationVar(&f.grace, "grace", 2*time.Second, "how long COMMAND has from SIGTERM to SIGKILL when it must stop")
}

// nameThenCommand accepts the arguments NAME -- COMMAND [ARGS...].
func nameThenCommand(cmd *cobra.Command, args []string) error {
	if cmd.ArgsLenAtDash() != 1 || len(args) < 2 {
		return fmt.Errorf("want NAME -- COMMAND [ARGS...]")
	}
	return nil
}

// runHeld gets a hold with acquire, runs COMMAND under it, gives it up,
// and exits with COMMAND's status. what names the hold in messages.
func runHeld(cmd *cobra.Command, admin *adminFlags, f holdFlags, what string, argv []string,
	acquire func(ctx context.Context, c *client.Client, log *slog.Logger) (*ha.Hold, error)) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the fedkeeper binary for the watchdog: %w", err)
	}
	run := ha.Command{Argv: argv, Grace: f.grace, Watchdog: []string{exe, "fence"}}
	if err := run.Check(f.ttl); err != nil {
		return err
	}
	c, err := admin.client()
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	actx, cancel := ctx, context.CancelFunc(func() {})
	if f.timeout > 0 {
		actx, cancel = context.WithTimeout(ctx, f.timeout)
	}
	h, err := acquire(actx, c, slog.Default())
	timedOut := actx.Err() == context.DeadlineExceeded && ctx.Err() == nil
	cancel()
	switch {
	case err != nil && timedOut:
		fmt.Fprintf(os.Stderr, "fedkeeper: %s not acquired within %s\n", what, f.timeout)
		os.Exit(exitNotAcquired)
	case err != nil && ctx.Err() != nil:
		return fmt.Errorf("interrupted while waiting for %s", what)
	case err != nil:
		return err
	}
	status, runErr := h.Run(ctx, run)
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer rcancel()
	if err := h.Release(rctx); err != nil {
		slog.Warn("not released", "err", err)
	}
	if runErr != nil {
		return runErr
	}
	if status != 0 {
		os.Exit(status)
	}
	return nil
}

func lockCmd(admin *adminFlags) *cobra.Command {
	var (
		f     holdFlags
		limit int
	)
	cmd := &cobra.Command{
		Use:   "lock NAME [flags] -- COMMAND [ARGS...]",
		Short: "Run a command while holding a federation-wide lock, or a place in a semaphore",
		Long: `Run COMMAND while holding lock NAME: at most --limit holders at once in the
whole federation (1: a lock; more: a semaphore), served in the order they
asked. The lock rests on a lease this process renews; COMMAND runs in a
process group of its own, with FEDKEEPER_LOCK=NAME and
FEDKEEPER_FENCING_TOKEN set. The fencing token only grows: a resource that
remembers the highest token it has seen can refuse a stale holder.

A watchdog process stops COMMAND (SIGTERM to its process group, SIGKILL
after --grace) before the lease may end, even if this process is frozen or
killed; the lock is released once COMMAND and its group are gone.

Exit status: COMMAND's own (128+N if killed by signal N); 75 if --timeout
passed before the lock was had; 1 if the lock was lost and COMMAND stopped,
or on any other failure. COMMAND should not read from a terminal: its
process group is not the terminal's. (A lock named "status" is reached
through the API only: 'lock status' shows a lock.)`,
		Args: nameThenCommand,
	}
	admin.register(cmd)
	f.register(cmd, "lock")
	cmd.Flags().IntVar(&limit, "limit", 1, fmt.Sprintf("how many may hold the lock at once, 1 to %d", coord.MaxLimit))
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		name := args[0]
		if err := coord.ValidateName(ha.KindLock, name); err != nil {
			return err
		}
		if limit < 1 || limit > coord.MaxLimit {
			return fmt.Errorf("--limit %d must be from 1 to %d", limit, coord.MaxLimit)
		}
		return runHeld(cmd, admin, f, "lock "+name, args[1:], func(ctx context.Context, c *client.Client, log *slog.Logger) (*ha.Hold, error) {
			return ha.AcquireLock(ctx, c, name, limit, f.ttl, log)
		})
	}
	cmd.AddCommand(lockStatusCmd(admin))
	return cmd
}

func lockStatusCmd(admin *adminFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status NAME",
		Short: "Show who holds a lock, with their fencing tokens, and who waits",
		Args:  cobra.ExactArgs(1),
	}
	out := outputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		return show(cmd, admin, *out, "/v1/locks/"+url.PathEscape(args[0]), func(l coord.Lock) error {
			if len(l.Holders)+len(l.Waiting) == 0 {
				fmt.Printf("lock %s: free\n", l.Name)
				return nil
			}
			fmt.Printf("lock %s: limit %d, %d holding, %d waiting\n", l.Name, l.Limit, len(l.Holders), len(l.Waiting))
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "HOLDER\tSTATE\tTOKEN\tLIMIT\tLEASE\tSINCE")
			for _, g := range []struct {
				state string
				hs    []coord.Holder
			}{{"holding", l.Holders}, {"waiting", l.Waiting}} {
				for _, h := range g.hs {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", h.Holder, g.state, h.Token, h.Limit, h.Lease, h.Since.Local().Format(time.DateTime))
				}
			}
			return tw.Flush()
		})
	}
	return cmd
}

func roleCmd(admin *adminFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "role",
		Short: "Coordinator roles: run a command on the one node that holds a role, and see who does",
		Long: `A coordinator role is a named election any node may stand for; its master
runs what only one node may run at a time. Each node stands once per role,
under the name of its certificate.`,
	}
	admin.register(cmd)
	cmd.AddCommand(roleRunCmd(admin), roleStatusCmd(admin), roleListCmd(admin))
	return cmd
}

func roleRunCmd(admin *adminFlags) *cobra.Command {
	var (
		f    holdFlags
		rank int
	)
	cmd := &cobra.Command{
		Use:   "run NAME [flags] -- COMMAND [ARGS...]",
		Short: "Stand for a role and, once its master, run a command; give the role up when it exits",
		Long: `Stand for coordinator role NAME and wait to be its master: when the role has
no master, the highest-ranked candidate (ties by node name) takes it, or
any candidate once it has stayed without master for a TTL. The master runs
COMMAND in a process group of its own, with FEDKEEPER_ROLE=NAME and
FEDKEEPER_FENCING_TOKEN set, and gives the role up when COMMAND exits.

As with 'fedkeeper lock', a watchdog process stops COMMAND before the
lease may end, even if this process is frozen or killed, and the exit
status is COMMAND's own, 75 after --timeout, or 1 if the role was lost.`,
		Args: nameThenCommand,
	}
	f.register(cmd, "role")
	cmd.Flags().IntVar(&rank, "rank", 0, "rank among the role's candidates: the highest takes the role first")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		name := args[0]
		if err := coord.ValidateName(coord.KindRole, name); err != nil {
			return err
		}
		return runHeld(cmd, admin, f, "role "+name, args[1:], func(ctx context.Context, c *client.Client, log *slog.Logger) (*ha.Hold, error) {
			return ha.StandForRole(ctx, c, name, rank, f.ttl, log)
		})
	}
	return cmd
}

// roleWatchWait is how long each blocking query of role status --watch
// waits.
const roleWatchWait = time.Minute

func roleStatusCmd(admin *adminFlags) *cobra.Command {
	var watch bool
	cmd := &cobra.Command{
		Use:   "status NAME",
		Short: "Show a role's master, its fencing token and the candidates; with --watch, every change",
		Args:  cobra.ExactArgs(1),
	}
	out := outputFlag(cmd)
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "keep printing a line (or, with -o json, the role) on every change")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		path := "/v1/elections/" + coord.KindRole + "/" + url.PathEscape(args[0])
		if !watch {
			return show(cmd, admin, *out, path, printRole)
		}
		if err := checkOutput(*out); err != nil {
			return err
		}
		c, err := admin.client()
		if err != nil {
			return err
		}
		last := ""
		err = ha.Follow(cmd.Context(), c, path, roleWatchWait, slog.Default(), func(e coord.Election) (bool, error) {
			line := roleSummary(e)
			if line == last {
				return false, nil
			}
			last = line
			if *out == "json" {
				return false, printJSON(e)
			}
			fmt.Printf("%s  %s\n", time.Now().Format(time.DateTime), line)
			return false, nil
		})
		if cmd.Context().Err() != nil {
			return nil
		}
		return err
	}
	return cmd
}

// roleSummary sums a role up on one line: its master and candidates.
func roleSummary(e coord.Election) string {
	master := "no master"
	if m := e.Master; m != nil {
		master = fmt.Sprintf("master %s (token %d)", m.Node, m.Token)
	}
	var cs []string
	for _, c := range e.Candidates {
		cs = append(cs, fmt.Sprintf("%s (%s, rank %d)", c.Node, c.State, c.Rank))
	}
	s := fmt.Sprintf("role %s: %s; candidates: %s", e.Name, master, dash(strings.Join(cs, ", ")))
	if r := e.Request; r != nil {
		s += fmt.Sprintf("; %s of %s asked by %s", r.Kind, r.Node, r.By)
	}
	return s
}

func printRole(e coord.Election) error {
	if m := e.Master; m != nil {
		fmt.Printf("role %s: master %s, fencing token %d, since %s\n", e.Name, m.Node, m.Token, m.Since.Local().Format(time.DateTime))
	} else {
		fmt.Printf("role %s: no master\n", e.Name)
	}
	if r := e.Request; r != nil {
		fmt.Printf("request: %s of %s, asked by %s at %s\n", r.Kind, r.Node, r.By, r.At.Local().Format(time.DateTime))
	}
	if len(e.Candidates) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tRANK\tSTATE\tLEASE\tSINCE")
	for _, c := range e.Candidates {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", c.Node, c.Rank, c.State, c.Lease, c.Since.Local().Format(time.DateTime))
	}
	return tw.Flush()
}

func roleListCmd(admin *adminFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the roles that have candidates",
		Args:  cobra.NoArgs,
	}
	out := outputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		return show(cmd, admin, *out, "/v1/elections/"+coord.KindRole, func(names []string) error {
			for _, n := range names {
				fmt.Println(n)
			}
			return nil
		})
	}
	return cmd
}
