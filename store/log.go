package store

import (
	"context"
	"log/slog"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// slogCore carries the embedded store's log lines into fedkeeper's own
// log, so an operator reads one format from one stream.
type slogCore struct {
	log    *slog.Logger
	fields []zapcore.Field
}

func newStoreLogger(log *slog.Logger) *zap.Logger {
	return zap.New(&slogCore{log: log})
}

func (c *slogCore) Enabled(l zapcore.Level) bool {
	return c.log.Enabled(context.Background(), slogLevel(l))
}

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	return &slogCore{log: c.log, fields: append(append([]zapcore.Field(nil), c.fields...), fields...)}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range append(append([]zapcore.Field(nil), c.fields...), fields...) {
		f.AddTo(enc)
	}
	lvl := slogLevel(e.Level)
	if benign(e.Message, enc.Fields) {
		lvl = slog.LevelDebug
	}
	attrs := make([]slog.Attr, 0, len(enc.Fields))
	for k, v := range enc.Fields {
		attrs = append(attrs, slog.Any(k, v))
	}
	c.log.LogAttrs(context.Background(), lvl, e.Message, attrs...)
	return nil
}

func (c *slogCore) Sync() error { return nil }

// benign tells the store's warnings that do not apply to fedkeeper: it
// uses no etcd users (so no auth tokens), shares the client port between
// HTTP and gRPC on loopback only, and closing listeners is how it stops.
func benign(msg string, fields map[string]any) bool {
	switch msg {
	case "simple token is not cryptographically signed",
		"Running http and grpc server on single port. This is not recommended for production.":
		return true
	}
	errText, _ := fields["error"].(string)
	return strings.Contains(errText, "use of closed network connection") || strings.Contains(errText, "Server closed")
}

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}
