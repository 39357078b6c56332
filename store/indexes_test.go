package store

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
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
	if want := []string{"certificates_revoked", "certificates_revoked_expiry", "certificates_set", "certificates_spki"}; !slices.Equal(got, want) {
		t.Errorf("indexes on certificates: %v, want %v", got, want)
	}

	// The WHERE clauses of the store's reads of certificates (the column
	// lists do not change a plan), copied from store/*.go: a query added
	// there belongs here too.
	for _, where := range []string{
		`serial = 'ab'`,
		`spki_sha256 = 'ab' AND status <> 'lint_failed'`,
		`credential_set_id = 'x' AND status <> 'lint_failed'`,
		`issuer = 'ca' AND revoked_at IS NOT NULL AND not_after >= 5`,
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
		} else if strings.Contains(where, "not_after") && !strings.Contains(p, "certificates_revoked_expiry") {
			// The CRL's read: by expiry, not every revoked row ever.
			t.Errorf("WHERE %s: plan %q, want certificates_revoked_expiry", where, p)
		}
	}
}

// TestMigrationsGoDownAndUp runs the newest migration's Down and Up again
// on a database holding a certificate, the way back a release's rollback
// takes: the indexes come back and go again, and the certificate stays.
func TestMigrationsGoDownAndUp(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "credgw.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.CreateIssuanceIntent(ctx, CertificateRecord{Serial: "0a", Issuer: "ca", Profile: "p", SPKISHA256: "ab",
		PersonID: "person", CardUUID: "card", NotBefore: t0, NotAfter: t0.Add(time.Hour), CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	p, err := s.provider()
	if err != nil {
		t.Fatal(err)
	}
	_, want, err := p.GetVersions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	check := func(step string, version int64, indexes int) {
		t.Helper()
		cur, _, err := p.GetVersions(ctx)
		if err != nil || cur != version {
			t.Fatalf("after %s: version %d (%v), want %d", step, cur, err, version)
		}
		var n int
		if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name IN ('certificates_person', 'certificates_card')`).Scan(&n); err != nil || n != indexes {
			t.Fatalf("after %s: %d of the dropped indexes (%v), want %d", step, n, err, indexes)
		}
		if c, err := s.Certificate(ctx, "0a"); err != nil || c.PersonID != "person" {
			t.Fatalf("after %s: the certificate: %+v, %v", step, c, err)
		}
	}
	check("up", want, 0)
	// Down past 00019 (it dropped the indexes), whatever came after it.
	if _, err := p.DownTo(ctx, 18); err != nil {
		t.Fatalf("down: %v", err)
	}
	check("down", 18, 2)
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("up again: %v", err)
	}
	check("up again", want, 0)
}
