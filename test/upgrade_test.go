package test

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
)

// TestMigrateRefusesNewerSchema: after a rollback to an older credgw, its
// migrate said "schema at version N" and exited 0 on a schema a newer
// credgw had migrated, so a rollback script went on to start a gateway
// that does not know the tables it runs on. It now fails and says what
// to do (credgw does not migrate down).
func TestMigrateRefusesNewerSchema(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	devInit(t, dir)
	cfg := filepath.Join(dir, "credgw.yaml")
	run(t, nil, true, credgwBin, "migrate", "--config", cfg)
	db, err := sql.Open("sqlite", filepath.Join(dir, "credgw.db"))
	if err != nil {
		t.Fatal(err)
	}
	// What a later release's migration would leave.
	if _, err := db.Exec(`INSERT INTO goose_db_version (version_id, is_applied) VALUES (9999, 1)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	out := run(t, nil, false, credgwBin, "migrate", "--config", cfg)
	if !strings.Contains(out, "newer than this credgw") || !strings.Contains(out, "9999") {
		t.Fatalf("migrate on a newer schema:\n%s", out)
	}
}
