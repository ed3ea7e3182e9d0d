package events_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedkeeper/fedkeeper/events"
	"github.com/fedkeeper/fedkeeper/internal/storetest"
	"github.com/fedkeeper/fedkeeper/store"
)

// newLog starts a store of the test's own and returns its event log with
// the raw client (to read revisions and write unrelated keys).
func newLog(t *testing.T) (context.Context, *events.Log, *clientv3.Client) {
	t.Helper()
	t.Parallel()
	st, _ := storetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx, events.New(st.Client), st.Client
}

// record writes e and returns the store revision it was written at, read
// back from the store (nothing else writes to a test's store).
func record(t *testing.T, ctx context.Context, l *events.Log, c *clientv3.Client, e events.Event) int64 {
	t.Helper()
	if err := l.Record(ctx, e); err != nil {
		t.Fatalf("Record(%+v): %v", e, err)
	}
	resp, err := c.Get(ctx, "\x00")
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

func list(t *testing.T, ctx context.Context, l *events.Log, f events.Filter) []events.Event {
	t.Helper()
	evs, _, err := l.List(ctx, f)
	if err != nil {
		t.Fatalf("List(%+v): %v", f, err)
	}
	return evs
}

// kinds is the Kind of each event, in order: tests name their events by
// kind so a wrong selection or order shows as a readable diff.
func kinds(evs []events.Event) string {
	s := ""
	for i, e := range evs {
		if i > 0 {
			s += ","
		}
		s += e.Kind
	}
	return s
}

func TestRecordStampsTimeAndListReturnsEventsOldestFirstWithRevision(t *testing.T) {
	ctx, l, c := newLog(t)

	before := time.Now()
	rev1 := record(t, ctx, l, c, events.Event{Node: "n1", Kind: "joined", By: "sn1", Revision: 999})
	after := time.Now()
	// An event stamped earlier but written later sorts by its time.
	early := before.Add(-time.Hour).UTC().Truncate(time.Microsecond)
	rev2 := record(t, ctx, l, c, events.Event{Time: early, Node: "n2", Kind: "left", Old: "up", New: "gone", By: "admin", Message: "bye"})

	evs, listRev, err := l.List(ctx, events.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 {
		t.Fatalf("List returned %d events, want 2: %+v", len(evs), evs)
	}
	if got := kinds(evs); got != "left,joined" {
		t.Fatalf("order by time: got %s, want left,joined", got)
	}
	want := events.Event{Time: early, Node: "n2", Kind: "left", Old: "up", New: "gone", By: "admin", Message: "bye", Revision: rev2}
	if got := evs[0]; !got.Time.Equal(want.Time) || got.Node != want.Node || got.Kind != want.Kind || got.Old != want.Old ||
		got.New != want.New || got.By != want.By || got.Message != want.Message || got.Revision != want.Revision {
		t.Errorf("event read back:\n got %+v\nwant %+v", got, want)
	}
	stamped := evs[1]
	if stamped.Time.Before(before.Add(-time.Millisecond)) || stamped.Time.After(after.Add(time.Millisecond)) {
		t.Errorf("Record stamped %v, want between %v and %v", stamped.Time, before, after)
	}
	if stamped.Time.Location() != time.UTC {
		t.Errorf("Record stamped %v, want UTC", stamped.Time)
	}
	if stamped.Revision != rev1 {
		t.Errorf("Revision of the first event = %d, want the store revision it was written at, %d (not the caller's 999)", stamped.Revision, rev1)
	}
	if listRev < rev2 {
		t.Errorf("List read at revision %d, before the newest event's %d", listRev, rev2)
	}
}

func TestListFilters(t *testing.T) {
	ctx, l, c := newLog(t)

	base := time.Now().Add(-time.Hour).UTC()
	// e0..e5 in time order; nodes alternate a, b, a, b, ...
	revs := map[string]int64{}
	for i := range 6 {
		node := "a"
		if i%2 == 1 {
			node = "b"
		}
		kind := fmt.Sprintf("e%d", i)
		revs[kind] = record(t, ctx, l, c, events.Event{Time: base.Add(time.Duration(i) * time.Second), Node: node, Kind: kind})
	}

	tests := []struct {
		name   string
		filter events.Filter
		want   string
	}{
		{"no filter returns all, oldest first", events.Filter{}, "e0,e1,e2,e3,e4,e5"},
		{"node keeps only that node's events", events.Filter{Node: "a"}, "e0,e2,e4"},
		{"other node", events.Filter{Node: "b"}, "e1,e3,e5"},
		{"unknown node returns nothing", events.Filter{Node: "zz"}, ""},
		{"limit keeps the newest, oldest first", events.Filter{Limit: 2}, "e4,e5"},
		{"limit larger than the log returns all", events.Filter{Limit: 100}, "e0,e1,e2,e3,e4,e5"},
		{"limit with node keeps that node's newest", events.Filter{Node: "b", Limit: 2}, "e3,e5"},
		{"after revision returns only later events", events.Filter{AfterRevision: revs["e3"]}, "e4,e5"},
		{"after the newest revision returns nothing", events.Filter{AfterRevision: revs["e5"]}, ""},
		{"after revision with node", events.Filter{Node: "a", AfterRevision: revs["e1"]}, "e2,e4"},
		{"after revision with limit", events.Filter{AfterRevision: revs["e0"], Limit: 2}, "e4,e5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs := list(t, ctx, l, tt.filter)
			if got := kinds(evs); got != tt.want {
				t.Errorf("List(%+v) = %q, want %q", tt.filter, got, tt.want)
			}
			for _, e := range evs {
				if e.Revision != revs[e.Kind] {
					t.Errorf("%s has revision %d, want %d", e.Kind, e.Revision, revs[e.Kind])
				}
			}
		})
	}
}

func TestPrune(t *testing.T) {
	now := time.Now().UTC()
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	tests := []struct {
		name        string
		times       []time.Time // of events e0, e1, ... (recorded in this order)
		maxAge      time.Duration
		maxCount    int
		wantDeleted int64
		want        string
	}{
		{
			name:   "by age deletes events older than maxAge",
			times:  []time.Time{ago(72 * time.Hour), ago(25 * time.Hour), ago(23 * time.Hour), ago(time.Minute)},
			maxAge: 24 * time.Hour, maxCount: 100,
			wantDeleted: 2, want: "e2,e3",
		},
		{
			name:   "by age whatever the order they were recorded in",
			times:  []time.Time{ago(time.Minute), ago(72 * time.Hour), ago(time.Hour), ago(48 * time.Hour)},
			maxAge: 24 * time.Hour, maxCount: 100,
			wantDeleted: 2, want: "e2,e0",
		},
		{
			name:   "by count keeps the newest maxCount",
			times:  []time.Time{ago(5 * time.Minute), ago(4 * time.Minute), ago(3 * time.Minute), ago(2 * time.Minute), ago(time.Minute)},
			maxAge: 1000 * time.Hour, maxCount: 3,
			wantDeleted: 2, want: "e2,e3,e4",
		},
		{
			name:   "by count keeps the newest by time, not by write order",
			times:  []time.Time{ago(time.Minute), ago(5 * time.Minute), ago(2 * time.Minute)},
			maxAge: 1000 * time.Hour, maxCount: 2,
			wantDeleted: 1, want: "e2,e0",
		},
		{
			name:   "age and count together",
			times:  []time.Time{ago(48 * time.Hour), ago(3 * time.Minute), ago(2 * time.Minute), ago(time.Minute)},
			maxAge: 24 * time.Hour, maxCount: 2,
			wantDeleted: 2, want: "e2,e3",
		},
		{
			name:   "nothing to prune",
			times:  []time.Time{ago(2 * time.Minute), ago(time.Minute)},
			maxAge: time.Hour, maxCount: 2,
			wantDeleted: 0, want: "e0,e1",
		},
		{
			name:   "empty log",
			maxAge: time.Hour, maxCount: 2,
			wantDeleted: 0, want: "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, l, c := newLog(t)
			for i, at := range tt.times {
				record(t, ctx, l, c, events.Event{Time: at, Node: "n", Kind: fmt.Sprintf("e%d", i)})
			}
			// A key next to the event log, which Prune must not touch.
			if _, err := c.Put(ctx, store.Root+"eventsx", "keep"); err != nil {
				t.Fatal(err)
			}
			deleted, err := l.Prune(ctx, tt.maxAge, tt.maxCount)
			if err != nil {
				t.Fatalf("Prune: %v", err)
			}
			if deleted != tt.wantDeleted {
				t.Errorf("Prune deleted %d, want %d", deleted, tt.wantDeleted)
			}
			if got := kinds(list(t, ctx, l, events.Filter{})); got != tt.want {
				t.Errorf("after Prune the log holds %q, want %q", got, tt.want)
			}
			resp, err := c.Get(ctx, store.Root+"eventsx")
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Kvs) != 1 {
				t.Errorf("Prune deleted a key outside the event log")
			}
		})
	}
}

func TestRevision(t *testing.T) {
	ctx, l, c := newLog(t)

	rev, err := l.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rev != 0 {
		t.Errorf("Revision of an empty log = %d, want 0", rev)
	}
	// Other keys do not count.
	if _, err := c.Put(ctx, store.Root+"kv/x", "1"); err != nil {
		t.Fatal(err)
	}
	if rev, err := l.Revision(ctx); err != nil || rev != 0 {
		t.Errorf("Revision with no events but other keys = %d, %v; want 0", rev, err)
	}

	now := time.Now().UTC()
	record(t, ctx, l, c, events.Event{Time: now, Node: "n", Kind: "a"})
	// Written last but stamped earliest: it is still the newest revision.
	want := record(t, ctx, l, c, events.Event{Time: now.Add(-time.Hour), Node: "n", Kind: "b"})
	if _, err := c.Put(ctx, store.Root+"kv/y", "2"); err != nil {
		t.Fatal(err)
	}
	rev, err = l.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rev != want {
		t.Errorf("Revision = %d, want %d (the last event written)", rev, want)
	}
}

// waitAsync runs Wait in the background and reports whether it returned
// before its context ended.
func waitAsync(ctx context.Context, l *events.Log, after int64) <-chan bool {
	done := make(chan bool, 1)
	go func() {
		l.Wait(ctx, after)
		done <- ctx.Err() == nil
	}()
	return done
}

func TestWaitReturnsAfterARecord(t *testing.T) {
	ctx, l, c := newLog(t)
	rev := record(t, ctx, l, c, events.Event{Node: "n", Kind: "a"})

	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	done := waitAsync(wctx, l, rev)

	// A write outside the event log does not wake it.
	if _, err := c.Put(ctx, store.Root+"kv/x", "1"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
		t.Fatal("Wait returned on a write outside the event log")
	case <-time.After(300 * time.Millisecond):
	}

	record(t, ctx, l, c, events.Event{Node: "n", Kind: "b"})
	select {
	case early := <-done:
		if !early {
			t.Fatal("Wait returned only when its context ended")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Wait did not return after a Record")
	}
}

func TestWaitReturnsAtOnceForAnEventAlreadyWritten(t *testing.T) {
	ctx, l, c := newLog(t)
	rev := record(t, ctx, l, c, events.Event{Node: "n", Kind: "a"})
	record(t, ctx, l, c, events.Event{Node: "n", Kind: "b"})

	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	select {
	case early := <-waitAsync(wctx, l, rev):
		if !early {
			t.Fatal("Wait returned only when its context ended")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Wait did not return for an event written after the given revision")
	}
}

func TestWaitBlocksUntilContextEnds(t *testing.T) {
	ctx, l, c := newLog(t)
	rev := record(t, ctx, l, c, events.Event{Node: "n", Kind: "a"})

	const timeout = 500 * time.Millisecond
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	select {
	case early := <-waitAsync(wctx, l, rev):
		if early {
			t.Fatal("Wait returned with no new event")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Wait did not return when its context ended")
	}
	if elapsed := time.Since(start); elapsed < timeout {
		t.Errorf("Wait returned after %v, before its context ended (%v)", elapsed, timeout)
	}
}
