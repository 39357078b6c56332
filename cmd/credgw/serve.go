package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/credgw/credgw/server"
	"github.com/spf13/cobra"
)

func newServeCmd() *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "serve --config credgw.yaml",
		Short: "Run the gateway",
		Long: `Run the gateway: gRPC over TLS (PIVAuth, Enrollment, Redemption, Renewal,
Admin, health, reflection); the portal (HTTPS); and plain-HTTP listeners by
audience: listen.http for relying parties (OCSP, CRLs, CA certificates),
listen.management for operators (/healthz, /readyz, /metrics, /debug/pprof/),
and the termination webhook on its own listener or the management one.
Every configuration field is documented in docs/config.md; unknown fields are
an error. Stops gracefully on SIGINT or SIGTERM.

SIGHUP (systemctl reload) reads the file again and applies, without dropping a
connection: the TLS certificates (tls.cert_file/key_file, the webhook's),
tls.client_ca_files, client_crl_files and roles, piv.trust_anchor_files and
intermediate_files,
and log.level. Any other change is logged as applied only at a restart. If the
file or a file it names does not load, nothing changes and the log says why.
Check a config first with 'credgw config check'.

Listening sockets can be passed in by systemd socket activation (LISTEN_FDS,
LISTEN_FDNAMES): name them grpc, http, management, webhook and portal
(FileDescriptorName= in the .socket unit); each replaces the bind of
listen.grpc, listen.http, listen.management, termination_webhook.listen or
portal.listen. The configured addresses still go into the QR codes and
certificates, so keep them the addresses clients reach.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// serve's output is JSON lines, the error that stops it too
			// (a log pipeline would drop a plain-text line: the one that
			// says why the gateway is down).
			cfg, err := server.LoadConfig(cfgPath)
			if err != nil {
				server.NewLeveledLogger(cmd.ErrOrStderr(), slog.LevelInfo).Error("credgw serve could not start", "err", err.Error())
				return loggedError{err}
			}
			level := server.LogLevel(cfg.Log.Level)
			log := server.NewLeveledLogger(cmd.ErrOrStderr(), level)
			if err := serve(cmd, cfg, cfgPath, log, level); err != nil {
				log.Error("credgw serve stopped", "err", err.Error())
				return loggedError{err}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "credgw.yaml", "configuration file")
	addTestClockFlag(cmd)
	return cmd
}

// serve runs the gateway of cfg until a signal or a listener failure.
func serve(cmd *cobra.Command, cfg *server.Config, cfgPath string, log *slog.Logger, level *slog.LevelVar) error {
	gatewayGC(cfg.Limits.MemoryLimit)
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts := []server.Option{server.WithLogger(log), server.WithLogLevel(level)}
	// Sockets passed by systemd socket activation (or a parent
	// that bound them), named as their settings (server.InheritedListeners).
	inherited, err := server.InheritedListeners()
	if err != nil {
		return err
	}
	if inherited != nil {
		opts = append(opts, server.WithListeners(inherited))
	}
	if now := testClock(log); now != nil {
		opts = append(opts, server.WithClock(now))
	}
	srv, err := server.New(ctx, cfg, opts...)
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			log.Info("signal received, shutting down")
			return srv.Shutdown(context.Background())
		case err := <-srv.Errors():
			log.Error("listener failed", "err", err)
			srv.Shutdown(context.Background())
			return fmt.Errorf("serve: %w", err)
		case <-hup:
			reload(srv, cfgPath, log)
		}
	}
}

// reload is SIGHUP (systemctl reload): read the config again and apply
// what can change while serving. A config that does not load changes
// nothing.
func reload(srv *server.Server, cfgPath string, log *slog.Logger) {
	log.Info("SIGHUP: reloading the configuration", "config", cfgPath)
	cfg, err := server.LoadConfig(cfgPath)
	if err != nil {
		log.Error("reload failed: nothing changed", "err", err.Error())
		return
	}
	srv.Reload(cfg) // logs what it applied and what needs a restart
}

// gatewayGOGC is the collector's target of a gateway process (GOGC).
// BenchmarkIssue (issuance/bench_test.go) runs with the same value.
const gatewayGOGC = 400

// gatewayGC sets the garbage collector's target for a gateway process.
// The gateway's live heap is small (tens of MB) but churns fast:
// certificates, PKCS#12 files, protobuf packages, TLS handshakes. At Go's
// default GOGC=100 it spent about 8% of its CPU collecting; 400 lets the
// heap grow to five times the live data between collections, which took
// 3.5–5% off the CPU of a certificate against 200 (docs/decisions.md,
// "The collector's target"). limit (limits.memory_limit, -1 none) caps
// what that may grow to: many held connections make a heap that is mostly
// garbage between collections, and near the limit the collector runs as
// often as it must. GOGC and GOMEMLIMIT in the environment win.
func gatewayGC(limit int64) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gatewayGOGC)
	}
	if os.Getenv("GOMEMLIMIT") == "" && limit > 0 {
		debug.SetMemoryLimit(limit)
	}
}
