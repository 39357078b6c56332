package loadgen

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	hsmsim "github.com/credgw/credgw/hsm-sim"
	"github.com/credgw/credgw/server"
)

// target is what the workers run against.
type target struct {
	gateways        []string // gRPC addresses; workers alternate
	env             *hsmsim.Env
	pinFile, caFile string
	cfg             *server.Config // for the invariant check
	what            string         // for the report
	setsPerPerson   int            // enrollment.max_credential_sets
	pid             int            // the gateway's process, if known (its RSS)
}

// inProcessTarget makes a throwaway development environment and runs the
// gateway (and replicas) in this process.
func inProcessTarget(ctx context.Context, c Config, cleanup *[]func()) (*target, error) {
	if c.Replicas < 1 || c.Replicas > 4 || (c.Replicas > 1 && c.Postgres == "") {
		return nil, fmt.Errorf("--replicas %d: 1, or up to 4 with --postgres (replicas share the database)", c.Replicas)
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
	// The first replica's listeners are bound before their ports go into
	// the config (one step: no other process can take them meanwhile).
	var lns [3]net.Listener
	for i := range lns {
		if lns[i], err = hsmsim.ListenFree(); err != nil {
			return nil, err
		}
		ln := lns[i]
		*cleanup = append(*cleanup, func() { ln.Close() })
	}
	d, err := hsmsim.DevInit(ctx, filepath.Join(dir, "dev"), hsmsim.DevOptions{HSMURL: "http://" + hsmLn.Addr().String(),
		GRPCAddr: lns[0].Addr().String(), HTTPAddr: lns[1].Addr().String(), ManagementAddr: lns[2].Addr().String()})
	if err != nil {
		return nil, err
	}
	if err := initCA(ctx, d); err != nil {
		return nil, err
	}
	hsm := &http.Server{Handler: d.Env.Handler(nil)}
	go hsm.Serve(hsmLn)
	*cleanup = append(*cleanup, func() { hsm.Close() })
	cfg, err := server.LoadConfig(d.Config)
	if err != nil {
		return nil, err
	}
	cfg.Escrow.KeyType = c.EscrowKey
	storeName := "SQLite"
	if c.Postgres != "" {
		dsn, err := benchSchema(ctx, c.Postgres, cleanup)
		if err != nil {
			return nil, err
		}
		cfg.Store.Driver, cfg.Store.DSN, storeName = "postgres", dsn, "PostgreSQL"
		st, err := server.OpenStore(ctx, cfg, true)
		if err != nil {
			return nil, err
		}
		st.Close()
	}
	cfg.Enroll.MaxSets = 100
	cfg.Log.Level = "error"
	cfg.Limits.NewWork = c.NewWork
	t := &target{env: d.Env, pinFile: d.PINFile, caFile: d.CAFile, cfg: cfg, setsPerPerson: cfg.Enroll.MaxSets}
	for i := 0; i < c.Replicas; i++ {
		rc := *cfg
		var opts []server.Option
		if i > 0 {
			rc.Listen.GRPC, rc.Listen.HTTP, rc.Listen.Management = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
		} else {
			// The first replica's /metrics: the report's SQLite group
			// commit figures.
			opts = append(opts, server.WithListeners(map[string]net.Listener{"listen.grpc": lns[0], "listen.http": lns[1], "listen.management": lns[2]}))
		}
		r, err := server.New(ctx, &rc, opts...)
		if err != nil {
			return nil, err
		}
		if err := r.Start(); err != nil {
			return nil, err
		}
		*cleanup = append(*cleanup, func() { r.Shutdown(context.Background()) })
		t.gateways = append(t.gateways, r.GRPCAddr())
	}
	t.what = fmt.Sprintf("%d in-process gateway replica(s) (%s, SoftHSM CA key, %s escrow keys)", len(t.gateways), storeName, c.EscrowKey)
	return t, nil
}

// runningTarget is a gateway already running from a development
// environment (credgw dev init --dir DIR, then credgw hsm-sim serve and
// credgw serve): the bench makes its people's cards in DIR/hsm and
// enrolls against the gateway's gRPC address.
func runningTarget(ctx context.Context, dir string, c Config) (*target, error) {
	if c.Postgres != "" || c.Replicas != 1 {
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
	conn, err := (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, "tcp", cfg.Listen.GRPC)
	if err != nil {
		return nil, fmt.Errorf("no gateway listening at %s: start it with credgw serve --config %s (and credgw hsm-sim serve --dir %s)",
			cfg.Listen.GRPC, cfgPath, filepath.Join(dir, "hsm"))
	}
	conn.Close()
	return &target{gateways: []string{cfg.Listen.GRPC}, env: env, pinFile: filepath.Join(dir, "card.pin"), caFile: filepath.Join(dir, "tls", "ca.crt"),
		cfg: cfg, setsPerPerson: cfg.Enroll.MaxSets,
		what: fmt.Sprintf("the gateway running at %s (%s, %s escrow keys)", cfg.Listen.GRPC, cfg.Store.Driver, cfg.Escrow.KeyType)}, nil
}

// serveTarget makes a throwaway development environment, serves its
// simulated card issuer from this process and runs the gateway as a child
// process (bin serve), so that the gateway's resident memory is its own.
// The gateway's log goes to DIR/serve.log.
func serveTarget(ctx context.Context, bin string, cleanup *[]func()) (*target, error) {
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
	grpcPort, _ := hsmsim.FreePort()
	httpPort, _ := hsmsim.FreePort()
	mgmtPort, _ := hsmsim.FreePort()
	d, err := hsmsim.DevInit(ctx, filepath.Join(dir, "dev"), hsmsim.DevOptions{HSMURL: "http://" + hsmLn.Addr().String(),
		GRPCAddr: fmt.Sprintf("127.0.0.1:%d", grpcPort), HTTPAddr: fmt.Sprintf("127.0.0.1:%d", httpPort),
		ManagementAddr: fmt.Sprintf("127.0.0.1:%d", mgmtPort)})
	if err != nil {
		return nil, err
	}
	if err := initCA(ctx, d); err != nil {
		return nil, err
	}
	hsm := &http.Server{Handler: d.Env.Handler(nil)}
	go hsm.Serve(hsmLn)
	*cleanup = append(*cleanup, func() { hsm.Close() })
	cfg, err := server.LoadConfig(d.Config)
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(dir, "serve.log"))
	if err != nil {
		return nil, err
	}
	*cleanup = append(*cleanup, func() { logFile.Close() })
	cmd := exec.Command(bin, "serve", "--config", d.Config)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start the gateway (%s serve): %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	*cleanup = append(*cleanup, func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		select {
		case err := <-exited:
			exited <- err
			log, _ := os.ReadFile(logFile.Name())
			return nil, fmt.Errorf("bench: the gateway exited (%v): %s", err, log)
		default:
		}
		conn, err := net.DialTimeout("tcp", cfg.Listen.GRPC, time.Second)
		if err == nil {
			conn.Close()
			break
		}
		if time.Since(start) > 30*time.Second {
			return nil, fmt.Errorf("bench: the gateway does not listen at %s after 30s (log: %s)", cfg.Listen.GRPC, logFile.Name())
		}
	}
	return &target{gateways: []string{cfg.Listen.GRPC}, env: d.Env, pinFile: d.PINFile, caFile: d.CAFile, cfg: cfg,
		setsPerPerson: cfg.Enroll.MaxSets, pid: cmd.Process.Pid,
		what: fmt.Sprintf("credgw serve (pid %d, %s, default configuration of credgw dev init)", cmd.Process.Pid, cfg.Store.Driver)}, nil
}

// initCA makes the development environment's CA, as credgw dev init does
// (credgw ca init).
func initCA(ctx context.Context, d *hsmsim.DevEnv) error {
	cfg, err := server.LoadConfig(d.Config)
	if err != nil {
		return err
	}
	if _, err = server.InitCA(ctx, cfg, server.InitCAOptions{Organization: "credgw development"}); err != nil {
		return err
	}
	// The database, as credgw migrate makes it: serve opens only one
	// that is there.
	st, _, err := server.CreateStore(ctx, cfg)
	if err != nil {
		return err
	}
	return st.Close()
}

// benchSchema gives the run a schema of its own in the PostgreSQL database
// at dsn, dropped by cleanup: each run's environment has new CA and escrow
// keys, which could not open what an earlier run stored (its gateway
// secrets are sealed under that run's key), and a bench leaves nothing
// behind. It returns dsn with search_path set to the schema.
func benchSchema(ctx context.Context, dsn string, cleanup *[]func()) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", fmt.Errorf("--postgres %q is not a postgres:// URL (postgres://user@host/database)", redactDSN(dsn))
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return "", err
	}
	defer db.Close()
	schema := fmt.Sprintf("credgw_bench_%d_%d", time.Now().Unix(), os.Getpid())
	if _, err := db.ExecContext(ctx, `CREATE SCHEMA `+schema); err != nil {
		return "", fmt.Errorf("--postgres: creating the bench's schema: %w", err)
	}
	*cleanup = append(*cleanup, func() {
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			return
		}
		defer db.Close()
		db.ExecContext(context.Background(), `DROP SCHEMA `+schema+` CASCADE`)
	})
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// redactDSN is dsn without its password.
func redactDSN(dsn string) string {
	if u, err := url.Parse(dsn); err == nil {
		return u.Redacted()
	}
	return "(not a URL)"
}
