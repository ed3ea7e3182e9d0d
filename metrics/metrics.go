// Package metrics is fedkeeper's monitoring: what an agent exposes about its
// node, what a supernode exposes about itself, how a supernode turns agents'
// scrapes into a short history and per-project aggregates for the dashboard,
// and the target list an operator's own Prometheus discovers nodes from.
//
// Everything speaks the Prometheus text exposition format, so a federation
// that already runs Prometheus scrapes the same /metrics endpoints the
// supernodes do, and nothing here needs a time-series database. All metric
// names start with fedkeeper_ and carry their unit.
package metrics

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// MaxExpositionBytes bounds what Parse reads. An agent's exposition is a
// few kilobytes; the bound keeps a broken or hostile node from making a
// supernode buffer and parse without limit.
const MaxExpositionBytes = 4 << 20

// ErrTooLarge is returned by Parse for an exposition over MaxExpositionBytes.
var ErrTooLarge = errors.New("metrics: exposition too large")

// textFormat is what Handler always answers in: Parse reads only the text
// format, and a fixed format keeps supernodes, Prometheus and curl seeing
// the same bytes.
const textFormat = "text/plain;version=0.0.4"

// Handler serves reg in the Prometheus text format. A collector that fails
// (say /proc is unreadable) costs only its own metrics: the rest are served
// and the failure is logged.
func Handler(reg *prometheus.Registry) http.Handler {
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      slogLogger{},
		ErrorHandling: promhttp.ContinueOnError,
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// promhttp picks protobuf when the scraper asks for it (Prometheus
		// does when native histograms are on); overriding Accept pins text.
		r = r.Clone(r.Context())
		r.Header.Set("Accept", textFormat)
		h.ServeHTTP(w, r)
	})
}

// slogLogger hands promhttp's error lines to log/slog.
type slogLogger struct{}

func (slogLogger) Println(v ...any) {
	slog.Error("metrics: serving /metrics", "err", fmt.Sprint(v...))
}

// Parse reads a Prometheus text exposition, such as an agent's /metrics
// response, of at most MaxExpositionBytes.
func Parse(r io.Reader) (map[string]*dto.MetricFamily, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxExpositionBytes+1))
	if err != nil {
		return nil, fmt.Errorf("metrics: reading exposition: %w", err)
	}
	if len(data) > MaxExpositionBytes {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, MaxExpositionBytes)
	}
	families, err := parseText(data)
	if err != nil {
		return nil, fmt.Errorf("metrics: parsing exposition: %w", err)
	}
	return families, nil
}

// parseText runs the library's text parser, which panics on some
// malformed input (a line that opens with "{", for one): what a node
// answers must not bring down the supernode that scrapes it.
func parseText(data []byte) (families map[string]*dto.MetricFamily, err error) {
	defer func() {
		if r := recover(); r != nil {
			families, err = nil, fmt.Errorf("malformed exposition: %v", r)
		}
	}()
	var p expfmt.TextParser
	return p.TextToMetricFamilies(bytes.NewReader(data))
}
