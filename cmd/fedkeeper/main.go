// Command fedkeeper is the node manager of a scientific data federation:
// supernode, agent and administrator CLI in one binary.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/fedkeeper/fedkeeper/client"
	"github.com/fedkeeper/fedkeeper/internal/version"
	"github.com/fedkeeper/fedkeeper/pki"
)

func main() {
	root := &cobra.Command{
		Use:           "fedkeeper",
		Short:         "Node manager of a scientific data federation",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	var logLevel string
	root.PersistentFlags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		var lvl slog.Level
		if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
			return fmt.Errorf("--log-level: %w", err)
		}
		slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})))
		return nil
	}
	admin := &adminFlags{}
	root.AddCommand(
		initCmd(), supernodeCmd(admin), supernodesCmd(admin), snapshotCmd(admin), devCmd(), fenceCmd(),
		agentCmd(), leaveCmd(), serviceCmd(admin), haCmd(admin),
		tokenCmd(admin), nodesCmd(admin), nodemapCmd(admin), eventsCmd(admin), metricsCmd(admin), kvCmd(admin), configCmd(admin),
		benchCmd(), lockCmd(admin), roleCmd(admin),
	)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := root.ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fedkeeper:", err)
		os.Exit(1)
	}
}

// adminFlags find the federation for administrator commands.
type adminFlags struct {
	credentials           string
	server, ca, cert, key string
}

func (f *adminFlags) register(cmd *cobra.Command) {
	fl := cmd.PersistentFlags()
	fl.StringVar(&f.credentials, "credentials", "", "credentials file written by init (default $FEDKEEPER_CREDENTIALS)")
	fl.StringVar(&f.server, "server", "", "federation API URL (https://HOST:PORT), instead of a credentials file")
	fl.StringVar(&f.ca, "ca", "", "federation CA certificate file, with --server")
	fl.StringVar(&f.cert, "cert", "", "administrator certificate file, with --server")
	fl.StringVar(&f.key, "key", "", "administrator key file, with --server")
}

// client builds the API client from the flags, or from the credentials file.
func (f *adminFlags) client() (*client.Client, error) {
	if f.server != "" {
		if f.ca == "" || f.cert == "" || f.key == "" {
			return nil, fmt.Errorf("--server needs --ca, --cert and --key")
		}
		kp, err := pki.LoadKeyPair(f.cert, f.key)
		if err != nil {
			return nil, err
		}
		caPEM, err := os.ReadFile(f.ca)
		if err != nil {
			return nil, fmt.Errorf("read --ca: %w", err)
		}
		ca, err := pki.ParseCert(caPEM)
		if err != nil {
			return nil, fmt.Errorf("--ca %s: %w", f.ca, err)
		}
		return client.New([]string{f.server}, pki.ClientTLS(kp, ca)), nil
	}
	path := f.credentials
	if path == "" {
		path = os.Getenv("FEDKEEPER_CREDENTIALS")
	}
	if path == "" {
		return nil, fmt.Errorf("no federation given: use --credentials FILE (or $FEDKEEPER_CREDENTIALS), or --server with --ca, --cert and --key")
	}
	cr, err := client.LoadCredentials(path)
	if err != nil {
		return nil, err
	}
	return cr.Client()
}

// outputFlag adds -o to a list or show command.
func outputFlag(cmd *cobra.Command) *string {
	return cmd.Flags().StringP("output", "o", "table", "output format: table or json")
}

func checkOutput(o string) error {
	if o != "table" && o != "json" {
		return fmt.Errorf("-o %q: want table or json", o)
	}
	return nil
}

// show reads path with the administrator's client and prints the answer:
// as JSON with -o json, else with table.
func show[T any](cmd *cobra.Command, admin *adminFlags, output, path string, table func(T) error) error {
	if err := checkOutput(output); err != nil {
		return err
	}
	c, err := admin.client()
	if err != nil {
		return err
	}
	var v T
	if err := c.Do(cmd.Context(), http.MethodGet, path, nil, &v); err != nil {
		return err
	}
	if output == "json" {
		return printJSON(v)
	}
	return table(v)
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
