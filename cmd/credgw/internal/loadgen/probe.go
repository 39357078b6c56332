package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/piv/pivclient"
	"github.com/credgw/credgw/pkcs11"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// ProbeConfig is what the prober process times.
type ProbeConfig struct {
	Gateway, CAFile string
	Duration        time.Duration
	// Cards are simulated cards (their SoftHSM token labels, in the
	// SOFTHSM2_CONF of the environment) the prober signs in with in
	// turn; PINFile holds their PIN. None: Check only.
	Cards   []string
	PINFile string
}

// Probe times Health/Check 50 times a second and, with cards, a sign-in
// (BeginSession, CompleteSession) 4 times a second against the gateway
// for c.Duration, and writes one line of p99s to out (formatProbe).
// credgw bench slow runs it as a process of its own (credgw bench
// probe), at normal priority: a prober in the bench's process waits
// behind the bench's own goroutines (10,000 readers made runnable at
// once), which is the bench's latency, not the gateway's.
func Probe(ctx context.Context, c ProbeConfig, out io.Writer) error {
	if err := leaveIdle(); err != nil {
		return err
	}
	roots, err := pivclient.LoadRoots(c.CAFile)
	if err != nil {
		return fmt.Errorf("bench: CA file: %w", err)
	}
	p := &prober{gateway: c.Gateway, roots: roots}
	if len(c.Cards) > 0 {
		modPath, err := pkcs11.SoftHSMModule()
		if err != nil {
			return err
		}
		for _, name := range c.Cards {
			u, err := pkcs11.ParseURI("pkcs11:token=" + url.PathEscape(name))
			if err != nil {
				return err
			}
			u.PINSource = c.PINFile
			card, err := piv.OpenCard(ctx, u, modPath)
			if err != nil {
				return fmt.Errorf("bench: card %s: %w", name, err)
			}
			defer card.Close()
			hc, err := newHeldCard(ctx, card)
			if err != nil {
				return fmt.Errorf("bench: card %s: %w", name, err)
			}
			p.cards = append(p.cards, hc)
		}
	}
	if err := p.dial(); err != nil {
		return err
	}
	defer p.conn.Close()
	// One call first: the connection's handshake is not a Check's time.
	warm, cancelWarm := context.WithTimeout(ctx, 10*time.Second)
	_, err = healthpb.NewHealthClient(p.conn).Check(warm, &healthpb.HealthCheckRequest{})
	cancelWarm()
	if err != nil {
		return fmt.Errorf("bench: Check: %w", err)
	}
	// The parent starts its own window on this line, so that both time
	// the same seconds.
	if _, err := fmt.Fprintln(out, "ready"); err != nil {
		return err
	}
	res := p.run(ctx, c.Duration)
	if res.nCheck == 0 {
		return fmt.Errorf("bench: no Check answered in %s (%d failed; first: %s)", c.Duration, res.failed, res.firstFailure)
	}
	if res.failed > 0 {
		// The parent shows the first failure beside the count.
		fmt.Fprintf(os.Stderr, "first failure: %s\n", res.firstFailure)
	}
	_, err = fmt.Fprintln(out, formatProbe(res))
	return err
}

// prober times other calls: Health/Check on a connection of its own, and
// BeginSession (each followed by CompleteSession, so that no challenge
// stays outstanding) on a new sign-in with one of its cards in turn.
type prober struct {
	gateway string
	roots   *x509.CertPool
	cards   []*heldCard
	conn    *grpc.ClientConn
}

func (p *prober) dial() error {
	host, _, _ := net.SplitHostPort(p.gateway)
	var err error
	p.conn, err = grpc.NewClient(p.gateway, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: p.roots, ServerName: host, MinVersion: tls.VersionTLS12})))
	return err
}

// probeResult is the p99 of the calls timed.
type probeResult struct {
	check, begin, complete time.Duration
	nCheck, nBegin         int
	failed                 int
	firstFailure           string // the first failed call's error
}

func (r probeResult) String() string {
	s := fmt.Sprintf("Check p99 %s (n=%d), BeginSession p99 %s, CompleteSession p99 %s (n=%d), %d failed",
		r.check.Round(10*time.Microsecond), r.nCheck, r.begin.Round(10*time.Microsecond), r.complete.Round(10*time.Microsecond), r.nBegin, r.failed)
	if r.failed > 0 {
		s += " [first: " + r.firstFailure + "]"
	}
	return s
}

// probeCallTimeout bounds one timed call: long enough that only a
// gateway that does not answer makes it fail.
const probeCallTimeout = 30 * time.Second

// fail counts a failed call and keeps the first one's error.
func (r *probeResult) fail(call string, err error) {
	if r.failed++; r.failed == 1 {
		r.firstFailure = call + ": " + err.Error()
	}
}

// run times Check 50 times a second and, if it has cards, a sign-in 4
// times a second for d.
func (p *prober) run(ctx context.Context, d time.Duration) probeResult {
	// The window ends the loops, not the calls: a call it cut short
	// would fail with the window's deadline (the gateway's copy of it
	// fires first) and count as a failure of the gateway.
	window, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var res probeResult
	var mu sync.Mutex
	var checks []time.Duration
	lat := &latencies{d: map[string][]time.Duration{}}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		h := healthpb.NewHealthClient(p.conn)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for ; window.Err() == nil; <-t.C {
			took, err := timeCheck(ctx, h)
			mu.Lock()
			if err == nil {
				checks = append(checks, took)
			} else if ctx.Err() == nil {
				res.fail("Check", err)
			}
			mu.Unlock()
		}
	}()
	signIns := func() {
		defer wg.Done()
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for i := 0; window.Err() == nil; i++ {
			if i > 0 {
				<-t.C
			}
			callCtx, cancelCall := context.WithTimeout(ctx, probeCallTimeout)
			s, err := pivclient.SignIn(callCtx, pivclient.Options{Gateway: p.gateway, Roots: p.roots, Card: p.cards[i%len(p.cards)], DialOptions: lat.dialOptions()})
			if err != nil {
				cancelCall()
				if ctx.Err() == nil {
					mu.Lock()
					res.fail("sign-in", err)
					mu.Unlock()
				}
				continue
			}
			s.Close()
			cancelCall()
		}
	}
	if len(p.cards) > 0 {
		wg.Add(1)
		go signIns()
	}
	wg.Wait()
	res.check, res.nCheck = percentile(checks, 99), len(checks)
	begin := lat.d["/credgw.v1.PIVAuth/BeginSession"]
	res.begin, res.nBegin = percentile(begin, 99), len(begin)
	res.complete = percentile(lat.d["/credgw.v1.PIVAuth/CompleteSession"], 99)
	return res
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

// probeFields are the fields of the prober's line, in order.
var probeFields = []string{"check_p99_us", "check_n", "begin_p99_us", "complete_p99_us", "begin_n", "failed"}

// formatProbe is the prober's line: name value pairs (probeFields).
func formatProbe(r probeResult) string {
	v := []int64{r.check.Microseconds(), int64(r.nCheck), r.begin.Microseconds(), r.complete.Microseconds(), int64(r.nBegin), int64(r.failed)}
	var b strings.Builder
	for i, f := range probeFields {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s %d", f, v[i])
	}
	return b.String()
}

// parseProbe reads formatProbe's line.
func parseProbe(s string) (probeResult, error) {
	f := strings.Fields(s)
	bad := fmt.Errorf("unexpected output %q", strings.TrimSpace(s))
	if len(f) != 2*len(probeFields) {
		return probeResult{}, bad
	}
	v := make([]int, len(probeFields))
	for i, name := range probeFields {
		n, err := strconv.Atoi(f[2*i+1])
		if f[2*i] != name || err != nil || n < 0 {
			return probeResult{}, bad
		}
		v[i] = n
	}
	if v[1] == 0 {
		return probeResult{}, errors.New("no Check answered")
	}
	us := func(n int) time.Duration { return time.Duration(n) * time.Microsecond }
	return probeResult{check: us(v[0]), nCheck: v[1], begin: us(v[2]), complete: us(v[3]), nBegin: v[4], failed: v[5]}, nil
}

// outsideProbe is the result of a prober in a process of its own.
type outsideProbe struct {
	probeResult
	err error
}

func (o outsideProbe) String() string {
	if o.err != nil {
		return "prober: unknown (" + o.err.Error() + ")"
	}
	return o.probeResult.String()
}

// startProbe starts a prober in a process of its own, timing for d with
// the cards named (tokens; their PIN in pinFile), and returns once it is
// ready to time (or has failed): its result arrives on the channel once
// it has exited. The child is bounded: it is killed if it has not
// finished a minute after d.
func startProbe(ctx context.Context, gateway, caFile string, tokens []string, pinFile string, d time.Duration) <-chan outsideProbe {
	res := make(chan outsideProbe, 1)
	bin, err := os.Executable()
	if err != nil {
		res <- outsideProbe{err: err}
		return res
	}
	ctx, cancel := context.WithTimeout(ctx, d+time.Minute)
	var stderr bytes.Buffer
	args := []string{"bench", "probe", "--gateway", gateway, "--ca-file", caFile, "--duration", d.String()}
	if len(tokens) > 0 {
		args = append(args, "--cards", strings.Join(tokens, ","), "--pin-file", pinFile)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		cancel()
		res <- outsideProbe{err: err}
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
			res <- outsideProbe{err: fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))}
			return
		}
		if !ready {
			res <- outsideProbe{err: errors.New("the prober never said it was ready")}
			return
		}
		r, err := parseProbe(last)
		if err != nil {
			res <- outsideProbe{err: err}
			return
		}
		if r.failed > 0 {
			first, _, _ := strings.Cut(strings.TrimSpace(stderr.String()), "\n")
			r.firstFailure = strings.TrimPrefix(first, "first failure: ")
		}
		res <- outsideProbe{probeResult: r}
	}()
	return res
}

// probeRatio is a/b of one call's p99 as the goals line prints it:
// "unknown" when either prober failed or timed none of that call.
func probeRatio(a, b outsideProbe, p99 func(probeResult) time.Duration) string {
	if a.err != nil || b.err != nil || p99(a.probeResult) <= 0 || p99(b.probeResult) <= 0 {
		return "unknown"
	}
	return fmt.Sprintf("%.1fx", ratio(p99(a.probeResult), p99(b.probeResult)))
}
