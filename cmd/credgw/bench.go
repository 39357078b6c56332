package main

import (
	"fmt"
	"os"
	"runtime/pprof"
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
			if gatewayDir == "" {
				gatewayGC() // the gateway runs in this process: as credgw serve does
			}
			return loadgen.Run(cmd.Context(), loadgen.Config{Concurrency: concurrency, Duration: duration, People: people,
				ProtocolOnly: device == "protocol", KeepGoing: keepGoing, GatewayDir: gatewayDir,
				EscrowKey: escrowType, Postgres: pgDSN, Replicas: replicas, NewWork: newWork}, cmd.OutOrStdout())
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
