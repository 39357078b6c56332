package test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// ownPostgres is a PostgreSQL cluster of this test's own, to stop and start
// without disturbing the one the other tests share.
//
// It listens on a Unix socket in its own directory only: no TCP port to
// pick (and lose to another process) before it binds.
type ownPostgres struct {
	bin, data string
}

// socketDir is where the cluster's Unix socket is (its DSN's host).
func (c *ownPostgres) socketDir() string { return filepath.Dir(c.data) }

func (c *ownPostgres) ctl(t *testing.T, args ...string) {
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

func (c *ownPostgres) start(t *testing.T) {
	c.ctl(t, "pg_ctl", "-D", c.data, "-l", filepath.Join(filepath.Dir(c.data), "log"), "-w", "-t", "60",
		"-o", fmt.Sprintf("-c listen_addresses='' -k %s -c fsync=off -c max_connections=200", c.socketDir()), "start")
}

func (c *ownPostgres) stop(t *testing.T) {
	c.ctl(t, "pg_ctl", "-D", c.data, "-m", "fast", "-w", "stop")
}

func startOwnPostgres(t *testing.T) *ownPostgres {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("CI: PostgreSQL server binaries are missing (make deps)")
		}
		t.Skip("PostgreSQL not installed")
	}
	sort.Strings(bins)
	dir, err := os.MkdirTemp("", "credgw-outage-")
	if err != nil {
		t.Fatal(err)
	}
	if os.Getuid() == 0 {
		exec.Command("chown", "postgres", dir).Run()
	}
	c := &ownPostgres{bin: filepath.Dir(bins[len(bins)-1]), data: filepath.Join(dir, "data")}
	c.ctl(t, "initdb", "-D", c.data, "-A", "trust", "-U", "postgres", "--no-sync")
	c.start(t)
	t.Cleanup(func() {
		exec.Command("runuser", "-u", "postgres", "--", filepath.Join(c.bin, "pg_ctl"), "-D", c.data, "-m", "immediate", "-w", "stop").Run()
		os.RemoveAll(dir)
	})
	return c
}

// TestPostgresOutageDuringBench: PostgreSQL stopped and restarted during a
// `credgw bench enroll` run: enrollments fail while it is down and succeed
// again after it is back, and the invariant check afterwards finds every
// delivered certificate recorded and every activation in a legal state.
func TestPostgresOutageDuringBench(t *testing.T) {
	pg := startOwnPostgres(t)
	dsn := fmt.Sprintf("postgres://postgres@/postgres?host=%s&sslmode=disable&connect_timeout=2", pg.socketDir())
	cmd := exec.Command(credgwBin, "bench", "enroll", "--concurrency", "2", "--duration", "15s", "--postgres", dsn, "--keep-going")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	progress := regexp.MustCompile(`progress: ok=(\d+) failed=(\d+)`)
	sc := bufio.NewScanner(stdout)
	var log strings.Builder
	phase := "before"
	okAtStop, okAtStart := 0, 0
	for sc.Scan() {
		line := sc.Text()
		log.WriteString(line + "\n")
		m := progress.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		ok, _ := strconv.Atoi(m[1])
		failed, _ := strconv.Atoi(m[2])
		switch {
		case phase == "before" && ok >= 3:
			pg.stop(t)
			okAtStop, phase = ok, "down"
		case phase == "down" && failed > 0:
			pg.start(t)
			okAtStart, phase = ok, "up"
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("bench: %v\n%s\n%s", err, log.String(), stderr.String())
	}
	out := log.String()
	if phase != "up" {
		t.Fatalf("the outage did not happen as planned (phase %s):\n%s", phase, out)
	}
	final := regexp.MustCompile(`(\d+) full enrollments in .*\((\d+) failed\)`).FindStringSubmatch(out)
	if final == nil {
		t.Fatalf("no summary:\n%s", out)
	}
	okTotal, _ := strconv.Atoi(final[1])
	failedTotal, _ := strconv.Atoi(final[2])
	if failedTotal == 0 || okTotal <= okAtStart || okAtStart < okAtStop {
		t.Fatalf("want failures during the outage and successes after it (ok at stop %d, at restart %d, total %d, failed %d):\n%s",
			okAtStop, okAtStart, okTotal, failedTotal, out)
	}
	if !strings.Contains(out, "invariants: ok") {
		t.Fatalf("invariant check:\n%s", out)
	}
	// While the database is down the gateway says Unavailable (clients
	// retry), not Internal. A sign-in refused by the per-card rate limit
	// (ResourceExhausted with RetryInfo) is retryable too: workers that
	// fail fast meet it.
	codes := regexp.MustCompile(`failures by gRPC code: map\[(.*)\]`).FindStringSubmatch(out)
	if codes == nil {
		t.Fatalf("no failure codes:\n%s", out)
	}
	for _, kv := range strings.Fields(codes[1]) {
		if !strings.HasPrefix(kv, "Unavailable:") && !strings.HasPrefix(kv, "ResourceExhausted:") {
			t.Errorf("failures with code %s during the outage, want Unavailable or ResourceExhausted only:\n%s", kv, out)
		}
	}
}
