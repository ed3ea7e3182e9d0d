package coord_test

import (
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fedkeeper/fedkeeper/coord"
)

// FuzzValidateName checks that the names of elections and locks keep
// their keys apart: an accepted name is one path segment that travels in
// a URL as it is, and no two accepted names have one's key space inside
// the other's. Lease IDs and TTLs, the other values of the coordination
// API, must read back as written and stay in range.
func FuzzValidateName(f *testing.F) {
	for _, s := range [][2]string{
		{"index", "index-2"}, {"a", "a.b"}, {"a.b", "a..b"}, {"a_b", "a-b"}, {"a", "a/b"}, {"..", "."},
		{"a/../b", "b"}, {"A", "a"}, {strings.Repeat("a", 63), strings.Repeat("a", 64)}, {"a%2Fb", "a b"},
	} {
		f.Add(s[0], s[1], int64(0x1a2b), int64(10*time.Second))
	}
	f.Add("x", "y", int64(-1), int64(time.Second))
	f.Add("x", "y", int64(1)<<62, int64(coord.MaxTTL)+1)
	f.Fuzz(func(t *testing.T, a, b string, lease, ttl int64) {
		for _, n := range []string{a, b} {
			if coord.ValidateName("lock", n) != nil {
				continue
			}
			if len(n) < 1 || len(n) > 63 || strings.ContainsAny(n, "/\\") || n == "." || n == ".." {
				t.Fatalf("accepted name %q is no single path segment", n)
			}
			if url.PathEscape(n) != n || strings.ToLower(n) != n {
				t.Fatalf("accepted name %q changes in a URL or in case", n)
			}
		}
		if a != b && coord.ValidateName("lock", a) == nil && coord.ValidateName("lock", b) == nil {
			for _, prefix := range []func(string) string{coord.LockPrefix, func(n string) string { return coord.ElectionPrefix(coord.KindHA, n) }} {
				if pa, pb := prefix(a), prefix(b); strings.HasPrefix(pa, pb) || strings.HasPrefix(pb, pa) {
					t.Fatalf("keys of %q (%s) and %q (%s) overlap", a, pa, b, pb)
				}
			}
		}
		if lease > 0 {
			if back, err := strconv.ParseInt(coord.LeaseID(lease), 16, 64); err != nil || back != lease {
				t.Fatalf("lease %d reads back from %q as %d, %v", lease, coord.LeaseID(lease), back, err)
			}
		}
		if d := time.Duration(ttl); coord.ValidateTTL(d) == nil && (d < coord.MinTTL || d > coord.MaxTTL || d%time.Second != 0) {
			t.Fatalf("accepted TTL %v", d)
		}
	})
}
