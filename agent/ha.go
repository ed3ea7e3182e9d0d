package agent

import (
	"context"
	"fmt"
	"sync"

	"github.com/fedkeeper/fedkeeper/ha"
)

// validateHAGroups checks each HA group and that no group is declared
// twice: one node is one candidate per group.
func validateHAGroups(groups []ha.GroupConfig) error {
	seen := map[string]bool{}
	for _, g := range groups {
		if err := g.Validate(); err != nil {
			return err
		}
		if seen[g.Name] {
			return fmt.Errorf("HA group %s is declared twice", g.Name)
		}
		seen[g.Name] = true
	}
	return nil
}

// haGroups are the runners of the node's HA groups.
type haGroups struct {
	stop context.CancelFunc
	wg   sync.WaitGroup
}

// startHA takes part in every declared HA group until ctx ends or stopHA.
func (a *Agent) startHA(ctx context.Context) {
	ctx, stop := context.WithCancel(ctx)
	a.ha = &haGroups{stop: stop}
	for _, cfg := range a.cfg.HAGroups {
		g := ha.NewGroup(cfg, a.cfg.Name, a.client, a.log.With("group", cfg.Name, "node", a.cfg.Name))
		a.ha.wg.Go(func() { g.Run(ctx) })
	}
}

// stopHA leaves every HA group and waits until each has: a master stops
// its service and resigns before the node goes.
func (a *Agent) stopHA() {
	if a.ha == nil {
		return
	}
	a.ha.stop()
	a.ha.wg.Wait()
}
