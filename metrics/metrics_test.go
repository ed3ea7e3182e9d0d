package metrics

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// promtoolCheck runs `promtool check metrics` on an exposition, which
// lints names, units, HELP and types the way Prometheus' own tooling does.
func promtoolCheck(t *testing.T, exposition []byte) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not in PATH (Debian: apt-get install prometheus); skipping the exposition lint")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "check", "metrics")
	cmd.Stdin = bytes.NewReader(exposition)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// scrape serves reg through Handler and returns the response body. It asks
// for protobuf first, as Prometheus does, to check that text comes back.
func scrape(t *testing.T, reg *prometheus.Registry) []byte {
	t.Helper()
	srv := httptest.NewServer(Handler(reg))
	defer srv.Close()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s\n%s", resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("Content-Type %q, want text/plain", ct)
	}
	return body
}

// mustParse parses an exposition written by hand in a test.
func mustParse(t *testing.T, text string) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := Parse(strings.NewReader(text))
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, text)
	}
	return fams
}

func TestParse(t *testing.T) {
	valid := "# TYPE fedkeeper_host_load1 gauge\nfedkeeper_host_load1 0.5\n"
	// Padding made of comment lines keeps the input valid, so that only
	// its size decides.
	pad := func(total int) string {
		line := "# padding padding padding padding padding padding padding\n"
		s := valid + strings.Repeat(line, (total-len(valid))/len(line))
		return s + strings.Repeat("#", total-len(s)-1) + "\n"
	}
	tests := []struct {
		name    string
		in      io.Reader
		wantErr error // nil: any error when wantOK is false
		wantOK  bool
	}{
		{name: "valid", in: strings.NewReader(valid), wantOK: true},
		{name: "empty", in: strings.NewReader(""), wantOK: true},
		{name: "exactly the limit", in: strings.NewReader(pad(MaxExpositionBytes)), wantOK: true},
		{name: "one byte over", in: strings.NewReader(pad(MaxExpositionBytes + 1)), wantErr: ErrTooLarge},
		{name: "endless", in: iotest.OneByteReader(zeros{}), wantErr: ErrTooLarge},
		{name: "html", in: strings.NewReader("<html><body>502 Bad Gateway</body></html>\n")},
		{name: "words", in: strings.NewReader("hello world\n")},
		{name: "unterminated labels", in: strings.NewReader("fedkeeper_host_load1{mode=\"x\" 1\n")},
		{name: "type clash", in: strings.NewReader("# TYPE a counter\n# TYPE a gauge\na 1\n")},
		{name: "binary", in: bytes.NewReader([]byte{0x1f, 0x8b, 0x08, 0x00, 0xff, 0x00})},
		{name: "reader fails", in: iotest.ErrReader(errBroken), wantErr: errBroken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fams, err := Parse(tt.in)
			switch {
			case tt.wantOK && err != nil:
				t.Fatalf("Parse: %v", err)
			case tt.wantOK:
				if tt.name != "empty" && fams["fedkeeper_host_load1"] == nil {
					t.Fatalf("families %v lack fedkeeper_host_load1", fams)
				}
			case err == nil:
				t.Fatalf("Parse accepted it: %v", fams)
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Fatalf("Parse error %v, want %v", err, tt.wantErr)
			}
		})
	}
}

var errBroken = errors.New("connection reset")

// zeros is an endless stream of '0' bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = '0'
	}
	return len(p), nil
}
