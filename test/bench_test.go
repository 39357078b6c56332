package test

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestBenchAgainstRunningGateway: `credgw bench enroll --gateway-dir` runs
// the full flow against `credgw serve` as a separate process, with the
// gateway's own configuration: two people, each enrolled up to the cap of
// five live sets, every delivered certificate recorded.
func TestBenchAgainstRunningGateway(t *testing.T) {
	work := t.TempDir()
	dir, _, _ := startDevGateway(t, work, nil)
	out := run(t, nil, true, credgwBin, "bench", "enroll", "--gateway-dir", dir, "--concurrency", "2", "--people", "2",
		"--device", "protocol", "--duration", "5m")
	for _, want := range []string{"against the gateway running at", "10 full enrollments", "(0 failed)", "ended early", "invariants: ok (30 delivered certificates recorded"} {
		if !strings.Contains(out, want) {
			t.Errorf("bench output lacks %q:\n%s", want, out)
		}
	}
	// A directory without a running gateway is a clear error.
	if out := run(t, nil, false, credgwBin, "bench", "enroll", "--gateway-dir", filepath.Join(work, "nothing")); !strings.Contains(out, "credgw dev init") {
		t.Errorf("no environment: %s", out)
	}
}
