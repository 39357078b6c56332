package store

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRestoreSQLite: a restore was a copy by hand over the database ("stop
// the gateway, put the copy at store.dsn, delete the -wal and -shm"):
// nothing stopped a copy under a running gateway, a forgotten -wal replayed
// the lost database's last writes onto the backup, and the database
// replaced was gone. RestoreSQLite refuses while a gateway holds the
// database and a file that is not a whole database, puts the backup in
// place with no -wal or -shm of the old one, and keeps the old one aside.
func TestRestoreSQLite(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db := filepath.Join(dir, "credgw.db")
	s, err := OpenSQLite(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	enroll(t, s, "in-backup", t0.Add(time.Hour))
	_, gen, err := s.ClaimCRL(ctx, "ca", t0, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SaveCRL(ctx, "ca", StoredCRL{Number: 7, DER: []byte{0x30}, ThisUpdate: t0, NextUpdate: t0.Add(24 * time.Hour)}, gen); err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(dir, "backup.db")
	if err := s.Backup(ctx, backup); err != nil {
		t.Fatal(err)
	}
	enroll(t, s, "after-backup", t0.Add(time.Hour))

	// The gateway holds the database: refused, nothing touched.
	var inUse *InUseError
	if _, err := RestoreSQLite(ctx, backup, db); !errors.As(err, &inUse) {
		t.Fatalf("restore under a running gateway: %v, want InUseError", err)
	}
	s.Close()
	// A file that is not a database: refused, nothing touched.
	junk := filepath.Join(dir, "junk.db")
	if err := os.WriteFile(junk, []byte("not a database"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := RestoreSQLite(ctx, junk, db); err == nil || !strings.Contains(err.Error(), "integrity") && !strings.Contains(err.Error(), "not a database") {
		t.Fatalf("restore of a file that is not a database: %v", err)
	}
	// A -wal left by the database being replaced (a crash, a kill -9).
	if err := os.WriteFile(db+"-wal", []byte("left by the old database"), 0o600); err != nil {
		t.Fatal(err)
	}
	aside, err := RestoreSQLite(ctx, backup, db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(db + "-wal"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the old database's -wal is beside the restored one: %v", err)
	}
	if filepath.Dir(aside) != dir {
		t.Errorf("the replaced database was put at %s, want beside it", aside)
	}
	old, err := OpenSQLiteReadOnly(ctx, aside)
	if err != nil {
		t.Fatalf("the replaced database, kept aside: %v", err)
	}
	if _, err := old.ActivationByID(ctx, "after-backup"); err != nil {
		t.Errorf("the database kept aside lacks what it had: %v", err)
	}
	old.Close()
	r, err := OpenSQLite(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.ActivationByID(ctx, "in-backup"); err != nil {
		t.Errorf("restored database: %v", err)
	}
	// Its stored CRL is stale from the moment it is in place (a gateway
	// started before the migrate that marks it would serve a CRL
	// numbered below those published since the backup).
	if c, err := r.CRL(ctx, "ca"); err != nil || !c.Stale {
		t.Errorf("the restored CRL: %+v %v, want stale", c, err)
	}
	if _, err := r.ActivationByID(ctx, "after-backup"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the restored database has what came after the backup: %v", err)
	}
	if fi, err := os.Stat(db); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("restored database: %v, mode %v", err, fi.Mode().Perm())
	}
}

// TestBackupCheckLeavesItAsItWas: checking a backup (before a restore)
// leaves the operator's file as it was: no change, no -wal or -shm.
func TestBackupCheckLeavesItAsItWas(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := OpenSQLite(ctx, filepath.Join(dir, "credgw.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	enroll(t, s, "a", t0.Add(time.Hour))
	backup := filepath.Join(dir, "b.db")
	if err := s.Backup(ctx, backup); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := checkCopy(ctx, backup); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(backup)
	if string(before) != string(after) {
		t.Error("checking the backup changed it")
	}
	for _, sfx := range []string{"-wal", "-shm"} {
		if _, err := os.Stat(backup + sfx); err == nil {
			t.Errorf("checking the backup left %s%s", filepath.Base(backup), sfx)
		}
	}
}

// TestRestoreEdges, from the review of credgw restore: an orphaned -wal
// of a database deleted (the "database missing: restore it" case) stayed
// beside the restored one, for SQLite to replay; two restores in one
// second kept the second database aside under the first's name, losing
// it; a missing database restored by root was reported "replaced" (by the
// empty file the lock made), and the restored file was root's, which the
// gateway's user cannot open.
func TestRestoreEdges(t *testing.T) {
	ctx := context.Background()
	dir, db, backup := backedUp(t, "in-backup")

	// Missing database, its -wal left.
	if err := os.Remove(db); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(db+"-wal", []byte("the deleted database's last writes"), 0o600); err != nil {
		t.Fatal(err)
	}
	aside, err := RestoreSQLite(ctx, backup, db)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(db + "-wal"); err == nil && string(b) == "the deleted database's last writes" {
		t.Error("the deleted database's -wal is beside the restored one")
	}
	if aside != "" {
		if fi, err := os.Stat(aside); err == nil && fi.Size() == 0 {
			t.Errorf("an empty file reported as the database replaced: %s", aside)
		}
	}
	// Twice in a row: two databases kept aside, under two names.
	a1, err := RestoreSQLite(ctx, backup, db)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := RestoreSQLite(ctx, backup, db)
	if err != nil {
		t.Fatal(err)
	}
	if a1 == "" || a2 == "" || a1 == a2 {
		t.Fatalf("databases kept aside as %q and %q, want two names", a1, a2)
	}
	for _, a := range []string{a1, a2} {
		if _, err := os.Stat(a); err != nil {
			t.Errorf("kept aside: %v", err)
		}
	}

	// Root restores for the gateway's user.
	if os.Geteuid() != 0 {
		t.Log("not root: the ownership case is skipped")
		return
	}
	const uid, gid = 4242, 4243
	for _, p := range []string{dir, db, db + ".lock"} {
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := RestoreSQLite(ctx, backup, db); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(db)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != uid || st.Gid != gid {
		t.Errorf("the restored database is %d:%d, want the gateway's %d:%d", st.Uid, st.Gid, uid, gid)
	}
	for _, sfx := range []string{"-wal", "-shm"} {
		if fi, err := os.Stat(db + sfx); err == nil {
			if st := fi.Sys().(*syscall.Stat_t); st.Uid != uid {
				t.Errorf("root's restore left %s owned by %d", filepath.Base(db+sfx), st.Uid)
			}
		}
	}
}

// TestRestoreRefusesAndTolerates, from the review of the restore fixes: a
// backup with a -wal of its own (a copy of a live database) was checked
// with its -wal and restored without it, its last writes lost (or, the
// file alone holding no table yet, restored empty); and a backup from
// before the CRLs were stored failed after the swap ("no such table:
// crls"), the database replaced moved aside and nothing said where.
func TestRestoreRefusesAndTolerates(t *testing.T) {
	ctx := context.Background()
	dir, db, backup := backedUp(t, "live")
	withWAL := filepath.Join(dir, "snapshot.db")
	if err := os.WriteFile(withWAL, mustReadFile(t, backup), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(withWAL+"-wal", []byte("writes the file lacks"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := RestoreSQLite(ctx, withWAL, db); err == nil || !strings.Contains(err.Error(), "-wal beside it") {
		t.Fatalf("restore of a backup with a -wal of its own: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), "replaced") {
			t.Errorf("a refused restore moved %s aside", e.Name())
		}
	}
	// From before the CRLs were stored (no crls table).
	old := filepath.Join(dir, "old.db")
	if err := os.WriteFile(old, mustReadFile(t, backup), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := sql.Open("sqlite", old)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(`DROP TABLE crls`); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if aside, err := RestoreSQLite(ctx, old, db); err != nil || aside == "" {
		t.Fatalf("restore of a backup without stored CRLs: %q, %v", aside, err)
	}
}

func mustReadFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRestoreThroughASymlink: the -wal refusal looked beside the name
// given; SQLite checked the file a symlink names, with its -wal, and the
// copy left the -wal out: a snapshot of a live database given through a
// link lost its last writes.
func TestRestoreThroughASymlink(t *testing.T) {
	ctx := context.Background()
	dir, db, backup := backedUp(t, "live")
	snap := filepath.Join(t.TempDir(), "snapshot.db")
	if err := os.WriteFile(snap, mustReadFile(t, backup), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(snap+"-wal", []byte("writes the file lacks"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "latest.db")
	if err := os.Symlink(snap, link); err != nil {
		t.Fatal(err)
	}
	if _, err := RestoreSQLite(ctx, link, db); err == nil || !strings.Contains(err.Error(), "-wal beside it") {
		t.Fatalf("restore through a link of a backup with a -wal: %v", err)
	}
}

// backedUp makes a database (in dir, with the activation act) and its
// backup, and closes it: the gateway stopped.
func backedUp(t *testing.T, act string) (dir, db, backup string) {
	t.Helper()
	ctx := context.Background()
	dir = t.TempDir()
	db, backup = filepath.Join(dir, "credgw.db"), filepath.Join(dir, "backup.db")
	s, err := OpenSQLite(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	enroll(t, s, act, t0.Add(time.Hour))
	if err := s.Backup(ctx, backup); err != nil {
		t.Fatal(err)
	}
	return dir, db, backup
}
