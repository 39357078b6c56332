package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

// pgCluster is a PostgreSQL cluster of the test's own, to stop and start.
type pgCluster struct {
	bin, data string
	port      int
}

func (c *pgCluster) pg(t *testing.T, args ...string) {
	t.Helper()
	var cmd *exec.Cmd
	if os.Getuid() == 0 { // PostgreSQL refuses to run as root
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", filepath.Join(c.bin, args[0])}, args[1:]...)...)
	} else {
		cmd = exec.Command(filepath.Join(c.bin, args[0]), args[1:]...)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", args[0], err, out)
	}
}

func (c *pgCluster) start(t *testing.T) {
	c.pg(t, "pg_ctl", "-D", c.data, "-l", filepath.Join(filepath.Dir(c.data), "log"), "-w", "-t", "60",
		"-o", fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off", c.port, filepath.Dir(c.data)), "start")
}

func (c *pgCluster) stop(t *testing.T) { c.pg(t, "pg_ctl", "-D", c.data, "-m", "fast", "-w", "stop") }

func newPGCluster(t *testing.T) *pgCluster {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("CI: PostgreSQL server binaries are missing (make deps)")
		}
		t.Skip("PostgreSQL server binaries not installed")
	}
	sort.Strings(bins)
	dir, err := os.MkdirTemp("", "credgw-pg-restart-")
	if err != nil {
		t.Fatal(err)
	}
	if os.Getuid() == 0 {
		exec.Command("chown", "postgres", dir).Run()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &pgCluster{bin: filepath.Dir(bins[len(bins)-1]), data: filepath.Join(dir, "data"), port: ln.Addr().(*net.TCPAddr).Port}
	ln.Close()
	c.pg(t, "initdb", "-D", c.data, "-A", "trust", "-U", "postgres", "--no-sync")
	c.start(t)
	t.Cleanup(func() {
		exec.Command("runuser", "-u", "postgres", "--", filepath.Join(c.bin, "pg_ctl"), "-D", c.data, "-m", "immediate", "stop").Run()
		os.RemoveAll(dir)
	})
	return c
}

// TestPostgresRestart: while PostgreSQL is down, calls fail with
// ErrUnavailable (gRPC Unavailable); after it comes back the pool recovers by
// itself, with no restart of credgw.
func TestPostgresRestart(t *testing.T) {
	c := newPGCluster(t)
	ctx := context.Background()
	s, err := OpenPostgres(ctx, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=2", c.port), PostgresOptions{Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mk := func(id string) error {
		return s.CreateChallenge(ctx, Challenge{SessionID: id, Challenge: []byte{1}, GatewayID: "gw", CreatedAt: t0, ExpiresAt: t0.Add(time.Minute)})
	}
	if err := mk("before"); err != nil {
		t.Fatal(err)
	}
	c.stop(t)
	for i := 0; i < 3; i++ {
		if err := mk(fmt.Sprintf("down-%d", i)); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("while down: %v, want ErrUnavailable", err)
		}
	}
	c.start(t)
	// The pool may hand out a connection that died with the server once;
	// database/sql retries bad connections, so the first call after the
	// restart succeeds.
	if err := mk("after"); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	if _, err := s.ConsumeChallenge(ctx, "before", t0); err != nil {
		t.Fatalf("data from before the restart: %v", err)
	}
}
