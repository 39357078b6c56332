package main

import (
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/credgw/credgw/cmd/credgw/internal/loadgen"
	"github.com/spf13/cobra"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Load tests (bounded, 127.0.0.1 only)"}
	var concurrency int
	var duration time.Duration
	var escrowType, cpuProfile, pgDSN string
	var keepGoing bool
	var replicas, people, newWork int
	var rate float64
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

Workers back to back hold the gateway at saturation: there each call's
latency is mostly waiting, and a whole enrollment takes --concurrency divided
by the rate (Little's law). --rate R runs it open instead: enrollments arrive
R a second on a schedule that does not wait for the gateway, each taken by a
free worker (--concurrency is then the most in flight), and the report adds
each enrollment's time from its arrival to Confirm's answer. Below the rate
the gateway sustains, those are the latencies of a deployment at that load.

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
			var measure func() (func(), error)
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				// The profile covers the measured run, not the set-up
				// (cards, tokens, the gateway's start).
				measure = func() (func(), error) {
					if err := pprof.StartCPUProfile(f); err != nil {
						return nil, fmt.Errorf("--cpuprofile %s: %w", cpuProfile, err)
					}
					return pprof.StopCPUProfile, nil
				}
			}
			if rate < 0 || rate > 1000 {
				return fmt.Errorf("--rate %g: 0 (workers back to back) to 1000 enrollments/s", rate)
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
			if gatewayDir == "" {
				// The gateway runs in this process: GOGC as credgw serve
				// sets it; no memory limit, which would count the devices.
				gatewayGC(-1)
			}
			return loadgen.Run(cmd.Context(), loadgen.Config{Concurrency: concurrency, Duration: duration, People: people,
				ProtocolOnly: device == "protocol", KeepGoing: keepGoing, GatewayDir: gatewayDir,
				EscrowKey: escrowType, Postgres: pgDSN, Replicas: replicas, NewWork: newWork, Rate: rate, Measure: measure}, cmd.OutOrStdout())
		},
	}
	enrollCmd.Flags().IntVar(&concurrency, "concurrency", 4, "parallel workers, each with its own card")
	enrollCmd.Flags().DurationVar(&duration, "duration", 10*time.Second, "how long to run")
	enrollCmd.Flags().StringVar(&escrowType, "escrow-key", "p256", "escrow key type: p256, rsa3072 or rsa2048")
	enrollCmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile (go tool pprof) here")
	enrollCmd.Flags().StringVar(&pgDSN, "postgres", "", "run the gateway on this PostgreSQL (a URL) instead of SQLite, in a schema of its own that is dropped afterwards")
	enrollCmd.Flags().IntVar(&replicas, "replicas", 1, "gateway replicas in the process (2 needs --postgres); workers alternate between them")
	enrollCmd.Flags().StringVar(&device, "device", "agent", `the simulated devices: "agent" runs the reference agent in full (it shares this machine's cores with the gateway); "protocol" does the device's part of the protocol (keys, CSRs, download, SHA-256, Confirm) and skips what a phone does on its own CPU afterwards (chain checks, opening and re-protecting the PKCS#12 files): the gateway's own throughput`)
	enrollCmd.Flags().StringVar(&gatewayDir, "gateway-dir", "", "run against the gateway already running from this development environment (credgw dev init --dir)")
	enrollCmd.Flags().IntVar(&newWork, "new-work", 0, "limits.new_work of the in-process gateway: how many sign-in challenges and new enrollments run at once while redemptions go first (0: half the CPUs; -1: no limit)")
	enrollCmd.Flags().Float64Var(&rate, "rate", 0, "enrollments arriving a second, open loop: on a schedule, each taken by a free worker (0: each worker starts the next as soon as its last ends)")
	enrollCmd.Flags().IntVar(&people, "people", 0, "simulated cards (people), made before the run (default 128, or 8 per worker if more)")
	enrollCmd.Flags().BoolVar(&keepGoing, "keep-going", false, "exit 0 even if some enrollments failed (fault drills); the invariant check still decides")
	cmd.AddCommand(enrollCmd, newBenchSlowCmd(), newBenchProbeCmd())
	return cmd
}

// newBenchProbeCmd is the prober bench slow runs as a process of its
// own, apart from its readers (hidden: a part of bench slow).
func newBenchProbeCmd() *cobra.Command {
	var c loadgen.ProbeConfig
	cmd := &cobra.Command{
		Use:    "probe --gateway HOST:PORT --ca-file FILE --duration D [--cards TOKEN,... --pin-file FILE]",
		Short:  "Time Health/Check 50 times a second and a sign-in 4 times a second, and print their p99 (run by bench slow)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if c.Gateway == "" || c.CAFile == "" {
				return fmt.Errorf("--gateway and --ca-file are required")
			}
			if c.Duration <= 0 || c.Duration > 10*time.Minute {
				return fmt.Errorf("--duration %s: up to 10m", c.Duration)
			}
			if len(c.Cards) > 0 && c.PINFile == "" {
				return fmt.Errorf("--cards needs --pin-file")
			}
			return loadgen.Probe(cmd.Context(), c, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&c.Gateway, "gateway", "", "the gateway's gRPC address")
	cmd.Flags().StringVar(&c.CAFile, "ca-file", "", "the CA certificates that verify the gateway's TLS certificate")
	cmd.Flags().DurationVar(&c.Duration, "duration", 10*time.Second, "how long to time the calls")
	cmd.Flags().StringSliceVar(&c.Cards, "cards", nil, "simulated cards (SoftHSM token labels, under SOFTHSM2_CONF) to sign in with in turn; none: Check only")
	cmd.Flags().StringVar(&c.PINFile, "pin-file", "", "the file holding the cards' PIN")
	return cmd
}

func newBenchSlowCmd() *cobra.Command {
	var c loadgen.SlowConfig
	var rate, readersPriority string
	cmd := &cobra.Command{
		Use:   "slow --readers N --rate 1KiB/s --duration D [--gateway-dir DIR --gateway-pid PID]",
		Short: "Many slow downloads: the gateway's memory and other calls' p99 meanwhile",
		Long: `Hold --readers devices downloading their credential package at --rate each
(issue 15: 10,000 readers at 1 KiB/s, gateway under 512 MiB, other calls' p99
at most twice idle). The gateway is another process, so its memory is its own:
by default this command makes a throwaway development environment (credgw dev
init, default configuration) and runs "credgw serve" on it as a child; with
--gateway-dir DIR it is the gateway already running from DIR (then give
--gateway-pid for its VmRSS, else process_resident_memory_bytes of /metrics).

The bench enrolls --activations through the real flow (PKI-AUTH with a card,
CreateEnrollment), redeems each once without confirming, so the package stays
stored (the time this setup takes is reported apart), then starts the readers
over --ramp: each opens ONE Redeem stream resuming one of those packages (same
activation, secret, password and CSRs) from offset 0 on its own connection.
Once its request is sent, a reader's connection delivers nothing until every
reader has started; the calls are timed for --duration while all the downloads
are held open (the plateau); then every reader reads its package to the end
at --rate bytes a second, with a small socket receive buffer, as a slow
network does, each from a phase of its own within one piece's interval
(--together: all in step, the worst case; --spread D: within D, so that they
do not all finish and close in the same second), and closes its connection:
it holds nothing afterwards and starts no new download. Pacing Recv would
slow nothing, since a package fits in the stream's flow-control window.
--ramp plus --duration plus --spread stays under 80s: the gateway closes a
connection that acknowledges no keepalive ping for that long (60s quiet, 20s
to answer).
Readers come from 127.1.x.y, --per-source each, so the gateway's
limits.max_conns_per_source stays at its default. Both processes
raise their open-file limit to the hard limit (ulimit -Hn): each reader holds
one descriptor on each side.

Reported: Health/Check (50/s) and BeginSession, CompleteSession (a sign-in 4/s)
p99 idle, held and while the readers read, timed by a prober in a process of
its own at normal priority, and (from the gateway's request duration
histogram) in the gateway's handlers; the CPU the gateway, this process and
the kernel's DAMON monitor (kdamond, when it runs) used; the gateway's RSS, Go
heap in use, go_goroutines and open descriptors, idle and peak.

The readers stand in for devices on networks of their own, but here they share
the gateway's cores. With --readers-priority idle (the default) this process
runs at the kernel's idle priority (SCHED_IDLE) once the set-up is done: the
readers then take only CPU the gateway and the prober leave, so the p99s are
the gateway's, as with devices elsewhere; the prober needs root (CAP_SYS_NICE)
or ulimit -e 20 to return to normal priority. --readers-priority normal lets
the readers compete with the gateway for the cores (this machine's p99s).

Figures measured on 2 cores: docs/deploy.md, "Capacity: slow downloads".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := parseRate(rate)
			if err != nil {
				return err
			}
			c.Rate = r
			if c.Readers < 1 || c.Readers > 100000 {
				return fmt.Errorf("--readers %d: 1 to 100000", c.Readers)
			}
			if c.Duration <= 0 || c.Duration > 10*time.Minute {
				return fmt.Errorf("--duration %s: up to 10m", c.Duration)
			}
			if c.Ramp <= 0 || c.Ramp > 10*time.Minute {
				return fmt.Errorf("--ramp %s: up to 10m", c.Ramp)
			}
			if c.Spread < 0 || c.Spread > time.Minute {
				return fmt.Errorf("--spread %s: 0 to 1m", c.Spread)
			}
			if c.Spread > 0 && c.Together {
				return fmt.Errorf("--spread and --together: one or the other")
			}
			if c.Ramp+c.Duration+c.Spread >= 80*time.Second {
				return fmt.Errorf("--ramp %s plus --duration %s plus --spread %s: under 80s, or the gateway's keepalive closes the first readers' connections", c.Ramp, c.Duration, c.Spread)
			}
			if c.Activations == 0 {
				c.Activations = max(1, c.Readers/10)
			}
			if c.Activations < 1 || c.Activations > 2000 || c.Activations > c.Readers {
				return fmt.Errorf("--activations %d: 1 to 2000, at most --readers", c.Activations)
			}
			if c.ReceiveBuffer < 0 || c.ReceiveBuffer > 16<<20 {
				return fmt.Errorf("--receive-buffer %d: 0 (4 KiB) to 16 MiB", c.ReceiveBuffer)
			}
			if c.PerSource < 1 || c.Readers/c.PerSource > 250*250 {
				return fmt.Errorf("--per-source %d: at least 1, and at most 62,500 addresses", c.PerSource)
			}
			switch readersPriority {
			case "idle":
				c.IdleReaders = true
			case "normal":
			default:
				return fmt.Errorf("--readers-priority %q: idle or normal", readersPriority)
			}
			if c.GatewayPID != 0 && c.GatewayDir == "" {
				return fmt.Errorf("--gateway-pid goes with --gateway-dir")
			}
			if c.GatewayDir == "" {
				if c.Binary, err = os.Executable(); err != nil {
					return err
				}
			}
			return loadgen.RunSlow(cmd.Context(), c, cmd.OutOrStdout())
		},
	}
	cmd.Flags().IntVar(&c.Readers, "readers", 1000, "slow downloads held at once, each on its own connection")
	cmd.Flags().StringVar(&rate, "rate", "1KiB/s", "what each reader's connection delivers (B/s, KiB/s)")
	cmd.Flags().DurationVar(&c.Duration, "duration", 30*time.Second, "how long the calls are timed while every download is held open")
	cmd.Flags().DurationVar(&c.Ramp, "ramp", 30*time.Second, "how long starting the readers takes")
	cmd.Flags().IntVar(&c.Activations, "activations", 0, "activations enrolled and redeemed once for the readers to resume (default: one per 10 readers)")
	cmd.Flags().IntVar(&c.ReceiveBuffer, "receive-buffer", 0, "each reader's socket receive buffer in bytes (0: 4 KiB, so that the gateway's writes wait for the reader); one that holds a package (65536) is the control run: the same held connections with nothing left unsent; the kernel caps it at net.core.rmem_max")
	cmd.Flags().DurationVar(&c.Spread, "spread", 0, "after the gate, each reader starts reading at a random instant within this (0: within one piece's interval); as long as one download takes (8s for a 7.5 KiB package at 1 KiB/s), the readers close at a steady population's rate instead of all in the same second")
	cmd.Flags().BoolVar(&c.Together, "together", false, "after the gate, every reader reads its pieces in the same instant (a herd in step, the worst case); by default each reader has a phase of its own within one piece's interval")
	cmd.Flags().StringVar(&readersPriority, "readers-priority", "idle", `this process's CPU priority once set up: "idle" (SCHED_IDLE: the readers take only CPU the gateway and the prober leave, as devices elsewhere) or "normal" (they compete with the gateway for the cores)`)
	cmd.Flags().IntVar(&c.PerSource, "per-source", 200, "readers per source address (127.1.x.y); keep below the gateway's limits.max_conns_per_source")
	cmd.Flags().StringVar(&c.GatewayDir, "gateway-dir", "", "run against the gateway already running from this development environment (credgw dev init --dir)")
	cmd.Flags().IntVar(&c.GatewayPID, "gateway-pid", 0, "with --gateway-dir: the gateway's process id, for its VmRSS")
	return cmd
}

// parseRate reads "1KiB/s", "512B/s" or a number of bytes a second.
func parseRate(s string) (int, error) {
	v := strings.TrimSuffix(s, "/s")
	mult := 1
	if n, ok := strings.CutSuffix(v, "KiB"); ok {
		v, mult = n, 1024
	} else if n, ok := strings.CutSuffix(v, "B"); ok {
		v = n
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n*mult > 1<<30 {
		return 0, fmt.Errorf("--rate %q: bytes a second, as 1KiB/s or 512B/s", s)
	}
	return n * mult, nil
}
