package nameserver

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// dig queries the server with the dig program at path and returns its
// output.
func dig(t *testing.T, path, addr string, args ...string) string {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	args = append([]string{"@" + host, "-p", port, "+time=2", "+tries=1"}, args...)
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("dig %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// shortLines are the lines of +short output, sorted, without dig's comments.
func shortLines(out string) []string {
	var lines []string
	for line := range strings.Lines(out) {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, ";") {
			lines = append(lines, line)
		}
	}
	slices.Sort(lines)
	return lines
}

func TestDig(t *testing.T) {
	path, err := exec.LookPath("dig")
	if err != nil {
		t.Skip("this test needs dig, from bind9-dnsutils (Debian) or bind-utils (Fedora)")
	}
	var queries atomic.Int32
	s := startServer(t, Config{OnQuery: func(string) { queries.Add(1) }}, newFakeDirectory())
	for _, tt := range []struct {
		name string
		args []string
		want []string
	}{
		{"A", []string{"web.service.fedkeeper.", "A", "+short"}, []string{"192.0.2.1", "192.0.2.2"}},
		{"A over TCP", []string{"web.service.fedkeeper.", "A", "+short", "+tcp"}, []string{"192.0.2.1", "192.0.2.2"}},
		{"AAAA", []string{"web.service.fedkeeper.", "AAAA", "+short"}, []string{"2001:db8::3"}},
		{"SRV", []string{"web.service.fedkeeper.", "SRV", "+short"}, []string{
			"1 1 443 web4.example.org.",
			"1 1 8080 n1.node.fedkeeper.",
			"1 1 8080 n2.node.fedkeeper.",
			"1 1 8080 n3.node.fedkeeper.",
		}},
		{"project and tag in upper case", []string{"V2.WEB.service.CMS.fedkeeper.", "A", "+short"}, []string{"192.0.2.2"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := shortLines(dig(t, path, s.Addr(), tt.args...)); !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}

	t.Run("truncated UDP answer is retried over TCP", func(t *testing.T) {
		before := queries.Load()
		got := shortLines(dig(t, path, s.Addr(), "big.service.fedkeeper.", "A", "+short"))
		if len(got) != 200 {
			t.Errorf("got %d addresses, want all 200", len(got))
		}
		if n := queries.Load() - before; n != 2 {
			t.Errorf("the server answered %d queries, want 2: UDP, then TCP", n)
		}
	})

	t.Run("UDP answer too large sets TC", func(t *testing.T) {
		out := dig(t, path, s.Addr(), "big.service.fedkeeper.", "A", "+notcp", "+ignore")
		flags := regexp.MustCompile(`(?m)^;; flags: ([a-z ]*);`).FindStringSubmatch(out)
		if flags == nil || !slices.Contains(strings.Fields(flags[1]), "tc") || !slices.Contains(strings.Fields(flags[1]), "aa") {
			t.Errorf("want the aa and tc flags in:\n%s", out)
		}
	})

	t.Run("unknown name is NXDOMAIN with the SOA", func(t *testing.T) {
		out := dig(t, path, s.Addr(), "nosuch.service.fedkeeper.", "A")
		soa := regexp.MustCompile(`(?m)^fedkeeper\.\s+5\s+IN\s+SOA\s+sn1\.node\.fedkeeper\. hostmaster\.fedkeeper\. 42 3600 600 1209600 5$`)
		if !strings.Contains(out, "status: NXDOMAIN") || !strings.Contains(out, ";; AUTHORITY SECTION:") || !soa.MatchString(out) {
			t.Errorf("want NXDOMAIN with the SOA in the authority section in:\n%s", out)
		}
	})

	t.Run("name outside the domain is REFUSED", func(t *testing.T) {
		out := dig(t, path, s.Addr(), "www.example.org.", "A")
		if !strings.Contains(out, "status: REFUSED") {
			t.Errorf("want REFUSED in:\n%s", out)
		}
	})

	t.Run("no recursion is offered", func(t *testing.T) {
		out := dig(t, path, s.Addr(), "web.service.fedkeeper.", "A")
		if flags := regexp.MustCompile(`(?m)^;; flags: ([a-z ]*);`).FindStringSubmatch(out); flags == nil || slices.Contains(strings.Fields(flags[1]), "ra") {
			t.Errorf("want flags without ra in:\n%s", out)
		}
		if !strings.Contains(out, fmt.Sprintf("udp: %d", ednsUDPSize)) {
			t.Errorf("want the EDNS0 UDP size %d advertised in:\n%s", ednsUDPSize, out)
		}
	})
}
