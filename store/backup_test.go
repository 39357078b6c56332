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

// TestBackupOfAnOlderSchema: `credgw backup` refused a database at an
// older schema ("start credgw serve or run credgw migrate"), which is the
// backup an upgrade needs before it migrates: the only way back, as
// credgw does not migrate down. A backup copies the schema it finds.
func TestBackupOfAnOlderSchema(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db := filepath.Join(dir, "credgw.db")
	s, err := OpenSQLite(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	enroll(t, s, "before", t0.Add(time.Hour))
	_, want, err := s.SchemaVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// As an older credgw left it: its last migration not applied.
	if _, err := s.w.ExecContext(ctx, `DELETE FROM goose_db_version WHERE version_id = $1`, want); err != nil {
		t.Fatal(err)
	}
	s.Close()
	out := filepath.Join(dir, "before-upgrade.db")
	version, err := BackupSQLite(ctx, db, out)
	if err != nil {
		t.Fatalf("backup of a database at schema %d (this build %d): %v", want-1, want, err)
	}
	if version != want-1 {
		t.Errorf("the backup says schema %d, want %d", version, want-1)
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v", err, fi)
	}
}

// TestBackupAppearsWhole: the copy was written under the name given, so a
// backup killed part way (a timer's stop, Ctrl-C) left a file that looked
// like a backup and was not one. The copy is written and checked under a
// name of its own, and given the name asked for only once it is whole;
// nothing is left when it fails.
func TestBackupAppearsWhole(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db := filepath.Join(dir, "credgw.db")
	s, err := OpenSQLite(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	enroll(t, s, "before", t0.Add(time.Hour))
	out := filepath.Join(dir, "backups", "b.db")
	if err := os.Mkdir(filepath.Dir(out), 0o700); err != nil {
		t.Fatal(err)
	}
	var seen bool
	backupCopied = func(tmp string) {
		seen = true
		if _, err := os.Stat(out); err == nil {
			t.Error("the backup's name exists before the copy is checked")
		}
		if filepath.Dir(tmp) != filepath.Dir(out) || tmp == out {
			t.Errorf("copy written to %s, want a name of its own beside %s", tmp, out)
		}
	}
	t.Cleanup(func() { backupCopied = nil })
	if _, err := BackupSQLite(ctx, db, out); err != nil {
		t.Fatal(err)
	}
	if !seen {
		t.Fatal("the copy was not written under a name of its own")
	}
	entries, _ := os.ReadDir(filepath.Dir(out))
	if len(entries) != 1 || entries[0].Name() != "b.db" {
		t.Fatalf("the backup folder holds %v, want b.db alone", entries)
	}
	// A backup that fails leaves nothing.
	backupCopied = func(tmp string) {
		if err := os.WriteFile(tmp, []byte("not a database"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	failed := filepath.Join(dir, "backups", "failed.db")
	if _, err := BackupSQLite(ctx, db, failed); err == nil {
		t.Fatal("a damaged copy passed its check")
	}
	entries, _ = os.ReadDir(filepath.Dir(out))
	if len(entries) != 1 {
		t.Fatalf("after a failed backup the folder holds %v, want b.db alone", entries)
	}
}
