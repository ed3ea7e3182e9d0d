package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/fedkeeper/fedkeeper/api"
	"github.com/fedkeeper/fedkeeper/client"
	"github.com/fedkeeper/fedkeeper/configsync"
)

// layerFlags name the layer a config command is about.
type layerFlags struct {
	project, component, node string
}

func (l *layerFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&l.project, "project", "", "project")
	cmd.Flags().StringVar(&l.component, "component", "", "component (empty: the project's own files, for every component)")
	cmd.Flags().StringVar(&l.node, "node", "", "node whose overrides of the component are meant")
	cmd.MarkFlagRequired("project")
}

func (l *layerFlags) query() url.Values {
	q := url.Values{}
	if l.component != "" {
		q.Set("component", l.component)
	}
	if l.node != "" {
		q.Set("node", l.node)
	}
	return q
}

func (l *layerFlags) path(rest string, q url.Values) string {
	p := "/v1/config/" + url.PathEscape(l.project) + rest
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	return p
}

// readSources reads what to publish: each source is a directory, whose
// tree becomes the files, or a YAML mapping file of local path → target
// path, like OODT's publisher configuration.
func readSources(sources []string) (map[string][]byte, error) {
	files := map[string][]byte{}
	add := func(target, local string) error {
		if err := configsync.ValidatePath(target); err != nil {
			return fmt.Errorf("%s: %w", local, err)
		}
		if _, dup := files[target]; dup {
			return fmt.Errorf("%s: target %s is given twice", local, target)
		}
		fi, err := os.Lstat(local)
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file (symbolic links are not followed)", local)
		}
		b, err := os.ReadFile(local)
		if err != nil {
			return err
		}
		files[target] = b
		return nil
	}
	for _, src := range sources {
		fi, err := os.Stat(src)
		if err != nil {
			return nil, err
		}
		if fi.IsDir() {
			err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				rel, err := filepath.Rel(src, p)
				if err != nil {
					return err
				}
				return add(filepath.ToSlash(rel), p)
			})
		} else {
			err = readMapping(src, add)
		}
		if err != nil {
			return nil, err
		}
	}
	return files, nil
}

// readMapping reads a YAML mapping file: local path → target path; local
// paths are relative to the mapping file's directory.
func readMapping(path string, add func(target, local string) error) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var m map[string]string
	if err := yaml.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("mapping file %s (want local path: target path): %w", path, err)
	}
	for _, local := range slices.Sorted(maps.Keys(m)) {
		p := local
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(path), local)
		}
		if err := add(m[local], p); err != nil {
			return err
		}
	}
	return nil
}

func configCmd(admin *adminFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Publish and inspect the configuration files of projects and components"}
	admin.register(cmd)
	cmd.AddCommand(configPublishCmd(admin), configVerifyCmd(admin), configClearCmd(admin), configGetCmd(admin),
		configHistoryCmd(admin), configDiffCmd(admin), configRollbackCmd(admin), configStatusCmd(admin))
	return cmd
}

func configPublishCmd(admin *adminFlags) *cobra.Command {
	var l layerFlags
	var message string
	var expect int64
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "publish SOURCE...",
		Short: "Publish a directory tree or mapping file as one commit: all files change together or none",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			files, err := readSources(args)
			if err != nil {
				return err
			}
			req := api.PublishRequest{Component: l.component, Node: l.node, Message: message}
			for _, p := range slices.Sorted(maps.Keys(files)) {
				req.Files = append(req.Files, api.PublishFile{Path: p, Content: files[p]})
			}
			if cmd.Flags().Changed("expect-rev") {
				req.ExpectSeq = &expect
			}
			c, err := admin.client()
			if err != nil {
				return err
			}
			var commit configsync.Commit
			if err := c.Do(cmd.Context(), http.MethodPost, l.path("/publish", nil), req, &commit); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "published commit %d of %s (%d files)\n", commit.Seq, layerName(l), len(commit.Files))
			if !wait {
				return nil
			}
			return waitApplied(cmd.Context(), c, l, commit.Seq, timeout)
		},
	}
	l.register(cmd)
	cmd.Flags().StringVarP(&message, "message", "m", "", "what the commit changes")
	cmd.Flags().Int64Var(&expect, "expect-rev", 0, "publish only if the newest commit is this one (0: none yet)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until every node running the component has applied the commit")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "how long --wait waits")
	return cmd
}

func layerName(l layerFlags) string {
	return configsync.Layer{Project: l.project, Component: l.component, Node: l.node}.String()
}

// applied tells whether version (as agents report it, "p3.c7.n1") holds at
// least commit seq of the layer l.
func applied(version string, l layerFlags, seq int64) bool {
	tag := "c"
	switch {
	case l.component == "":
		tag = "p"
	case l.node != "":
		tag = "n"
	}
	for _, part := range strings.Split(version, ".") {
		if strings.HasPrefix(part, tag) {
			n, err := strconv.ParseInt(part[1:], 10, 64)
			return err == nil && n >= seq
		}
	}
	return false
}

// waitApplied shows progress until every node running the component has
// applied commit seq, or names the laggards when timeout passes.
func waitApplied(ctx context.Context, c *client.Client, l layerFlags, seq int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	q := url.Values{}
	if l.component != "" {
		q.Set("component", l.component)
	}
	for {
		var list []configsync.Status
		if err := c.Do(ctx, http.MethodGet, l.path("/status", q), nil, &list); err != nil {
			return err
		}
		var done, failed, laggards []string
		total := 0
		for _, st := range list {
			if l.node != "" && st.Node != l.node {
				continue
			}
			total++
			switch {
			case applied(st.Version, l, seq) && st.Error == "":
				done = append(done, st.Node)
			case applied(st.Version, l, seq), applied(st.Failed, l, seq):
				failed = append(failed, st.Node+" ("+st.Error+")")
			default:
				laggards = append(laggards, st.Node)
			}
		}
		if total == 0 {
			fmt.Fprintf(os.Stderr, "no node runs %s yet: nothing to wait for\n", layerName(l))
			return nil
		}
		width := 30
		filled := width * len(done) / total
		fmt.Fprintf(os.Stderr, "\r[%s%s] %d/%d nodes applied", strings.Repeat("#", filled), strings.Repeat(".", width-filled), len(done), total)
		if len(laggards) == 0 {
			fmt.Fprintln(os.Stderr)
			if len(failed) > 0 {
				return fmt.Errorf("not applied, or not reloaded, on: %s", strings.Join(failed, "; "))
			}
			return nil
		}
		if time.Now().After(deadline) {
			fmt.Fprintln(os.Stderr)
			return fmt.Errorf("not applied after %s by: %s", timeout, strings.Join(laggards, ", "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func configVerifyCmd(admin *adminFlags) *cobra.Command {
	var l layerFlags
	cmd := &cobra.Command{
		Use:   "verify SOURCE...",
		Short: "Compare local files with the published ones: exit 0 if identical, else list the differences",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			files, err := readSources(args)
			if err != nil {
				return err
			}
			c, err := admin.client()
			if err != nil {
				return err
			}
			var head api.CommitWithFiles
			if err := c.Do(cmd.Context(), http.MethodGet, l.path("/commits/0", l.query()), nil, &head); err != nil {
				return err
			}
			changes := configsync.Verify(files, head.Commit)
			if len(changes) == 0 {
				fmt.Printf("identical to commit %d of %s\n", head.Seq, layerName(l))
				return nil
			}
			for _, ch := range changes {
				// From the published commit's side: what publishing the
				// local files would do.
				fmt.Printf("%s\t%s\n", ch.Kind, ch.Path)
			}
			return fmt.Errorf("%d files differ from commit %d of %s", len(changes), head.Seq, layerName(l))
		},
	}
	l.register(cmd)
	return cmd
}

func configClearCmd(admin *adminFlags) *cobra.Command {
	var l layerFlags
	var message string
	cmd := &cobra.Command{
		Use:   "clear",
		Short: "Publish an empty commit: agents remove the files they wrote",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := admin.client()
			if err != nil {
				return err
			}
			var commit configsync.Commit
			req := api.PublishRequest{Component: l.component, Node: l.node, Files: []api.PublishFile{}, Message: orDefault(message, "clear")}
			if err := c.Do(cmd.Context(), http.MethodPost, l.path("/publish", nil), req, &commit); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "cleared %s: commit %d has no files\n", layerName(l), commit.Seq)
			return nil
		},
	}
	l.register(cmd)
	cmd.Flags().StringVarP(&message, "message", "m", "", "why")
	return cmd
}

func configGetCmd(admin *adminFlags) *cobra.Command {
	var l layerFlags
	var rev int64
	cmd := &cobra.Command{
		Use:   "get [PATH]",
		Short: "Print one file, or list all, of a commit; with --node, the node's effective configuration",
		Args:  cobra.MaximumNArgs(1),
	}
	out := outputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := checkOutput(*out); err != nil {
			return err
		}
		c, err := admin.client()
		if err != nil {
			return err
		}
		var files []configsync.File
		var label string
		if l.node != "" && rev == 0 {
			if l.component == "" {
				return errors.New("--node needs --component: the effective configuration is a component's")
			}
			var eff configsync.Effective
			p := "/v1/config/" + url.PathEscape(l.project) + "/components/" + url.PathEscape(l.component) + "/effective?node=" + url.QueryEscape(l.node)
			if err := c.Do(cmd.Context(), http.MethodGet, p, nil, &eff); err != nil {
				return err
			}
			files, label = eff.Files, "effective configuration "+eff.Version
		} else {
			q := l.query()
			q.Set("files", "1")
			var cw api.CommitWithFiles
			if err := c.Do(cmd.Context(), http.MethodGet, l.path("/commits/"+strconv.FormatInt(rev, 10), q), nil, &cw); err != nil {
				return err
			}
			files, label = cw.Contents, fmt.Sprintf("commit %d", cw.Seq)
		}
		if len(args) == 1 {
			for _, f := range files {
				if f.Path == args[0] {
					_, err := os.Stdout.Write(f.Content)
					return err
				}
			}
			return fmt.Errorf("%s has no file %s", label, args[0])
		}
		if *out == "json" {
			return printJSON(files)
		}
		fmt.Printf("%s of %s:\n", label, layerName(l))
		for _, f := range files {
			fmt.Printf("%8d  %s  %s\n", len(f.Content), f.SHA256[:12], f.Path)
		}
		return nil
	}
	l.register(cmd)
	cmd.Flags().Int64Var(&rev, "rev", 0, "commit number (default: the newest)")
	return cmd
}

func configHistoryCmd(admin *adminFlags) *cobra.Command {
	var l layerFlags
	var limit int
	cmd := &cobra.Command{Use: "history", Short: "List the commits of a layer, newest first", Args: cobra.NoArgs}
	out := outputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		q := l.query()
		q.Set("limit", strconv.Itoa(limit))
		return show(cmd, admin, *out, l.path("/commits", q), func(list []configsync.Commit) error {
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "COMMIT\tTIME\tAUTHOR\tFILES\tMESSAGE")
			for _, cm := range list {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\n", cm.Seq, cm.Time.Format(time.RFC3339), cm.Author, len(cm.Files), cm.Message)
			}
			return tw.Flush()
		})
	}
	l.register(cmd)
	cmd.Flags().IntVar(&limit, "limit", 50, "how many commits")
	return cmd
}

func configDiffCmd(admin *adminFlags) *cobra.Command {
	var l layerFlags
	cmd := &cobra.Command{Use: "diff REV1 REV2", Short: "List the files that differ between two commits", Args: cobra.ExactArgs(2)}
	out := outputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		q := l.query()
		q.Set("from", args[0])
		q.Set("to", args[1])
		return show(cmd, admin, *out, l.path("/diff", q), func(changes []configsync.Change) error {
			for _, ch := range changes {
				fmt.Printf("%s\t%s\n", ch.Kind, ch.Path)
			}
			return nil
		})
	}
	l.register(cmd)
	return cmd
}

func configRollbackCmd(admin *adminFlags) *cobra.Command {
	var l layerFlags
	cmd := &cobra.Command{
		Use:   "rollback REV",
		Short: "Publish, as a new commit, the files of commit REV",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			seq, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil {
				return fmt.Errorf("REV %q must be a commit number", args[0])
			}
			c, err := admin.client()
			if err != nil {
				return err
			}
			var commit configsync.Commit
			if err := c.Do(cmd.Context(), http.MethodPost, l.path("/rollback", nil), api.RollbackRequest{Component: l.component, Node: l.node, Seq: seq}, &commit); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "commit %d of %s restores commit %d\n", commit.Seq, layerName(l), seq)
			return nil
		},
	}
	l.register(cmd)
	return cmd
}

func configStatusCmd(admin *adminFlags) *cobra.Command {
	var project, component string
	cmd := &cobra.Command{Use: "status", Short: "Show which nodes run which commits of which components", Args: cobra.NoArgs}
	out := outputFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		p := "/v1/config/" + url.PathEscape(project) + "/status"
		if component != "" {
			p += "?component=" + url.QueryEscape(component)
		}
		return show(cmd, admin, *out, p, func(list []configsync.Status) error {
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NODE\tCOMPONENT\tVERSION\tAPPLIED\tERROR")
			for _, st := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", st.Node, st.Component, st.Version, st.Time.Format(time.RFC3339), dash(st.Error))
			}
			return tw.Flush()
		})
	}
	cmd.Flags().StringVar(&project, "project", "", "project")
	cmd.Flags().StringVar(&component, "component", "", "only this component")
	cmd.MarkFlagRequired("project")
	return cmd
}
