package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
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

// TestBenchSlow: `credgw bench slow` runs its own gateway, holds its
// readers' downloads, lets them read to the end, and times the other
// calls from a prober process of its own at normal priority while this
// bench runs at idle priority (as root, as CI does, or with RLIMIT_NICE
// 20; otherwise it must refuse, saying what to do). A small run: what it
// measures is in docs/deploy.md, "Capacity: slow downloads".
func TestBenchSlow(t *testing.T) {
	// What the kernel asks of a thread leaving SCHED_IDLE: CAP_SYS_NICE
	// (root here) or an RLIMIT_NICE that allows nice 0.
	var nice unix.Rlimit
	if os.Geteuid() != 0 && (unix.Getrlimit(unix.RLIMIT_NICE, &nice) != nil || nice.Cur < 20) {
		out := run(t, nil, false, credgwBin, "bench", "slow", "--readers", "20", "--activations", "2", "--ramp", "2s", "--duration", "2s")
		if !strings.Contains(out, "--readers-priority normal") {
			t.Errorf("not root: %s", out)
		}
		return
	}
	out := run(t, nil, true, credgwBin, "bench", "slow", "--readers", "20", "--activations", "2", "--rate", "4KiB/s",
		"--ramp", "2s", "--duration", "2s")
	for _, want := range []string{
		"runs at idle priority (SCHED_IDLE)",
		"20 downloads open, 0 refused",
		"readers: 20 downloads finished",
		"0 refused or cut",
		"gateway RSS under 512 MiB: true",
		"(readers at idle priority): while held Check ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("bench slow output lacks %q:\n%s", want, out)
		}
	}
	// Every phase's prober answered, timed its sign-ins, and none failed.
	if n := strings.Count(out, "CompleteSession p99"); n != 3 {
		t.Errorf("%d prober results, want 3 (idle, held, reading):\n%s", n, out)
	}
	if strings.Contains(out, "unknown") || strings.Count(out, ", 0 failed;") != 3 {
		t.Errorf("a prober failed or timed nothing:\n%s", out)
	}
	if out := run(t, nil, false, credgwBin, "bench", "slow", "--readers-priority", "low"); !strings.Contains(out, "idle or normal") {
		t.Errorf("--readers-priority low: %s", out)
	}
}
