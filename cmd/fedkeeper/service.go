package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedkeeper/fedkeeper/agent"
	"github.com/fedkeeper/fedkeeper/health"
	"github.com/fedkeeper/fedkeeper/services"
)

func serviceCmd(admin *adminFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "service",
		Short: "Register this node's services with its agent, and look up the federation's",
		Long: `Register and deregister the services of this node through its agent (which
must be running with --data-dir), and list or show the services registered
in the federation. A service stays registered as long as its agent's
session: when the agent stops without leaving, its services go once the
session lapses. Services declared in the agent's configuration file are
changed by editing that file.`,
	}
	cmd.AddCommand(serviceRegisterCmd(), serviceDeregisterCmd(), serviceListCmd(admin), serviceShowCmd(admin))
	return cmd
}

// localTimeout bounds a request to the agent on this host, which answers
// at once unless it is stuck.
const localTimeout = 30 * time.Second

func serviceRegisterCmd() *cobra.Command {
	var (
		dir                 string
		reg                 services.Registration
		checkHTTP, checkTCP string
		interval            time.Duration
	)
	cmd := &cobra.Command{
		Use:   "register",
		Short: "Register (or replace) a service of this node with its agent",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				return errors.New("--data-dir is required")
			}
			if checkHTTP != "" {
				reg.Checks = append(reg.Checks, health.CheckConfig{Name: "http", Type: health.TypeHTTP, URL: checkHTTP, Interval: interval})
			}
			if checkTCP != "" {
				reg.Checks = append(reg.Checks, health.CheckConfig{Name: "tcp", Type: health.TypeTCP, Address: checkTCP, Interval: interval})
			}
			if cmd.Flags().Changed("check-interval") && len(reg.Checks) == 0 {
				return errors.New("--check-interval needs --check-http or --check-tcp")
			}
			id := reg.ID
			if id == "" {
				id = reg.Name
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), localTimeout)
			defer cancel()
			var s agent.Service
			if err := agent.CallLocal(ctx, dir, http.MethodPut, "/v1/agent/services/"+url.PathEscape(id), reg, &s); err != nil {
				return err
			}
			status := string(s.Status)
			if s.Output != "" {
				status += ": " + s.Output
			}
			fmt.Printf("%s registered (%s)\n", s.ID, status)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&dir, "data-dir", "", "the agent's data directory")
	fl.StringVar(&reg.Name, "name", "", "service name (a DNS label), shared by its instances on every node")
	fl.IntVar(&reg.Port, "port", 0, "port the service listens on")
	fl.StringVar(&reg.ID, "id", "", "instance ID on this node (default: the name)")
	fl.StringVar(&reg.Project, "project", "", "project (default: the node's)")
	fl.StringVar(&reg.Address, "address", "", "IP address or host name (default: the host of the node's address)")
	fl.StringVar(&reg.Protocol, "protocol", "", "tcp, udp, http or https (default tcp)")
	fl.StringVar(&reg.Path, "path", "", "URL path of an http or https service, e.g. /thredds")
	fl.StringSliceVar(&reg.Tags, "tag", nil, "tag (a DNS label); repeat for more")
	fl.StringVar(&checkHTTP, "check-http", "", "check: GET this URL, passing on HTTP 200")
	fl.StringVar(&checkTCP, "check-tcp", "", "check: connect to HOST:PORT")
	fl.DurationVar(&interval, "check-interval", 0, "interval of the checks (default 10s)")
	cmd.MarkFlagRequired("name")
	cmd.MarkFlagRequired("port")
	return cmd
}

func serviceDeregisterCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "deregister ID",
		Short: "Deregister a service of this node that was registered with 'service register'",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				return errors.New("--data-dir is required")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), localTimeout)
			defer cancel()
			if err := agent.CallLocal(ctx, dir, http.MethodDelete, "/v1/agent/services/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Printf("%s deregistered\n", args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "data-dir", "", "the agent's data directory")
	return cmd
}

func serviceListCmd(admin *adminFlags) *cobra.Command {
	var project string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the federation's services: instances, how many serve, on which nodes",
		Args:  cobra.NoArgs,
	}
	admin.register(cmd)
	out := outputFlag(cmd)
	cmd.Flags().StringVar(&project, "project", "", "only this project's services")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		path := "/v1/services"
		if project != "" {
			path += "?" + url.Values{"project": {project}}.Encode()
		}
		return show(cmd, admin, *out, path, func(sums []services.Summary) error {
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tPROJECT\tINSTANCES\tSERVING\tNODES")
			for _, s := range sums {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", s.Name, s.Project, s.Instances, s.Serving, strings.Join(s.Nodes, ","))
			}
			return tw.Flush()
		})
	}
	return cmd
}

func serviceShowCmd(admin *adminFlags) *cobra.Command {
	var (
		project, tag string
		passing      bool
	)
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show the instances of a service, with their status and their node's health",
		Args:  cobra.ExactArgs(1),
	}
	admin.register(cmd)
	out := outputFlag(cmd)
	fl := cmd.Flags()
	fl.StringVar(&project, "project", "", "only instances of this project")
	fl.StringVar(&tag, "tag", "", "only instances with this tag")
	fl.BoolVar(&passing, "passing", false, "only instances clients are sent to (passing or warning on a healthy node)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		q := url.Values{}
		if project != "" {
			q.Set("project", project)
		}
		if tag != "" {
			q.Set("tag", tag)
		}
		if passing {
			q.Set("passing", "1")
		}
		path := "/v1/services/" + url.PathEscape(args[0])
		if len(q) > 0 {
			path += "?" + q.Encode()
		}
		return show(cmd, admin, *out, path, func(entries []services.Entry) error {
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NODE\tID\tHOST:PORT\tSTATUS\tNODE HEALTH\tTAGS\tURL")
			for _, e := range entries {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Node, e.ID, net.JoinHostPort(e.Host, strconv.Itoa(e.Port)), e.Status,
					dash(string(e.NodeHealth)), dash(strings.Join(e.Tags, ",")), dash(e.URL))
			}
			return tw.Flush()
		})
	}
	return cmd
}
