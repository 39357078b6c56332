package test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/credgw/credgw/agent"
	_ "github.com/jackc/pgx/v5/stdlib"
)

// TestJourneyOnPostgres: the gateway on PostgreSQL — `credgw serve` refuses
// the unmigrated schema and says what to do, `credgw migrate` applies it,
// then enroll and redeem work as on SQLite.
func TestJourneyOnPostgres(t *testing.T) {
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
	schema := fmt.Sprintf("e2e_%d", os.Getpid())
	admin.Exec(`DROP SCHEMA IF EXISTS ` + schema + ` CASCADE`)
	if _, err := admin.Exec(`CREATE SCHEMA ` + schema); err != nil {
		t.Fatal(err)
	}
	defer admin.Exec(`DROP SCHEMA ` + schema + ` CASCADE`)
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	schemaDSN := dsn + sep + "search_path=" + schema

	work := t.TempDir()
	dir := filepath.Join(work, "dev")
	devInit(t, dir)
	cfgPath := filepath.Join(dir, "credgw.yaml")
	cfg, _ := os.ReadFile(cfgPath)
	cfg = regexp.MustCompile(`(?m)^  driver: sqlite\n  dsn: credgw.db$`).ReplaceAll(cfg, []byte("  driver: postgres\n  dsn: \""+schemaDSN+"\""))
	if !strings.Contains(string(cfg), "driver: postgres") {
		t.Fatalf("could not switch the config to postgres:\n%s", cfg)
	}
	os.WriteFile(cfgPath, cfg, 0o600)
	gw := regexp.MustCompile(`grpc: (127\.0\.0\.1:\d+)`).FindStringSubmatch(string(cfg))[1]

	if out := run(t, nil, false, credgwBin, "serve", "--config", cfgPath); !strings.Contains(out, "credgw migrate") {
		t.Fatalf("serve on an unmigrated schema:\n%s", out)
	}
	// With store.migrate_on_start, serve migrates (a package upgrade
	// restarts the service with no migrate step of its own); migrate then
	// finds nothing to do.
	withMigrate := regexp.MustCompile(`(?m)^  driver: postgres$`).ReplaceAll(cfg, []byte("  driver: postgres\n  migrate_on_start: true"))
	os.WriteFile(cfgPath, withMigrate, 0o600)
	startServe(t, filepath.Join(dir, "hsm"))
	startProcess(t, "credgw serving", credgwBin, "serve", "--config", cfgPath)
	if out := run(t, nil, true, credgwBin, "migrate", "--config", cfgPath); !strings.Contains(out, "postgres schema at version") {
		t.Fatalf("migrate:\n%s", out)
	}
	conf := "SOFTHSM2_CONF=" + filepath.Join(dir, "hsm", "softhsm2.conf")
	p, password := enrollWithCLI(t, dir, gw, conf, work)
	res, err := agent.Redeem(context.Background(), agent.Options{Payload: p, Password: password, OutDir: filepath.Join(work, "device"), KeystorePIN: "correct horse"})
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := admin.QueryRow(`SELECT COUNT(*) FROM `+schema+`.certificates WHERE credential_set_id = $1 AND status = 'issued'`, res.CredentialSetID).Scan(&n); err != nil || n != 3 {
		t.Fatalf("%d certificates recorded in PostgreSQL (%v)", n, err)
	}
}
