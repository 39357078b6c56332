package loadgen

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/credgw/credgw/activation/code"
	"github.com/credgw/credgw/agent"
	"github.com/credgw/credgw/piv/pivclient"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// SlowConfig is one run of credgw bench slow: many devices downloading
// their package slowly while other calls are timed (issue 15, point 5).
type SlowConfig struct {
	// Readers download at once, each on its own connection.
	Readers int
	// Rate is what each reader's connection delivers, bytes a second.
	Rate int
	// Duration is how long the readers are held, all with their
	// download open, after they all started: the plateau the calls are
	// timed in. Then the readers read their packages at Rate to the end.
	Duration time.Duration
	// Ramp is how long starting the readers takes.
	Ramp time.Duration
	// Activations are enrolled and redeemed once (not confirmed); the
	// readers resume their stored packages, Readers/Activations each
	// (few per activation, so that its attempt reservation is no
	// bottleneck).
	Activations int
	// PerSource readers share one source address (127.1.x.y), below
	// the gateway's limits.max_conns_per_source.
	PerSource int
	// ReceiveBuffer is each reader's socket receive buffer (SO_RCVBUF;
	// 0: 4 KiB, a slow network's little in flight). One that holds a
	// whole package takes it from the gateway at once: the gateway's
	// kernel then holds nothing unsent and probes no zero window (the
	// control run of docs/deploy.md, "Capacity: slow downloads").
	ReceiveBuffer int
	// Together makes every reader read its pieces in the same instant
	// once the gate opens (a herd in step: the worst case, what a
	// coordinated attacker could do). By default each reader starts at a
	// phase of its own within one piece's interval, as a population of
	// independent slow phones does: the gate, which releases them all in
	// one instant, would otherwise keep them in step for the whole read.
	Together bool
	// Spread, if set, is how long after the gate the readers start
	// reading: each at a random instant within it instead of within one
	// piece's interval. As long as one download takes, it makes the
	// readers finish and close at the rate of a steady population of
	// Readers downloads of that length (Readers/Spread a second), not
	// all in the same second.
	Spread time.Duration
	// IdleReaders runs this process, the readers, at the kernel's idle
	// priority once the gateway and the cards are set up (sched.go), so
	// that the prober's p99s are the gateway's and not the readers'.
	IdleReaders bool
	// GatewayDir, if set, is a development environment whose gateway is
	// already running; GatewayPID is then its process (for its RSS; 0
	// reads process_resident_memory_bytes from its /metrics). Otherwise
	// Binary serve runs the gateway as a child process.
	GatewayDir string
	GatewayPID int
	Binary     string
}

// slowActivation is a stored package a reader resumes: the request of
// the first Redeem (same activation, secret, password and CSRs).
type slowActivation struct {
	req *credgwv1.RedeemRequest
}

// RunSlow runs c and writes its report to out.
func RunSlow(ctx context.Context, c SlowConfig, out io.Writer) error {
	var cleanup []func()
	defer func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}()
	if c.IdleReaders && !mayLeaveIdle() {
		return errIdleNotAllowed // before any set-up
	}
	nofile, err := raiseNoFile()
	if err != nil {
		return err
	}
	if need := uint64(c.Readers) + 256; nofile < need {
		return fmt.Errorf("bench: %d readers need about %d open files; this process may have %d (ulimit -Hn)", c.Readers, need, nofile)
	}
	var tgt *target
	if c.GatewayDir != "" {
		if tgt, err = runningTarget(ctx, c.GatewayDir, Config{Replicas: 1}); err != nil {
			return err
		}
		tgt.pid = c.GatewayPID
	} else if tgt, err = serveTarget(ctx, c.Binary, &cleanup); err != nil {
		return err
	}
	gw := tgt.gateways[0]
	fmt.Fprintf(out, "bench slow: %d readers at %d B/s each, %d activations, %d readers per source address, against %s\n",
		c.Readers, c.Rate, c.Activations, c.PerSource, tgt.what)
	fmt.Fprintf(out, "  open files: bench %d; gateway %s; limits.max_conns_per_source %d (unchanged)\n",
		nofile, gatewayNoFile(tgt.pid), tgt.cfg.Limits.MaxConnsPerSource)
	if c.PerSource > tgt.cfg.Limits.MaxConnsPerSource && tgt.cfg.Limits.MaxConnsPerSource >= 0 {
		return fmt.Errorf("bench: --per-source %d is above the gateway's limits.max_conns_per_source %d", c.PerSource, tgt.cfg.Limits.MaxConnsPerSource)
	}
	people := (c.Activations + tgt.setsPerPerson - 1) / tgt.setsPerPerson
	samplers := 8 // cards the prober signs in with, in its own process
	cards, tokens, closeCards, err := makeCards(ctx, tgt, people+samplers, people)
	if err != nil {
		return err
	}
	defer closeCards()
	samplerCards := tokens[people:]
	roots, err := pivclient.LoadRoots(tgt.caFile)
	if err != nil {
		return err
	}
	setup := time.Now()
	acts, err := storePackages(ctx, tgt, roots, cards[:people], c.Activations)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "  setup: %d activations enrolled and redeemed once in %s (%d cards)\n",
		c.Activations, time.Since(setup).Round(time.Second), people+samplers)
	metricsURL := "http://" + tgt.cfg.Listen.Management + "/metrics"
	if tgt.cfg.Listen.Management == "" {
		fmt.Fprintf(out, "  note: the gateway has no listen.management; its /metrics figures are left out\n")
	}

	if kd := kdamonds(); len(kd) > 0 {
		fmt.Fprintf(out, "  note: the kernel's DAMON memory access monitor is running (kdamond, pid %v): its sampling takes a core in slices that lengthen with the memory mapped, and the p99s here rise with it; its CPU is reported below (docs/deploy.md, \"Capacity: slow downloads\")\n", kd)
	}
	priority := "normal priority, as the gateway (--readers-priority normal): the p99s include the readers' own CPU"
	if c.IdleReaders {
		if err := yieldCPU(); err != nil {
			return err
		}
		priority = "idle priority (SCHED_IDLE): they take only CPU the gateway and the prober leave, as devices elsewhere would"
	}
	fmt.Fprintf(out, "  this process (the readers) runs at %s; the prober runs in a process of its own at normal priority\n", priority)
	probe := func(d time.Duration) <-chan outsideProbe {
		return startProbe(ctx, gw, tgt.caFile, samplerCards, tgt.pinFile, d)
	}
	// How long the last streams may take to open once the ramp is over:
	// the readers run at idle priority, so on a busy machine (a CI runner,
	// a laptop building) they open only as the CPU others leave allows.
	// Waiting costs nothing measured: the plateau starts after.
	settle := time.Minute
	var idle outsideProbe
	idleCPU := startCPU(tgt.pid)
	idleOut := probe(15 * time.Second)
	idleMem := watch(tgt.pid, metricsURL, func() { idle = <-idleOut })
	fmt.Fprintf(out, "  idle: %s; %s; %s\n", idle, idleCPU, idleMem)

	// Each reader opens one Redeem stream during the ramp, then its
	// connection delivers nothing until the gate opens, once every reader
	// has started: then all of them read at c.Rate to the end. The
	// plateau between is what the issue asks about, 10,000 downloads
	// held at once, without the cost of starting them (the ramp) mixed in.
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	rs := &readers{rate: c.Rate, rcvbuf: c.ReceiveBuffer, together: c.Together, spread: c.Spread, roots: roots, codes: map[string]int{}, gate: make(chan struct{})}
	if rs.rcvbuf == 0 {
		rs.rcvbuf = 4 << 10
	}
	var wg sync.WaitGroup
	gap := c.Ramp / time.Duration(c.Readers)
	rampStart := time.Now()
	for i := range c.Readers {
		a := acts[i%len(acts)]
		src := net.IPv4(127, 1, byte(1+i/c.PerSource/250), byte(1+i/c.PerSource%250))
		wg.Add(1)
		go func() {
			defer wg.Done()
			rs.run(runCtx, gw, src, a)
		}()
		if ctx.Err() != nil {
			break
		}
		// On a schedule, not a sleep after each start: sleeps drift,
		// and the first readers must not wait so long that the
		// gateway's keepalive closes them.
		time.Sleep(time.Until(rampStart.Add(time.Duration(i+1) * gap)))
	}
	// Wait for the last streams to open (or be refused).
	for end := time.Now().Add(settle); rs.open.Load()+rs.failed.Load() < int64(c.Readers) && time.Now().Before(end) && ctx.Err() == nil; {
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintf(out, "  %d readers started in %s; %d downloads open, %d refused\n", c.Readers, time.Since(rampStart).Round(time.Second), rs.open.Load(), rs.failed.Load())

	atStart := rs.downloading.Load()
	cpu, hist := startCPU(tgt.pid), readHandlerTimes(metricsURL)
	var held outsideProbe
	heldOut := probe(c.Duration)
	peak := watch(tgt.pid, metricsURL, func() { held = <-heldOut })
	atEnd := rs.downloading.Load()
	fmt.Fprintf(out, "  held (%s; downloads open %d then %d): %s; %s; %s\n", c.Duration, atStart, atEnd, held, cpu, hist.since(metricsURL))
	fmt.Fprintf(out, "  gateway peak while held: %s\n", peak)

	// The readers now read at c.Rate to the end, and close. The prober
	// is started first: it opens its cards before its window.
	cpu, hist = startCPU(tgt.pid), readHandlerTimes(metricsURL)
	readingWindow := 10*time.Second + c.Spread
	readingOut := probe(readingWindow)
	close(rs.gate)
	gateOpen := time.Now()
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	reading := <-readingOut
	readingCPU := cpu.String() + "; " + hist.since(metricsURL)
	var peak2 gatewayMem
	peak2.max(readGatewayMem(tgt.pid, metricsURL))
	select {
	case <-finished:
	case <-time.After(2 * time.Minute):
		stop()
		<-finished
	}
	peak.max(peak2)
	phases := "each reader at a phase of its own"
	if c.Together {
		phases = "every reader in step"
	} else if c.Spread > 0 {
		phases = fmt.Sprintf("each reader starting within %s of the gate", c.Spread)
	}
	fmt.Fprintf(out, "  reading at %d B/s, %s (first %s after the gate): %s; %s; %s\n", c.Rate, phases, readingWindow, reading, readingCPU, peak2)
	rs.mu.Lock()
	fmt.Fprintf(out, "  readers: %d downloads finished %s after the gate (%.1f MiB), %d refused or cut: %v\n",
		rs.done.Load(), time.Since(gateOpen).Round(time.Second), float64(rs.bytes.Load())/(1<<20), rs.failed.Load(), rs.codes)
	rs.mu.Unlock()
	readers := "readers at idle priority"
	if !c.IdleReaders {
		readers = "readers at normal priority, on the same cores"
	}
	check := func(r probeResult) time.Duration { return r.check }
	begin := func(r probeResult) time.Duration { return r.begin }
	complete := func(r probeResult) time.Duration { return r.complete }
	fmt.Fprintf(out, "  goals (issue 15): gateway RSS under 512 MiB: %v (peak %.0f MiB); other p99 at most 2x idle (%s): while held Check %s, BeginSession %s, CompleteSession %s; while they read Check %s, BeginSession %s, CompleteSession %s\n",
		peak.rss < 512<<20, peak.rss/(1<<20), readers,
		probeRatio(held, idle, check), probeRatio(held, idle, begin), probeRatio(held, idle, complete),
		probeRatio(reading, idle, check), probeRatio(reading, idle, begin), probeRatio(reading, idle, complete))
	return nil
}

// handlerTimes are the gateway's own request duration histograms
// (credgw_grpc_request_duration_seconds) of Check and BeginSession:
// cumulative counts by upper bound. Their p99 is the time in the
// gateway's handler, without the network or this process's scheduling.
type handlerTimes map[string]map[float64]float64

var timedMethods = []string{"/grpc.health.v1.Health/Check", "/credgw.v1.PIVAuth/BeginSession"}

func readHandlerTimes(metricsURL string) handlerTimes {
	h := handlerTimes{}
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(metricsURL)
	if err != nil {
		return h
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "credgw_grpc_request_duration_seconds_bucket{") || !strings.Contains(line, `code="OK"`) {
			continue
		}
		for _, m := range timedMethods {
			if !strings.Contains(line, `method="`+m+`"`) {
				continue
			}
			_, le, _ := strings.Cut(line, `le="`)
			le, rest, _ := strings.Cut(le, `"}`)
			bound, err1 := strconv.ParseFloat(le, 64)
			n, err2 := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err1 != nil || err2 != nil {
				continue
			}
			if h[m] == nil {
				h[m] = map[float64]float64{}
			}
			h[m][bound] = n
		}
	}
	return h
}

// since is the p99 of each method's handler time since h, as the bucket
// bound it falls under.
func (h handlerTimes) since(metricsURL string) string {
	now := readHandlerTimes(metricsURL)
	var parts []string
	for _, m := range timedMethods {
		var bounds []float64
		for b := range now[m] {
			bounds = append(bounds, b)
		}
		slices.Sort(bounds)
		total := now[m][math.Inf(1)] - h[m][math.Inf(1)]
		p99 := "no calls"
		for _, b := range bounds {
			if total > 0 && now[m][b]-h[m][b] >= 0.99*total {
				p99 = fmt.Sprintf("≤ %s", time.Duration(b*float64(time.Second)))
				break
			}
		}
		parts = append(parts, fmt.Sprintf("%s %s", m[strings.LastIndex(m, "/")+1:], p99))
	}
	return "in-gateway handler p99: " + strings.Join(parts, ", ")
}

// cpuSince is the CPU time the gateway, this process and the kernel's
// DAMON threads (kdamond, if any) used since start: on shared cores,
// whose load a p99 follows.
type cpuSince struct {
	pid                       int
	start                     time.Time
	gateway, himself, kdamond float64
	kdamonds                  []int
}

func startCPU(pid int) cpuSince {
	kd := kdamonds()
	return cpuSince{pid: pid, start: time.Now(), gateway: cpuSeconds(pid), himself: cpuSeconds(os.Getpid()), kdamonds: kd, kdamond: sumCPU(kd)}
}

func (c cpuSince) String() string {
	wall := time.Since(c.start).Seconds()
	s := fmt.Sprintf("CPU: gateway %.0f%%, bench %.0f%%", 100*(cpuSeconds(c.pid)-c.gateway)/wall, 100*(cpuSeconds(os.Getpid())-c.himself)/wall)
	if len(c.kdamonds) > 0 {
		if used := sumCPU(c.kdamonds) - c.kdamond; used >= 0 {
			s += fmt.Sprintf(", kdamond %.1f%%", 100*used/wall)
		} else {
			s += ", kdamond ? (it restarted)"
		}
	}
	return s + " of one core (the prober's own process not counted)"
}

// kdamonds are the kernel's DAMON monitor threads running now (their
// command is kdamond.N).
func kdamonds() []int {
	dirs, _ := filepath.Glob("/proc/[0-9]*/comm")
	var pids []int
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil || !strings.HasPrefix(string(b), "kdamond") {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(d))); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

func sumCPU(pids []int) float64 {
	var t float64
	for _, p := range pids {
		t += cpuSeconds(p)
	}
	return t
}

// cpuSeconds is a process's user and system time (0 if unknown).
func cpuSeconds(pid int) float64 {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name (which may hold spaces).
	_, rest, _ := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ, 100 on Linux
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(max(b, 1)) }

// raiseNoFile raises this process's open-file limit to its hard limit:
// each reader holds a connection.
func raiseNoFile() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	l.Cur = l.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	return l.Cur, nil
}

// gatewayNoFile is the gateway process's open-file limit (Go raises its
// soft limit to the hard one at start).
func gatewayNoFile(pid int) string {
	if pid == 0 {
		return "unknown (no --gateway-pid)"
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return err.Error()
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "Max open files") {
			if f := strings.Fields(line); len(f) >= 4 {
				return f[3]
			}
		}
	}
	return "unknown"
}

// storePackages enrolls n activations with cards (each person up to the
// gateway's enrollment.max_credential_sets) and redeems each once with
// the reference agent, stopping before Confirm: the package stays stored
// for resumes.
func storePackages(ctx context.Context, tgt *target, roots *x509.CertPool, cards []*heldCard, n int) ([]slowActivation, error) {
	errNoConfirm := errors.New("bench: stored, not confirmed")
	work, err := os.MkdirTemp("", "credgw-bench-slow-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	acts := make([]slowActivation, n)
	lat := &latencies{d: map[string][]time.Duration{}}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for w := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n && errs[w] == nil; i = int(next.Add(1)) - 1 {
				card := cards[i/tgt.setsPerPerson]
				resp, err := enrollOnce(ctx, roots, tgt.gateways[0], card, lat)
				if err != nil {
					errs[w] = err
					return
				}
				p, err := code.ParsePayload(resp.GetQrPayload())
				if err != nil {
					errs[w] = err
					return
				}
				p.Gateway = tgt.gateways[0]
				var req *credgwv1.RedeemRequest
				capture := grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
					cs, err := streamer(ctx, desc, cc, method, opts...)
					return &sentStream{ClientStream: cs, sent: func(m any) {
						if r, ok := m.(*credgwv1.RedeemRequest); ok {
							req = proto.Clone(r).(*credgwv1.RedeemRequest)
						}
					}}, err
				})
				_, err = agent.Redeem(ctx, agent.Options{Payload: p, Password: resp.GetPassword(), OutDir: fmt.Sprintf("%s/%d", work, i),
					KeystorePIN: "bench-pin-2026", Device: &credgwv1.DeviceInfo{Model: "bench slow"}, DialOptions: []grpc.DialOption{capture},
					MaxResumes: 1, Install: func(context.Context, *agent.Package) error { return errNoConfirm }})
				if !errors.Is(err, errNoConfirm) || req == nil {
					errs[w] = fmt.Errorf("bench: first redemption of activation %d: %v", i, err)
					return
				}
				req.ResumeOffset = 0
				acts[i] = slowActivation{req: req}
			}
		}()
	}
	wg.Wait()
	return acts, errors.Join(errs...)
}

type sentStream struct {
	grpc.ClientStream
	sent func(any)
}

func (s *sentStream) SendMsg(m any) error {
	s.sent(m)
	return s.ClientStream.SendMsg(m)
}

// readers are the slow devices.
type readers struct {
	rate     int
	rcvbuf   int
	together bool
	spread   time.Duration // see SlowConfig.Spread
	roots    *x509.CertPool

	downloading  atomic.Int64 // readers in a Redeem call
	open         atomic.Int64 // Redeem streams opened
	done, failed atomic.Int64
	gate         chan struct{} // closed: the readers read
	bytes        atomic.Int64
	mu           sync.Mutex
	codes        map[string]int
}

// phase is how long after the gate a reader whose pieces come every
// interval waits before its first: none when together, else a random
// time within the interval or within spread if that is longer.
func (r *readers) phase(interval time.Duration) time.Duration {
	if r.together {
		return 0
	}
	return rand.N(max(interval, r.spread))
}

// run is one reader: it opens one Redeem stream for a's stored package
// (from offset 0) on a connection of its own from src, and reads it to
// the end through a connection that delivers nothing before r.gate
// closes and rate bytes a second after; then it closes the connection
// and holds nothing. Pacing the gRPC Recv calls would not slow the
// gateway down: a package is smaller than the stream's flow-control
// window, so the gateway writes it out at once whatever the client's
// Recv does. A slow phone is slow in the network: the bytes arrive at its
// rate, and the gateway's writes wait for them.
func (r *readers) run(ctx context.Context, gateway string, src net.IP, a slowActivation) {
	host, _, _ := net.SplitHostPort(gateway)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Control: receiveBuffer(r.rcvbuf)}
	var sc *slowConn
	conn, err := grpc.NewClient(gateway,
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: r.roots, ServerName: host, MinVersion: tls.VersionTLS12})),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			sc = &slowConn{Conn: c, rate: r.rate, gate: r.gate}
			sc.phase = r.phase(sc.interval())
			return sc, nil
		}),
		// The bench holds thousands of connections: small buffers on
		// its side.
		grpc.WithReadBufferSize(4<<10), grpc.WithWriteBufferSize(4<<10))
	if err != nil {
		r.fail(err)
		return
	}
	defer conn.Close()
	client := credgwv1.NewRedemptionClient(conn)
	n, err := r.download(ctx, client, a.req, func() {
		// The handshake is done and the request sent: from now on the
		// connection waits for the gate.
		sc.hold.Store(true)
	})
	r.bytes.Add(n)
	switch {
	case err == nil:
		r.done.Add(1)
	case ctx.Err() == nil:
		r.fail(err)
	}
}

func (r *readers) download(ctx context.Context, client credgwv1.RedemptionClient, req *credgwv1.RedeemRequest, opened func()) (int64, error) {
	r.downloading.Add(1)
	defer r.downloading.Add(-1)
	stream, err := client.Redeem(ctx, req)
	if err != nil {
		return 0, err
	}
	opened()
	r.open.Add(1)
	var n int64
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n += int64(len(m.GetChunk().GetData()))
	}
}

func (r *readers) fail(err error) {
	r.failed.Add(1)
	r.mu.Lock()
	r.codes[status.Code(err).String()]++
	r.mu.Unlock()
}

// receiveBuffer sets the reader's socket receive buffer: small by
// default, as a slow network holds little in flight; without it loopback
// would take a whole package into the bench's kernel buffer at once.
func receiveBuffer(n int) func(_, _ string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
		})
		return errors.Join(err, serr)
	}
}

// slowConn delivers what it reads at rate bytes a second, in pieces of
// at most one TCP segment (1,460 bytes) or one second of rate, whichever
// is less, as a slow link delivers them; once hold is set, nothing before
// gate closes, and then nothing for phase more.
type slowConn struct {
	net.Conn
	rate  int
	phase time.Duration
	next  time.Time
	hold  atomic.Bool
	gate  <-chan struct{}
}

// piece is the most one Read delivers.
func (c *slowConn) piece() int { return max(1, min(c.rate, 1460)) }

// interval is the time one whole piece takes at rate.
func (c *slowConn) interval() time.Duration {
	return time.Duration(c.piece()) * time.Second / time.Duration(c.rate)
}

func (c *slowConn) Read(p []byte) (int, error) {
	if c.hold.Load() {
		<-c.gate
		c.hold.Store(false)
		c.next = time.Now().Add(c.phase)
	}
	if d := time.Until(c.next); d > 0 {
		time.Sleep(d)
	}
	n, err := c.Conn.Read(p[:min(len(p), c.piece())])
	now := time.Now()
	if c.next.Before(now) {
		c.next = now
	}
	c.next = c.next.Add(time.Duration(n) * time.Second / time.Duration(c.rate))
	return n, err
}

// gatewayMem is what the gateway holds.
type gatewayMem struct {
	rss, heapInuse  float64 // bytes
	goroutines, fds float64
	from            string
}

func (m gatewayMem) String() string {
	return fmt.Sprintf("RSS %.0f MiB (%s), Go heap in use %.0f MiB, %0.f goroutines, %.0f open fds",
		m.rss/(1<<20), m.from, m.heapInuse/(1<<20), m.goroutines, m.fds)
}

func (m *gatewayMem) max(o gatewayMem) {
	if o.rss > m.rss {
		m.rss, m.from = o.rss, o.from
	}
	m.heapInuse = max(m.heapInuse, o.heapInuse)
	m.goroutines = max(m.goroutines, o.goroutines)
	m.fds = max(m.fds, o.fds)
}

// watch runs run and samples the gateway's memory meanwhile, the same way
// in every phase, so that idle and held calls are timed alike: each second
// its VmRSS from /proc when its pid is known (cheap for the gateway), else
// its /metrics; then, once run has returned, its whole /metrics (heap,
// goroutines, descriptors). A /metrics scrape costs a gateway that holds
// 10,000 connections more than an idle one (the process collector lists
// /proc/self/fd): before, only the held phase was scraped each second.
// (Measured: the held Check p99 was 3.0x idle either way; the scrape is
// not where its tail comes from.)
func watch(pid int, metricsURL string, run func()) gatewayMem {
	var peak gatewayMem
	stop, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			if pid != 0 {
				peak.max(readRSS(pid))
			} else {
				peak.max(readGatewayMem(0, metricsURL))
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	run()
	close(stop)
	<-sampled
	peak.max(readGatewayMem(pid, metricsURL))
	return peak
}

// readRSS reads the gateway's VmRSS from /proc.
func readRSS(pid int) gatewayMem {
	var m gatewayMem
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			m.rss, m.from = float64(kb)*1024, "VmRSS"
		}
	}
	return m
}

// readGatewayMem reads the gateway's VmRSS from /proc (pid known) and the
// rest from its /metrics.
func readGatewayMem(pid int, metricsURL string) gatewayMem {
	var m gatewayMem
	c := http.Client{Timeout: 5 * time.Second}
	if resp, err := c.Get(metricsURL); err == nil {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			name, v, ok := strings.Cut(sc.Text(), " ")
			if !ok {
				continue
			}
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				continue
			}
			switch name {
			case "process_resident_memory_bytes":
				m.rss, m.from = f, "/metrics"
			case "go_memstats_heap_inuse_bytes":
				m.heapInuse = f
			case "go_goroutines":
				m.goroutines = f
			case "process_open_fds":
				m.fds = f
			}
		}
		resp.Body.Close()
	}
	if pid == 0 {
		return m
	}
	if r := readRSS(pid); r.from != "" {
		m.rss, m.from = r.rss, r.from
	}
	return m
}
