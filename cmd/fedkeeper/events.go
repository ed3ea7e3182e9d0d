package main

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedkeeper/fedkeeper/api"
	"github.com/fedkeeper/fedkeeper/client"
	"github.com/fedkeeper/fedkeeper/events"
	"github.com/fedkeeper/fedkeeper/kv"
)

func eventsCmd(admin *adminFlags) *cobra.Command {
	var node string
	var follow bool
	var limit int
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Show what happened in the federation (joins, removals, promotions ...)",
		Args:  cobra.NoArgs,
	}
	out := outputFlag(cmd)
	admin.register(cmd)
	cmd.Flags().StringVar(&node, "node", "", "only events about this node")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events as they happen")
	cmd.Flags().IntVar(&limit, "limit", 100, "how many of the newest events to show first")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := checkOutput(*out); err != nil {
			return err
		}
		c, err := admin.client()
		if err != nil {
			return err
		}
		q := url.Values{"limit": {strconv.Itoa(limit)}}
		if node != "" {
			q.Set("node", node)
		}
		print := eventPrinter(*out)
		var index int64
		for {
			evs, err := fetchEvents(cmd.Context(), c, q, index)
			if err != nil {
				if follow && cmd.Context().Err() != nil {
					return nil
				}
				return err
			}
			for _, e := range evs {
				print(e)
				index = max(index, e.Revision)
			}
			if !follow {
				return nil
			}
			if index == 0 {
				index = 1
			}
			q.Set("wait", "60s")
		}
	}
	return cmd
}

func fetchEvents(ctx context.Context, c *client.Client, q url.Values, index int64) ([]events.Event, error) {
	if index > 0 {
		q.Set("index", strconv.FormatInt(index, 10))
	}
	var evs []events.Event
	err := c.Do(ctx, http.MethodGet, "/v1/events?"+q.Encode(), nil, &evs)
	return evs, err
}

func eventPrinter(format string) func(events.Event) {
	if format == "json" {
		return func(e events.Event) { printJSON(e) }
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	return func(e events.Event) {
		change := e.New
		if e.Old != "" {
			change = e.Old + " -> " + e.New
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\tby %s\t%s\n", e.Time.Local().Format(time.DateTime), e.Node, e.Kind, dash(change), e.By, e.Message)
		tw.Flush()
	}
}

func kvCmd(admin *adminFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "kv", Short: "Read and write the federation's key-value space"}
	admin.register(cmd)
	get := &cobra.Command{
		Use: "get KEY", Short: "Print a key's value", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := admin.client()
			if err != nil {
				return err
			}
			var e kv.Entry
			if err := c.Do(cmd.Context(), http.MethodGet, "/v1/kv/"+args[0], nil, &e); err != nil {
				return err
			}
			fmt.Println(e.Value)
			return nil
		},
	}
	var prev int64
	put := &cobra.Command{
		Use: "put KEY VALUE", Short: "Write a key", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := admin.client()
			if err != nil {
				return err
			}
			req := api.PutKVRequest{Value: args[1]}
			if cmd.Flags().Changed("prev-revision") {
				req.PrevRevision = &prev
			}
			var e kv.Entry
			if err := c.Do(cmd.Context(), http.MethodPut, "/v1/kv/"+args[0], req, &e); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "%s written at revision %d\n", strings.TrimSpace(e.Key), e.Revision)
			return nil
		},
	}
	put.Flags().Int64Var(&prev, "prev-revision", 0, "write only if the key is at this revision (0: only if it does not exist)")
	del := &cobra.Command{
		Use: "delete KEY", Short: "Delete a key", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := admin.client()
			if err != nil {
				return err
			}
			return c.Do(cmd.Context(), http.MethodDelete, "/v1/kv/"+args[0], nil, nil)
		},
	}
	cmd.AddCommand(get, put, del)
	return cmd
}

func metricsCmd(admin *adminFlags) *cobra.Command {
	var project string
	cmd := &cobra.Command{
		Use:   "metrics",
		Short: "Show the members' metrics aggregated per project (CPU, memory, disk, load, failing checks)",
		Args:  cobra.NoArgs,
	}
	out := outputFlag(cmd)
	admin.register(cmd)
	cmd.Flags().StringVar(&project, "project", "", "only this project's members (default: all)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		return show(cmd, admin, *out, "/v1/metrics?project="+url.QueryEscape(project), func(m api.ProjectMetrics) error {
			return printMetrics(m)
		})
	}
	return cmd
}

func printMetrics(m api.ProjectMetrics) error {
	fmt.Printf("project %s: %d nodes\n", orDefault(m.Project, "(all)"), m.Nodes)
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "METRIC\tNODES\tAVG\tMIN\tMAX\tSUM")
	for _, name := range slices.Sorted(maps.Keys(m.Metrics)) {
		st := m.Metrics[name]
		fmt.Fprintf(tw, "%s\t%d\t%.3g\t%.3g\t%.3g\t%.3g\n", name, st.Count, st.Avg, st.Min, st.Max, st.Sum)
	}
	if len(m.Missing) > 0 {
		fmt.Fprintf(tw, "(without the members of %s: no answer)\n", strings.Join(m.Missing, ", "))
	}
	return tw.Flush()
}
