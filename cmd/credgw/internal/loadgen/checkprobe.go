package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/credgw/credgw/piv/pivclient"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// ProbeCheck times Health/Check against gateway 50 times a second for d,
// on one TLS connection, and writes "p99_us N n N failed N" to out. credgw
// bench slow runs it as a process of its own (credgw bench check-probe):
// a prober in the bench's process waits behind the bench's own goroutines
// (10,000 readers made runnable at once), which is the bench's latency,
// not the gateway's.
func ProbeCheck(ctx context.Context, gateway, caFile string, d time.Duration, out io.Writer) error {
	roots, err := pivclient.LoadRoots(caFile)
	if err != nil {
		return fmt.Errorf("bench: CA file: %w", err)
	}
	p := &prober{gateway: gateway, roots: roots}
	if err := p.dial(); err != nil {
		return err
	}
	defer p.conn.Close()
	h := healthpb.NewHealthClient(p.conn)
	// One call first: the connection's handshake is not a Check's time.
	warm, cancelWarm := context.WithTimeout(ctx, 10*time.Second)
	_, err = h.Check(warm, &healthpb.HealthCheckRequest{})
	cancelWarm()
	if err != nil {
		return fmt.Errorf("bench: Check: %w", err)
	}
	// The parent starts its own window on this line, so that both time
	// the same seconds.
	if _, err := fmt.Fprintln(out, "ready"); err != nil {
		return err
	}
	// The window ends the loop, not a call (as in prober.run).
	window, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var ds []time.Duration
	failed := 0
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for ; window.Err() == nil; <-t.C {
		took, err := timeCheck(ctx, h)
		if err != nil {
			if ctx.Err() == nil {
				if failed++; failed == 1 {
					// The parent shows the first failure beside the count.
					fmt.Fprintf(os.Stderr, "first failure after %s: %v\n", took.Round(time.Millisecond), err)
				}
			}
			continue
		}
		ds = append(ds, took)
	}
	if len(ds) == 0 {
		return fmt.Errorf("bench: no Check answered in %s (%d failed)", d, failed)
	}
	_, err = fmt.Fprintf(out, "p99_us %d n %d failed %d\n", percentile(ds, 99).Microseconds(), len(ds), failed)
	return err
}

// timeCheck times one Health/Check under a timeout of its own
// (probeCallTimeout), so that only a gateway that does not answer fails it.
func timeCheck(ctx context.Context, h healthpb.HealthClient) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, probeCallTimeout)
	defer cancel()
	start := time.Now()
	_, err := h.Check(ctx, &healthpb.HealthCheckRequest{})
	return time.Since(start), err
}

// outsideCheck is a Check prober in a process of its own, started now for
// d: its result arrives on the channel once it has exited.
type outsideCheck struct {
	p99       time.Duration
	n, failed int
	// firstFailure is what the prober said of its first failed call.
	firstFailure string
	err          error
}

func (o outsideCheck) String() string {
	if o.err != nil {
		return "Check p99 from another process: unknown (" + o.err.Error() + ")"
	}
	s := fmt.Sprintf("Check p99 from another process %s (n=%d, %d failed)", o.p99.Round(10*time.Microsecond), o.n, o.failed)
	if o.failed > 0 && o.firstFailure != "" {
		s += " [" + o.firstFailure + "]"
	}
	return s
}

// startOutsideCheck starts a Check prober in a process of its own, timing
// for d, and returns once it is ready to time (or has failed): its result
// arrives on the channel once it has exited. The child is bounded: it is
// killed if it has not finished a minute after d.
func startOutsideCheck(ctx context.Context, gateway, caFile string, d time.Duration) <-chan outsideCheck {
	res := make(chan outsideCheck, 1)
	bin, err := os.Executable()
	if err != nil {
		res <- outsideCheck{err: err}
		return res
	}
	ctx, cancel := context.WithTimeout(ctx, d+time.Minute)
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "bench", "check-probe", "--gateway", gateway, "--ca-file", caFile, "--duration", d.String())
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		cancel()
		res <- outsideCheck{err: err}
		return res
	}
	lines := bufio.NewScanner(stdout)
	ready := lines.Scan() && lines.Text() == "ready"
	go func() {
		defer cancel()
		var last string
		for lines.Scan() {
			last = lines.Text()
		}
		if err := cmd.Wait(); err != nil {
			res <- outsideCheck{err: fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))}
			return
		}
		if !ready {
			res <- outsideCheck{err: errors.New("the prober never said it was ready")}
			return
		}
		o := parseOutsideCheck(last)
		o.firstFailure, _, _ = strings.Cut(strings.TrimSpace(stderr.String()), "\n")
		res <- o
	}()
	return res
}

// parseOutsideCheck reads ProbeCheck's line.
func parseOutsideCheck(s string) outsideCheck {
	f := strings.Fields(s)
	if len(f) != 6 || f[0] != "p99_us" || f[2] != "n" || f[4] != "failed" {
		return outsideCheck{err: fmt.Errorf("unexpected output %q", strings.TrimSpace(s))}
	}
	var v [3]int
	for i, j := range []int{1, 3, 5} {
		n, err := strconv.Atoi(f[j])
		if err != nil {
			return outsideCheck{err: fmt.Errorf("unexpected output %q", strings.TrimSpace(s))}
		}
		v[i] = n
	}
	if v[1] == 0 {
		return outsideCheck{err: errors.New("no Check answered")}
	}
	return outsideCheck{p99: time.Duration(v[0]) * time.Microsecond, n: v[1], failed: v[2]}
}

// outsideRatio is held/idle as the goals line prints it: "unknown" when
// either prober failed.
func outsideRatio(held, idle outsideCheck) string {
	if held.err != nil || idle.err != nil || held.p99 <= 0 || idle.p99 <= 0 {
		return "unknown"
	}
	return fmt.Sprintf("%.1fx", ratio(held.p99, idle.p99))
}
