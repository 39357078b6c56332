package test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credgw/credgw/agent"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
)

// crashN is how many devices redeem at once when the gateway is killed
// (within the dev card's enrollment burst).
const crashN = 8

// devConfigForCrash makes a dev environment whose one card may hold
// crashN sets, and returns its directory, config path, gateway address
// and SoftHSM environment.
func devConfigForCrash(t *testing.T, work string, edit func([]byte) []byte) (dir, cfgPath, gw, conf string) {
	t.Helper()
	dir = filepath.Join(work, "dev")
	devInit(t, dir)
	cfgPath = filepath.Join(dir, "credgw.yaml")
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg = regexp.MustCompile(`(?m)^  max_credential_sets: \d+$`).ReplaceAll(cfg, []byte(fmt.Sprintf("  max_credential_sets: %d", crashN+2)))
	if edit != nil {
		cfg = edit(cfg)
	}
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	gw = regexp.MustCompile(`grpc: (127\.0\.0\.1:\d+)`).FindStringSubmatch(string(cfg))[1]
	return dir, cfgPath, gw, "SOFTHSM2_CONF=" + filepath.Join(dir, "hsm", "softhsm2.conf")
}

// redeemThroughCrash enrolls crashN activations, starts crashN devices
// redeeming them at once, kills the gateway with SIGKILL as soon as one
// certificate is issued, restarts it, and waits for every device. Every
// device must complete on its own (the agent retries; nobody types the
// password again). It returns the devices' results.
func redeemThroughCrash(t *testing.T, dir, gw, conf string, kill func(), restart func()) []*agent.Result {
	t.Helper()
	var results [crashN]*agent.Result
	var errs [crashN]error
	opts := make([]agent.Options, crashN)
	for i := range opts {
		out := filepath.Join(dir, fmt.Sprintf("device-%d", i))
		os.MkdirAll(out, 0o700)
		p, password := enrollWithCLI(t, dir, gw, conf, out)
		opts[i] = agent.Options{Payload: p, Password: password, OutDir: filepath.Join(out, "installed"), KeystorePIN: "correct horse"}
	}
	killed := make(chan struct{})
	var once sync.Once
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for i := range opts {
		o := opts[i]
		o.Events = func(e agent.Event) {
			if e.Stage == credgwv1.Stage_STAGE_ISSUING {
				once.Do(func() { kill(); close(killed) })
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = agent.Redeem(ctx, o)
		}()
	}
	select {
	case <-killed:
	case <-ctx.Done():
		t.Fatal("no certificate was being issued: nothing to crash")
	}
	restart()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("device %d did not complete after the crash: %v", i, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return results[:]
}

// checkNothingLive verifies, in the certificates table, that every intent
// was revoked or recorded and that the live certificates are exactly those
// the devices got.
func checkNothingLive(t *testing.T, db *sql.DB, table string, results []*agent.Result) {
	t.Helper()
	var open int
	if err := db.QueryRow(`SELECT COUNT(*) FROM ` + table + ` WHERE status = 'intent' AND revoked_at IS NULL`).Scan(&open); err != nil {
		t.Fatal(err)
	}
	if open != 0 {
		t.Errorf("%d issuance intents neither recorded nor revoked", open)
	}
	rows, err := db.Query(`SELECT serial FROM ` + table + ` WHERE status <> 'intent' AND status <> 'lint_failed' AND revoked_at IS NULL`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var live []string
	for rows.Next() {
		var s string
		rows.Scan(&s)
		live = append(live, strings.ToLower(s))
	}
	var delivered []string
	for _, r := range results {
		for _, s := range r.Serials {
			delivered = append(delivered, strings.ToLower(s))
		}
	}
	sort.Strings(live)
	sort.Strings(delivered)
	if strings.Join(live, ",") != strings.Join(delivered, ",") {
		t.Errorf("live certificates %v, want exactly the %d delivered %v", live, len(delivered), delivered)
	}
	var total int
	db.QueryRow(`SELECT COUNT(*) FROM ` + table).Scan(&total)
	t.Logf("%d certificate rows, %d live (delivered to %d devices)", total, len(live), len(results))
}

// checkReleased verifies in the audit log that when the kill cut an
// issuance short (certificate rows beyond the delivered ones), what it
// left was given back: the devices completed through a release. A kill
// that came after every package was stored leaves nothing to release.
func checkReleased(t *testing.T, db *sql.DB, schema string, results []*agent.Result) {
	t.Helper()
	var rows, released int
	if err := db.QueryRow(`SELECT COUNT(*) FROM ` + schema + `certificates`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow(`SELECT COUNT(*) FROM ` + schema + `audit_events WHERE action = 'release' AND actor = 'system'`).Scan(&released); err != nil {
		t.Fatal(err)
	}
	delivered := 0
	for _, r := range results {
		delivered += len(r.Serials)
	}
	if rows > delivered && released == 0 {
		t.Errorf("the kill left %d certificate rows beyond the %d delivered, and no redemption was released", rows-delivered, delivered)
	}
	t.Logf("%d redemptions released after the kill (%d rows beyond the delivered)", released, rows-delivered)
}

// TestKillDuringRedemptionsSQLite: kill -9 of `credgw serve` (SQLite)
// while devices redeem; on restart every claim left issuing is released
// with a new escrowed key, and every device completes by itself.
func TestKillDuringRedemptionsSQLite(t *testing.T) {
	work := t.TempDir()
	dir, cfgPath, gw, conf := devConfigForCrash(t, work, nil)
	startServe(t, filepath.Join(dir, "hsm"))
	stop, cmd := startCmd(t, "credgw serving", credgwBin, "serve", "--config", cfgPath)
	results := redeemThroughCrash(t, dir, gw, conf, func() { cmd.Process.Kill() }, func() {
		stop() // reaps the killed process
		startProcess(t, "credgw serving", credgwBin, "serve", "--config", cfgPath)
	})
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "credgw.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	checkNothingLive(t, db, "certificates", results)
	checkReleased(t, db, "", results)
}

// TestKillOneReplicaDuringRedemptions: two replicas on PostgreSQL; the one
// the devices talk to is killed with SIGKILL while they redeem and comes
// back. The claims of the dead process are released when their lease runs
// out (by either replica), and every device completes by itself.
func TestKillOneReplicaDuringRedemptions(t *testing.T) {
	dsn := os.Getenv("CREDGW_TEST_POSTGRES_DSN")
	if dsn == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("CI: CREDGW_TEST_POSTGRES_DSN is not set (make test starts PostgreSQL)")
		}
		t.Skip("CREDGW_TEST_POSTGRES_DSN not set")
	}
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	schema := fmt.Sprintf("crash_%d", os.Getpid())
	admin.Exec(`DROP SCHEMA IF EXISTS ` + schema + ` CASCADE`)
	if _, err := admin.Exec(`CREATE SCHEMA ` + schema); err != nil {
		t.Fatal(err)
	}
	defer admin.Exec(`DROP SCHEMA ` + schema + ` CASCADE`)
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	work := t.TempDir()
	dir, cfgPath, gw, conf := devConfigForCrash(t, work, func(cfg []byte) []byte {
		return regexp.MustCompile(`(?m)^  driver: sqlite\n  dsn: credgw.db$`).ReplaceAll(cfg,
			[]byte("  driver: postgres\n  dsn: \""+dsn+sep+"search_path="+schema+"\""))
	})
	run(t, nil, true, credgwBin, "migrate", "--config", cfgPath)
	// Replica B: the same config on listen ports of its own.
	cfg, _ := os.ReadFile(cfgPath)
	cfgB := filepath.Join(dir, "credgw-b.yaml")
	ports := bindSockets(t, cfgB, "grpc", "http", "portal", "management")
	for i, key := range []string{"grpc", "http", "listen", "management"} {
		cfg = regexp.MustCompile(`(?m)^  `+key+`: 127\.0\.0\.1:\d+$`).ReplaceAll(cfg, []byte(fmt.Sprintf("  %s: 127.0.0.1:%d", key, ports[i])))
	}
	os.WriteFile(cfgB, cfg, 0o600)
	startServe(t, filepath.Join(dir, "hsm"))
	startProcess(t, "credgw serving", credgwBin, "serve", "--config", cfgB)
	stop, cmd := startCmd(t, "credgw serving", credgwBin, "serve", "--config", cfgPath)
	results := redeemThroughCrash(t, dir, gw, conf, func() { cmd.Process.Kill() }, func() {
		stop()
		startProcess(t, "credgw serving", credgwBin, "serve", "--config", cfgPath)
	})
	checkNothingLive(t, admin, schema+".certificates", results)
	checkReleased(t, admin, schema+".", results)
}
