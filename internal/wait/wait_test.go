package wait

import (
	"context"
	"testing"
	"time"
)

func TestSleepTellsWhetherTheFullTimePassed(t *testing.T) {
	if !Sleep(context.Background(), 10*time.Millisecond) {
		t.Fatal("Sleep with a live context reported it was cut short")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep with an ended context reported the full time")
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("Sleep did not stop when its context ended")
	}
}
