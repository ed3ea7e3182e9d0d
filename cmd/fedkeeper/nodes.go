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
	"github.com/fedkeeper/fedkeeper/membership"
)

func tokenCmd(admin *adminFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Manage join tokens"}
	admin.register(cmd)
	var req api.TokenRequest
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a join token and print it (it is shown only this once)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := admin.client()
			if err != nil {
				return err
			}
			req.TTL = ttl.String()
			var resp api.TokenResponse
			if err := c.Do(cmd.Context(), http.MethodPost, "/v1/tokens", req, &resp); err != nil {
				return err
			}
			fmt.Println(resp.Token)
			fmt.Fprintf(os.Stderr, "good for %d join(s) until %s\n", resp.Uses, resp.ExpiresAt.Format(time.RFC3339))
			return nil
		},
	}
	create.Flags().IntVar(&req.Uses, "uses", 1, "how many nodes may join with it")
	create.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long it is valid")
	create.Flags().StringVar(&req.Project, "project", "", "project the token admits to (default: any)")
	cmd.AddCommand(create)
	return cmd
}

func nodesCmd(admin *adminFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "nodes", Short: "List, inspect, approve, deny and remove nodes"}
	admin.register(cmd)

	list := &cobra.Command{
		Use:   "list",
		Short: "List every node and waiting join request",
		Args:  cobra.NoArgs,
	}
	listOut := outputFlag(list)
	list.RunE = func(cmd *cobra.Command, args []string) error {
		return show(cmd, admin, *listOut, "/v1/nodes", func(nodes []membership.Node) error {
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tROLE\tSTATUS\tHEALTH\tPROJECTS\tSITE\tADDRESS\tCERT EXPIRES\tJOINED")
			for _, n := range nodes {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, n.Role, n.Status, dash(n.Health), strings.Join(n.Projects, ","),
					dash(n.Site), dash(n.Address), day(n.CertNotAfter), n.JoinedAt.Format(time.RFC3339))
			}
			return tw.Flush()
		})
	}

	showNode := &cobra.Command{
		Use:   "show NAME",
		Short: "Show one node",
		Args:  cobra.ExactArgs(1),
	}
	showOut := outputFlag(showNode)
	showNode.RunE = func(cmd *cobra.Command, args []string) error {
		return show(cmd, admin, *showOut, "/v1/nodes/"+url.PathEscape(args[0]), func(n membership.Node) error {
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			for _, row := range [][2]string{
				{"name", n.Name}, {"role", string(n.Role)}, {"status", string(n.Status)},
				{"health", dash(n.Health)}, {"health reason", dash(n.HealthReason)},
				{"projects", strings.Join(n.Projects, ",")}, {"site", dash(n.Site)}, {"address", dash(n.Address)},
				{"cert serial", dash(n.CertSerial)}, {"cert expires", day(n.CertNotAfter)}, {"joined", n.JoinedAt.Format(time.RFC3339)},
			} {
				fmt.Fprintf(tw, "%s:\t%s\n", row[0], row[1])
			}
			for kind, u := range n.Endpoints {
				fmt.Fprintf(tw, "endpoint %s:\t%s\n", kind, u)
			}
			return tw.Flush()
		})
	}

	action := func(use, short, verb string, body func() any) *cobra.Command {
		return &cobra.Command{
			Use:   use + " NAME",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := admin.client()
				if err != nil {
					return err
				}
				method, path := http.MethodPost, "/v1/nodes/"+url.PathEscape(args[0])+"/"+use
				if use == "remove" {
					method, path = http.MethodDelete, "/v1/nodes/"+url.PathEscape(args[0])
				}
				if err := c.Do(cmd.Context(), method, path, body(), nil); err != nil {
					return err
				}
				fmt.Printf("%s %s\n", args[0], verb)
				return nil
			},
		}
	}
	var reason string
	deny := action("deny", "Deny a waiting join request", "denied", func() any { return map[string]string{"reason": reason} })
	deny.Flags().StringVar(&reason, "reason", "", "why, shown to the node")
	cmd.AddCommand(list, showNode,
		action("approve", "Approve a waiting join request", "approved", func() any { return struct{}{} }),
		deny,
		action("remove", "Remove a member (or drop its join request)", "removed", func() any { return nil }),
	)
	return cmd
}

func nodemapCmd(admin *adminFlags) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "nodemap",
		Short: "Print the federation's node map (JSON, or ESGF registration.xml)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			path := map[string]string{"json": "/v1/nodemap", "registration-xml": "/v1/nodemap/registration.xml"}[format]
			if path == "" {
				return fmt.Errorf("--format %q: want json or registration-xml", format)
			}
			c, err := admin.client()
			if err != nil {
				return err
			}
			b, err := c.Raw(cmd.Context(), http.MethodGet, path, nil)
			if err != nil {
				return err
			}
			_, err = os.Stdout.Write(b)
			return err
		},
	}
	admin.register(cmd)
	cmd.Flags().StringVar(&format, "format", "json", "json or registration-xml")
	cmd.Flags().StringVarP(&format, "output", "o", "json", "same as --format")
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func day(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format("2006-01-02")
}
