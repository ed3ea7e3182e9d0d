// Package version holds fedkeeper's release version, set at build time
// with -ldflags "-X github.com/fedkeeper/fedkeeper/internal/version.Version=...".
package version

// Version is the release this binary was built as.
var Version = "0.1.0-dev"
