package store

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestBackupOnlineAndRestore: a backup taken while writes go on is a
// consistent copy (0600) that opens as a store with everything committed
// before it; an existing file is not overwritten.
func TestBackupOnlineAndRestore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := OpenSQLite(ctx, filepath.Join(dir, "credgw.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	enroll(t, s, "before", t0.Add(time.Hour))
	// Writes go on while the backup runs.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			s.AppendAudit(ctx, AuditEvent{At: t0, Actor: "test", Action: "write", Outcome: "ok", Detail: "during the backup"})
		}
	}()
	// The backup is taken by another process's read-only store, as
	// `credgw backup` beside a running gateway does.
	ro, err := OpenSQLiteReadOnly(ctx, filepath.Join(dir, "credgw.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	out := filepath.Join(dir, "backup.db")
	err = ro.Backup(ctx, out)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	if err := ro.Backup(ctx, out); err == nil {
		t.Fatal("a backup overwrote an existing file")
	}
	// Restore: the copy is the database of a new store.
	restored := filepath.Join(t.TempDir(), "credgw.db")
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(restored, b, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := OpenSQLite(ctx, restored)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if a, err := r.ActivationByID(ctx, "before"); err != nil || a.CredentialSetID != "set-before" {
		t.Fatalf("restored store: %+v, %v", a, err)
	}
	if n, err := VerifyAudit(ctx, r); err != nil {
		t.Fatalf("the restored audit chain (%d events): %v", n, err)
	}
}

// TestBackupErrorsSayWhatToFix: a backup into a folder that does not
// exist said "the backup file must not exist yet", which sent operators
// looking for a file; the hint is for a file that exists, and a missing
// folder is named as such.
func TestBackupErrorsSayWhatToFix(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := OpenSQLite(ctx, filepath.Join(dir, "credgw.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	missing := filepath.Join(dir, "no-such-folder", "b.db")
	if err := st.Backup(ctx, missing); err == nil || strings.Contains(err.Error(), "must not exist") || !strings.Contains(err.Error(), "make the folder") {
		t.Errorf("a backup into a missing folder: %v", err)
	}
	exists := filepath.Join(dir, "old.db")
	if err := os.WriteFile(exists, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := st.Backup(ctx, exists); err == nil || !strings.Contains(err.Error(), "must not exist") {
		t.Errorf("a backup onto an existing file: %v", err)
	}
}
