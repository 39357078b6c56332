package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/credgw/credgw/activation"
	"github.com/credgw/credgw/agent"
	hsmsim "github.com/credgw/credgw/hsm-sim"
	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/piv/pivclient"
	"github.com/credgw/credgw/pkcs11"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/server"
	"github.com/credgw/credgw/store"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Load tests (bounded, 127.0.0.1 only)"}
	var concurrency int
	var duration time.Duration
	var escrowType, cpuProfile, pgDSN string
	var keepGoing bool
	var replicas, people, newWork int
	var device, gatewayDir string
	enrollCmd := &cobra.Command{
		Use:   "enroll --concurrency N --duration D [--gateway-dir DIR]",
		Short: "Full enrollments per second against an in-process or a running gateway",
		Long: `Run the full flow in a loop for --duration with --concurrency workers: PKI-AUTH
with a card, CreateEnrollment, Redeem with the reference agent (device keys,
download, verification, and — with --device agent — the PKCS#12 files under
the keystore PIN), Confirm. Reports enrollments/s, p50/p99 latency per RPC,
the mean key history a device received (every enrollment of a person adds one
escrowed key to what the next one carries, so few people enrolled many times
measure key history, not enrollment), and checks afterwards that every
delivered certificate is recorded and every activation is in a legal state.

By default the gateway runs in this process on a temporary development
environment (SQLite or --postgres, CA key in SoftHSM, escrow keys of
--escrow-key type). With --gateway-dir DIR it is the gateway already running
from DIR (credgw dev init --dir DIR; credgw hsm-sim serve --dir DIR/hsm;
credgw serve --config DIR/credgw.yaml), with its own configuration: the bench
adds its --people cards to DIR/hsm (new tokens each run, which stay: use a
development directory you can throw away) and enrolls each person at most
enrollment.max_credential_sets times.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if concurrency < 1 || concurrency > 64 {
				return fmt.Errorf("--concurrency %d: 1 to 64", concurrency)
			}
			if duration <= 0 || duration > 10*time.Minute {
				return fmt.Errorf("--duration %s: up to 10m", duration)
			}
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			if people == 0 {
				people = max(128, 8*concurrency)
			}
			if people < concurrency || people > 1024 {
				return fmt.Errorf("--people %d: at least --concurrency, at most 1024", people)
			}
			if gatewayDir != "" && cmd.Flags().Changed("escrow-key") {
				return fmt.Errorf("--escrow-key sets up an in-process gateway; with --gateway-dir the running gateway's escrow.key_type counts")
			}
			if gatewayDir != "" && cmd.Flags().Changed("new-work") {
				return fmt.Errorf("--new-work sets up an in-process gateway; with --gateway-dir the running gateway's limits.new_work counts")
			}
			if newWork < -1 || newWork > 4096 {
				return fmt.Errorf("--new-work %d: -1 (no limit), 0 (the default: half the CPUs) or up to 4096", newWork)
			}
			if device != "agent" && device != "protocol" {
				return fmt.Errorf("--device %q: agent or protocol", device)
			}
			return benchEnroll(cmd.Context(), cmd.OutOrStdout(), benchOptions{concurrency: concurrency, duration: duration,
				escrowType: escrowType, pgDSN: pgDSN, keepGoing: keepGoing, replicas: replicas, people: people, loadOnly: device == "protocol",
				gatewayDir: gatewayDir, newWork: newWork})
		},
	}
	enrollCmd.Flags().IntVar(&concurrency, "concurrency", 4, "parallel workers, each with its own card")
	enrollCmd.Flags().DurationVar(&duration, "duration", 10*time.Second, "how long to run")
	enrollCmd.Flags().StringVar(&escrowType, "escrow-key", "p256", "escrow key type: p256 or rsa2048")
	enrollCmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile (go tool pprof) here")
	enrollCmd.Flags().StringVar(&pgDSN, "postgres", "", "run the gateway on this PostgreSQL (a URL) instead of SQLite; its schema is migrated")
	enrollCmd.Flags().IntVar(&replicas, "replicas", 1, "gateway replicas in the process (2 needs --postgres); workers alternate between them")
	enrollCmd.Flags().StringVar(&device, "device", "agent", `the simulated devices: "agent" runs the reference agent in full (it shares this machine's cores with the gateway); "protocol" does the device's part of the protocol (keys, CSRs, download, SHA-256, Confirm) and skips what a phone does on its own CPU afterwards (chain checks, opening and re-protecting the PKCS#12 files): the gateway's own throughput`)
	enrollCmd.Flags().StringVar(&gatewayDir, "gateway-dir", "", "run against the gateway already running from this development environment (credgw dev init --dir)")
	enrollCmd.Flags().IntVar(&newWork, "new-work", 0, "limits.new_work of the in-process gateway: how many sign-in challenges and new enrollments run at once while redemptions go first (0: half the CPUs; -1: no limit)")
	enrollCmd.Flags().IntVar(&people, "people", 0, "simulated cards (people), made before the run (default 128, or 8 per worker if more)")
	enrollCmd.Flags().BoolVar(&keepGoing, "keep-going", false, "exit 0 even if some enrollments failed (fault drills); the invariant check still decides")
	cmd.AddCommand(enrollCmd)
	return cmd
}

// latencies records RPC durations per method.
type latencies struct {
	mu sync.Mutex
	d  map[string][]time.Duration
}

func (l *latencies) add(method string, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.d[method] = append(l.d[method], d)
}

func (l *latencies) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			start := time.Now()
			err := invoker(ctx, method, req, reply, cc, opts...)
			if err == nil {
				l.add(method, time.Since(start))
			}
			return err
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			cs, err := streamer(ctx, desc, cc, method, opts...)
			if err != nil {
				return nil, err
			}
			return &timedStream{ClientStream: cs, start: time.Now(), done: func(d time.Duration) { l.add(method, d) }}, nil
		}),
	}
}

type timedStream struct {
	grpc.ClientStream
	start time.Time
	done  func(time.Duration)
	once  sync.Once
}

func (s *timedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == io.EOF {
		s.once.Do(func() { s.done(time.Since(s.start)) })
	}
	return err
}

type benchOptions struct {
	concurrency int
	duration    time.Duration
	escrowType  string
	pgDSN       string
	keepGoing   bool
	replicas    int
	people      int
	loadOnly    bool
	gatewayDir  string
	newWork     int // limits.new_work of the in-process gateway
}

// benchTarget is what the workers run against.
type benchTarget struct {
	gateways        []string // gRPC addresses; workers alternate
	env             *hsmsim.Env
	pinFile, caFile string
	cfg             *server.Config // for the invariant check
	what            string         // for the report
	setsPerPerson   int            // enrollment.max_credential_sets
}

// inProcessTarget makes a throwaway development environment and runs the
// gateway (and replicas) in this process.
func inProcessTarget(ctx context.Context, o benchOptions, cleanup *[]func()) (*benchTarget, error) {
	if o.replicas < 1 || o.replicas > 4 || (o.replicas > 1 && o.pgDSN == "") {
		return nil, fmt.Errorf("--replicas %d: 1, or up to 4 with --postgres (replicas share the database)", o.replicas)
	}
	dir, err := os.MkdirTemp("", "credgw-bench-")
	if err != nil {
		return nil, err
	}
	*cleanup = append(*cleanup, func() { os.RemoveAll(dir) })
	hsmLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	*cleanup = append(*cleanup, func() { hsmLn.Close() })
	grpcPort, _ := freePort()
	httpPort, _ := freePort()
	d, err := hsmsim.DevInit(ctx, filepath.Join(dir, "dev"), hsmsim.DevOptions{HSMURL: "http://" + hsmLn.Addr().String(),
		GRPCAddr: fmt.Sprintf("127.0.0.1:%d", grpcPort), HTTPAddr: fmt.Sprintf("127.0.0.1:%d", httpPort)})
	if err != nil {
		return nil, err
	}
	if err := devCA(ctx, d); err != nil {
		return nil, err
	}
	hsm := &http.Server{Handler: d.Env.Handler(nil)}
	go hsm.Serve(hsmLn)
	*cleanup = append(*cleanup, func() { hsm.Close() })
	cfg, err := server.LoadConfig(d.Config)
	if err != nil {
		return nil, err
	}
	cfg.Escrow.KeyType = o.escrowType
	storeName := "SQLite"
	if o.pgDSN != "" {
		cfg.Store.Driver, cfg.Store.DSN, storeName = "postgres", o.pgDSN, "PostgreSQL"
		st, err := server.OpenStore(ctx, cfg, true)
		if err != nil {
			return nil, err
		}
		st.Close()
	}
	cfg.Enroll.MaxSets = 100
	cfg.Log.Level = "error"
	cfg.Limits.NewWork = o.newWork
	gatewayGC() // as credgw serve does
	t := &benchTarget{env: d.Env, pinFile: d.PINFile, caFile: d.CAFile, cfg: cfg, setsPerPerson: cfg.Enroll.MaxSets}
	for i := 0; i < o.replicas; i++ {
		rc := *cfg
		if i > 0 {
			rc.Listen.GRPC, rc.Listen.HTTP = "127.0.0.1:0", "127.0.0.1:0"
		}
		r, err := server.New(ctx, &rc)
		if err != nil {
			return nil, err
		}
		if err := r.Start(); err != nil {
			return nil, err
		}
		*cleanup = append(*cleanup, func() { r.Shutdown(context.Background()) })
		t.gateways = append(t.gateways, r.GRPCAddr())
	}
	t.what = fmt.Sprintf("%d in-process gateway replica(s) (%s, SoftHSM CA key, %s escrow keys)", len(t.gateways), storeName, o.escrowType)
	return t, nil
}

// runningTarget is a gateway already running from a development
// environment (credgw dev init --dir DIR, then credgw hsm-sim serve and
// credgw serve): the bench makes its people's cards in DIR/hsm and
// enrolls against the gateway's gRPC address.
func runningTarget(ctx context.Context, dir string, o benchOptions) (*benchTarget, error) {
	if o.pgDSN != "" || o.replicas != 1 {
		return nil, fmt.Errorf("--postgres and --replicas set up an in-process gateway; with --gateway-dir the running gateway's own configuration counts")
	}
	cfgPath := filepath.Join(dir, "credgw.yaml")
	cfg, err := server.LoadConfig(cfgPath)
	if err != nil {
		return nil, fmt.Errorf("--gateway-dir %s: %w (make it with credgw dev init --dir %s)", dir, err, dir)
	}
	env, err := hsmsim.Load(filepath.Join(dir, "hsm"))
	if err != nil {
		return nil, fmt.Errorf("--gateway-dir %s: no simulated card issuer in %s: %w", dir, filepath.Join(dir, "hsm"), err)
	}
	c, err := (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, "tcp", cfg.Listen.GRPC)
	if err != nil {
		return nil, fmt.Errorf("no gateway listening at %s: start it with credgw serve --config %s (and credgw hsm-sim serve --dir %s)",
			cfg.Listen.GRPC, cfgPath, filepath.Join(dir, "hsm"))
	}
	c.Close()
	return &benchTarget{gateways: []string{cfg.Listen.GRPC}, env: env, pinFile: filepath.Join(dir, "card.pin"), caFile: filepath.Join(dir, "tls", "ca.crt"),
		cfg: cfg, setsPerPerson: cfg.Enroll.MaxSets,
		what: fmt.Sprintf("the gateway running at %s (%s, %s escrow keys)", cfg.Listen.GRPC, cfg.Store.Driver, cfg.Escrow.KeyType)}, nil
}

func benchEnroll(ctx context.Context, out io.Writer, o benchOptions) error {
	concurrency, duration := o.concurrency, o.duration
	var cleanup []func()
	defer func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}()
	var tgt *benchTarget
	var err error
	if o.gatewayDir != "" {
		tgt, err = runningTarget(ctx, o.gatewayDir, o)
	} else {
		tgt, err = inProcessTarget(ctx, o, &cleanup)
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
	mod, err := tgt.env.OpenModule()
	if err != nil {
		return err
	}
	pin, err := os.ReadFile(tgt.pinFile)
	if err != nil {
		return fmt.Errorf("bench: the card PIN: %w", err)
	}
	// Every person's card is made before the run and held open, as a card
	// sits in its reader: the run measures enrollments, not SoftHSM
	// scanning its slots for a token.
	cards := make([]*benchCard, o.people)
	defer func() {
		for _, c := range cards {
			if c != nil {
				c.Close()
			}
		}
		mod.Close()
	}()
	modPath, err := pkcs11.SoftHSMModule()
	if err != nil {
		return err
	}
	run := strconv.FormatInt(time.Now().UnixNano(), 36) // new tokens each run: a label names one token
	for i := range cards {
		name := fmt.Sprintf("bench-%s-%d", run, i)
		if _, err := tgt.env.NewCard(ctx, mod, hsmsim.CardSpec{Name: name, PIN: []byte(strings.TrimSpace(string(pin))),
			Key: pkcs11.ECP256, Email: fmt.Sprintf("bench%d@example.com", i)}); err != nil {
			return err
		}
		u, err := pkcs11.ParseURI("pkcs11:token=" + uriEscape(name))
		if err != nil {
			return err
		}
		u.PINSource = tgt.pinFile
		card, err := piv.OpenCard(ctx, u, modPath)
		if err != nil {
			return err
		}
		if cards[i], err = newBenchCard(ctx, card); err != nil {
			card.Close()
			return err
		}
	}
	roots, err := pivclient.LoadRoots(tgt.caFile)
	if err != nil {
		return err
	}
	devices := "the reference agent in full"
	if o.loadOnly {
		devices = "protocol-only devices"
	}
	fmt.Fprintf(out, "bench: %d workers, %d people, %s, for %s against %s\n",
		concurrency, o.people, devices, duration, tgt.what)
	lat := &latencies{d: map[string][]time.Duration{}}
	deadline := time.Now().Add(duration)
	var wg sync.WaitGroup
	var mu sync.Mutex
	done, failed := 0, 0
	var firstErr error
	var delivered []string
	history := 0 // escrowed keys delivered, current ones included
	failCodes := map[string]int{}
	start := time.Now()
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
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Worker w enrolls people w, w+N, w+2N, … in turn, each up
			// to the gateway's cap of live sets a person.
			mine := cards[w:]
			n := (len(mine) + concurrency - 1) / concurrency
			for i := 0; i < tgt.setsPerPerson*n && time.Now().Before(deadline) && ctx.Err() == nil; i++ {
				card := mine[(i%n)*concurrency]
				serials, keys, err := oneEnrollment(ctx, roots, gateways[w%len(gateways)], card, lat, filepath.Join(work, fmt.Sprintf("w%d", w)), o.loadOnly)
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
			}
		}()
	}
	wg.Wait()
	close(stopProgress)
	elapsed := time.Since(start)
	fmt.Fprintf(out, "  %d full enrollments in %s: %.1f enrollments/s (%d failed)\n", done, elapsed.Round(time.Millisecond), float64(done)/elapsed.Seconds(), failed)
	if done > 0 {
		fmt.Fprintf(out, "  key history: %.1f escrowed keys a device received on average (the current one included)\n", float64(history)/float64(done))
	}
	if elapsed < duration && done+failed >= tgt.setsPerPerson*o.people {
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
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		p := func(q float64) time.Duration { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
		fmt.Fprintf(out, "  %-40s n=%-6d p50 %-10s p99 %s\n", m, len(ds), p(0.50).Round(10*time.Microsecond), p(0.99).Round(10*time.Microsecond))
	}
	if err := checkInvariants(ctx, out, tgt.cfg, delivered); err != nil {
		return err
	}
	if firstErr != nil && !o.keepGoing {
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
	st, err := server.OpenStore(ctx, cfg, false)
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

func oneEnrollment(ctx context.Context, roots *x509.CertPool, gateway string, card *benchCard, lat *latencies, work string, loadOnly bool) ([]string, int, error) {
	resp, err := enrollOnce(ctx, roots, gateway, card, lat)
	if err != nil {
		return nil, 0, err
	}
	p, err := activation.ParsePayload(resp.GetQrPayload())
	if err != nil {
		return nil, 0, err
	}
	// The replica this worker uses (a load balancer's job); a stalled
	// gateway does not hang the bench.
	p.Gateway = gateway
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	o := agent.Options{Payload: p, Password: resp.GetPassword(), OutDir: work, KeystorePIN: "bench-pin-2026",
		Device: &credgwv1.DeviceInfo{Model: "bench"}, DialOptions: lat.dialOptions(), MaxResumes: 1}
	if loadOnly {
		o.Install = protocolOnly
	}
	res, err := agent.Redeem(ctx, o)
	if err != nil {
		return nil, 0, err
	}
	return res.Serials, res.KeyHistory, nil
}

// protocolOnly is the install of --device protocol: the device has done
// its part of the protocol (keys, CSRs, download, SHA-256) and checks the
// manifest before Confirm, and skips what a phone does on its own CPU
// after that (verifying chains, opening the PKCS#12 files, writing
// keystores). It notes the serials and the key count as the reference
// agent does. Never for a real device: it confirms credentials it did not
// install.
func protocolOnly(_ context.Context, p *agent.Package) error {
	if err := p.CheckManifest(); err != nil {
		return err
	}
	res := p.Result
	for _, m := range p.Manifest().GetItems() {
		if m.GetKind() == credgwv1.ItemKind_ITEM_KIND_PKCS12 {
			res.KeyHistory += int(m.GetKeyCount())
		}
		if m.GetKind() == credgwv1.ItemKind_ITEM_KIND_CERTIFICATE || m.GetName() == "encryption.p12" {
			res.Serials = append(res.Serials, m.GetSerial()) // the current ones
		}
	}
	return nil
}

// enrollOnce is what credgw enroll does at the smart-card computer:
// PKI-AUTH with the card, then CreateEnrollment.
func enrollOnce(ctx context.Context, roots *x509.CertPool, gateway string, card *benchCard, lat *latencies) (*credgwv1.CreateEnrollmentResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	s, err := pivclient.SignIn(ctx, pivclient.Options{Gateway: gateway, Roots: roots, Card: card, DialOptions: lat.dialOptions()})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	resp, err := credgwv1.NewEnrollmentClient(s.Conn).CreateEnrollment(ctx, &credgwv1.CreateEnrollmentRequest{
		SessionToken: s.Result.GetSessionToken(), IdentityName: "bench",
	})
	if err != nil {
		return nil, fmt.Errorf("CreateEnrollment: %w", err)
	}
	return resp, nil
}

// benchCard is a simulated card held in its reader, as a PC keeps one: its
// certificates are read and its 9A key found once. (Each lookup makes
// SoftHSM open and lock every object file of the token: load on the bench
// client, not on the gateway.) The card still signs every TLS handshake
// and every challenge.
type benchCard struct {
	*piv.Card
	auth, ds *x509.Certificate
	key      *pkcs11.Signer
}

func newBenchCard(ctx context.Context, c *piv.Card) (*benchCard, error) {
	auth, err := c.AuthCertificate(ctx)
	if err != nil {
		return nil, err
	}
	s, err := c.AuthSigner(ctx)
	if err != nil {
		return nil, err
	}
	key, ok := s.(*pkcs11.Signer)
	if !ok {
		return nil, fmt.Errorf("bench: the card's 9A key is a %T", s)
	}
	ds, err := c.Certificate(ctx, pkcs11.PIVSignature)
	if err != nil {
		return nil, err
	}
	return &benchCard{Card: c, auth: auth, ds: ds, key: key}, nil
}

func (c *benchCard) AuthCertificate(context.Context) (*x509.Certificate, error) { return c.auth, nil }

func (c *benchCard) AuthSigner(context.Context) (crypto.Signer, error) { return c.key, nil }

func (c *benchCard) Certificate(ctx context.Context, slot pkcs11.PIVSlot) (*x509.Certificate, error) {
	if slot.KeyRef == pkcs11.PIVSignature.KeyRef {
		return c.ds, nil
	}
	return c.Card.Certificate(ctx, slot)
}

func (c *benchCard) SignChallenge(ctx context.Context, gatewayID, sessionID string, challenge []byte) ([]byte, error) {
	return c.key.SignContext(ctx, piv.ChallengeDigest(gatewayID, sessionID, challenge), crypto.SHA256)
}
