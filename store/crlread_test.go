package store

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// TestCRLReadNeedsNoWriter: every anonymous CRL request read the stored CRL
// (the whole DER) through SQLite's one writer connection, so a flood of
// CRL fetches queued every write of the gateway behind it, and a CRL fetch
// waited for any write in progress. The CRL is read on the reader pool.
func TestCRLReadNeedsNoWriter(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "credgw.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, gen, err := s.ClaimCRL(ctx, "ca", t0, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SaveCRL(ctx, "ca", StoredCRL{Number: 7, DER: []byte{0x30}, ThisUpdate: t0, NextUpdate: t0.Add(24 * time.Hour)}, gen); err != nil {
		t.Fatal(err)
	}
	// A write in progress holds the writer connection.
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, markCRLStale, "other-ca"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	go func() {
		c, err := s.CRL(ctx, "ca")
		if err == nil && c.Number != 7 {
			t.Errorf("CRL number %d, want 7", c.Number)
		}
		done <- err
	}()
	go func() {
		st, err := s.CRLState(ctx, "ca")
		if err == nil && (st.Number != 7 || st.Stale) {
			t.Errorf("CRL state %+v, want number 7, not stale", st)
		}
		done <- err
	}()
	for range 2 {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second): // only turns the wait for the write into a failure
			t.Fatal("a CRL read waits for a write in progress (it reads on the writer connection)")
		}
	}
}
