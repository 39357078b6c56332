package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/credgw/credgw/activation"
	"github.com/credgw/credgw/agent"
	hsmsim "github.com/credgw/credgw/hsm-sim"
	"github.com/credgw/credgw/pkcs11"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/server"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Load tests (bounded, 127.0.0.1 only)"}
	var concurrency int
	var duration time.Duration
	var escrowType, cpuProfile, pgDSN string
	enrollCmd := &cobra.Command{
		Use:   "enroll --concurrency N --duration D",
		Short: "Full enrollments per second against an in-process gateway",
		Long: `Start an in-process gateway on a temporary development environment (SQLite,
CA key in SoftHSM, escrow keys of --escrow-key type), one simulated card per
worker, and run the full flow in a loop for --duration: PKI-AUTH with the card,
CreateEnrollment, Redeem (device keys, download, verification, PKCS#12 files),
Confirm. Reports enrollments/s and p50/p99 latency per RPC.`,
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
			return benchEnroll(cmd.Context(), cmd.OutOrStdout(), concurrency, duration, escrowType, pgDSN)
		},
	}
	enrollCmd.Flags().IntVar(&concurrency, "concurrency", 4, "parallel workers, each with its own card")
	enrollCmd.Flags().DurationVar(&duration, "duration", 10*time.Second, "how long to run")
	enrollCmd.Flags().StringVar(&escrowType, "escrow-key", "p256", "escrow key type: p256 or rsa2048")
	enrollCmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile (go tool pprof) here")
	enrollCmd.Flags().StringVar(&pgDSN, "postgres", "", "run the gateway on this PostgreSQL (a URL) instead of SQLite; its schema is migrated")
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

func benchEnroll(ctx context.Context, out io.Writer, concurrency int, duration time.Duration, escrowType, pgDSN string) error {
	dir, err := os.MkdirTemp("", "credgw-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	hsmLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer hsmLn.Close()
	grpcPort, _ := freePort()
	httpPort, _ := freePort()
	d, err := hsmsim.DevInit(ctx, filepath.Join(dir, "dev"), hsmsim.DevOptions{HSMURL: "http://" + hsmLn.Addr().String(),
		GRPCAddr: fmt.Sprintf("127.0.0.1:%d", grpcPort), HTTPAddr: fmt.Sprintf("127.0.0.1:%d", httpPort)})
	if err != nil {
		return err
	}
	if err := devCA(ctx, d); err != nil {
		return err
	}
	hsm := &http.Server{Handler: d.Env.Handler(nil)}
	go hsm.Serve(hsmLn)
	defer hsm.Close()
	cfg, err := server.LoadConfig(d.Config)
	if err != nil {
		return err
	}
	cfg.Escrow.KeyType = escrowType
	storeName := "SQLite"
	if pgDSN != "" {
		cfg.Store.Driver, cfg.Store.DSN, storeName = "postgres", pgDSN, "PostgreSQL"
		st, err := server.OpenStore(ctx, cfg, true)
		if err != nil {
			return err
		}
		st.Close()
	}
	cfg.Enroll.MaxSets = 100
	cfg.Log.Level = "error"
	srv, err := server.New(ctx, cfg)
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return err
	}
	defer srv.Shutdown(context.Background())
	mod, err := d.Env.OpenModule()
	if err != nil {
		return err
	}
	pin, _ := os.ReadFile(d.PINFile)
	// Four cards (four people) per worker, used in turn: every enrollment
	// of a person adds an escrowed key to the key history its package
	// carries, so one card enrolled a hundred times would measure key
	// history, not enrollment.
	const cardsPerWorker = 4
	cards := make([]string, concurrency*cardsPerWorker)
	for i := range cards {
		cards[i] = fmt.Sprintf("bench-%d", i)
		if _, err := d.Env.NewCard(ctx, mod, hsmsim.CardSpec{Name: cards[i], PIN: []byte(strings.TrimSpace(string(pin))),
			Key: pkcs11.ECP256, Email: fmt.Sprintf("bench%d@example.com", i)}); err != nil {
			mod.Close()
			return err
		}
	}
	mod.Close()
	fmt.Fprintf(out, "bench: %d workers for %s against an in-process gateway (%s, SoftHSM CA key, %s escrow keys)\n", concurrency, duration, storeName, escrowType)
	lat := &latencies{d: map[string][]time.Duration{}}
	deadline := time.Now().Add(duration)
	var wg sync.WaitGroup
	var mu sync.Mutex
	done, failed := 0, 0
	var firstErr error
	start := time.Now()
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 99*cardsPerWorker && time.Now().Before(deadline); i++ { // ≤ 99 sets per person (the cap is 100)
				card := cards[w*cardsPerWorker+i%cardsPerWorker]
				err := oneEnrollment(ctx, d, srv.GRPCAddr(), card, lat, filepath.Join(dir, fmt.Sprintf("w%d", w)))
				mu.Lock()
				if err != nil {
					failed++
					if firstErr == nil {
						firstErr = err
					}
				} else {
					done++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	fmt.Fprintf(out, "  %d full enrollments in %s: %.1f enrollments/s (%d failed)\n", done, elapsed.Round(time.Millisecond), float64(done)/elapsed.Seconds(), failed)
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
	if firstErr != nil {
		return fmt.Errorf("bench: %d enrollments failed; first: %w", failed, firstErr)
	}
	return nil
}

func oneEnrollment(ctx context.Context, d *hsmsim.DevEnv, gateway, card string, lat *latencies, work string) error {
	resp, err := enroll(ctx, io.Discard, enrollOptions{gateway: gateway, caFile: d.CAFile, card: "pkcs11:token=" + card,
		pinFile: d.PINFile, name: "bench", timeout: time.Minute, dialOpts: lat.dialOptions(), quiet: true})
	if err != nil {
		return err
	}
	p, err := activation.ParsePayload(resp.GetQrPayload())
	if err != nil {
		return err
	}
	_, err = agent.Redeem(ctx, agent.Options{Payload: p, Password: resp.GetPassword(), OutDir: work, KeystorePIN: "bench-pin-2026",
		Device: &credgwv1.DeviceInfo{Model: "bench"}, DialOptions: lat.dialOptions()})
	return err
}
