package ha_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fedkeeper/fedkeeper/ha"
)

func TestMonoGrowsWithRealTime(t *testing.T) {
	prev := ha.Mono()
	for range 1000 {
		now := ha.Mono()
		if now < prev {
			t.Fatalf("Mono went back from %d to %d", prev, now)
		}
		prev = now
	}
	start, wall := ha.Mono(), time.Now()
	time.Sleep(50 * time.Millisecond)
	if got, want := ha.Mono()-start, time.Since(wall); got < 50*time.Millisecond || got > want+10*time.Millisecond {
		t.Errorf("Mono moved %s over a sleep of %s", got, want)
	}
}

func TestLeaseKeeperMovesValidUntilOnEachRenewal(t *testing.T) {
	f := newFederation(t)
	const ttl = 3 * time.Second
	sent := ha.Mono()
	l, err := ha.Grant(f.ctx, f.client("a", ""), ttl, f.log)
	if err != nil {
		t.Fatal(err)
	}
	// The holder counts from before it asked, less the clock margin.
	if v := l.ValidUntil(); v < sent+ttl-ttl/ha.ClockMargin || v > ha.Mono()+ttl-ttl/ha.ClockMargin {
		t.Fatalf("ValidUntil %s after a grant sent at %s, want %s after it", v, sent, ttl-ttl/ha.ClockMargin)
	}
	renewed := make(chan time.Duration, 10)
	go l.Keep(f.ctx, func(v time.Duration) { renewed <- v })
	last := l.ValidUntil()
	for i := range 2 {
		select {
		case v := <-renewed:
			if v <= last || v != l.ValidUntil() {
				t.Fatalf("renewal %d: ValidUntil %s, was %s, and the lease says %s", i, v, last, l.ValidUntil())
			}
			last = v
		case <-time.After(ttl):
			t.Fatalf("no renewal %d within the TTL", i)
		}
	}
	select {
	case <-l.Lost():
		t.Fatal("a renewed lease is lost")
	default:
	}
}

func TestLeaseIsLostWhenTheStoreSaysItExpired(t *testing.T) {
	f := newFederation(t)
	const ttl = 3 * time.Second
	c := f.client("a", "")
	l, err := ha.Grant(f.ctx, c, ttl, f.log)
	if err != nil {
		t.Fatal(err)
	}
	go l.Keep(f.ctx, nil)
	// Revoked behind the keeper's back: its next renewal learns it.
	if err := c.Do(f.ctx, http.MethodDelete, "/v1/leases/"+l.ID, nil, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Lost():
	case <-time.After(ttl):
		t.Fatal("lease not lost a TTL after it was revoked")
	}
}

func TestLeaseCutOffIsLostNoEarlierThanValidUntil(t *testing.T) {
	f := newFederation(t)
	const ttl = 3 * time.Second
	px := newProxy(t, strings.TrimPrefix(f.sn.URL(), "https://"))
	l, err := ha.Grant(f.ctx, f.client("a", px.URL()), ttl, f.log)
	if err != nil {
		t.Fatal(err)
	}
	go l.Keep(f.ctx, nil)
	px.setCut(true)
	select {
	case <-l.Lost():
		if now, v := ha.Mono(), l.ValidUntil(); now < v {
			t.Errorf("lease lost %s before its ValidUntil", v-now)
		}
	case <-time.After(2 * ttl):
		t.Fatal("a lease that cannot be renewed is not lost after two TTLs")
	}
}
