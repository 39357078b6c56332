// Package loadgen is the load generator behind credgw bench enroll: it
// makes simulated PIV cards, runs full enrollments in a loop with parallel
// workers (PKI-AUTH with a card, CreateEnrollment, Redeem with the
// reference agent or with protocol-only devices, Confirm) against an
// in-process gateway on a throwaway development environment or against a
// gateway already running from one, and reports enrollments/s, p50/p99
// latency per RPC and the mean key history delivered; afterwards it checks
// that every delivered certificate is recorded as issued and every
// activation is in a legal state.
package loadgen

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/credgw/credgw/activation"
	hsmsim "github.com/credgw/credgw/hsm-sim"
	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/piv/pivclient"
	"github.com/credgw/credgw/pkcs11"
	"github.com/credgw/credgw/server"
	"github.com/credgw/credgw/store"
	"google.golang.org/grpc/status"
)

// Config is one load test. Run expects values already checked against
// the command's limits (credgw bench enroll).
type Config struct {
	// Concurrency workers run in parallel, each with its own card.
	Concurrency int
	// Duration is how long they run.
	Duration time.Duration
	// People is how many simulated cards are made before the run (at
	// least Concurrency); each person enrolls in turn, up to the
	// gateway's enrollment.max_credential_sets.
	People int
	// ProtocolOnly devices do their part of the protocol (keys, CSRs,
	// download, SHA-256, manifest, Confirm) and skip what a phone does on
	// its own CPU afterwards (--device protocol); otherwise the reference
	// agent runs in full (--device agent).
	ProtocolOnly bool
	// KeepGoing: failed enrollments are reported, not an error (fault
	// drills); the invariant check still decides.
	KeepGoing bool

	// GatewayDir, if set, is a development environment (credgw dev init)
	// whose gateway is already running: the load test adds its cards to
	// GatewayDir/hsm and uses the gateway's own configuration. Otherwise
	// the gateway runs in this process, set up by the fields below.
	GatewayDir string
	// EscrowKey is the in-process gateway's escrow key type (p256,
	// rsa3072, rsa2048).
	EscrowKey string
	// Postgres, if set, is the PostgreSQL URL the in-process gateway uses
	// instead of SQLite (its schema is migrated).
	Postgres string
	// Replicas of the in-process gateway (more than 1 needs Postgres);
	// workers alternate between them.
	Replicas int
	// NewWork is limits.new_work of the in-process gateway.
	NewWork int
	// Rate, if above 0, makes the run open: enrollments arrive at Rate a
	// second, on a schedule that does not wait for the gateway, and each
	// is taken by a free worker (Concurrency is then the most in flight).
	// An arrival that finds every worker busy waits, and that wait counts
	// in its enrollment's time: at a rate the gateway sustains, the
	// latencies are those of a deployment at that load, not of one held
	// at saturation as Concurrency workers back to back hold it.
	Rate float64
	// Measure, if set, is called once the set-up is done and the
	// measured run begins, and the function it returns when the run ends
	// (a CPU profile of the run alone, not of making the cards). An error
	// ends the bench before the run.
	Measure func() (stop func(), err error)
}

// arrivalToConfirm is the latency key of an open run's whole enrollments,
// from their scheduled arrival to Confirm's answer. Failed ones are
// counted, not timed: under overload its p99 is of those that completed.
const arrivalToConfirm = "enrollment: arrival to Confirm"

// pace sends the arrival times start, start+1/rate, … before until on the
// channel it returns, each when its time comes (calling due just before),
// and closes it after the last. The channel holds every arrival of the
// run, so the schedule never waits for the workers. It stops early when
// ctx ends.
func pace(ctx context.Context, start time.Time, rate float64, until time.Time, due func()) <-chan time.Time {
	n := int(math.Ceil(until.Sub(start).Seconds() * rate))
	out := make(chan time.Time, max(n, 0))
	go func() {
		defer close(out)
		t := time.NewTimer(0)
		defer t.Stop()
		for i := range n {
			at := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
			t.Reset(time.Until(at))
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			due()
			out <- at
		}
	}()
	return out
}

// overload says what late or unstarted arrivals of an open run mean.
func overload(busy, unstarted int) string {
	if busy == 0 && unstarted == 0 {
		return ""
	}
	return " (those waited, and their waits count in their enrollments' times: the offered rate is at or past what the gateway sustains, --concurrency is too low for it, or the workers ran out of people, below)"
}

// failurePause is how long a worker waits after a failed enrollment
// before it starts the next one.
const failurePause = 100 * time.Millisecond

// Run runs the load test c describes and writes its report to out.
func Run(ctx context.Context, c Config, out io.Writer) error {
	if c.Concurrency < 1 || c.People < c.Concurrency || c.Duration <= 0 {
		return fmt.Errorf("loadgen: %d workers, %d people, for %s: want at least one worker, at least as many people, a positive duration",
			c.Concurrency, c.People, c.Duration)
	}
	concurrency, duration := c.Concurrency, c.Duration
	var cleanup []func()
	defer func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}()
	var tgt *target
	var err error
	if c.GatewayDir != "" {
		tgt, err = runningTarget(ctx, c.GatewayDir, c)
	} else {
		tgt, err = inProcessTarget(ctx, c, &cleanup)
	}
	if err != nil {
		return err
	}
	gateways := tgt.gateways
	work, err := os.MkdirTemp("", "credgw-bench-devices-") // what the agents write
	if err != nil {
		return err
	}
	cleanup = append(cleanup, func() { os.RemoveAll(work) })
	cards, _, closeCards, err := makeCards(ctx, tgt, c.People, c.People)
	if err != nil {
		return err
	}
	defer closeCards()
	roots, err := pivclient.LoadRoots(tgt.caFile)
	if err != nil {
		return err
	}
	devices := "the reference agent in full"
	if c.ProtocolOnly {
		devices = "protocol-only devices"
	}
	fmt.Fprintf(out, "bench: %d workers, %d people, %s, for %s against %s\n",
		concurrency, c.People, devices, duration, tgt.what)
	lat := &latencies{d: map[string][]time.Duration{}}
	deadline := time.Now().Add(duration)
	var wg sync.WaitGroup
	var mu sync.Mutex
	done, failed := 0, 0
	var firstErr error
	var delivered []string
	history := 0 // escrowed keys delivered, current ones included
	failCodes := map[string]int{}
	metricsURL := ""
	if tgt.cfg.Listen.Management != "" {
		metricsURL = "http://" + tgt.cfg.Listen.Management + "/metrics"
	}
	metrics0, metricsErr := gatewayMetrics(metricsURL)
	stopMeasure := func() {}
	if c.Measure != nil {
		stop, err := c.Measure()
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		stopMeasure = sync.OnceFunc(stop)
		defer stopMeasure()
	}
	start := time.Now()
	cpu0 := processCPU()
	stopProgress := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case <-t.C:
				mu.Lock()
				fmt.Fprintf(out, "  progress: ok=%d failed=%d\n", done, failed)
				mu.Unlock()
			}
		}
	}()
	// Open: arrivals on a schedule (pace); closed: each worker starts
	// its next enrollment as soon as its last one ends.
	var arrivals <-chan time.Time
	// Workers waiting for an arrival, workers still running (one that
	// has enrolled each of its people as often as the gateway allows
	// stops), and arrivals that found every running worker busy.
	var free, live, busyArrivals atomic.Int64
	live.Store(int64(concurrency))
	paceCtx, stopPace := context.WithCancel(ctx)
	defer stopPace()
	if c.Rate > 0 {
		arrivals = pace(paceCtx, start, c.Rate, deadline, func() {
			if free.Load() == 0 && live.Load() > 0 {
				busyArrivals.Add(1)
			}
		})
	}
	unstarted := 0
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer live.Add(-1)
			// The devices' share of a CPU profile carries side=device
			// (goroutines inherit it, the gRPC client's too):
			// go tool pprof -tagfocus side=device, or -tagignore for the
			// in-process gateway's share.
			pprof.SetGoroutineLabels(pprof.WithLabels(ctx, pprof.Labels("side", "device")))
			// Worker w enrolls people w, w+N, w+2N, … in turn, each up
			// to the gateway's cap of live sets a person.
			mine := cards[w:]
			n := (len(mine) + concurrency - 1) / concurrency
			for i := 0; i < tgt.setsPerPerson*n && time.Now().Before(deadline) && ctx.Err() == nil; i++ {
				var arrived time.Time
				if arrivals != nil {
					free.Add(1)
					at, ok := <-arrivals
					free.Add(-1)
					if !ok {
						return
					}
					if !time.Now().Before(deadline) {
						mu.Lock()
						unstarted++
						mu.Unlock()
						continue
					}
					arrived = at
				}
				card := mine[(i%n)*concurrency]
				serials, keys, err := oneEnrollment(ctx, roots, gateways[w%len(gateways)], card, lat, filepath.Join(work, fmt.Sprintf("w%d", w)), c.ProtocolOnly)
				if err == nil && arrivals != nil {
					lat.add(arrivalToConfirm, time.Since(arrived))
				}
				mu.Lock()
				if err != nil {
					failed++
					failCodes[status.Code(err).String()]++
					if firstErr == nil {
						firstErr = err
					}
				} else {
					done++
					history += keys
					delivered = append(delivered, serials...)
				}
				mu.Unlock()
				if err != nil {
					// A device backs off after a failure; a worker
					// that retried at once would measure the
					// gateway's rate limits, not the fault.
					select {
					case <-ctx.Done():
					case <-time.After(failurePause):
					}
				}
			}
		}()
	}
	wg.Wait()
	stopPace() // workers that ran out of people stopped before the end
	stopMeasure()
	close(stopProgress)
	elapsed := time.Since(start)
	cpu := processCPU() - cpu0
	fmt.Fprintf(out, "  %d full enrollments in %s: %.1f enrollments/s (%d failed)\n", done, elapsed.Round(time.Millisecond), float64(done)/elapsed.Seconds(), failed)
	if arrivals != nil {
		for range arrivals { // those due that no worker took
			unstarted++
		}
		fmt.Fprintf(out, "  open loop at %.1f enrollments/s offered: %d arrivals found all %d workers busy, %d were not started before the end%s\n",
			c.Rate, busyArrivals.Load(), concurrency, unstarted, overload(int(busyArrivals.Load()), unstarted))
	}
	if done > 0 {
		whose := "the in-process gateway and the simulated devices together"
		if c.GatewayDir != "" {
			whose = "the simulated devices only; the gateway runs apart"
		}
		fmt.Fprintf(out, "  CPU: %.1f ms an enrollment, %.2f ms a delivered certificate (this process: %s)\n",
			float64(cpu.Microseconds())/1000/float64(done), float64(cpu.Microseconds())/1000/float64(len(delivered)), whose)
		metrics, err := gatewayMetrics(metricsURL)
		err = errors.Join(metricsErr, err)
		delta := func(name string) (float64, bool) {
			a, ok0 := metrics0[name]
			b, ok1 := metrics[name]
			return b - a, err == nil && ok0 && ok1
		}
		if c.GatewayDir != "" {
			if gw, ok := delta("process_cpu_seconds_total"); ok {
				fmt.Fprintf(out, "  gateway CPU: %.1f ms an enrollment, %.2f ms a delivered certificate (credgw serve's process_cpu_seconds_total)\n",
					1000*gw/float64(done), 1000*gw/float64(len(delivered)))
			} else {
				fmt.Fprintf(out, "  gateway CPU: unknown (%v)\n", cmp.Or(err, errors.New("no process_cpu_seconds_total in its /metrics")))
			}
		}
		commits, ok := delta("credgw_sqlite_group_commits_total")
		if writes, ok2 := delta("credgw_sqlite_group_writes_total"); ok && ok2 && commits > 0 {
			fmt.Fprintf(out, "  SQLite group commit: %.0f writes (intents, records, audit events) in %.0f transactions, %.2f a transaction\n",
				writes, commits, writes/commits)
		}
		fmt.Fprintf(out, "  key history: %.1f escrowed keys a device received on average (the current one included)\n", float64(history)/float64(done))
	}
	if elapsed < duration && done+failed >= tgt.setsPerPerson*c.People {
		fmt.Fprintf(out, "  ended early: every person holds enrollment.max_credential_sets (%d) sets; raise it or --people for a longer run\n", tgt.setsPerPerson)
	}
	if failed > 0 {
		fmt.Fprintf(out, "  failures by gRPC code: %v\n", failCodes)
	}
	methods := make([]string, 0, len(lat.d))
	for m := range lat.d {
		methods = append(methods, m)
	}
	sort.Strings(methods)
	for _, m := range methods {
		ds := lat.d[m]
		fmt.Fprintf(out, "  %-40s n=%-6d p50 %-10s p99 %s\n", m, len(ds), percentile(ds, 50).Round(10*time.Microsecond), percentile(ds, 99).Round(10*time.Microsecond))
	}
	if err := checkInvariants(ctx, out, tgt.cfg, delivered); err != nil {
		return err
	}
	if firstErr != nil && !c.KeepGoing {
		return fmt.Errorf("bench: %d enrollments failed; first: %w", failed, firstErr)
	}
	if firstErr != nil {
		fmt.Fprintf(out, "  first failure: %v\n", firstErr)
	}
	return nil
}

// checkInvariants: every certificate a device received is recorded as
// issued with the same bytes, and every activation is in a legal state.
func checkInvariants(ctx context.Context, out io.Writer, cfg *server.Config, delivered []string) error {
	st, err := server.OpenStoreReadOnly(ctx, cfg) // the gateway still runs
	if err != nil {
		return fmt.Errorf("bench: invariant check: %w", err)
	}
	defer st.Close()
	for _, serial := range delivered {
		rec, err := st.Certificate(ctx, serial)
		if err != nil || rec.Status != store.CertIssued || rec.DER == nil {
			return fmt.Errorf("bench: invariant broken: delivered certificate %s is not recorded as issued (%v)", serial, err)
		}
	}
	states, stuck, err := st.ActivationCensus(ctx)
	if err != nil {
		return err
	}
	legal := map[string]bool{store.ActPending: true, store.ActRedeeming: true, store.ActCompleted: true, store.ActLocked: true, store.ActExpired: true}
	for state := range states {
		if !legal[state] {
			return fmt.Errorf("bench: invariant broken: activation state %q", state)
		}
	}
	fmt.Fprintf(out, "  invariants: ok (%d delivered certificates recorded; activations %v; %d redemptions without package, given back by the sweep after %s)\n",
		len(delivered), states, stuck, activation.StuckRedemption)
	return nil
}

// makeCards makes n simulated cards in the target's card issuer before a
// run and holds the first hold of them open, as a card sits in its
// reader: a run measures the gateway, not SoftHSM scanning its slots for
// a token. tokens names every card's token (pkcs11:token=NAME), for a
// process of its own to open the others (the environment's SOFTHSM2_CONF
// and PIN file). closeCards closes the held cards and the module.
func makeCards(ctx context.Context, tgt *target, n, hold int) (cards []*heldCard, tokens []string, closeCards func(), err error) {
	mod, err := tgt.env.OpenModule()
	if err != nil {
		return nil, nil, nil, err
	}
	cards = make([]*heldCard, hold)
	closeCards = func() {
		for _, hc := range cards {
			if hc != nil {
				hc.Close()
			}
		}
		mod.Close()
	}
	defer func() {
		if err != nil {
			closeCards()
		}
	}()
	pin, err := os.ReadFile(tgt.pinFile)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("bench: the card PIN: %w", err)
	}
	modPath, err := pkcs11.SoftHSMModule()
	if err != nil {
		return nil, nil, nil, err
	}
	run := strconv.FormatInt(time.Now().UnixNano(), 36) // new tokens each run: a label names one token
	for i := range n {
		name := fmt.Sprintf("bench-%s-%d", run, i)
		if _, err := tgt.env.NewCard(ctx, mod, hsmsim.CardSpec{Name: name, PIN: []byte(strings.TrimSpace(string(pin))),
			Key: pkcs11.ECP256, Email: fmt.Sprintf("bench%d@example.com", i)}); err != nil {
			return nil, nil, nil, err
		}
		tokens = append(tokens, name)
		if i >= hold {
			continue
		}
		u, err := pkcs11.ParseURI("pkcs11:token=" + url.PathEscape(name))
		if err != nil {
			return nil, nil, nil, err
		}
		u.PINSource = tgt.pinFile
		card, err := piv.OpenCard(ctx, u, modPath)
		if err != nil {
			return nil, nil, nil, err
		}
		if cards[i], err = newHeldCard(ctx, card); err != nil {
			card.Close()
			return nil, nil, nil, err
		}
	}
	return cards, tokens, closeCards, nil
}

// processCPU is the CPU time this process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// gatewayMetrics reads the unlabelled samples of a gateway's /metrics
// (its process_cpu_seconds_total, the SQLite group commit's counters).
func gatewayMetrics(metricsURL string) (map[string]float64, error) {
	if metricsURL == "" {
		return nil, errors.New("the gateway has no listen.management address (set one in its credgw.yaml to see its /metrics figures here)")
	}
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(metricsURL)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", metricsURL, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			out[name] = f
		}
	}
	return out, sc.Err()
}
