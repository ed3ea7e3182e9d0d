package health

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestWorseAndOverall(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   []Status
		want Status
	}{
		{"no results are passing", nil, Passing},
		{"all passing", []Status{Passing, Passing}, Passing},
		{"a warning beats passing", []Status{Passing, Warning, Passing}, Warning},
		{"critical beats warning in any order", []Status{Critical, Warning}, Critical},
		{"critical beats warning in any order reversed", []Status{Warning, Critical}, Critical},
		{"an unknown status counts as critical", []Status{Passing, "bogus"}, "bogus"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rs []Result
			for _, s := range tc.in {
				rs = append(rs, Result{Status: s})
			}
			if got := Overall(rs); got != tc.want {
				t.Errorf("Overall(%v) = %q, want %q", tc.in, got, tc.want)
			}
			if len(tc.in) == 2 {
				if got := Worse(tc.in[0], tc.in[1]); got != tc.want {
					t.Errorf("Worse(%q, %q) = %q, want %q", tc.in[0], tc.in[1], got, tc.want)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	ok := map[string]CheckConfig{
		"http":   {Name: "web", Type: TypeHTTP, URL: "https://localhost:8443/thredds"},
		"tcp":    {Name: "solr", Type: TypeTCP, Address: "localhost:8983"},
		"script": {Name: "fm", Type: TypeScript, Command: []string{"/usr/lib/nagios/plugins/check_load", "-w", "5"}},
		"disk":   {Name: "data", Type: TypeDisk, Path: "/data", MinFree: "10GiB"},
		"cert":   {Name: "hostcert", Type: TypeCert, CertFile: "/etc/grid-security/hostcert.pem"},
	}
	with := func(typ string, f func(*CheckConfig)) CheckConfig {
		c := ok[typ]
		f(&c)
		return c
	}
	for _, tc := range []struct {
		name  string
		cfg   CheckConfig
		field string // "" for valid
	}{
		{"minimal http is valid", ok["http"], ""},
		{"minimal tcp is valid", ok["tcp"], ""},
		{"minimal script is valid", ok["script"], ""},
		{"minimal disk is valid", ok["disk"], ""},
		{"minimal cert is valid", ok["cert"], ""},
		{"short interval gets a timeout no longer than it", with("tcp", func(c *CheckConfig) { c.Interval = 2 * time.Second }), ""},
		{"percentage min_free is valid", with("disk", func(c *CheckConfig) { c.MinFree = "5%" }), ""},
		{"expect_status other than 200 is valid", with("http", func(c *CheckConfig) { c.ExpectStatus = 401 }), ""},

		{"missing name", with("tcp", func(c *CheckConfig) { c.Name = "" }), "name"},
		{"uppercase name", with("tcp", func(c *CheckConfig) { c.Name = "Solr" }), "name"},
		{"name with a leading hyphen", with("tcp", func(c *CheckConfig) { c.Name = "-solr" }), "name"},
		{"name of 64 characters", with("tcp", func(c *CheckConfig) { c.Name = strings.Repeat("a", 64) }), "name"},
		{"name with a dot", with("tcp", func(c *CheckConfig) { c.Name = "solr.main" }), "name"},
		{"missing type", with("tcp", func(c *CheckConfig) { c.Type = "" }), "type"},
		{"unknown type", with("tcp", func(c *CheckConfig) { c.Type = "ftp" }), "type"},
		{"interval below a second", with("tcp", func(c *CheckConfig) { c.Interval = 500 * time.Millisecond }), "interval"},
		{"negative interval", with("tcp", func(c *CheckConfig) { c.Interval = -time.Second }), "interval"},
		{"negative timeout", with("tcp", func(c *CheckConfig) { c.Timeout = -time.Second }), "timeout"},
		{"timeout longer than interval", with("tcp", func(c *CheckConfig) { c.Interval, c.Timeout = 2*time.Second, 3*time.Second }), "timeout"},
		{"timeout longer than the default interval", with("tcp", func(c *CheckConfig) { c.Timeout = time.Minute }), "timeout"},

		{"http without url", with("http", func(c *CheckConfig) { c.URL = "" }), "url"},
		{"http with an ftp url", with("http", func(c *CheckConfig) { c.URL = "ftp://host/x" }), "url"},
		{"http url without host", with("http", func(c *CheckConfig) { c.URL = "http:///path" }), "url"},
		{"http url that does not parse", with("http", func(c *CheckConfig) { c.URL = "http://host:port:x/%zz" }), "url"},
		{"expect_status out of range", with("http", func(c *CheckConfig) { c.ExpectStatus = 42 }), "expect_status"},

		{"tcp without address", with("tcp", func(c *CheckConfig) { c.Address = "" }), "address"},
		{"tcp address without port", with("tcp", func(c *CheckConfig) { c.Address = "localhost" }), "address"},
		{"tcp address without host", with("tcp", func(c *CheckConfig) { c.Address = ":8983" }), "address"},
		{"tcp port zero", with("tcp", func(c *CheckConfig) { c.Address = "localhost:0" }), "address"},
		{"tcp port too large", with("tcp", func(c *CheckConfig) { c.Address = "localhost:99999" }), "address"},
		{"tcp port by service name", with("tcp", func(c *CheckConfig) { c.Address = "localhost:http" }), "address"},

		{"script without command", with("script", func(c *CheckConfig) { c.Command = nil }), "command"},
		{"script with an empty program", with("script", func(c *CheckConfig) { c.Command = []string{"", "-x"} }), "command"},

		{"disk without path", with("disk", func(c *CheckConfig) { c.Path = "" }), "path"},
		{"disk with a relative path", with("disk", func(c *CheckConfig) { c.Path = "data" }), "path"},
		{"disk without min_free", with("disk", func(c *CheckConfig) { c.MinFree = "" }), "min_free"},
		{"min_free with an unknown unit", with("disk", func(c *CheckConfig) { c.MinFree = "10XB" }), "min_free"},
		{"min_free of zero", with("disk", func(c *CheckConfig) { c.MinFree = "0" }), "min_free"},
		{"min_free of 100 percent", with("disk", func(c *CheckConfig) { c.MinFree = "100%" }), "min_free"},
		{"negative min_free percentage", with("disk", func(c *CheckConfig) { c.MinFree = "-5%" }), "min_free"},
		{"min_free that is not a number", with("disk", func(c *CheckConfig) { c.MinFree = "lots" }), "min_free"},
		{"min_free beyond 8EiB", with("disk", func(c *CheckConfig) { c.MinFree = "9000PiB" }), "min_free"},

		{"cert without cert_file", with("cert", func(c *CheckConfig) { c.CertFile = "" }), "cert_file"},
		{"cert with a relative cert_file", with("cert", func(c *CheckConfig) { c.CertFile = "host.pem" }), "cert_file"},
		{"negative min_days", with("cert", func(c *CheckConfig) { c.MinDays = -1 }), "min_days"},
		{"min_days beyond a century", with("cert", func(c *CheckConfig) { c.MinDays = 40000 }), "min_days"},

		{"field of another check type", with("tcp", func(c *CheckConfig) { c.URL = "http://localhost/" }), "url"},
		{"min_days on a disk check", with("disk", func(c *CheckConfig) { c.MinDays = 3 }), "min_days"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want an error naming %s", tc.field)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), " "+tc.field+": ") {
				t.Errorf("error %q does not name the field %s", err, tc.field)
			}
			if tc.cfg.Name != "" && !strings.Contains(err.Error(), strconv.Quote(tc.cfg.Name)) {
				t.Errorf("error %q does not name the check %q", err, tc.cfg.Name)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	err := CheckConfig{Name: "disk", Type: TypeDisk, Interval: time.Millisecond, Path: "rel"}.Validate()
	for _, field := range []string{"interval", "path", "min_free"} {
		if err == nil || !strings.Contains(err.Error(), " "+field+": ") {
			t.Errorf("error %v does not name %s", err, field)
		}
	}
}

func TestValidateChecks(t *testing.T) {
	t.Parallel()
	tcp := func(name string) CheckConfig {
		return CheckConfig{Name: name, Type: TypeTCP, Address: "localhost:1"}
	}
	for _, tc := range []struct {
		name   string
		checks []CheckConfig
		want   []string // substrings of the error; none for valid
	}{
		{"no checks are valid", nil, nil},
		{"distinct names are valid", []CheckConfig{tcp("a"), tcp("b")}, nil},
		{"a duplicate name names both positions", []CheckConfig{tcp("a"), tcp("b"), tcp("a")}, []string{`checks[2]: check "a": name: already used by checks[0]`}},
		{"an invalid check is named by position", []CheckConfig{tcp("a"), {Name: "b", Type: TypeTCP}}, []string{`checks[1]:`, `check "b": address`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateChecks(tc.checks)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("ValidateChecks = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ValidateChecks = %v, want an ErrInvalid", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestCheckConfigFromYAML(t *testing.T) {
	t.Parallel()
	const doc = `
- name: thredds
  type: http
  url: https://localhost:8443/thredds/catalog.xml
  interval: 30s
  timeout: 2s
- name: data
  type: disk
  path: /data
  min_free: 5%
`
	var checks []CheckConfig
	if err := yaml.Unmarshal([]byte(doc), &checks); err != nil {
		t.Fatal(err)
	}
	if err := ValidateChecks(checks); err != nil {
		t.Fatal(err)
	}
	if got := checks[0]; got.Interval != 30*time.Second || got.Timeout != 2*time.Second {
		t.Errorf("interval, timeout = %v, %v; want 30s, 2s", got.Interval, got.Timeout)
	}
	if got := checks[1].WithDefaults(); got.Interval != DefaultInterval || got.Timeout != DefaultTimeout {
		t.Errorf("defaults: interval, timeout = %v, %v; want %v, %v", got.Interval, got.Timeout, DefaultInterval, DefaultTimeout)
	}
}

func TestParseMinFree(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want minFree
	}{
		{"1", minFree{bytes: 1}},
		{"4096B", minFree{bytes: 4096}},
		{"500MB", minFree{bytes: 500e6}},
		{"10GiB", minFree{bytes: 10 << 30}},
		{"10 GiB", minFree{bytes: 10 << 30}},
		{"1.5KiB", minFree{bytes: 1536}},
		{"2TB", minFree{bytes: 2e12}},
		{"5%", minFree{percent: 5}},
		{"0.5%", minFree{percent: 0.5}},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseMinFree(tc.in)
			if err != nil || got != tc.want {
				t.Errorf("parseMinFree(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestResultJSONKeys(t *testing.T) {
	t.Parallel()
	b, err := json.Marshal(Result{Name: "a", Status: Passing})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := []string{"duration_ns", "name", "output", "status", "time", "type"}
	if !slices.Equal(keys, want) {
		t.Errorf("JSON keys = %v, want %v", keys, want)
	}
}

func TestRunCheckInvalidConfigIsCritical(t *testing.T) {
	t.Parallel()
	res := RunCheck(context.Background(), CheckConfig{Name: "x", Type: "ftp"})
	if res.Status != Critical || !strings.Contains(res.Output, "type") {
		t.Errorf("got %s %q, want critical naming the type", res.Status, res.Output)
	}
}

// want checks a result's status and that its output holds every substring.
func want(t *testing.T, res Result, status Status, output ...string) {
	t.Helper()
	if res.Status != status {
		t.Errorf("status = %s, want %s; output %q", res.Status, status, res.Output)
	}
	for _, o := range output {
		if !strings.Contains(res.Output, o) {
			t.Errorf("output %q lacks %q", res.Output, o)
		}
	}
	if len(res.Output) > MaxOutput {
		t.Errorf("output is %d bytes, more than %d", len(res.Output), MaxOutput)
	}
}

func TestHTTPCheck(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", 10<<10)
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		cfg     CheckConfig // Name, Type and URL are filled in
		status  Status
		output  []string
		capped  bool
	}{
		{
			name:    "200 is passing",
			handler: func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "all good") },
			status:  Passing,
			output:  []string{"200 OK", "all good"},
		},
		{
			name:    "500 is critical",
			handler: func(w http.ResponseWriter, r *http.Request) { http.Error(w, "solr is down", 500) },
			status:  Critical,
			output:  []string{"500", "solr is down", "expected 200"},
		},
		{
			name:    "a status other than the expected one is critical",
			handler: func(w http.ResponseWriter, r *http.Request) {},
			cfg:     CheckConfig{ExpectStatus: 204},
			status:  Critical,
			output:  []string{"200 OK", "expected 204"},
		},
		{
			name:    "the expected status is passing even when it is an error",
			handler: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(401) },
			cfg:     CheckConfig{ExpectStatus: 401},
			status:  Passing,
			output:  []string{"401"},
		},
		{
			name: "a server slower than the timeout is critical",
			handler: func(w http.ResponseWriter, r *http.Request) {
				<-r.Context().Done()
			},
			cfg:    CheckConfig{Interval: time.Second, Timeout: 200 * time.Millisecond},
			status: Critical,
			output: []string{"timeout"},
		},
		{
			name:    "a large body is capped",
			handler: func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, big) },
			status:  Passing,
			output:  []string{"200 OK", "xxxx", "(truncated)"},
			capped:  true,
		},
		{
			name: "a redirect is followed",
			handler: func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/" {
					http.Redirect(w, r, "/there", http.StatusFound)
					return
				}
				fmt.Fprint(w, "arrived")
			},
			status: Passing,
			output: []string{"/there", "arrived"},
		},
		{
			name: "a redirect loop is critical",
			handler: func(w http.ResponseWriter, r *http.Request) {
				n, _ := strconv.Atoi(r.URL.Query().Get("n"))
				http.Redirect(w, r, fmt.Sprintf("/?n=%d", n+1), http.StatusFound)
			},
			status: Critical,
			// After five redirects, the sixth is the answer.
			output: []string{"/?n=5: 302", "expected 200"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			cfg := tc.cfg
			cfg.Name, cfg.Type, cfg.URL = "web", TypeHTTP, srv.URL+"/"
			res := RunCheck(context.Background(), cfg)
			want(t, res, tc.status, tc.output...)
			if tc.capped && (len(res.Output) != MaxOutput || !strings.HasSuffix(res.Output, "(truncated)")) {
				t.Errorf("output is %d bytes ending %q, want %d ending (truncated)", len(res.Output), res.Output[max(0, len(res.Output)-20):], MaxOutput)
			}
			if res.Name != "web" || res.Type != TypeHTTP || res.Time.IsZero() || res.Duration <= 0 {
				t.Errorf("result %+v lacks name, type, time or duration", res)
			}
		})
	}
}

func TestTCPCheck(t *testing.T) {
	t.Parallel()
	open, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	for _, tc := range []struct {
		name, addr string
		status     Status
		output     string
	}{
		{"a listening port is passing", open.Addr().String(), Passing, "connected to"},
		{"a closed port is critical", closedAddr, Critical, "refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := RunCheck(context.Background(), CheckConfig{Name: "port", Type: TypeTCP, Address: tc.addr})
			want(t, res, tc.status, tc.output)
		})
	}
}

// gone reports whether process pid no longer runs: it does not exist, or
// it is a zombie its new parent has not reaped yet.
func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name in parentheses.
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(fields) > 0 && fields[0] == "Z"
}

// waitGone fails t unless process pid is gone within a few seconds.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !gone(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("process %d still runs", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestScriptCheck(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		script  string // run by sh -c; $1 is a file to write a child's pid to
		timeout time.Duration
		status  Status
		output  []string
		// child: the script wrote the pid of a child to $1, which
		// must be gone when the check returns.
		child  bool
		capped bool
	}{
		{name: "exit 0 is passing", script: "echo fine", status: Passing, output: []string{"fine"}},
		{name: "silent exit 0 says its status", script: "true", status: Passing, output: []string{"exit status 0"}},
		{name: "exit 1 is warning", script: "echo load high; exit 1", status: Warning, output: []string{"load high"}},
		{name: "exit 2 is critical", script: "echo down >&2; exit 2", status: Critical, output: []string{"exit status 2", "down"}},
		{name: "exit 3 (unknown) is critical", script: "exit 3", status: Critical, output: []string{"exit status 3"}},
		{name: "death by signal is critical", script: "kill -9 $$", status: Critical, output: []string{"killed by signal"}},
		{
			name:    "a script beyond its timeout is killed with its child",
			script:  `sleep 60 & echo $! > "$1"; echo started; wait`,
			timeout: 300 * time.Millisecond,
			status:  Critical,
			output:  []string{"timeout", "started"},
			child:   true,
		},
		{
			name:   "a child left running after exit is killed and the exit status kept",
			script: `sleep 60 & echo $! > "$1"; echo ok`,
			status: Passing,
			output: []string{"ok"},
			child:  true,
		},
		{
			name:   "output is capped",
			script: `i=0; while [ $i -lt 1000 ]; do echo "line $i of a chatty plugin"; i=$((i+1)); done`,
			status: Passing,
			output: []string{"line 0 of", "(truncated)"},
			capped: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pidfile := filepath.Join(t.TempDir(), "child.pid")
			cfg := CheckConfig{Name: "script", Type: TypeScript, Command: []string{"/bin/sh", "-c", tc.script, "sh", pidfile}}
			if tc.timeout > 0 {
				cfg.Interval, cfg.Timeout = time.Second, tc.timeout
			}
			start := time.Now()
			res := RunCheck(context.Background(), cfg)
			want(t, res, tc.status, tc.output...)
			if tc.timeout > 0 && time.Since(start) > tc.timeout+2*time.Second {
				t.Errorf("check took %v with a timeout of %v", time.Since(start), tc.timeout)
			}
			if tc.capped && len(res.Output) != MaxOutput {
				t.Errorf("output is %d bytes, want %d", len(res.Output), MaxOutput)
			}
			if tc.child {
				b, err := os.ReadFile(pidfile)
				if err != nil {
					t.Fatal(err)
				}
				pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
				if err != nil {
					t.Fatal(err)
				}
				waitGone(t, pid)
			}
		})
	}
}

func TestScriptCheckProgramNotFound(t *testing.T) {
	t.Parallel()
	res := RunCheck(context.Background(), CheckConfig{Name: "x", Type: TypeScript, Command: []string{"/nonexistent/check_thing"}})
	want(t, res, Critical, "cannot run /nonexistent/check_thing")
}

func TestDiskCheck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	free := st.Bavail * uint64(st.Bsize)
	pct := float64(st.Bavail) / float64(st.Blocks) * 100
	if st.Blocks == 0 || free < 1<<20 || pct < 0.1 {
		t.Skipf("too little free space on %s to pick thresholds (%d bytes, %.3f%%)", dir, free, pct)
	}
	percent := func(p float64) string { return strconv.FormatFloat(p, 'f', 6, 64) + "%" }

	// Thresholds keep a margin of a quarter of the free space, so that
	// other tests writing to the same disk do not change the outcome.
	for _, tc := range []struct {
		name, path, minFree string
		status              Status
		output              string
	}{
		{"one byte free is passing", dir, "1", Passing, "free of"},
		{"an impossible minimum is critical", dir, "99999TiB", Critical, "minimum 97.7PiB"},
		{"free below twice the minimum is warning", dir, strconv.FormatUint(free/4*3, 10), Warning, "free of"},
		{"free below the minimum is critical", dir, strconv.FormatUint(free/4*5, 10), Critical, "free of"},
		{"a percentage well below the free share is passing", dir, percent(pct / 3), Passing, "%"},
		{"a percentage above half the free share is warning", dir, percent(pct * 3 / 4), Warning, "%"},
		{"a percentage above the free share is critical", dir, percent((pct + 100) / 2), Critical, "%"},
		{"a missing path is critical", filepath.Join(dir, "missing"), "1", Critical, "statfs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := RunCheck(context.Background(), CheckConfig{Name: "data", Type: TypeDisk, Path: tc.path, MinFree: tc.minFree})
			want(t, res, tc.status, tc.output)
		})
	}
}

// writeCert writes a self-signed certificate valid from notBefore to
// notAfter, after a private key block when keyFirst, and returns its path.
func writeCert(t *testing.T, notBefore, notAfter time.Time, keyFirst bool) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "node1.example.org"},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	if keyFirst {
		kb, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		out = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	}
	out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	path := filepath.Join(t.TempDir(), "cert.pem")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCertCheck(t *testing.T) {
	t.Parallel()
	now := time.Now()
	day := 24 * time.Hour
	valid := func(left time.Duration) func(*testing.T) string {
		return func(t *testing.T) string { return writeCert(t, now.Add(-day), now.Add(left), false) }
	}
	garbage := func(t *testing.T) string {
		p := filepath.Join(t.TempDir(), "cert.pem")
		if err := os.WriteFile(p, []byte("not a certificate\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name    string
		file    func(*testing.T) string
		minDays int
		status  Status
		output  string
	}{
		{"100 days left is passing", valid(100 * day), 14, Passing, "in 99 days"},
		{"20 days left is warning", valid(20 * day), 14, Warning, "in 19 days"},
		{"20 days left is warning with the default min_days", valid(20 * day), 0, Warning, "minimum 14 days"},
		{"5 days left is critical", valid(5 * day), 14, Critical, "in 4 days"},
		{"an expired certificate is critical", valid(-3 * day), 14, Critical, "expired"},
		{"a certificate not yet valid is critical", func(t *testing.T) string {
			return writeCert(t, now.Add(day), now.Add(100*day), false)
		}, 14, Critical, "not valid before"},
		{"the first CERTIFICATE block counts, after a key", func(t *testing.T) string {
			return writeCert(t, now.Add(-day), now.Add(100*day), true)
		}, 14, Passing, "node1.example.org"},
		{"a missing file is critical", func(t *testing.T) string {
			return filepath.Join(t.TempDir(), "missing.pem")
		}, 14, Critical, "no such file"},
		{"a file without a certificate is critical", garbage, 14, Critical, "no PEM CERTIFICATE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res := RunCheck(context.Background(), CheckConfig{Name: "hostcert", Type: TypeCert, CertFile: tc.file(t), MinDays: tc.minDays})
			want(t, res, tc.status, tc.output)
		})
	}
}

func TestRunBlockingGivesUpAndDoesNotPileUp(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	key := "test " + t.Name()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := runBlocking(ctx, key, func() error { <-release; return nil })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("first call = %v, want a deadline error", err)
	}
	// The first call is still stuck: a second one must not start another.
	started := false
	err = runBlocking(context.Background(), key, func() error { started = true; return nil })
	if err == nil || !strings.Contains(err.Error(), "has not returned yet") || started {
		t.Fatalf("second call = %v (started %v), want a refusal without running", err, started)
	}
	if err := runBlocking(context.Background(), key+" other", func() error { return nil }); err != nil {
		t.Fatalf("call with another key = %v", err)
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for runBlocking(context.Background(), key, func() error { return nil }) != nil {
		if time.Now().After(deadline) {
			t.Fatal("key still busy after the stuck call returned")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRunnerRunsEachCheckRepeatedlyAndSortsResults(t *testing.T) {
	t.Parallel()
	hits := make(chan struct{}, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits <- struct{}{} }))
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	r := NewRunner([]CheckConfig{
		{Name: "web", Type: TypeHTTP, URL: srv.URL, Interval: time.Second},
		{Name: "port", Type: TypeTCP, Address: ln.Addr().String(), Interval: time.Second},
		// Invalid, with an interval that would make a ticker panic.
		{Name: "broken", Type: "ftp", Interval: -time.Second},
	}, slog.New(slog.DiscardHandler))

	names := func(rs []Result) []string {
		var n []string
		for _, r := range rs {
			n = append(n, r.Name)
		}
		return n
	}
	sorted := []string{"broken", "port", "web"}
	before := r.Results()
	if !slices.Equal(names(before), sorted) {
		t.Fatalf("names before running = %v, want %v", names(before), sorted)
	}
	for _, res := range before {
		if res.Status != Warning || res.Output != "not run yet" || !res.Time.IsZero() {
			t.Errorf("before running: %+v, want warning, not run yet", res)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	for i := range 2 {
		select {
		case <-hits:
		case <-time.After(5 * time.Second):
			cancel()
			t.Fatalf("http check ran %d times in 5s, want 2", i)
		}
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}

	after := r.Results()
	if !slices.Equal(names(after), sorted) {
		t.Fatalf("names = %v, want %v", names(after), sorted)
	}
	for _, res := range after {
		wantStatus := Passing
		if res.Name == "broken" {
			wantStatus = Critical
		}
		if res.Status != wantStatus || res.Time.IsZero() {
			t.Errorf("%s: %s at %v (%q), want %s after a run", res.Name, res.Status, res.Time, res.Output, wantStatus)
		}
	}
	if got := Overall(after); got != Critical {
		t.Errorf("Overall = %s, want critical", got)
	}
}

func TestRunnerOnChangeFiresOnStatusChangesOnly(t *testing.T) {
	t.Parallel()
	var healthy atomic.Bool
	healthy.Store(true)
	hits := make(chan struct{}, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits <- struct{}{}
		if !healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()

	r := NewRunner([]CheckConfig{{Name: "web", Type: TypeHTTP, URL: srv.URL, Interval: time.Second}}, slog.New(slog.DiscardHandler))
	changes := make(chan Result, 100)
	r.OnChange(func(res Result) { changes <- res })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)

	next := func(what string) Result {
		t.Helper()
		select {
		case res := <-changes:
			return res
		case <-time.After(5 * time.Second):
			t.Fatalf("no change within 5s, waiting for %s", what)
			return Result{}
		}
	}
	if res := next("the first result"); res.Status != Passing {
		t.Fatalf("first change = %s (%q), want passing", res.Status, res.Output)
	}
	healthy.Store(false)
	if res := next("the failure"); res.Status != Critical || !strings.Contains(res.Output, "503") {
		t.Fatalf("second change = %s (%q), want critical with 503", res.Status, res.Output)
	}
	// Runs of one check are sequential, so by the fourth request the third
	// run, critical again, has finished recording and would have called
	// OnChange.
	for seen := 0; seen < 4; {
		select {
		case <-hits:
			seen++
		case <-time.After(5 * time.Second):
			t.Fatal("check stopped running")
		}
	}
	select {
	case res := <-changes:
		t.Fatalf("OnChange called without a status change: %+v", res)
	default:
	}
	if got := r.Results(); got[0].Status != Critical || Overall(got) != Critical {
		t.Errorf("Results = %+v, want critical", got)
	}
}
