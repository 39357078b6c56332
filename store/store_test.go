package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// engines lists the stores every test runs against: SQLite always, and
// PostgreSQL from CREDGW_TEST_POSTGRES_DSN (make test starts one). Under CI
// a missing PostgreSQL fails the test instead of skipping it.
func engines(t *testing.T) map[string]func(t *testing.T) Store {
	e := map[string]func(t *testing.T) Store{
		"sqlite": func(t *testing.T) Store {
			s, err := OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "credgw.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
	}
	dsn := os.Getenv("CREDGW_TEST_POSTGRES_DSN")
	switch {
	case dsn != "":
		e["postgres"] = func(t *testing.T) Store { return openTestPostgres(t, dsn) }
	case os.Getenv("CI") != "":
		t.Fatal("CI: CREDGW_TEST_POSTGRES_DSN is not set; run the tests with make test (test/with-postgres.sh)")
	default:
		t.Log("CREDGW_TEST_POSTGRES_DSN not set: PostgreSQL engine not tested (make test sets it)")
	}
	return e
}

var schemaSeq atomic.Int64

// openTestPostgres gives each test a schema of its own.
func openTestPostgres(t *testing.T, dsn string) *DB {
	t.Helper()
	ctx := context.Background()
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	schema := fmt.Sprintf("t_%d_%d", os.Getpid(), schemaSeq.Add(1))
	if _, err := admin.ExecContext(ctx, `CREATE SCHEMA `+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.ExecContext(ctx, `DROP SCHEMA `+schema+` CASCADE`) })
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	s, err := OpenPostgres(ctx, dsn+sep+"search_path="+schema, PostgresOptions{Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// forEachEngine runs fn against a fresh store of every engine.
func forEachEngine(t *testing.T, fn func(t *testing.T, s Store)) {
	for name, open := range engines(t) {
		t.Run(name, func(t *testing.T) { fn(t, open(t)) })
	}
}

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func TestChallengeSingleUse(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		c := Challenge{SessionID: "s1", Challenge: bytes.Repeat([]byte{7}, 32), GatewayID: "gw", CreatedAt: t0, ExpiresAt: t0.Add(2 * time.Minute)}
		if err := s.CreateChallenge(ctx, c); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateChallenge(ctx, c); !errors.Is(err, ErrConflict) {
			t.Fatalf("duplicate session id: %v", err)
		}
		got, err := s.ConsumeChallenge(ctx, "s1", t0.Add(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Challenge, c.Challenge) || got.GatewayID != "gw" || !got.ExpiresAt.Equal(c.ExpiresAt) || !got.CreatedAt.Equal(t0) {
			t.Fatalf("consumed %+v", got)
		}
		if _, err := s.ConsumeChallenge(ctx, "s1", t0.Add(2*time.Second)); !errors.Is(err, ErrAlreadyUsed) {
			t.Fatalf("second consume: %v", err)
		}
		if _, err := s.ConsumeChallenge(ctx, "nope", t0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown: %v", err)
		}
	})
}

// TestChallengeConsumedOnce: many goroutines race for one challenge; exactly
// one wins.
func TestChallengeConsumedOnce(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		if err := s.CreateChallenge(ctx, Challenge{SessionID: "race", Challenge: []byte{1}, GatewayID: "gw", CreatedAt: t0, ExpiresAt: t0.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins, used := 0, 0
		for i := 0; i < 16; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := s.ConsumeChallenge(ctx, "race", t0)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
				case errors.Is(err, ErrAlreadyUsed):
					used++
				default:
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if wins != 1 || used != 15 {
			t.Fatalf("wins=%d used=%d", wins, used)
		}
	})
}

func TestPIVSession(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		if err := s.CreateChallenge(ctx, Challenge{SessionID: "s1", Challenge: []byte{1}, GatewayID: "gw", CreatedAt: t0, ExpiresAt: t0.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		cert := PIVCertificate{SHA256: "ab", DER: []byte{0x30, 0}, Serial: "01", Issuer: "CN=ca", Subject: "CN=a", FASCN: []byte{1, 2}, CardUUID: "u", NotAfter: t0.AddDate(1, 0, 0)}
		ps := PIVSession{TokenHash: "th", SessionID: "s1", CertSHA256: "ab", PersonID: "p", FASCN: []byte{1, 2}, CardUUID: "u",
			UPN: "upn", Email: "e@x", EmailSource: "piv-auth", Subject: "CN=a", SourceAddr: "127.0.0.1", CreatedAt: t0, ExpiresAt: t0.Add(20 * time.Minute)}
		if err := s.CreatePIVSession(ctx, ps, cert); err != nil {
			t.Fatal(err)
		}
		got, err := s.PIVSession(ctx, "th")
		if err != nil {
			t.Fatal(err)
		}
		if got.PersonID != "p" || got.Email != "e@x" || !got.ExpiresAt.Equal(ps.ExpiresAt) || !bytes.Equal(got.FASCN, ps.FASCN) {
			t.Fatalf("session %+v", got)
		}
		kept, err := s.PIVCertificate(ctx, "ab")
		if err != nil || !bytes.Equal(kept.DER, cert.DER) || !kept.FirstSeen.Equal(t0) {
			t.Fatalf("cert %+v %v", kept, err)
		}
		// Same session twice is a conflict and leaves nothing half-written.
		if err := s.CreatePIVSession(ctx, ps, cert); !errors.Is(err, ErrConflict) {
			t.Fatalf("duplicate: %v", err)
		}
		if _, err := s.PIVSession(ctx, "nope"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown: %v", err)
		}
		// A session needs its challenge (foreign key): nothing is written.
		bad := ps
		bad.TokenHash, bad.SessionID, bad.CertSHA256 = "th2", "no-such-challenge", "cd"
		cert2 := cert
		cert2.SHA256 = "cd"
		if err := s.CreatePIVSession(ctx, bad, cert2); err == nil {
			t.Fatal("session without challenge accepted")
		}
		if _, err := s.PIVCertificate(ctx, "cd"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("half-written transaction: %v", err)
		}
		n, err := s.DeleteExpired(ctx, t0.Add(time.Hour))
		if err != nil || n != 2 {
			t.Fatalf("DeleteExpired = %d, %v", n, err)
		}
		if _, err := s.PIVSession(ctx, "th"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("expired session kept: %v", err)
		}
	})
}

// TestPIVCertificateDigitalSignature: the 9C certificate a PKI-AUTH
// verified is kept with the PIV Authentication certificate; a later session
// without one (a portal sign-in) keeps it, a later one with one replaces it.
func TestPIVCertificateDigitalSignature(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		cert := PIVCertificate{SHA256: "ab", DER: []byte{0x30, 0}, Serial: "01", Issuer: "CN=ca", Subject: "CN=a", CardUUID: "u", NotAfter: t0.AddDate(1, 0, 0)}
		session := func(n int, ds []byte) {
			t.Helper()
			sid := fmt.Sprintf("s%d", n)
			if err := s.CreateChallenge(ctx, Challenge{SessionID: sid, Challenge: []byte{1}, GatewayID: "gw", CreatedAt: t0, ExpiresAt: t0.Add(time.Minute)}); err != nil {
				t.Fatal(err)
			}
			c := cert
			c.DigitalSignature = ds
			if err := s.CreatePIVSession(ctx, PIVSession{TokenHash: "th" + sid, SessionID: sid, CertSHA256: "ab", PersonID: "p", CardUUID: "u",
				Subject: "CN=a", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}, c); err != nil {
				t.Fatal(err)
			}
		}
		kept := func() []byte {
			t.Helper()
			c, err := s.PIVCertificate(ctx, "ab")
			if err != nil {
				t.Fatal(err)
			}
			return c.DigitalSignature
		}
		session(1, nil)
		if ds := kept(); ds != nil {
			t.Fatalf("no 9C seen, kept %x", ds)
		}
		session(2, []byte{0x30, 1})
		session(3, nil)
		if ds := kept(); !bytes.Equal(ds, []byte{0x30, 1}) {
			t.Fatalf("after a sign-in without 9C: %x", ds)
		}
		session(4, []byte{0x30, 2})
		if ds := kept(); !bytes.Equal(ds, []byte{0x30, 2}) {
			t.Fatalf("a newer 9C not kept: %x", ds)
		}
	})
}

func TestSQLiteFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "credgw.db")
	s, err := OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v", st.Mode(), err)
	}
	s.Close()
	// Opening again migrates nothing and works.
	s2, err := OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	s2.Close()
	if _, err := OpenSQLite(context.Background(), ""); err == nil {
		t.Fatal("empty path accepted")
	}
}

// TestTextThatCannotBeStored: an id with a NUL or invalid UTF-8 (a
// device's activation id, a portal form's set id) is the caller's
// mistake on every engine: not found, or ErrInvalidText, never a driver
// error the gateway reports as its own (PostgreSQL refuses both in text).
func TestTextThatCannotBeStored(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		for _, id := range []string{"a\x00", "set-\xff"} {
			_, err := s.ActivationByID(ctx, id)
			if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrInvalidText) {
				t.Errorf("ActivationByID(%q): %v, want ErrNotFound or ErrInvalidText", id, err)
			}
			_, err = s.CredentialSet(ctx, id)
			if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrInvalidText) {
				t.Errorf("CredentialSet(%q): %v, want ErrNotFound or ErrInvalidText", id, err)
			}
		}
	})
}

// TestPortalState: card sign-outs and enroll forms, kept for every
// replica: a sign-out is found by any later look; a form is taken once,
// says whether it was made, and is given back when its enrollment failed.
func TestPortalState(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		if _, ok, err := s.CardSignOut(ctx, "card"); err != nil || ok {
			t.Fatalf("a card never signed out: %v, %v", ok, err)
		}
		if err := s.NoteCardSignOut(ctx, "card", t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		// The latest note replaces the last, even with an earlier time
		// (another replica's clock): each is a new sign-out.
		if err := s.NoteCardSignOut(ctx, "card", t0); err != nil {
			t.Fatal(err)
		}
		if at, ok, err := s.CardSignOut(ctx, "card"); err != nil || !ok || !at.Equal(t0) {
			t.Fatalf("the card's sign-out: %v %v, %v; want %v", at, ok, err, t0)
		}
		taken, _, err := s.TakePortalForm(ctx, "form", t0)
		if err != nil || !taken {
			t.Fatalf("a new form: %v, %v", taken, err)
		}
		if taken, made, err := s.TakePortalForm(ctx, "form", t0); err != nil || taken || made {
			t.Fatalf("a form being made: taken %v made %v, %v", taken, made, err)
		}
		// Never ended (its replica died): taken again after five minutes.
		if taken, _, err := s.TakePortalForm(ctx, "form", t0.Add(6*time.Minute)); err != nil || !taken {
			t.Fatalf("a form taken and never ended, later: %v, %v", taken, err)
		}
		if err := s.EndPortalForm(ctx, "form", false); err != nil {
			t.Fatal(err)
		}
		if taken, _, err := s.TakePortalForm(ctx, "form", t0); err != nil || !taken {
			t.Fatalf("a form given back: %v, %v", taken, err)
		}
		if err := s.EndPortalForm(ctx, "form", true); err != nil {
			t.Fatal(err)
		}
		if taken, made, err := s.TakePortalForm(ctx, "form", t0); err != nil || taken || !made {
			t.Fatalf("a form made: taken %v made %v, %v", taken, made, err)
		}
		// Two hours on, both are forgotten.
		if _, err := s.DeleteExpired(ctx, t0.Add(3*time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := s.CardSignOut(ctx, "card"); ok {
			t.Error("the sign-out was kept past its retention")
		}
		if taken, _, _ := s.TakePortalForm(ctx, "form", t0.Add(3*time.Hour)); !taken {
			t.Error("the form was kept past its retention")
		}
	})
}
