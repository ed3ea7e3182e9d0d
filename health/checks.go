// Package health tells how healthy the federation's nodes are. Every agent
// runs self-checks declared in its configuration (CheckConfig, RunCheck,
// Runner) and reports their results; statuses combine with Worse and
// Overall, so a node is as healthy as its worst check.
package health

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"
)

// Status of a check or a node.
type Status string

const (
	Passing  Status = "passing"
	Warning  Status = "warning"
	Critical Status = "critical"
)

// rank orders statuses from best to worst. A status this package does not
// know ranks as critical: whoever made it up, it is not a sign of health.
func (s Status) rank() int {
	switch s {
	case Passing:
		return 0
	case Warning:
		return 1
	default:
		return 2
	}
}

// Worse returns the worse of a and b.
func Worse(a, b Status) Status {
	if b.rank() > a.rank() {
		return b
	}
	return a
}

// Overall is the worst status among results, and Passing when there are
// none: a node that declares no checks has nothing wrong with it.
func Overall(results []Result) Status {
	s := Passing
	for _, r := range results {
		s = Worse(s, r.Status)
	}
	return s
}

// Check types.
const (
	TypeHTTP   = "http"
	TypeTCP    = "tcp"
	TypeScript = "script"
	TypeDisk   = "disk"
	TypeCert   = "cert"
)

var checkTypes = []string{TypeHTTP, TypeTCP, TypeScript, TypeDisk, TypeCert}

// Defaults and limits of check configuration.
const (
	DefaultInterval = 10 * time.Second
	// MinInterval keeps a mistyped interval from turning a check into a
	// busy loop against the service it watches.
	MinInterval    = time.Second
	DefaultTimeout = 5 * time.Second
	DefaultMinDays = 14
	// MaxOutput bounds Result.Output in bytes, so that a chatty script or
	// a large error page cannot bloat what the agent stores and reports.
	MaxOutput = 4 << 10
	// maxRedirects is how many redirects an http check follows; a service
	// that sends more is as good as broken.
	maxRedirects = 5
	maxMinDays   = 36500
)

// ErrInvalid marks errors caused by a bad check configuration.
var ErrInvalid = errors.New("invalid")

// CheckConfig is one self-check as declared in an agent's YAML
// configuration. Zero Interval, Timeout, ExpectStatus and MinDays mean
// their defaults (see WithDefaults).
type CheckConfig struct {
	// Name identifies the check on its node: a DNS label (1-63 lowercase
	// letters, digits and inner hyphens), like node names, because it ends
	// up in events, metrics labels and file names.
	Name string `yaml:"name" json:"name"`
	// Type is one of http, tcp, script, disk, cert.
	Type string `yaml:"type" json:"type"`
	// Interval between the starts of two runs; at least MinInterval.
	Interval time.Duration `yaml:"interval,omitempty" json:"interval,omitempty"`
	// Timeout bounds one run; at most Interval, so runs never overlap.
	Timeout time.Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`

	// http: GET URL (http or https) is passing when it answers
	// ExpectStatus (default 200), critical otherwise.
	URL          string `yaml:"url,omitempty" json:"url,omitempty"`
	ExpectStatus int    `yaml:"expect_status,omitempty" json:"expect_status,omitempty"`

	// tcp: passing when HOST:PORT accepts a connection.
	Address string `yaml:"address,omitempty" json:"address,omitempty"`

	// script: Command (program and arguments, no shell) exits 0 for
	// passing, 1 for warning and anything else for critical, as Nagios
	// plugins do; so does a timeout or a program that cannot be started.
	Command []string `yaml:"command,omitempty" json:"command,omitempty"`

	// disk: the file system holding Path is critical when less than
	// MinFree is available to unprivileged users and warning when less
	// than twice MinFree is. MinFree is a size ("10GiB", "500MB", "4096")
	// or a share of the file system's size ("5%").
	Path    string `yaml:"path,omitempty" json:"path,omitempty"`
	MinFree string `yaml:"min_free,omitempty" json:"min_free,omitempty"`

	// cert: the first certificate in the PEM file CertFile is critical
	// when it expires within MinDays days (default 14), has expired, is
	// not yet valid or cannot be read, and warning within 2×MinDays.
	CertFile string `yaml:"cert_file,omitempty" json:"cert_file,omitempty"`
	MinDays  int    `yaml:"min_days,omitempty" json:"min_days,omitempty"`
}

// WithDefaults returns c with every unset field that has a default filled
// in. The default timeout is DefaultTimeout, or the interval when that is
// shorter, so that a check with a short interval is valid without a
// timeout of its own.
func (c CheckConfig) WithDefaults() CheckConfig {
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Timeout == 0 {
		c.Timeout = min(DefaultTimeout, c.Interval)
	}
	if c.Type == TypeHTTP && c.ExpectStatus == 0 {
		c.ExpectStatus = http.StatusOK
	}
	if c.Type == TypeCert && c.MinDays == 0 {
		c.MinDays = DefaultMinDays
	}
	return c
}

var checkNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Validate reports every problem of c, each naming the check and the field
// as written in YAML. The errors wrap ErrInvalid.
func (c CheckConfig) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		label := "check with no name"
		if c.Name != "" {
			label = fmt.Sprintf("check %q", c.Name)
		}
		errs = append(errs, fmt.Errorf("%w: %s: %s: %s", ErrInvalid, label, field, fmt.Sprintf(format, args...)))
	}

	switch {
	case c.Name == "":
		bad("name", "required")
	case !checkNameRE.MatchString(c.Name):
		bad("name", "must be 1-63 lowercase letters, digits or inner hyphens")
	}
	switch {
	case c.Type == "":
		bad("type", "required (one of %s)", strings.Join(checkTypes, ", "))
	case !slices.Contains(checkTypes, c.Type):
		bad("type", "unknown type %q (want one of %s)", c.Type, strings.Join(checkTypes, ", "))
	}
	if c.Interval != 0 && c.Interval < MinInterval {
		bad("interval", "must be at least %v, got %v", MinInterval, c.Interval)
	}
	d := c.WithDefaults()
	switch {
	case c.Timeout < 0:
		bad("timeout", "must be positive, got %v", c.Timeout)
	case d.Timeout > d.Interval:
		bad("timeout", "%v is longer than the interval %v", d.Timeout, d.Interval)
	}

	// A field of another type is most likely a mistyped type or a field
	// put under the wrong check; running the check without it would
	// quietly test something else than the operator meant.
	for _, f := range []struct {
		name, typ string
		set       bool
	}{
		{"url", TypeHTTP, c.URL != ""},
		{"expect_status", TypeHTTP, c.ExpectStatus != 0},
		{"address", TypeTCP, c.Address != ""},
		{"command", TypeScript, len(c.Command) > 0},
		{"path", TypeDisk, c.Path != ""},
		{"min_free", TypeDisk, c.MinFree != ""},
		{"cert_file", TypeCert, c.CertFile != ""},
		{"min_days", TypeCert, c.MinDays != 0},
	} {
		if f.set && c.Type != f.typ && slices.Contains(checkTypes, c.Type) {
			bad(f.name, "belongs to %s checks, not %s", f.typ, c.Type)
		}
	}

	switch c.Type {
	case TypeHTTP:
		if c.URL == "" {
			bad("url", "required")
		} else if u, err := url.Parse(c.URL); err != nil {
			bad("url", "%v", err)
		} else if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("url", "%q must be http://HOST[:PORT]/PATH or https://…", c.URL)
		}
		if c.ExpectStatus != 0 && (c.ExpectStatus < 100 || c.ExpectStatus > 599) {
			bad("expect_status", "%d is not an HTTP status (100-599)", c.ExpectStatus)
		}
	case TypeTCP:
		if c.Address == "" {
			bad("address", "required")
		} else if host, port, err := net.SplitHostPort(c.Address); err != nil {
			bad("address", "%q must be HOST:PORT: %v", c.Address, err)
		} else if p, err := strconv.Atoi(port); host == "" || err != nil || p < 1 || p > 65535 {
			bad("address", "%q must be HOST:PORT with a port number 1-65535", c.Address)
		}
	case TypeScript:
		if len(c.Command) == 0 || c.Command[0] == "" {
			bad("command", "required: the program and its arguments")
		}
	case TypeDisk:
		if c.Path == "" {
			bad("path", "required")
		} else if !filepath.IsAbs(c.Path) {
			bad("path", "%q must be absolute", c.Path)
		}
		if c.MinFree == "" {
			bad("min_free", "required, e.g. 10GiB, 500MB or 5%%")
		} else if _, err := parseMinFree(c.MinFree); err != nil {
			bad("min_free", "%v", err)
		}
	case TypeCert:
		if c.CertFile == "" {
			bad("cert_file", "required")
		} else if !filepath.IsAbs(c.CertFile) {
			bad("cert_file", "%q must be absolute", c.CertFile)
		}
		// The upper bound keeps 2×min_days within a time.Duration.
		if c.MinDays < 0 || c.MinDays > maxMinDays {
			bad("min_days", "must be 0 (for %d) to %d, got %d", DefaultMinDays, maxMinDays, c.MinDays)
		}
	}
	return errors.Join(errs...)
}

// ValidateChecks validates every check and that no two share a name, since
// results and events are keyed by it.
func ValidateChecks(checks []CheckConfig) error {
	var errs []error
	seen := make(map[string]int, len(checks))
	for i, c := range checks {
		if err := c.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("checks[%d]: %w", i, err))
		}
		if c.Name == "" {
			continue
		}
		if j, dup := seen[c.Name]; dup {
			errs = append(errs, fmt.Errorf("%w: checks[%d]: check %q: name: already used by checks[%d]", ErrInvalid, i, c.Name, j))
		} else {
			seen[c.Name] = i
		}
	}
	return errors.Join(errs...)
}

// minFree is a parsed disk threshold: either bytes or percent is set.
type minFree struct {
	bytes   uint64
	percent float64
}

var sizeUnits = map[string]float64{
	"": 1, "B": 1,
	"KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "PB": 1e15,
	"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40, "PiB": 1 << 50,
}

func parseMinFree(s string) (minFree, error) {
	if num, ok := strings.CutSuffix(s, "%"); ok {
		p, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
		if err != nil || !(p > 0 && p < 100) {
			return minFree{}, fmt.Errorf("%q: a percentage must be a number above 0 and below 100", s)
		}
		return minFree{percent: p}, nil
	}
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		i = len(s)
	}
	mult, ok := sizeUnits[strings.TrimSpace(s[i:])]
	if !ok {
		return minFree{}, fmt.Errorf("%q: unknown unit %q (want B, KB, MB, GB, TB, PB, KiB, MiB, GiB, TiB, PiB or %%)", s, strings.TrimSpace(s[i:]))
	}
	n, err := strconv.ParseFloat(s[:i], 64)
	// The upper bound keeps twice the threshold within a uint64.
	if err != nil || n <= 0 || n*mult > math.MaxInt64 {
		return minFree{}, fmt.Errorf("%q: the size must be a number above 0 and at most 8EiB", s)
	}
	return minFree{bytes: uint64(math.Ceil(n * mult))}, nil
}

// Result is the outcome of one run of a check.
type Result struct {
	Name   string `json:"name"`
	Type   string `json:"type"`
	Status Status `json:"status"`
	// Output says why, in words for an operator: the script's output, the
	// HTTP status and the start of the body, the error. At most MaxOutput
	// bytes, ending in "(truncated)" when cut.
	Output string `json:"output"`
	// Time is when the run started; zero for a check not run yet.
	Time     time.Time     `json:"time"`
	Duration time.Duration `json:"duration_ns"`
}

const truncatedMark = "\n(truncated)"

// CutOutput bounds output from elsewhere (a check's summary, a service's
// report) to MaxOutput bytes, without splitting a character.
func CutOutput(s string) string {
	if len(s) <= MaxOutput {
		return s
	}
	// ToValidUTF8 drops a character the cut went through.
	return strings.ToValidUTF8(s[:MaxOutput], "")
}

// capOutput cuts s to MaxOutput bytes, on a character boundary, marking
// the cut.
func capOutput(s string) string {
	if len(s) <= MaxOutput {
		return s
	}
	cut := MaxOutput - len(truncatedMark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + truncatedMark
}

// RunCheck runs c once, bounded by its timeout and by ctx, and never
// panics: an invalid configuration, a failure and even a bug in a check
// all come back as a Critical result.
func RunCheck(ctx context.Context, c CheckConfig) (res Result) {
	start := time.Now()
	res = Result{Name: c.Name, Type: c.Type, Time: start}
	defer func() {
		if p := recover(); p != nil {
			res.Status, res.Output = Critical, fmt.Sprintf("check panicked: %v", p)
		}
		res.Duration = time.Since(start)
		res.Output = capOutput(res.Output)
	}()
	if err := c.Validate(); err != nil {
		res.Status, res.Output = Critical, err.Error()
		return res
	}
	c = c.WithDefaults()
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	switch c.Type {
	case TypeHTTP:
		res.Status, res.Output = checkHTTP(ctx, c)
	case TypeTCP:
		res.Status, res.Output = checkTCP(ctx, c)
	case TypeScript:
		res.Status, res.Output = checkScript(ctx, c)
	case TypeDisk:
		res.Status, res.Output = checkDisk(ctx, c)
	case TypeCert:
		res.Status, res.Output = checkCert(ctx, c, start)
	}
	return res
}

// failure words err for Output, saying "timeout" when the run ran out of
// time, which is what an operator most needs to tell apart from a refusal.
func failure(ctx context.Context, c CheckConfig, err error) string {
	var ne net.Error
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout()) {
		return fmt.Sprintf("timeout after %v: %v", c.Timeout, err)
	}
	return err.Error()
}

func checkHTTP(ctx context.Context, c CheckConfig) (Status, string) {
	// A client of its own per run: no connection is kept between runs, so
	// every run proves the service still accepts new connections, and no
	// proxy, because self-checks are about the node's own services.
	client := &http.Client{
		Timeout:   c.Timeout,
		Transport: &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			// via holds the requests made so far: the first and the
			// redirects followed.
			if len(via) > maxRedirects {
				// The last redirect becomes the answer, so Output
				// shows where it wanted to go.
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL, nil)
	if err != nil {
		return Critical, fmt.Sprintf("build request: %v", err)
	}
	req.Header.Set("User-Agent", "fedkeeper-health")
	resp, err := client.Do(req)
	if err != nil {
		return Critical, failure(ctx, c, err)
	}
	defer resp.Body.Close()
	// One byte over the cap tells capOutput that there was more.
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxOutput+1))
	head := fmt.Sprintf("GET %s: %s", resp.Request.URL, resp.Status)
	if err != nil {
		return Critical, fmt.Sprintf("%s; reading the body: %s", head, failure(ctx, c, err))
	}
	status := Passing
	if resp.StatusCode != c.ExpectStatus {
		status = Critical
		head += fmt.Sprintf(", expected %d", c.ExpectStatus)
	}
	if len(body) > 0 {
		head += "\n" + string(body)
	}
	return status, head
}

func checkTCP(ctx context.Context, c CheckConfig) (Status, string) {
	var d net.Dialer
	start := time.Now()
	conn, err := d.DialContext(ctx, "tcp", c.Address)
	if err != nil {
		return Critical, failure(ctx, c, err)
	}
	conn.Close()
	return Passing, fmt.Sprintf("connected to %s in %v", c.Address, time.Since(start).Round(time.Microsecond))
}

// cappedBuffer keeps the first MaxOutput+1 bytes written to it and drops
// the rest, while still accepting everything, so that a chatty script
// neither fills the agent's memory nor blocks on a full pipe.
type cappedBuffer struct {
	b []byte
}

func (w *cappedBuffer) Write(p []byte) (int, error) {
	if room := MaxOutput + 1 - len(w.b); room > 0 {
		w.b = append(w.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// scriptWaitDelay is how long a script's output is still read after the
// script itself has ended, for children that keep its stdout open.
const scriptWaitDelay = 500 * time.Millisecond

func checkScript(ctx context.Context, c CheckConfig) (Status, string) {
	cmd := exec.CommandContext(ctx, c.Command[0], c.Command[1:]...)
	out := &cappedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	// The script leads a process group of its own, so that on timeout its
	// children die with it instead of piling up, one lot per interval.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid) }
	cmd.WaitDelay = scriptWaitDelay
	if err := cmd.Start(); err != nil {
		return Critical, fmt.Sprintf("cannot run %s: %v", c.Command[0], err)
	}
	err := cmd.Wait()
	// Whatever the script left running in its group goes too: a check
	// runs every few seconds and must not leave anything behind. While a
	// member lives the group id stays taken, so this reaches only the
	// script's own; once none is left it reaches nobody (barring the
	// kernel handing the number to a new group leader in between, which
	// its sequential pid allocation makes practically impossible).
	killGroup(cmd.Process.Pid)

	text := string(out.b)
	if len(text) <= MaxOutput {
		text = strings.TrimSpace(text)
	}
	state := cmd.ProcessState
	if state == nil {
		return Critical, joinLines(fmt.Sprintf("wait for %s: %v", c.Command[0], err), text)
	}
	ws, _ := state.Sys().(syscall.WaitStatus)
	switch {
	case ctx.Err() != nil && !state.Exited():
		return Critical, joinLines(failure(ctx, c, errors.New("process group killed")), text)
	case ws.Signaled():
		return Critical, joinLines("killed by signal "+ws.Signal().String(), text)
	case err != nil && !errors.As(err, new(*exec.ExitError)) && !errors.Is(err, exec.ErrWaitDelay):
		return Critical, joinLines(fmt.Sprintf("wait for %s: %v", c.Command[0], err), text)
	}
	code := state.ExitCode()
	status := Critical
	switch code {
	case 0:
		status = Passing
	case 1:
		status = Warning
	}
	// The script's own words are enough unless it is critical or silent.
	if status == Critical || text == "" {
		text = joinLines(fmt.Sprintf("exit status %d", code), text)
	}
	return status, text
}

func killGroup(pgid int) error {
	err := syscall.Kill(-pgid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}

func joinLines(head, rest string) string {
	if rest == "" {
		return head
	}
	return head + "\n" + rest
}

// blocking tracks calls of runBlocking still under way, by key.
var blocking = struct {
	sync.Mutex
	busy map[string]bool
}{busy: map[string]bool{}}

// runBlocking runs fn, which may block in the kernel beyond any timeout
// (statfs or read on a hung NFS or Lustre mount, common on data nodes),
// and gives up when ctx ends. A call that gave up leaves fn running; while
// it runs, further calls with the same key fail at once, so a hung mount
// costs one stuck goroutine rather than one per interval.
func runBlocking(ctx context.Context, key string, fn func() error) error {
	blocking.Lock()
	if blocking.busy[key] {
		blocking.Unlock()
		return fmt.Errorf("an earlier %s has not returned yet", key)
	}
	blocking.busy[key] = true
	blocking.Unlock()

	done := make(chan error, 1)
	go func() {
		err := fn()
		blocking.Lock()
		delete(blocking.busy, key)
		blocking.Unlock()
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", key, ctx.Err())
	}
}

func checkDisk(ctx context.Context, c CheckConfig) (Status, string) {
	limit, err := parseMinFree(c.MinFree)
	if err != nil { // RunCheck has validated c; this is for the compiler.
		return Critical, err.Error()
	}
	var st syscall.Statfs_t
	if err := runBlocking(ctx, "statfs "+c.Path, func() error { return syscall.Statfs(c.Path, &st) }); err != nil {
		return Critical, failure(ctx, c, fmt.Errorf("statfs %s: %w", c.Path, err))
	}
	// Bavail, not Bfree: the blocks reserved for root are of no use to the
	// services that fill the disk.
	free := st.Bavail * uint64(st.Bsize)
	size := st.Blocks * uint64(st.Bsize)
	pct := 0.0
	if size > 0 {
		pct = float64(free) / float64(size) * 100
	}
	text := fmt.Sprintf("%s: %s free of %s (%.1f%%)", c.Path, formatBytes(free), formatBytes(size), pct)
	var below, belowTwice bool
	if limit.percent > 0 {
		below, belowTwice = pct < limit.percent, pct < 2*limit.percent
		text += fmt.Sprintf(", minimum %g%%", limit.percent)
	} else {
		// free/2 < min is free < 2*min without the overflow.
		below, belowTwice = free < limit.bytes, free/2 < limit.bytes
		text += ", minimum " + formatBytes(limit.bytes)
	}
	switch {
	case below:
		return Critical, text
	case belowTwice:
		return Warning, text
	default:
		return Passing, text
	}
}

func formatBytes(n uint64) string {
	const units = "KMGTPE"
	if n < 1<<10 {
		return fmt.Sprintf("%dB", n)
	}
	v, i := float64(n)/(1<<10), 0
	for v >= 1<<10 && i < len(units)-1 {
		v /= 1 << 10
		i++
	}
	return fmt.Sprintf("%.1f%ciB", v, units[i])
}

func checkCert(ctx context.Context, c CheckConfig, now time.Time) (Status, string) {
	var data []byte
	err := runBlocking(ctx, "read "+c.CertFile, func() error {
		var err error
		data, err = os.ReadFile(c.CertFile)
		return err
	})
	if err != nil {
		return Critical, failure(ctx, c, err)
	}
	var block *pem.Block
	for rest := data; ; {
		block, rest = pem.Decode(rest)
		if block == nil || block.Type == "CERTIFICATE" {
			break
		}
	}
	if block == nil {
		return Critical, fmt.Sprintf("%s: no PEM CERTIFICATE block", c.CertFile)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return Critical, fmt.Sprintf("%s: parse certificate: %v", c.CertFile, err)
	}
	left := cert.NotAfter.Sub(now)
	days := int(math.Floor(left.Hours() / 24))
	who := fmt.Sprintf("%s: certificate %q", c.CertFile, cert.Subject.String())
	day := 24 * time.Hour
	switch {
	case now.Before(cert.NotBefore):
		return Critical, fmt.Sprintf("%s is not valid before %s", who, cert.NotBefore.UTC().Format(time.RFC3339))
	case left <= 0:
		return Critical, fmt.Sprintf("%s expired %s (%d days ago)", who, cert.NotAfter.UTC().Format(time.RFC3339), -days)
	}
	text := fmt.Sprintf("%s expires %s (in %d days), minimum %d days", who, cert.NotAfter.UTC().Format(time.RFC3339), days, c.MinDays)
	switch {
	case left < time.Duration(c.MinDays)*day:
		return Critical, text
	case left < time.Duration(2*c.MinDays)*day:
		return Warning, text
	default:
		return Passing, text
	}
}

// notRunYet is what Results says of a check before its first run ends:
// Warning rather than Critical, because an agent that has just started is
// not known to be broken, and rather than Passing, because it is not
// known to be well either.
const notRunYet = "not run yet"

// Runner runs a node's checks, each on its own interval, and keeps the
// latest result of each. Its methods are safe for concurrent use.
type Runner struct {
	checks []CheckConfig
	log    *slog.Logger

	mu       sync.Mutex
	results  []Result // by index in checks
	ran      []bool
	onChange func(Result)
}

// NewRunner returns a runner of checks, which should have passed
// ValidateChecks: an invalid check still runs, on an interval of at least
// MinInterval, and reports Critical. A nil log means slog.Default().
func NewRunner(checks []CheckConfig, log *slog.Logger) *Runner {
	if log == nil {
		log = slog.Default()
	}
	r := &Runner{
		checks:  make([]CheckConfig, len(checks)),
		log:     log.With("component", "health"),
		results: make([]Result, len(checks)),
		ran:     make([]bool, len(checks)),
	}
	for i, c := range checks {
		r.checks[i] = c
		r.results[i] = Result{Name: c.Name, Type: c.Type, Status: Warning, Output: notRunYet}
	}
	return r
}

// OnChange makes the runner call fn with a check's result whenever its
// status differs from the check's previous one, and on its first result.
// fn replaces any earlier one. It is called from the checks' goroutines:
// one check's calls come in order, different checks' may overlap, and a
// slow fn delays the next run of its check.
func (r *Runner) OnChange(fn func(Result)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.onChange = fn
}

// Run runs every check at once and then every interval, until ctx ends;
// it returns when all runs under way have returned. Call it once.
func (r *Runner) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for i := range r.checks {
		wg.Go(func() { r.loop(ctx, i) })
	}
	wg.Wait()
}

func (r *Runner) loop(ctx context.Context, i int) {
	c := r.checks[i]
	interval := max(c.WithDefaults().Interval, MinInterval)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		res := RunCheck(ctx, c)
		if ctx.Err() != nil {
			// A run cut short by shutdown says nothing of the check.
			return
		}
		r.record(i, res)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *Runner) record(i int, res Result) {
	r.mu.Lock()
	prev, first := r.results[i].Status, !r.ran[i]
	r.results[i], r.ran[i] = res, true
	fn := r.onChange
	r.mu.Unlock()
	if !first && prev == res.Status {
		return
	}
	level := slog.LevelInfo
	switch res.Status {
	case Warning:
		level = slog.LevelWarn
	case Critical:
		level = slog.LevelError
	}
	from := string(prev)
	if first {
		from = notRunYet
	}
	r.log.Log(context.Background(), level, "check status changed",
		"check", res.Name, "type", res.Type, "from", from, "to", res.Status, "output", res.Output)
	if fn != nil {
		fn(res)
	}
}

// Results returns the latest result of every check, sorted by name. A
// check whose first run has not ended yet is reported as Warning with
// Output "not run yet" and a zero Time.
func (r *Runner) Results() []Result {
	r.mu.Lock()
	out := slices.Clone(r.results)
	r.mu.Unlock()
	slices.SortStableFunc(out, func(a, b Result) int { return strings.Compare(a.Name, b.Name) })
	return out
}
