package coord_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedkeeper/fedkeeper/coord"
	"github.com/fedkeeper/fedkeeper/internal/storetest"
)

// fixture is the service over a real one-member store.
type fixture struct {
	t   *testing.T
	ctx context.Context
	svc *coord.Service
	kv  *clientv3.Client
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	st, _ := storetest.Start(t)
	return &fixture{t: t, ctx: t.Context(), svc: coord.New(st.Client), kv: st.Client}
}

// lease grants owner a lease of the shortest TTL.
func (f *fixture) lease(owner string) int64 {
	f.t.Helper()
	l, err := f.svc.Grant(f.ctx, owner, coord.MinTTL)
	if err != nil {
		f.t.Fatalf("grant a lease to %s: %v", owner, err)
	}
	if l.Owner != owner || l.TTL != int64(coord.MinTTL/time.Second) {
		f.t.Fatalf("granted %+v, want owner %s and TTL %s", l, owner, coord.MinTTL)
	}
	return l.ID
}

// revision reads the store's revision, which any write moves on.
func (f *fixture) revision() int64 {
	f.t.Helper()
	resp, err := f.kv.Get(f.ctx, "revision-probe")
	if err != nil {
		f.t.Fatal(err)
	}
	return resp.Header.Revision
}

// stand makes owner a standby candidate of role name on lease.
func (f *fixture) stand(owner, name string, lease int64) {
	f.t.Helper()
	if _, err := f.svc.Stand(f.ctx, owner, coord.KindRole, name, coord.Candidate{State: "standby"}, lease); err != nil {
		f.t.Fatalf("%s stands for %s: %v", owner, name, err)
	}
}

func (f *fixture) election(kind, name string) coord.Election {
	f.t.Helper()
	e, err := f.svc.Election(f.ctx, kind, name)
	if err != nil {
		f.t.Fatal(err)
	}
	return e
}

func (f *fixture) enqueue(owner, name string, limit int, lease int64) {
	f.t.Helper()
	if _, err := f.svc.Enqueue(f.ctx, owner, name, limit, lease); err != nil {
		f.t.Fatalf("%s queues for %s: %v", owner, name, err)
	}
}

func (f *fixture) lock(name string) coord.Lock {
	f.t.Helper()
	l, err := f.svc.Lock(f.ctx, name)
	if err != nil {
		f.t.Fatal(err)
	}
	return l
}

// leases lists the leases of holders, in order.
func leases(hs []coord.Holder) []string {
	out := []string{}
	for _, h := range hs {
		out = append(out, h.Lease)
	}
	return out
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got %v, want %v", what, err, want)
	}
}

func TestLeasesAnswerOnlyToTheirOwner(t *testing.T) {
	f := newFixture(t)
	id := f.lease("a1")

	if err := f.svc.Renew(f.ctx, "a1", id); err != nil {
		t.Fatalf("owner renews: %v", err)
	}
	wantErr(t, "another owner renews", f.svc.Renew(f.ctx, "a2", id), coord.ErrForbidden)
	wantErr(t, "another owner revokes", f.svc.Revoke(f.ctx, "a2", id), coord.ErrForbidden)
	if err := f.svc.Renew(f.ctx, "a1", id); err != nil {
		t.Fatalf("the lease did not survive someone else's revoke: %v", err)
	}
	if err := f.svc.Revoke(f.ctx, "a1", id); err != nil {
		t.Fatalf("owner revokes: %v", err)
	}
	wantErr(t, "renew after revoke", f.svc.Renew(f.ctx, "a1", id), coord.ErrExpired)
	wantErr(t, "revoke again", f.svc.Revoke(f.ctx, "a1", id), coord.ErrExpired)
}

func TestLeaseNotRenewedExpiresWithWhatIsBoundToIt(t *testing.T) {
	f := newFixture(t)
	id := f.lease("a1")
	f.enqueue("a1", "scan", 1, id)
	granted := time.Now()
	for len(f.lock("scan").Holders) > 0 {
		if time.Since(granted) > coord.MinTTL+10*time.Second {
			t.Fatalf("lease of %s still holds the lock after %s", coord.MinTTL, time.Since(granted))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if took := time.Since(granted); took < coord.MinTTL-200*time.Millisecond {
		t.Errorf("lease of %s expired after %s", coord.MinTTL, took)
	}
	wantErr(t, "renew after expiry", f.svc.Renew(f.ctx, "a1", id), coord.ErrExpired)
}

func TestOneOfManyConcurrentAcquirersWins(t *testing.T) {
	f := newFixture(t)
	const n = 8
	ids := make([]int64, n)
	for i := range ids {
		ids[i] = f.lease(fmt.Sprintf("n%d", i))
		f.stand(fmt.Sprintf("n%d", i), "cron", ids[i])
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners []coord.Master
		others  []error
	)
	start := make(chan struct{})
	for i := range ids {
		wg.Go(func() {
			<-start
			m, err := f.svc.Acquire(f.ctx, fmt.Sprintf("n%d", i), coord.KindRole, "cron", ids[i])
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				winners = append(winners, m)
			} else {
				others = append(others, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if len(winners) != 1 {
		t.Fatalf("%d acquirers won: %+v", len(winners), winners)
	}
	for _, err := range others {
		wantErr(t, "a loser's acquire", err, coord.ErrTaken)
	}
	e := f.election(coord.KindRole, "cron")
	if e.Master == nil || e.Master.Node != winners[0].Node || e.Master.Token != winners[0].Token {
		t.Errorf("election shows master %+v, the winner was %+v", e.Master, winners[0])
	}
	var w int
	fmt.Sscanf(winners[0].Node, "n%d", &w)
	_, err := f.svc.Acquire(f.ctx, winners[0].Node, coord.KindRole, "cron", ids[w])
	wantErr(t, "the master acquires again", err, coord.ErrTaken)
}

func TestNextMasterAfterARevokedLeaseHasALargerToken(t *testing.T) {
	f := newFixture(t)
	a, b := f.lease("a1"), f.lease("a2")
	f.stand("a1", "cron", a)
	f.stand("a2", "cron", b)
	first, err := f.svc.Acquire(f.ctx, "a1", coord.KindRole, "cron", a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Acquire(f.ctx, "a2", coord.KindRole, "cron", b); !errors.Is(err, coord.ErrTaken) {
		t.Fatalf("second acquire: %v, want %v", err, coord.ErrTaken)
	}
	if err := f.svc.Revoke(f.ctx, "a1", a); err != nil {
		t.Fatal(err)
	}
	if e := f.election(coord.KindRole, "cron"); e.Master != nil || len(e.Candidates) != 1 {
		t.Fatalf("after the master's lease went: master %+v, candidates %+v; want none and a2 alone", e.Master, e.Candidates)
	}
	second, err := f.svc.Acquire(f.ctx, "a2", coord.KindRole, "cron", b)
	if err != nil {
		t.Fatal(err)
	}
	if second.Token <= first.Token {
		t.Errorf("token %d of the next master is not above %d", second.Token, first.Token)
	}
}

func TestAcquireNeedsACandidacyOnTheSameLease(t *testing.T) {
	f := newFixture(t)
	a, other := f.lease("a1"), f.lease("a1")
	_, err := f.svc.Acquire(f.ctx, "a1", coord.KindRole, "cron", a)
	wantErr(t, "acquire without candidacy", err, coord.ErrExpired)
	f.stand("a1", "cron", other)
	_, err = f.svc.Acquire(f.ctx, "a1", coord.KindRole, "cron", a)
	wantErr(t, "acquire with the candidacy on another lease", err, coord.ErrExpired)
	_, err = f.svc.Acquire(f.ctx, "a2", coord.KindRole, "cron", other)
	wantErr(t, "acquire on someone else's lease", err, coord.ErrForbidden)
	if e := f.election(coord.KindRole, "cron"); e.Master != nil {
		t.Errorf("refused acquisitions made %+v master", e.Master)
	}
}

func TestResignEndsOnlyTheMastershipOfItsLease(t *testing.T) {
	f := newFixture(t)
	a, b, aOther := f.lease("a1"), f.lease("a2"), f.lease("a1")
	f.stand("a1", "cron", a)
	f.stand("a2", "cron", b)
	if _, err := f.svc.Acquire(f.ctx, "a1", coord.KindRole, "cron", a); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		owner string
		lease int64
		want  error
	}{
		{"another candidate's lease", "a2", b, nil},
		{"the master's other lease", "a1", aOther, nil},
		{"the master's lease, named by another", "a2", a, coord.ErrForbidden},
	} {
		resigned, err := f.svc.Resign(f.ctx, tc.owner, coord.KindRole, "cron", tc.lease)
		wantErr(t, tc.name, err, tc.want)
		if resigned {
			t.Errorf("%s: Resign reported a resignation", tc.name)
		}
		if e := f.election(coord.KindRole, "cron"); e.Master == nil || e.Master.Node != "a1" {
			t.Fatalf("resign on %s ended a1's mastership: %+v", tc.name, e.Master)
		}
	}
	if resigned, err := f.svc.Resign(f.ctx, "a1", coord.KindRole, "cron", a); err != nil || !resigned {
		t.Fatalf("Resign by the master = %v, %v", resigned, err)
	}
	if e := f.election(coord.KindRole, "cron"); e.Master != nil {
		t.Errorf("master %+v after it resigned", e.Master)
	}
}

func TestAskChecksWhatItAsksFor(t *testing.T) {
	f := newFixture(t)
	a := f.lease("a1")
	f.stand("a1", "cron", a)
	ask := func(kind, node string) error {
		_, err := f.svc.Ask(f.ctx, coord.KindRole, "cron", coord.Request{Kind: kind, Node: node, By: "root"})
		return err
	}
	wantErr(t, "takeover by a non-candidate", ask(coord.RequestTakeover, "a9"), coord.ErrNotFound)
	wantErr(t, "giveup without master", ask(coord.RequestGiveup, ""), coord.ErrNotFound)
	wantErr(t, "unknown request", ask("swap", "a1"), coord.ErrInvalid)
	if e := f.election(coord.KindRole, "cron"); e.Request != nil {
		t.Fatalf("refused requests recorded %+v", e.Request)
	}
	if err := ask(coord.RequestTakeover, "a1"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Acquire(f.ctx, "a1", coord.KindRole, "cron", a); err != nil {
		t.Fatal(err)
	}
	if err := ask(coord.RequestGiveup, "whoever"); err != nil {
		t.Fatal(err)
	}
	e := f.election(coord.KindRole, "cron")
	if e.Request == nil || e.Request.Kind != coord.RequestGiveup || e.Request.Node != "a1" || e.Request.By != "root" {
		t.Errorf("request %+v, want a giveup of the master a1 by root", e.Request)
	}
}

func TestSemaphoreServesTheFirstInCreationOrder(t *testing.T) {
	f := newFixture(t)
	ids := []int64{f.lease("a1"), f.lease("a2"), f.lease("a3")}
	for i, id := range ids {
		f.enqueue(fmt.Sprintf("a%d", i+1), "scan", 2, id)
	}
	l := f.lock("scan")
	want := []string{coord.LeaseID(ids[0]), coord.LeaseID(ids[1])}
	if !slices.Equal(leases(l.Holders), want) || !slices.Equal(leases(l.Waiting), []string{coord.LeaseID(ids[2])}) {
		t.Fatalf("holders %v, waiting %v; want %v holding and the third waiting", leases(l.Holders), leases(l.Waiting), want)
	}
	if l.Limit != 2 || l.Holders[0].Holder != "a1" || l.Holders[0].Token >= l.Holders[1].Token || l.Holders[1].Token >= l.Waiting[0].Token {
		t.Errorf("lock %+v: want limit 2 and tokens growing in queue order", l)
	}

	// A repeat keeps its place.
	queued, err := f.svc.Enqueue(f.ctx, "a3", "scan", 2, ids[2])
	if err != nil || queued {
		t.Fatalf("repeated enqueue: new %v, %v; want a repeat", queued, err)
	}
	if again := f.lock("scan"); again.Waiting[0].Token != l.Waiting[0].Token {
		t.Errorf("repeated enqueue moved the waiter: token %d, then %d", l.Waiting[0].Token, again.Waiting[0].Token)
	}

	if err := f.svc.Revoke(f.ctx, "a1", ids[0]); err != nil {
		t.Fatal(err)
	}
	after := f.lock("scan")
	if want := []string{coord.LeaseID(ids[1]), coord.LeaseID(ids[2])}; !slices.Equal(leases(after.Holders), want) || len(after.Waiting) != 0 {
		t.Errorf("after the first holder's lease went: holders %v, waiting %v; want %v", leases(after.Holders), leases(after.Waiting), want)
	}
	if after.Holders[1].Token != l.Waiting[0].Token {
		t.Errorf("the promoted waiter's token changed from %d to %d", l.Waiting[0].Token, after.Holders[1].Token)
	}

	released, err := f.svc.Release(f.ctx, "a2", "scan", ids[1])
	if err != nil || !released {
		t.Fatalf("release: %v, %v", released, err)
	}
	if released, err := f.svc.Release(f.ctx, "a2", "scan", ids[1]); err != nil || released {
		t.Errorf("second release: %v, %v; want nothing released", released, err)
	}
	if got := leases(f.lock("scan").Holders); !slices.Equal(got, []string{coord.LeaseID(ids[2])}) {
		t.Errorf("holders after a release: %v", got)
	}
}

func TestNoHolderSharesTheLockBeyondItsOwnLimit(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name   string
		limits []int
		// holding is how many of the queue hold, as its head leaves one
		// by one.
		holding []int
	}{
		{"a lock behind a semaphore waits to be first", []int{3, 1, 3}, []int{1, 1, 1}},
		{"a semaphore behind a lock waits", []int{1, 3, 3}, []int{1, 2, 1}},
		{"the smallest limit ahead counts", []int{3, 2, 3, 3}, []int{2, 2, 2, 1}},
		{"agreeing limits", []int{2, 2, 2}, []int{2, 2, 1}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprintf("mixed%d", i)
			var ids []int64
			for _, limit := range tc.limits {
				id := f.lease("a1")
				f.enqueue("a1", name, limit, id)
				ids = append(ids, id)
			}
			var held []string
			for j, want := range tc.holding {
				l := f.lock(name)
				if len(l.Holders) != want {
					t.Errorf("with the first %d gone: %d holding, want %d (lock %+v)", j, len(l.Holders), want, l)
				}
				for _, h := range l.Holders {
					if len(l.Holders) > h.Limit {
						t.Errorf("holder with limit %d shares the lock with %d", h.Limit, len(l.Holders))
					}
				}
				for _, lease := range held {
					if !slices.Contains(leases(l.Holders), lease) {
						t.Errorf("holder %s is waiting again", lease)
					}
				}
				held = leases(l.Holders)[1:]
				if err := f.svc.Revoke(f.ctx, "a1", ids[j]); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestTokensGrowAcrossElectionsAndLocks(t *testing.T) {
	f := newFixture(t)
	var tokens []int64
	for i := range 3 {
		id := f.lease("a1")
		f.stand("a1", "cron", id)
		m, err := f.svc.Acquire(f.ctx, "a1", coord.KindRole, "cron", id)
		if err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, m.Token)
		f.enqueue("a1", fmt.Sprintf("l%d", i), 1, id)
		tokens = append(tokens, f.lock(fmt.Sprintf("l%d", i)).Holders[0].Token)
		if err := f.svc.Revoke(f.ctx, "a1", id); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.IsSorted(tokens) || len(slices.Compact(slices.Clone(tokens))) != len(tokens) {
		t.Errorf("tokens in order of acquisition: %v, want strictly growing", tokens)
	}
}

func TestRefusalsNameTheProblemAndWriteNothing(t *testing.T) {
	f := newFixture(t)
	a := f.lease("a1")
	gone := f.lease("a1")
	if err := f.svc.Revoke(f.ctx, "a1", gone); err != nil {
		t.Fatal(err)
	}
	before := f.revision()
	standby := coord.Candidate{State: "standby"}
	tests := []struct {
		name string
		call func() error
		want error
		// msg is part of the message.
		msg string
	}{
		{"TTL below the minimum", func() error { _, err := f.svc.Grant(f.ctx, "a1", time.Second); return err }, coord.ErrInvalid, "whole seconds from 2s to 10m0s"},
		{"TTL above the maximum", func() error { _, err := f.svc.Grant(f.ctx, "a1", time.Hour); return err }, coord.ErrInvalid, "lease TTL 1h0m0s"},
		{"TTL of a fraction of seconds", func() error { _, err := f.svc.Grant(f.ctx, "a1", 2500*time.Millisecond); return err }, coord.ErrInvalid, "whole seconds"},
		{"election kind", func() error { _, err := f.svc.Stand(f.ctx, "a1", "vote", "cron", standby, a); return err }, coord.ErrInvalid, `election kind "vote" must be ha or role`},
		{"upper case name", func() error { _, err := f.svc.Stand(f.ctx, "a1", coord.KindRole, "Cron", standby, a); return err }, coord.ErrInvalid, `role name "Cron" must be`},
		{"name with a slash", func() error { _, err := f.svc.Acquire(f.ctx, "a1", coord.KindRole, "a/b", a); return err }, coord.ErrInvalid, `"a/b"`},
		{"name too long", func() error { _, err := f.svc.Enqueue(f.ctx, "a1", strings.Repeat("x", 64), 1, a); return err }, coord.ErrInvalid, "1-63 lowercase"},
		{"empty lock name", func() error { _, err := f.svc.Lock(f.ctx, ""); return err }, coord.ErrInvalid, `lock name ""`},
		{"release of a bad name", func() error { _, err := f.svc.Release(f.ctx, "a1", "-x", a); return err }, coord.ErrInvalid, `"-x"`},
		{"candidate state", func() error {
			_, err := f.svc.Stand(f.ctx, "a1", coord.KindRole, "cron", coord.Candidate{State: "Standby1"}, a)
			return err
		}, coord.ErrInvalid, `candidate state "Standby1"`},
		{"rank", func() error {
			_, err := f.svc.Stand(f.ctx, "a1", coord.KindRole, "cron", coord.Candidate{State: "standby", Rank: -1}, a)
			return err
		}, coord.ErrInvalid, "rank -1 must be from 0"},
		{"limit 0", func() error { _, err := f.svc.Enqueue(f.ctx, "a1", "scan", 0, a); return err }, coord.ErrInvalid, "lock limit 0 must be from 1 to 1000"},
		{"limit above the maximum", func() error { _, err := f.svc.Enqueue(f.ctx, "a1", "scan", coord.MaxLimit+1, a); return err }, coord.ErrInvalid, "lock limit 1001"},
		{"someone else's lease", func() error { _, err := f.svc.Enqueue(f.ctx, "a2", "scan", 1, a); return err }, coord.ErrForbidden, "belongs to a1"},
		{"stand on a lease gone", func() error { _, err := f.svc.Stand(f.ctx, "a1", coord.KindRole, "cron", standby, gone); return err }, coord.ErrExpired, "is gone"},
		{"queue on a lease gone", func() error { _, err := f.svc.Enqueue(f.ctx, "a1", "scan", 1, gone); return err }, coord.ErrExpired, "is gone"},
		{"renew a lease gone", func() error { return f.svc.Renew(f.ctx, "a1", gone) }, coord.ErrExpired, "is gone"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("got %v, want %v saying %q", err, tc.want, tc.msg)
			}
		})
	}
	if after := f.revision(); after != before {
		t.Errorf("refused calls wrote to the store: revision %d, then %d", before, after)
	}
}
