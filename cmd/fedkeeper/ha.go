package main

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedkeeper/fedkeeper/api"
	"github.com/fedkeeper/fedkeeper/coord"
)

func haCmd(admin *adminFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ha",
		Short: "Show HA groups, move their mastership by hand",
		Long: `HA groups are declared in the agents' configuration (ha_groups): the
highest-ranked live candidate of a group is its master and runs the
group's service. These commands show who is master with which fencing
token, and move the mastership: takeover makes a given node master,
giveup makes the master step down and stay passive.`,
	}
	admin.register(cmd)
	cmd.AddCommand(haStatusCmd(admin), haTakeoverCmd(admin), haGiveupCmd(admin))
	return cmd
}

func electionPath(group string) string {
	return "/v1/elections/" + coord.KindHA + "/" + url.PathEscape(group)
}

func haStatusCmd(admin *adminFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status [GROUP]",
		Short: "Show each HA group's master, fencing token and candidates",
		Args:  cobra.MaximumNArgs(1),
	}
	out := outputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 1 {
			return show(cmd, admin, *out, electionPath(args[0]), func(e coord.Election) error {
				return haTable([]coord.Election{e})
			})
		}
		if err := checkOutput(*out); err != nil {
			return err
		}
		c, err := admin.client()
		if err != nil {
			return err
		}
		var names []string
		if err := c.Do(cmd.Context(), http.MethodGet, "/v1/elections/"+coord.KindHA, nil, &names); err != nil {
			return err
		}
		elections := []coord.Election{}
		for _, n := range names {
			var e coord.Election
			if err := c.Do(cmd.Context(), http.MethodGet, electionPath(n), nil, &e); err != nil {
				return fmt.Errorf("HA group %s: %w", n, err)
			}
			elections = append(elections, e)
		}
		if *out == "json" {
			return printJSON(elections)
		}
		return haTable(elections)
	}
	return cmd
}

func haTable(elections []coord.Election) error {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tMASTER\tTOKEN\tSINCE\tCANDIDATES")
	for _, e := range elections {
		master, token, since := "-", "-", "-"
		if m := e.Master; m != nil {
			master, token, since = m.Node, fmt.Sprint(m.Token), m.Since.Local().Format(time.DateTime)
		}
		var cands []string
		for _, c := range e.Candidates {
			cands = append(cands, fmt.Sprintf("%s:%d:%s", c.Node, c.Rank, c.State))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Name, master, token, since, dash(strings.Join(cands, " ")))
	}
	return tw.Flush()
}

func haTakeoverCmd(admin *adminFlags) *cobra.Command {
	var node string
	cmd := &cobra.Command{
		Use:   "takeover GROUP",
		Short: "Make a node the master of an HA group: the master stops its service, then the node starts it",
		Long: `Make a node the master of an HA group. The current master stops its
service and resigns; the node named takes over whatever its rank, once the
group's takeover delay has passed. An administrator names any candidate
with --node; a node's own credentials ask for the node itself.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return haAsk(cmd, admin, args[0], coord.RequestTakeover, api.AskRequest{Node: node})
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "the node to take over (default: the caller's own node)")
	return cmd
}

func haGiveupCmd(admin *adminFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "giveup GROUP",
		Short: "Make an HA group's master stop its service and step down; the next rank takes over",
		Long: `Make an HA group's master stop its service and resign. It stays passive,
not standing for the mastership, until another node has become master or
a takeover names it; the highest-ranked standby takes over.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return haAsk(cmd, admin, args[0], coord.RequestGiveup, api.AskRequest{})
		},
	}
}

// haAsk records a takeover or give-up; the group's nodes act on it.
func haAsk(cmd *cobra.Command, admin *adminFlags, group, kind string, in api.AskRequest) error {
	c, err := admin.client()
	if err != nil {
		return err
	}
	var req coord.Request
	if err := c.Do(cmd.Context(), http.MethodPost, electionPath(group)+"/"+kind, in, &req); err != nil {
		return err
	}
	if kind == coord.RequestGiveup {
		fmt.Printf("asked the master of HA group %s to give up\n", group)
	} else {
		fmt.Printf("asked %s to take over HA group %s\n", req.Node, group)
	}
	return nil
}
