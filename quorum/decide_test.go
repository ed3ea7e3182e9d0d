package quorum

import (
	"testing"
	"time"
)

func voter(name string, healthy bool) Supernode {
	return Supernode{Name: name, Voter: true, Healthy: healthy}
}

func standby(name string, lag int64) Supernode {
	return Supernode{Name: name, Standby: true, Healthy: true, RevisionLag: lag}
}

func TestAutopilotDecisions(t *testing.T) {
	cfg := Config{DeadAfter: 30 * time.Second, TargetVoters: 3}
	// silent says how long each supernode has been unreachable.
	silent := map[string]time.Duration{}
	deadFor := func(sn Supernode) time.Duration { return silent[sn.Name] }
	for _, tc := range []struct {
		name   string
		list   []Supernode
		silent map[string]time.Duration
		want   stepKind
		target string
	}{
		{"all healthy: nothing to do",
			[]Supernode{voter("a", true), voter("b", true), voter("c", true), standby("s", 0)}, nil, stepNone, ""},
		{"a joining learner that caught up is promoted",
			[]Supernode{voter("a", true), {Name: "n", Healthy: true}}, nil, stepPromote, "n"},
		{"an unhealthy joining learner is not promoted",
			[]Supernode{voter("a", true), {Name: "n"}}, nil, stepNone, ""},
		{"a learner not yet started (no name) is not promoted",
			[]Supernode{voter("a", true), {Healthy: true}}, nil, stepNone, ""},
		{"a standby stays a standby while the voters are healthy",
			[]Supernode{voter("a", true), voter("b", true), standby("s", 0)}, nil, stepNone, ""},
		{"a voter silent for less than dead_after is left alone",
			[]Supernode{voter("a", true), voter("b", true), voter("c", false), standby("s", 0)},
			map[string]time.Duration{"c": 10 * time.Second}, stepNone, ""},
		{"a dead voter is replaced by the most caught-up standby first",
			[]Supernode{voter("a", true), voter("b", true), voter("c", false), standby("s1", 5), standby("s2", 1)},
			map[string]time.Duration{"c": time.Minute}, stepPromote, "s2"},
		{"once replaced, the dead voter is removed",
			[]Supernode{voter("a", true), voter("b", true), voter("c", false), voter("s", true)},
			map[string]time.Duration{"c": time.Minute}, stepRemove, "c"},
		{"without a standby the dead voter is kept: removing it gains nothing",
			[]Supernode{voter("a", true), voter("b", true), voter("c", false)},
			map[string]time.Duration{"c": time.Minute}, stepNone, ""},
		{"an unhealthy standby is not promoted",
			[]Supernode{voter("a", true), voter("b", true), voter("c", false), {Name: "s", Standby: true}},
			map[string]time.Duration{"c": time.Minute}, stepNone, ""},
		{"no promotion that would leave the healthy voters a minority",
			// 1 healthy of 3: with the standby 2 of 4, short of a quorum of 3.
			[]Supernode{voter("a", true), voter("b", false), voter("c", false), standby("s", 0)},
			map[string]time.Duration{"b": time.Minute, "c": time.Minute}, stepNone, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clear(silent)
			for k, v := range tc.silent {
				silent[k] = v
			}
			got := decide(tc.list, deadFor, cfg)
			if got.kind != tc.want || got.target.Name != tc.target {
				t.Fatalf("decide = %v %q (%s), want %v %q", got.kind, got.target.Name, got.why, tc.want, tc.target)
			}
			if got.kind != stepNone && got.why == "" {
				t.Fatal("a step without a reason: events and logs must say why")
			}
		})
	}
}

func TestQuorumOf(t *testing.T) {
	for voters, want := range map[int]int{1: 1, 2: 2, 3: 2, 4: 3, 5: 3} {
		if got := quorumOf(voters); got != want {
			t.Errorf("quorumOf(%d) = %d, want %d", voters, got, want)
		}
	}
}
