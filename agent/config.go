package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"time"

	"github.com/fedkeeper/fedkeeper/configsync"
	"github.com/fedkeeper/fedkeeper/internal/wait"
	"github.com/fedkeeper/fedkeeper/membership"
)

// ComponentConfig declares a component whose configuration files the
// agent keeps in the component's home directory.
type ComponentConfig struct {
	Name string `yaml:"name"`
	// Project defaults to the node's project.
	Project string `yaml:"project,omitempty"`
	// Home is the component's home directory; target paths are relative
	// to it.
	Home string `yaml:"home"`
	// Reload runs after each commit is in place, e.g. [systemctl, reload,
	// tomcat]; FEDKEEPER_CONFIG_VERSION names the commit.
	Reload        []string      `yaml:"reload,omitempty"`
	ReloadTimeout time.Duration `yaml:"reload_timeout,omitempty"`
}

var componentRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func (c ComponentConfig) validate() error {
	if !componentRE.MatchString(c.Name) {
		return fmt.Errorf("component %q: name must be 1-63 lowercase letters, digits or inner hyphens", c.Name)
	}
	if c.Project != "" {
		if err := membership.ValidateProject(c.Project); err != nil {
			return fmt.Errorf("component %s: %w", c.Name, err)
		}
	}
	if !filepath.IsAbs(c.Home) {
		return fmt.Errorf("component %s: home %q must be an absolute directory", c.Name, c.Home)
	}
	if c.ReloadTimeout < 0 {
		return fmt.Errorf("component %s: reload_timeout must not be negative", c.Name)
	}
	return nil
}

// configWait is how long one blocking query for a configuration change
// waits at the supernode.
const configWait = 20 * time.Second

// DefaultReloadTimeout bounds a component's reload command unless
// configured.
const DefaultReloadTimeout = time.Minute

// startComponents prepares every declared component: an apply interrupted
// by a crash is finished first, so the home holds one whole commit before
// anything else happens; the agent then follows each component's
// configuration until ctx ends.
func (a *Agent) startComponents(ctx context.Context) error {
	for _, c := range a.cfg.Components {
		project := c.Project
		if project == "" {
			project = a.cfg.Profile.Project
		}
		timeout := c.ReloadTimeout
		if timeout == 0 {
			timeout = DefaultReloadTimeout
		}
		stateDir, err := filepath.Abs(filepath.Join(a.dir, "config", project, c.Name))
		if err != nil {
			return fmt.Errorf("component %s: %w", c.Name, err)
		}
		ap, err := configsync.NewApplier(c.Home, stateDir, c.Reload, timeout, a.log.With("component", c.Name))
		if err != nil {
			return fmt.Errorf("component %s: %w", c.Name, err)
		}
		if err := ap.Recover(); err != nil {
			return fmt.Errorf("component %s: recover an interrupted apply: %w", c.Name, err)
		}
		if applied, ok := ap.Applied(); ok {
			a.log.Info("serving the last applied configuration until the federation says otherwise", "component", c.Name, "version", applied.Version)
		}
		go a.followConfig(ctx, project, c.Name, ap)
	}
	return nil
}

// followConfig applies each new configuration of a component and reports
// it. When no supernode answers, the files last applied stay in place and
// the agent keeps asking.
func (a *Agent) followConfig(ctx context.Context, project, component string, ap *configsync.Applier) {
	var index int64
	answered := false
	var reported, reportedErr string
	offline := false
	for ctx.Err() == nil {
		path := fmt.Sprintf("/v1/config/%s/components/%s/effective?node=%s",
			url.PathEscape(project), url.PathEscape(component), url.QueryEscape(a.cfg.Name))
		// The first query does not block: a component nothing was
		// published for yet has revision 0, and index=0 would wait a
		// full blocking period before the agent applies and reports it.
		if answered {
			path += fmt.Sprintf("&index=%d&wait=%s", index, configWait)
		}
		// Every supernode in turn gets the full wait.
		qctx, cancel := context.WithTimeout(ctx, time.Duration(len(a.client.Servers()))*(configWait+5*time.Second))
		var eff configsync.Effective
		err := a.client.Do(qctx, http.MethodGet, path, nil, &eff)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if !offline {
				a.log.Warn("configuration not reachable; the last applied files stay in place", "component", component, "err", err)
				offline = true
			}
			wait.Sleep(ctx, 5*time.Second)
			continue
		}
		offline = false
		index, answered = eff.Revision, true
		applyErr := ap.Apply(ctx, eff)
		report := map[string]string{"version": eff.Version}
		if applyErr != nil {
			report["error"] = applyErr.Error()
			if !errors.Is(applyErr, configsync.ErrReload) {
				// The files were not written: report what is on disk, and
				// which version failed.
				a.log.Error("configuration not applied", "component", component, "version", eff.Version, "err", applyErr)
				prev, _ := ap.Applied()
				report["version"], report["failed"] = prev.Version, eff.Version
			}
		}
		version, msg := report["version"], report["error"]
		if version == reported && msg == reportedErr {
			continue
		}
		if err := a.client.Do(ctx, http.MethodPut, fmt.Sprintf("/v1/config/%s/components/%s/status", url.PathEscape(project), url.PathEscape(component)),
			report, nil); err != nil {
			a.log.Warn("configuration status not reported", "component", component, "err", err)
			continue
		}
		reported, reportedErr = version, msg
	}
}
