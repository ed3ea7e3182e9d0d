package bench

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedkeeper/fedkeeper/ha"
)

func at(ms int64) time.Time { return time.UnixMilli(1_700_000_000_000 + ms) }

func TestParseHAEventReadsTokenAndTime(t *testing.T) {
	e, err := parseHAEvent("start bench ha-a 42 1795324774.160433")
	if err != nil {
		t.Fatal(err)
	}
	if e.Action != "start" || e.Group != "bench" || e.Node != "ha-a" || e.Token != 42 || !e.Time.Equal(time.Unix(1795324774, 160433000)) {
		t.Errorf("event = %+v", e)
	}
	e, err = parseHAEvent("stop bench ka-b - 1795324774,5")
	if err != nil {
		t.Fatal(err)
	}
	if e.Token != 0 || !e.Time.Equal(time.Unix(1795324774, 500000000)) {
		t.Errorf("event without a token, with a comma = %+v", e)
	}
	for _, bad := range []string{
		"start bench ha-a 42",
		"start bench ha-a x 1795324774.160433",
		"start bench ha-a 42 1795324774",
		"start bench ha-a 42 1795324774.1234567890",
		"start bench ha-a 42 now.123",
	} {
		if _, err := parseHAEvent(bad); err == nil {
			t.Errorf("parseHAEvent(%q) took it", bad)
		}
	}
}

func TestReplayHARefusesTwoMasters(t *testing.T) {
	events := []haEvent{
		{Action: "start", Node: "a", Token: 1, Time: at(0)},
		{Action: "status", Node: "a", Token: 1, Time: at(500)},
		// Logged late, but the times decide.
		{Action: "start", Node: "b", Token: 2, Time: at(3000)},
		{Action: "stop", Node: "a", Token: 1, Time: at(1000)},
	}
	running, err := replayHA(events)
	if err != nil {
		t.Fatal(err)
	}
	if len(running) != 1 || running[0].Node != "b" || running[0].Token != 2 {
		t.Errorf("running = %v, want b's start", running)
	}
	events[3].Time = at(3001)
	if _, err := replayHA(events); err == nil || !strings.Contains(err.Error(), "two masters") {
		t.Errorf("start of b before the stop of a: %v", err)
	}
	// A master that starts again (a new term) is no second master.
	again := []haEvent{
		{Action: "start", Node: "a", Token: 1, Time: at(0)},
		{Action: "start", Node: "a", Token: 5, Time: at(10)},
	}
	if running, err := replayHA(again); err != nil || len(running) != 1 || running[0].Token != 5 {
		t.Errorf("replay of a restart = %v, %v", running, err)
	}
}

func TestLastEventGoesByTime(t *testing.T) {
	events := []haEvent{
		{Action: "start", Node: "a", Time: at(200)},
		{Action: "stop", Node: "a", Time: at(100)},
		{Action: "stop", Node: "b", Time: at(300)},
	}
	if e, ok := lastEvent(events, "a"); !ok || e.Action != "start" {
		t.Errorf("last of a = %v, %v; want the start", e, ok)
	}
	if _, ok := lastEvent(events, "c"); ok {
		t.Error("c has a last event")
	}
}

func TestHAScriptLogsWhatTheParserReads(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	dir := t.TempDir()
	script, logFile := filepath.Join(dir, "ha.sh"), filepath.Join(dir, "it's.log")
	if err := writeHAScript(script, logFile); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	cmd := exec.Command(script, "start", "bench")
	cmd.Env = append(os.Environ(), ha.EnvNode+"=ha-a", ha.EnvFencingToken+"=7")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if out, err := exec.Command(script, "stop", "bench", "ka-b").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	l := &haLog{path: logFile}
	if err := l.read(); err != nil {
		t.Fatal(err)
	}
	if len(l.events) != 2 {
		t.Fatalf("events = %v", l.events)
	}
	s, k := l.events[0], l.events[1]
	if s.Action != "start" || s.Node != "ha-a" || s.Token != 7 || k.Action != "stop" || k.Node != "ka-b" || k.Token != 0 {
		t.Errorf("events = %+v", l.events)
	}
	if d := s.Time.Sub(before); d < -time.Millisecond || d > 10*time.Second {
		t.Errorf("start stamped %s after the bench's clock", d)
	}
}

func TestHALogKeepsAPartialLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	l := &haLog{path: path}
	if err := l.read(); err != nil || len(l.events) != 0 {
		t.Fatalf("read of no file = %v, %v", l.events, err)
	}
	if err := os.WriteFile(path, []byte("start bench a 1 1.5\nstop bench"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := l.read(); err != nil || len(l.events) != 1 {
		t.Fatalf("events = %v, %v", l.events, err)
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(" a 1 2.5\n")
	f.Close()
	if err := l.read(); err != nil || len(l.events) != 2 || l.events[1].Action != "stop" || l.events[1].Node != "a" {
		t.Fatalf("events = %v, %v", l.events, err)
	}
}

func TestGroupConfigFitsTheScriptTimeoutInShortLeases(t *testing.T) {
	for _, lease := range []time.Duration{2 * time.Second, 3 * time.Second, 10 * time.Second} {
		o := HAFailoverOptions{Trials: 1, LeaseTTL: lease}
		if err := o.validate(); err != nil {
			t.Fatal(err)
		}
		cfg := o.groupConfig(100, "/ha.sh")
		if err := cfg.Validate(); err != nil {
			t.Errorf("lease %s: %v", lease, err)
		}
		if lease == ha.DefaultLeaseTTL && cfg.ScriptTimeout != 0 {
			t.Errorf("default lease: script_timeout %s set, want the default", cfg.ScriptTimeout)
		}
	}
	if err := (HAFailoverOptions{Trials: 1, LeaseTTL: 3 * time.Second, TakeoverDelay: -time.Second}).validate(); err == nil {
		t.Error("a negative takeover delay was taken")
	}
}

func TestKeepalivedConfNotifiesWithTheNode(t *testing.T) {
	conf := keepalivedConf("ka-a", 100, "/d/ha.sh")
	for _, want := range []string{
		"state BACKUP\n\tnopreempt\n",
		"priority 100\n",
		"advert_int 1\n",
		"virtual_router_id 51\n",
		"192.0.2.100/24",
		`notify_master "/d/ha.sh start bench ka-a"`,
		`notify_backup "/d/ha.sh stop bench ka-a"`,
		`notify_stop "/d/ha.sh stop bench ka-a"`,
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("configuration lacks %q:\n%s", want, conf)
		}
	}
}
