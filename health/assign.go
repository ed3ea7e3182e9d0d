package health

import (
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"

	"github.com/fedkeeper/fedkeeper/membership"
)

// Rank orders the supernodes that may probe member by rendezvous hashing:
// each supernode scores hash(supernode, member) and the highest score
// probes it, the next confirms. Every supernode computes the same order
// from the same list, with no coordination; when a supernode dies or is
// added only the members it scores highest on move, so the work spreads
// and moves by itself.
func Rank(member string, supernodes []string) []string {
	out := slices.Clone(supernodes)
	score := func(s string) uint64 { return xxhash.Sum64String(s + "\x00" + member) }
	slices.SortFunc(out, func(a, b string) int {
		sa, sb := score(a), score(b)
		switch {
		case sa > sb:
			return -1
		case sa < sb:
			return 1
		}
		return strings.Compare(a, b)
	})
	return out
}

// Candidates are the healthy supernodes that may probe a member of
// project: those serving the project, or any healthy supernode when none
// does. supernodes are the supernode records; healthy the names heard from.
func Candidates(project string, supernodes []membership.Node, healthy []string) []string {
	var serving, all []string
	for _, sn := range supernodes {
		if !slices.Contains(healthy, sn.Name) {
			continue
		}
		all = append(all, sn.Name)
		if slices.Contains(sn.Projects, project) {
			serving = append(serving, sn.Name)
		}
	}
	if len(serving) > 0 {
		return serving
	}
	return all
}
