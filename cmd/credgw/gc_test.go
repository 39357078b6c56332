package main

import (
	"math"
	"runtime/debug"
	"testing"
)

// TestGatewayGC: credgw serve sets its collector's target and memory
// limit unless GOGC and GOMEMLIMIT say otherwise.
func TestGatewayGC(t *testing.T) {
	pct, lim := debug.SetGCPercent(100), debug.SetMemoryLimit(math.MaxInt64)
	t.Cleanup(func() { debug.SetGCPercent(pct); debug.SetMemoryLimit(lim) })

	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	gatewayGC(384 << 20)
	if got := debug.SetGCPercent(100); got != gatewayGOGC {
		t.Errorf("GOGC = %d, want %d", got, gatewayGOGC)
	}
	if got := debug.SetMemoryLimit(math.MaxInt64); got != 384<<20 {
		t.Errorf("memory limit = %d, want %d", got, 384<<20)
	}

	// The environment wins, and -1 sets no limit.
	t.Setenv("GOGC", "50")
	t.Setenv("GOMEMLIMIT", "1GiB")
	debug.SetGCPercent(50)
	gatewayGC(384 << 20)
	if got := debug.SetGCPercent(100); got != 50 {
		t.Errorf("GOGC set in the environment: %d, want 50", got)
	}
	if got := debug.SetMemoryLimit(math.MaxInt64); got != math.MaxInt64 {
		t.Errorf("GOMEMLIMIT set in the environment: limit %d, want none set", got)
	}
	t.Setenv("GOMEMLIMIT", "")
	gatewayGC(-1)
	if got := debug.SetMemoryLimit(math.MaxInt64); got != math.MaxInt64 {
		t.Errorf("limit -1: %d, want none", got)
	}
}
