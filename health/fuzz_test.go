package health

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// FuzzParseMinFree checks that a disk threshold parseMinFree accepts is
// one threshold, positive and within the documented bounds.
func FuzzParseMinFree(f *testing.F) {
	for _, s := range []string{"10GiB", "500MB", "4096", "5%", " 5 %", "0.5KiB", "1.5", "8192PiB", "8193PiB",
		"0%", "100%", "99.999%", "NaN%", "Inf%", "0x1p-2%", "1e3GB", "-1GB", "0", ".", "", "GB", "1 GB", "1gb", "1e400"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := parseMinFree(s)
		if err != nil {
			return
		}
		switch {
		case m.percent != 0 && m.bytes != 0:
			t.Fatalf("%q gives both %v%% and %d bytes", s, m.percent, m.bytes)
		case m.percent != 0:
			if !(m.percent > 0 && m.percent < 100) {
				t.Fatalf("%q gives %v%%", s, m.percent)
			}
		case m.bytes < 1 || m.bytes > 1<<63:
			t.Fatalf("%q gives %d bytes, outside 1B to 8EiB", s, m.bytes)
		}
	})
}

// FuzzCheckConfig decodes a check as agent.yaml declares it (unknown
// fields refused). Validation must not panic, and a valid check must stay
// valid with its defaults filled in, keep its runs from overlapping, and
// travel as JSON (the local API's form) unchanged.
func FuzzCheckConfig(f *testing.F) {
	for _, s := range []string{
		"{name: web, type: http, url: 'https://localhost:8443/x', interval: 30s, timeout: 2s, expect_status: 204}",
		"{name: port, type: tcp, address: '[::1]:22'}",
		"{name: run, type: script, command: [/usr/lib/nagios/check_load, -w, '5']}",
		"{name: data, type: disk, path: /data, min_free: 5%}",
		"{name: tls, type: cert, cert_file: /etc/x.crt, min_days: 36500}",
		"{name: fast, type: tcp, address: 'a:1', interval: 1s}",
		"{name: slow, type: tcp, address: 'a:1', interval: 2562047h}",
		"{name: neg, type: tcp, address: 'a:1', timeout: -1s}",
		"{name: mixed, type: tcp, address: 'a:1', url: 'http://x/'}",
		"{name: x, type: cert, cert_file: /x, min_days: 36501}",
		"{name: x, type: disk, path: /x, min_free: 0%}",
		"{name: x, typo: tcp}",
		"name: [x]",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var c CheckConfig
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if dec.Decode(&c) != nil {
			return
		}
		err := c.Validate()
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("error %v does not wrap ErrInvalid", err)
		}
		if err != nil {
			return
		}
		d := c.WithDefaults()
		if err := d.Validate(); err != nil {
			t.Fatalf("valid check %+v is invalid with its defaults: %v", c, err)
		}
		if d.Interval < MinInterval || d.Timeout <= 0 || d.Timeout > d.Interval {
			t.Fatalf("valid check runs every %v for at most %v", d.Interval, d.Timeout)
		}
		switch d.Type {
		case TypeCert:
			if d.MinDays < 1 || time.Duration(2*d.MinDays)*24*time.Hour/(24*time.Hour) != time.Duration(2*d.MinDays) {
				t.Fatalf("min_days %d overflows twice over", d.MinDays)
			}
		case TypeHTTP:
			if d.ExpectStatus < 100 || d.ExpectStatus > 599 {
				t.Fatalf("expect_status %d", d.ExpectStatus)
			}
		case TypeDisk:
			if _, err := parseMinFree(d.MinFree); err != nil {
				t.Fatalf("valid check has min_free %q: %v", d.MinFree, err)
			}
		}
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatalf("valid check does not encode: %v", err)
		}
		var back CheckConfig
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("valid check does not decode from its JSON: %v", err)
		}
		if again, _ := json.Marshal(back); !bytes.Equal(again, b) || back.Validate() != nil {
			t.Fatalf("check changed through JSON:\n%s\n%s", b, again)
		}
	})
}
