package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// Statements are prepared once on SQLite: outside a transaction at first
// use, inside one after it ends (the one writer connection is busy until
// then), and the cache stops growing at its bound.
func TestStatementCache(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	for i := range 3 {
		if err := s.CreateChallenge(ctx, Challenge{SessionID: fmt.Sprint("s", i), Challenge: []byte("c"), GatewayID: "g",
			CreatedAt: now, ExpiresAt: now.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(s.w.stmts); n != 1 {
		t.Fatalf("%d writer statements cached after one statement three times", n)
	}
	// DeleteExpired runs two statements in a transaction.
	for round := range 2 {
		if _, err := s.DeleteExpired(ctx, now); err != nil {
			t.Fatal(err)
		}
		if n := len(s.w.stmts); n != 3 {
			t.Fatalf("round %d: %d writer statements cached, want 3", round, n)
		}
		if len(s.w.pending) != 0 {
			t.Fatalf("round %d: statements left pending", round)
		}
	}
	for i := range maxCachedStatements + 20 {
		var got int
		if err := s.r.QueryRowContext(ctx, fmt.Sprintf("SELECT %d", i)).Scan(&got); err != nil || got != i {
			t.Fatalf("SELECT %d: %d %v", i, got, err)
		}
	}
	if n := len(s.r.stmts); n != maxCachedStatements {
		t.Fatalf("%d reader statements cached, bound %d", n, maxCachedStatements)
	}
}
