package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/fedkeeper/fedkeeper/client"
	"github.com/fedkeeper/fedkeeper/internal/testcluster"
	"github.com/fedkeeper/fedkeeper/quorum"
)

// linInput is one key-value operation as a client issued it.
type linInput struct {
	Put   bool
	Key   string
	Value string // the value written by a put
}

// linOutput is what a client saw. For a get, Found and Value are the
// answer; a put's output carries nothing the model needs, only whether the
// client knows that it took effect.
type linOutput struct {
	Found   bool
	Value   string
	Unknown bool // a put whose outcome the client never learned
}

// linNever is the return time of a put whose outcome is unknown: after
// every other event, so that the checker may place it anywhere after its
// call, or leave it out.
const linNever = math.MaxInt64

// kvModel is the sequential specification of the key-value space: one
// register per key, partitioned by key, with "" for a key that does not
// exist (no value written by the test is empty).
var kvModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(linInput).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		sort.Strings(keys)
		var out [][]porcupine.Operation
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in, cur := input.(linInput), state.(string)
		if in.Put {
			return true, in.Value
		}
		out := output.(linOutput)
		if !out.Found {
			return cur == "", cur
		}
		return out.Value == cur, cur
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(linInput), output.(linOutput)
		switch {
		case in.Put && out.Unknown:
			return fmt.Sprintf("put(%s, %s) -> ?", in.Key, in.Value)
		case in.Put:
			return fmt.Sprintf("put(%s, %s)", in.Key, in.Value)
		case !out.Found:
			return fmt.Sprintf("get(%s) -> not found", in.Key)
		default:
			return fmt.Sprintf("get(%s) -> %s", in.Key, out.Value)
		}
	},
	DescribeState: func(state any) string {
		if state.(string) == "" {
			return "(none)"
		}
		return state.(string)
	},
}

// linHistory collects the operations of all clients.
type linHistory struct {
	base time.Time

	mu      sync.Mutex
	ops     []porcupine.Operation
	dropped map[string]string // value of a put known not to have been sent -> why
}

// now is nanoseconds since base on the monotonic clock.
func (h *linHistory) now() int64 { return int64(time.Since(h.base)) }

func (h *linHistory) add(op porcupine.Operation) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, op)
}

func (h *linHistory) drop(value, why string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dropped[value] = why
}

// linNotSent tells errors that prove the request never reached a server:
// the connection could not even be opened.
func linNotSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// linClients makes an API client pinned to each server of the credentials
// file, and one that fails over between all of them.
func linClients(t *testing.T, credsPath string) (pinned []*client.Client, failover *client.Client) {
	t.Helper()
	cr, err := client.LoadCredentials(credsPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range cr.Servers {
		c, err := cr.ClientFor([]string{s})
		if err != nil {
			t.Fatal(err)
		}
		pinned = append(pinned, c)
	}
	if failover, err = cr.Client(); err != nil {
		t.Fatal(err)
	}
	return pinned, failover
}

// linVoters reports the store's members through c and checks that there
// are exactly want voters, all healthy, and nobody else.
func linVoters(ctx context.Context, c *client.Client, want int) (leader string, err error) {
	var sns []quorum.Supernode
	if err := c.Do(ctx, http.MethodGet, "/v1/supernodes", nil, &sns); err != nil {
		return "", err
	}
	voters := 0
	for _, sn := range sns {
		if !sn.Voter || !sn.Healthy {
			return "", fmt.Errorf("supernode %s: voter=%v healthy=%v", sn.Name, sn.Voter, sn.Healthy)
		}
		voters++
		if sn.Leader {
			leader = sn.Name
		}
	}
	if voters != want {
		return "", fmt.Errorf("%d healthy voters, want %d", voters, want)
	}
	return leader, nil
}

// linWait retries fn every 200ms until it succeeds, timeout passes or
// stop is closed. It is safe to call from any goroutine.
func linWait(timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestKVStaysLinearizableWhileSupernodesFail runs clients against the
// key-value space of three voting supernodes while a nemesis kills,
// restarts, pauses and resumes them, and checks the history with
// porcupine: every read must see the latest write in some order that
// respects real time, and no acknowledged write may be lost.
func TestKVStaysLinearizableWhileSupernodesFail(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	const (
		workload     = 18 * time.Second // how long the clients run
		maxOpsClient = 1000             // and at most this many ops each
		// Longer than the API's own bound on a request (3s), so that the
		// clients also see the answers a supernode gives when that bound
		// runs out, as the CLI, which sets no deadline, does.
		pinnedTimeout = 5 * time.Second
		failTimeout   = 10 * time.Second
		downFor       = 2 * time.Second // a killed supernode stays down this long
	)
	keys := []string{"lin/a", "lin/b", "lin/c"}

	c := testcluster.New(t)
	timing := []string{"--dead-after", "3s"}
	sn1 := c.InitSupernode("sn1", timing...)
	sn2 := c.JoinSupernode(sn1, "sn2", false, timing...)
	sn3 := c.JoinSupernode(sn1, "sn3", false, timing...)
	sns := []*testcluster.Supernode{sn1, sn2, sn3}
	pinned, failover := linClients(t, c.Credentials(sn1, sn2, sn3))
	defer func() {
		for _, pc := range pinned {
			pc.CloseIdle()
		}
		failover.CloseIdle()
	}()
	if err := linWait(60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := linVoters(ctx, failover, 3)
		return err
	}); err != nil {
		t.Fatalf("three healthy voters never appeared: %v", err)
	}

	h := &linHistory{base: time.Now(), dropped: map[string]string{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup

	// Clients 0-2 are pinned to sn1-sn3; client 3 fails over between them.
	type clientStats struct {
		puts, gets, unknown, dropped int
		end                          time.Duration
	}
	stats := make([]clientStats, 4)
	for id := range 4 {
		cl, timeout := failover, failTimeout
		if id < 3 {
			cl, timeout = pinned[id], pinnedTimeout
		}
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(id), uint64(time.Now().UnixNano())))
			st := &stats[id]
			defer func() { st.end = time.Since(h.base) }()
			for n := 0; n < maxOpsClient; n++ {
				select {
				case <-stop:
					return
				default:
				}
				key := keys[rng.IntN(len(keys))]
				in := linInput{Key: key, Put: rng.IntN(2) == 0}
				if in.Put {
					in.Value = fmt.Sprintf("c%d-%d", id, n)
				}
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				var e struct {
					Key   string `json:"key"`
					Value string `json:"value"`
				}
				call := h.now()
				var err error
				if in.Put {
					err = cl.Do(ctx, http.MethodPut, "/v1/kv/"+key, map[string]string{"value": in.Value}, &e)
				} else {
					err = cl.Do(ctx, http.MethodGet, "/v1/kv/"+key, nil, &e)
				}
				ret := h.now()
				cancel()
				meta := fmt.Sprintf("client %d", id)
				var apiErr *client.Error
				isAPI := errors.As(err, &apiErr)
				switch {
				case err == nil && in.Put && e.Value != in.Value:
					t.Errorf("put %s=%s answered value %q", key, in.Value, e.Value)
					return
				case err == nil:
					out := linOutput{}
					if in.Put {
						st.puts++
					} else {
						out = linOutput{Found: true, Value: e.Value}
						st.gets++
					}
					h.add(porcupine.Operation{ClientId: id, Input: in, Call: call, Output: out, Return: ret, Metadata: meta})
				case !in.Put && isAPI && apiErr.Status == http.StatusNotFound && apiErr.Code == "not_found":
					st.gets++
					h.add(porcupine.Operation{ClientId: id, Input: in, Call: call, Output: linOutput{}, Return: ret, Metadata: meta})
				case isAPI && apiErr.Status >= 400 && apiErr.Status < 500:
					// The request was refused as such: a bug of the test or
					// of the API, not a fault.
					t.Errorf("client %d: %+v: %v", id, in, err)
					return
				case !in.Put:
					// A failed read changed nothing.
				case id < 3 && linNotSent(err):
					// A pinned client whose connection was refused sent
					// nothing. (The failover client may have sent the
					// request to another server before this error.)
					st.dropped++
					h.drop(in.Value, err.Error())
				default:
					// Timeout, reset connection, 503 or 500 after the
					// request was sent: the write may or may not have
					// happened, now or later.
					st.unknown++
					h.add(porcupine.Operation{ClientId: id, Input: in, Call: call, Output: linOutput{Unknown: true}, Return: linNever,
						Metadata: fmt.Sprintf("client %d, outcome unknown: %v", id, err)})
				}
				if err != nil {
					// Do not spin against a server that is down.
					time.Sleep(100 * time.Millisecond)
				} else {
					// Spread the ops over the whole run, faults included.
					time.Sleep(time.Duration(10+rng.IntN(30)) * time.Millisecond)
				}
			}
		})
	}

	// The nemesis: every round, kill -9 one supernode (the leader every
	// other round), restart it, then pause another one briefly. Only one
	// supernode is ever down at a time, so two of three always form the
	// store's quorum; before each fault it waits for three healthy voters.
	var kills, pauses atomic.Int32
	var faultLog []string
	nemesisDone := make(chan struct{})
	go func() {
		defer close(nemesisDone)
		rng := rand.New(rand.NewPCG(99, uint64(time.Now().UnixNano())))
		sleep := func(d time.Duration) bool {
			select {
			case <-stop:
				return false
			case <-time.After(d):
				return true
			}
		}
		healthy := func() (string, error) {
			var leader string
			err := linWait(20*time.Second, func() error {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				var err error
				leader, err = linVoters(ctx, failover, 3)
				return err
			})
			return leader, err
		}
		byName := func(name string) int {
			for i, sn := range sns {
				if sn.Name == name {
					return i
				}
			}
			return -1
		}
		last := -1
		for round := 0; ; round++ {
			if !sleep(time.Duration(500+rng.IntN(1000)) * time.Millisecond) {
				return
			}
			leader, err := healthy()
			if err != nil {
				t.Errorf("nemesis: supernodes not healthy before round %d: %v", round, err)
				return
			}
			victim := byName(leader)
			if round%2 == 1 || victim < 0 || victim == last {
				victim = (last + 1 + rng.IntN(2)) % 3
			}
			last = victim
			sn := sns[victim]
			faultLog = append(faultLog, fmt.Sprintf("%.1fs kill %s (leader %s)", time.Since(h.base).Seconds(), sn.Name, leader))
			sn.Kill()
			kills.Add(1)
			time.Sleep(downFor) // the supernode must come back even when stopping
			select {
			case <-sn.Done():
			default:
				t.Errorf("nemesis: %s still running after kill -9", sn.Name)
				return
			}
			// A joined supernode starts again from its data directory alone:
			// its first command line (--join, --token) is refused now.
			sn.Args = []string{"supernode", "--data-dir", sn.Dir}
			sn.Restart()
			faultLog = append(faultLog, fmt.Sprintf("%.1fs restart %s", time.Since(h.base).Seconds(), sn.Name))
			if !sleep(time.Duration(500+rng.IntN(1000)) * time.Millisecond) {
				return
			}
			if _, err := healthy(); err != nil {
				t.Errorf("nemesis: supernodes not healthy after restarting %s: %v", sn.Name, err)
				return
			}
			p := sns[rng.IntN(3)]
			faultLog = append(faultLog, fmt.Sprintf("%.1fs pause %s", time.Since(h.base).Seconds(), p.Name))
			p.Pause()
			pauses.Add(1)
			time.Sleep(time.Duration(1000+rng.IntN(2500)) * time.Millisecond)
			p.Resume()
			faultLog = append(faultLog, fmt.Sprintf("%.1fs resume %s", time.Since(h.base).Seconds(), p.Name))
		}
	}()

	time.Sleep(workload)
	close(stop)
	wg.Wait()
	<-nemesisDone
	workEnd := time.Since(h.base)
	t.Logf("faults: %s", strings.Join(faultLog, "; "))

	// Every supernode is back: read every key through each of them. The
	// reads join the history, so the checker also sees the final state.
	for i, sn := range sns {
		if err := linWait(30*time.Second, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			return pinned[i].Do(ctx, http.MethodGet, "/v1/live", nil, nil)
		}); err != nil {
			t.Fatalf("%s did not come back: %v", sn.Name, err)
		}
	}
	if err := linWait(30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := linVoters(ctx, failover, 3)
		return err
	}); err != nil {
		t.Fatalf("three healthy voters did not come back after the faults: %v", err)
	}
	final := map[string]map[string]linOutput{} // key -> supernode -> answer
	for _, key := range keys {
		final[key] = map[string]linOutput{}
		for i, sn := range sns {
			var out linOutput
			var call, ret int64
			if err := linWait(20*time.Second, func() error {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				var e struct {
					Value string `json:"value"`
				}
				call = h.now()
				err := pinned[i].Do(ctx, http.MethodGet, "/v1/kv/"+key, nil, &e)
				ret = h.now()
				var apiErr *client.Error
				switch {
				case err == nil:
					out = linOutput{Found: true, Value: e.Value}
				case errors.As(err, &apiErr) && apiErr.Code == "not_found":
					out = linOutput{}
				default:
					return err
				}
				return nil
			}); err != nil {
				t.Fatalf("final read of %s through %s: %v", key, sn.Name, err)
			}
			final[key][sn.Name] = out
			h.add(porcupine.Operation{ClientId: 4, Input: linInput{Key: key}, Call: call, Output: out, Return: ret,
				Metadata: "final read through " + sn.Name})
		}
	}

	var definite, unknown int
	puts := map[string]porcupine.Operation{} // by value
	for _, op := range h.ops {
		if op.Return == linNever {
			unknown++
		} else {
			definite++
		}
		if in := op.Input.(linInput); in.Put {
			puts[in.Value] = op
		}
	}
	for id, st := range stats {
		t.Logf("client %d: %d puts, %d gets acknowledged, %d puts of unknown outcome, %d puts never sent; stopped at %.1fs",
			id, st.puts, st.gets, st.unknown, st.dropped, st.end.Seconds())
	}
	t.Logf("history: %d operations (%d definite, %d puts of unknown outcome) in %s; %d kills, %d pauses",
		len(h.ops), definite, unknown, workEnd.Round(time.Millisecond), kills.Load(), pauses.Load())

	checkStart := time.Now()
	res := porcupine.CheckOperationsTimeout(kvModel, h.ops, 30*time.Second)
	t.Logf("porcupine: %s in %s", res, time.Since(checkStart).Round(time.Millisecond))
	switch res {
	case porcupine.Ok:
	case porcupine.Unknown:
		t.Errorf("porcupine could not decide within 30s whether the history of %d operations is linearizable; make the history smaller", len(h.ops))
	default:
		_, info := porcupine.CheckOperationsVerbose(kvModel, h.ops, 2*time.Minute)
		path := filepath.Join(os.TempDir(), fmt.Sprintf("fedkeeper-linearizability-%d.html", time.Now().UnixNano()))
		if err := porcupine.VisualizePath(kvModel, info, path); err != nil {
			t.Errorf("visualize the history: %v", err)
		}
		t.Errorf("the key-value history is NOT linearizable; visualization in %s", path)
	}

	// No acknowledged write is lost: every supernode holds the same final
	// value, written by a put that was acknowledged or may have happened,
	// and no acknowledged put of the key began after that put was
	// acknowledged (it would have overwritten it).
	for _, key := range keys {
		var want *linOutput
		for _, sn := range sns {
			got := final[key][sn.Name]
			if want == nil {
				want = &got
			} else if got != *want {
				t.Errorf("final %s differs between supernodes: %v", key, final[key])
			}
		}
		var acked []porcupine.Operation
		for _, op := range h.ops {
			if in := op.Input.(linInput); in.Put && in.Key == key && op.Return != linNever {
				acked = append(acked, op)
			}
		}
		if !want.Found {
			if len(acked) > 0 {
				t.Errorf("%s does not exist at the end, but %d puts of it were acknowledged", key, len(acked))
			}
			continue
		}
		w, ok := puts[want.Value]
		if !ok || w.Input.(linInput).Key != key {
			if why, dropped := h.dropped[want.Value]; dropped {
				t.Errorf("%s ends as %q, written by a put that was never sent (%s)", key, want.Value, why)
			} else {
				t.Errorf("%s ends as %q, which no put of that key wrote", key, want.Value)
			}
			continue
		}
		for _, a := range acked {
			if a.Input.(linInput).Value != want.Value && a.Call > w.Return {
				t.Errorf("acknowledged put(%s, %s) at %s is lost: %s ends as %q, acknowledged at %s before that put began",
					key, a.Input.(linInput).Value, time.Duration(a.Call), key, want.Value, time.Duration(w.Return))
			}
		}
	}

	// The run must have exercised something.
	if definite < 100 {
		t.Errorf("only %d definite operations; the history is too thin to mean anything", definite)
	}
	if kills.Load() == 0 || pauses.Load() == 0 {
		t.Errorf("the nemesis killed %d and paused %d supernodes; want at least one of each", kills.Load(), pauses.Load())
	}
	var ackedPuts, ackedGets int
	for _, st := range stats {
		ackedPuts += st.puts
		ackedGets += st.gets
	}
	if ackedPuts < 20 || ackedGets < 20 {
		t.Errorf("%d acknowledged puts and %d gets; want at least 20 of each", ackedPuts, ackedGets)
	}
}

// TestKVModelRejectsStaleReads makes sure the checker above is not
// vacuous: the model refuses stale and lost reads, and accepts a write of
// unknown outcome that took effect late.
func TestKVModelRejectsStaleReads(t *testing.T) {
	put := func(client int, value string, call, ret int64) porcupine.Operation {
		out := linOutput{Unknown: ret == linNever}
		return porcupine.Operation{ClientId: client, Input: linInput{Put: true, Key: "k", Value: value}, Call: call, Output: out, Return: ret}
	}
	get := func(client int, found bool, value string, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: linInput{Key: "k"}, Call: call, Output: linOutput{Found: found, Value: value}, Return: ret}
	}
	for _, tc := range []struct {
		name    string
		history []porcupine.Operation
		want    porcupine.CheckResult
	}{
		{"stale read", []porcupine.Operation{put(0, "x", 0, 10), put(1, "y", 20, 30), get(2, true, "x", 40, 50)}, porcupine.Illegal},
		{"lost write", []porcupine.Operation{put(0, "x", 0, 10), get(1, false, "", 20, 30)}, porcupine.Illegal},
		{"value never written", []porcupine.Operation{put(0, "x", 0, 10), get(1, true, "z", 20, 30)}, porcupine.Illegal},
		{"concurrent writes", []porcupine.Operation{put(0, "x", 0, 30), put(1, "y", 10, 20), get(2, true, "x", 40, 50)}, porcupine.Ok},
		{"unknown write applied late", []porcupine.Operation{put(0, "x", 0, linNever), put(1, "y", 20, 30), get(2, true, "y", 40, 50), get(2, true, "x", 60, 70)}, porcupine.Ok},
		{"unknown write never applied", []porcupine.Operation{put(0, "x", 0, linNever), get(1, false, "", 20, 30)}, porcupine.Ok},
		{"unknown write undone", []porcupine.Operation{put(0, "x", 0, linNever), get(1, true, "x", 20, 30), get(1, false, "", 40, 50)}, porcupine.Illegal},
	} {
		if got := porcupine.CheckOperationsTimeout(kvModel, tc.history, 10*time.Second); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}
