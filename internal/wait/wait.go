// Package wait pauses background loops in a way that stops at once when
// their context ends.
package wait

import (
	"context"
	"time"
)

// Sleep waits for d, or until ctx ends; it reports whether the full time
// passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
