package store

import (
	"context"
	"fmt"
	"os"
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
	// DeleteExpired runs five statements in a transaction (sessions,
	// challenges, webhook deliveries, portal sign-outs and forms).
	for round := range 2 {
		if _, err := s.DeleteExpired(ctx, now); err != nil {
			t.Fatal(err)
		}
		if n := len(s.w.stmts); n != 6 {
			t.Fatalf("round %d: %d writer statements cached, want 6", round, n)
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

// SQLite checkpoints run off the request path: automatic ones are off, the
// checkpointer's copy the WAL into the database, and Close leaves an empty
// WAL behind.
func TestCheckpointer(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "c.db")
	s, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	var auto int
	if err := s.w.QueryRowContext(ctx, "PRAGMA wal_autocheckpoint").Scan(&auto); err != nil || auto != 0 {
		t.Fatalf("wal_autocheckpoint %d %v: requests would run checkpoints", auto, err)
	}
	now := time.Now()
	for i := range 50 {
		if err := s.CreateChallenge(ctx, Challenge{SessionID: fmt.Sprint("s", i), Challenge: make([]byte, 4096), GatewayID: "g",
			CreatedAt: now, ExpiresAt: now.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	var timeout int
	if err := s.ckpt.db.QueryRow("PRAGMA busy_timeout").Scan(&timeout); err != nil || timeout != 0 {
		t.Fatalf("checkpoint connection busy_timeout %d %v: a checkpoint would wait for other processes' readers", timeout, err)
	}
	var busy, log, done int
	if err := s.ckpt.db.QueryRow("PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &log, &done); err != nil || busy != 0 || log == 0 || done != log {
		t.Fatalf("checkpoint: busy %d, %d frames, %d copied, %v", busy, log, done, err)
	}
	if err := s.ckpt.checkpoint("PASSIVE"); err != nil || s.CheckpointFailures() != 0 {
		t.Fatalf("a checkpoint that ran counted as failed (%v, %d)", err, s.CheckpointFailures())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s.Close() // twice: no panic
	if s.ckpt.checkpoint("PASSIVE") == nil || s.CheckpointFailures() == 0 {
		t.Fatal("a checkpoint on a closed database was not counted as failed")
	}
	if fi, err := os.Stat(path + "-wal"); err == nil && fi.Size() != 0 {
		t.Fatalf("WAL of %d bytes left after Close", fi.Size())
	}
	s, err = OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.ConsumeChallenge(ctx, "s49", now); err != nil {
		t.Fatalf("after reopening: %v", err)
	}
}
