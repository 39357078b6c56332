package store

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestCertificateIndexesServeTheQueries pins the indexes of the
// certificates table to the queries that read it. Every index is paid by
// every issuance intent (on SQLite, a WAL frame for each B-tree leaf it
// touches): an index no query uses is a cost with nothing for it, and
// a query no index serves scans every certificate ever issued. Add an
// index here with the query that needs it.
func TestCertificateIndexesServeTheQueries(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "credgw.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	var got []string
	rows, err := s.r.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'certificates' AND name NOT LIKE 'sqlite_autoindex_%' ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		got = append(got, n)
	}
	rows.Close()
	if want := []string{"certificates_revoked", "certificates_set", "certificates_spki"}; !slices.Equal(got, want) {
		t.Errorf("indexes on certificates: %v, want %v", got, want)
	}

	// The WHERE clauses of the store's reads of certificates (the column
	// lists do not change a plan).
	for _, where := range []string{
		`serial = 'ab'`,
		`spki_sha256 = 'ab' AND status <> 'lint_failed'`,
		`credential_set_id = 'x' AND status <> 'lint_failed'`,
		`issuer = 'ca' AND revoked_at IS NOT NULL`,
		`issuer = 'ca' AND status = 'intent' AND revoked_at IS NULL AND created_at < 5`,
	} {
		var plan []string
		rows, err := s.r.QueryContext(ctx, `EXPLAIN QUERY PLAN SELECT serial FROM certificates WHERE `+where)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		if p := strings.Join(plan, "; "); !strings.Contains(p, "USING") || strings.Contains(p, "SCAN") {
			t.Errorf("WHERE %s: plan %q, want a search through an index", where, p)
		}
	}
}

// TestMigrationsGoDownAndUp runs the newest migration's Down and Up again
// on a database holding a certificate: the way back a release's rollback
// takes.
func TestMigrationsGoDownAndUp(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "credgw.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p, err := s.provider()
	if err != nil {
		t.Fatal(err)
	}
	_, want, err := p.GetVersions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Down(ctx); err != nil {
		t.Fatalf("down: %v", err)
	}
	if cur, _, _ := p.GetVersions(ctx); cur != want-1 {
		t.Fatalf("after down: version %d, want %d", cur, want-1)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("up again: %v", err)
	}
	if cur, _, _ := p.GetVersions(ctx); cur != want {
		t.Fatalf("after up: version %d, want %d", cur, want)
	}
}
