package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSQLiteOneGateway: a second open of a SQLite database that a store
// holds is refused, saying why and what to use instead (flock conflicts
// between two opens of the lock file, even in one process); closing the
// first lets it open. Read-only opens, as for `credgw audit`, go on.
func TestSQLiteOneGateway(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "credgw.db")
	first, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	now := time.Now()
	if err := first.CreateChallenge(ctx, Challenge{SessionID: "s", Challenge: []byte("c"), GatewayID: "g", CreatedAt: now, ExpiresAt: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}

	second, err := OpenSQLite(ctx, path)
	if err == nil {
		second.Close()
		t.Fatal("a second store opened a SQLite database that one holds")
	}
	var inUse *InUseError
	if !errors.As(err, &inUse) {
		t.Fatalf("second open: %v, want an InUseError", err)
	}
	for _, want := range []string{path, fmt.Sprintf("pid %d", os.Getpid()), "one SQLite database serves one gateway", "store.driver: postgres"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal %q does not say %q", err, want)
		}
	}
	if fi, err := os.Stat(path + ".lock"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("lock file: %v, %v", fi, err)
	}

	ro, err := OpenSQLiteReadOnly(ctx, path)
	if err != nil {
		t.Fatalf("read-only open beside the gateway: %v", err)
	}
	if _, err := ro.PIVCertificate(ctx, "none"); !errors.Is(err, ErrNotFound) {
		t.Errorf("read-only read: %v", err)
	}
	if err := ro.CreateChallenge(ctx, Challenge{SessionID: "t", Challenge: []byte("c"), GatewayID: "g", CreatedAt: now, ExpiresAt: now}); err == nil {
		t.Error("a read-only store wrote")
	}
	ro.Close()

	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second, err = OpenSQLite(ctx, path)
	if err != nil {
		t.Fatalf("after the first closed: %v", err)
	}
	defer second.Close()
	if _, err := second.ConsumeChallenge(ctx, "s", now); err != nil {
		t.Fatalf("the second store does not see the first's writes: %v", err)
	}
}

// TestSQLiteReadOnlyRefuses: a read-only open neither creates a database
// nor migrates one.
func TestSQLiteReadOnlyRefuses(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "none.db")
	if s, err := OpenSQLiteReadOnly(ctx, path); err == nil {
		s.Close()
		t.Fatal("read-only open of a missing database succeeded")
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("read-only open created %s (%v)", path, err)
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := OpenSQLiteReadOnly(ctx, path)
	if err == nil {
		s.Close()
		t.Fatal("read-only open of an unmigrated database succeeded")
	}
	if !strings.Contains(err.Error(), "credgw migrate") {
		t.Errorf("the refusal %q does not say how to migrate", err)
	}
}

// TestSQLiteInUseThroughOtherNames: the lock follows the database file, not
// the name a configuration gives it: a second store that reaches the same
// file through a symlink, a symlinked directory or a path with ".." is
// refused with the InUseError, whichever name opened it first, even a
// symlink made before the file existed.
func TestSQLiteInUseThroughOtherNames(t *testing.T) {
	tests := []struct {
		name string
		// paths makes the database's directory and returns the names the
		// first and the second store open.
		paths func(t *testing.T, dir string) (first, second string)
	}{
		{"symlink to the file", func(t *testing.T, dir string) (string, string) {
			db := filepath.Join(dir, "credgw.db")
			link := filepath.Join(dir, "link.db")
			symlink(t, "credgw.db", link)
			return db, link
		}},
		{"symlinked directory", func(t *testing.T, dir string) (string, string) {
			real := filepath.Join(dir, "data")
			mkdir(t, real)
			symlink(t, real, filepath.Join(dir, "alias"))
			return filepath.Join(real, "credgw.db"), filepath.Join(dir, "alias", "credgw.db")
		}},
		{"path with ..", func(t *testing.T, dir string) (string, string) {
			mkdir(t, filepath.Join(dir, "data"))
			mkdir(t, filepath.Join(dir, "other"))
			return filepath.Join(dir, "data", "credgw.db"), dir + "/other/../data/credgw.db"
		}},
		{"\"..\" after a symlinked directory", func(t *testing.T, dir string) (string, string) {
			// dir/a/link -> dir/b/c, so dir/a/link/../db is dir/b/db
			// (the kernel resolves the symlink before ".."), not dir/a/db.
			mkdir(t, filepath.Join(dir, "a"))
			mkdir(t, filepath.Join(dir, "b"))
			mkdir(t, filepath.Join(dir, "b", "c"))
			symlink(t, filepath.Join(dir, "b", "c"), filepath.Join(dir, "a", "link"))
			return filepath.Join(dir, "b", "credgw.db"), dir + "/a/link/../credgw.db"
		}},
		{"first through a symlink made before the database", func(t *testing.T, dir string) (string, string) {
			db := filepath.Join(dir, "credgw.db")
			link := filepath.Join(dir, "link.db")
			symlink(t, db, link)
			return link, db
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			firstPath, secondPath := tt.paths(t, t.TempDir())
			first, err := OpenSQLite(ctx, firstPath)
			if err != nil {
				t.Fatal(err)
			}
			defer first.Close()
			// The WAL is beside the file SQLite resolves the name to; the
			// store measures that one, whatever name it was given.
			now := time.Now()
			if err := first.CreateChallenge(ctx, Challenge{SessionID: "wal", Challenge: make([]byte, 4096), GatewayID: "g",
				CreatedAt: now, ExpiresAt: now.Add(time.Minute)}); err != nil {
				t.Fatal(err)
			}
			if first.WALBytes() == 0 {
				t.Errorf("the store opened as %s sees no WAL after a write", firstPath)
			}
			second, err := OpenSQLite(ctx, secondPath)
			if err == nil {
				second.Close()
				t.Fatalf("%s opened while %s holds the same database", secondPath, firstPath)
			}
			var inUse *InUseError
			if !errors.As(err, &inUse) {
				t.Fatalf("second open: %v, want an InUseError", err)
			}
			for _, want := range []string{secondPath, fmt.Sprintf("pid %d", os.Getpid()), "store.driver: postgres"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("the refusal %q does not say %q", err, want)
				}
			}
		})
	}
}

func symlink(t *testing.T, target, name string) {
	t.Helper()
	if err := os.Symlink(target, name); err != nil {
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
}

// TestSQLiteLockFileTakesTheDatabasesOwner: key-ceremony.md's restore
// runs credgw migrate; run as root, it left the lock file 0600 root, and
// the gateway, which runs as its own user, could no longer start
// ("open credgw.db.lock: permission denied"). Made by root, the lock file
// now belongs to the database file's owner (or its directory's).
func TestSQLiteLockFileTakesTheDatabasesOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (make test runs as root in CI)")
	}
	const uid, gid = 65534, 65534 // nobody, nogroup
	for _, dbExists := range []bool{true, false} {
		dir := t.TempDir()
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "credgw.db")
		if dbExists {
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(path, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
		f, err := lockSQLite(path)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path + ".lock")
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != uid || st.Gid != gid {
			t.Fatalf("database exists %v: the lock file is %d:%d, want the database's owner %d:%d", dbExists, st.Uid, st.Gid, uid, gid)
		}
		// A database root makes (migrate before the first serve) belongs
		// to its directory's owner too.
		if fi, err := os.Stat(path); err != nil {
			t.Fatalf("database exists %v: %v", dbExists, err)
		} else if st := fi.Sys().(*syscall.Stat_t); st.Uid != uid || st.Gid != gid {
			t.Fatalf("database exists %v: the database is %d:%d, want %d:%d", dbExists, st.Uid, st.Gid, uid, gid)
		}
	}
}

// TestSQLiteLockFileNotFollowed: the lock file was opened following a
// symlink, then chowned, truncated and written: whoever can write the
// database's directory (the gateway's user) could point credgw.db.lock at
// /etc/shadow and have root's next credgw migrate give it to them. A
// lock file that is not a plain file of one link is refused.
func TestSQLiteLockFileNotFollowed(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "credgw.db")
	if err := os.Symlink(victim, path+".lock"); err != nil {
		t.Fatal(err)
	}
	if f, err := lockSQLite(path); err == nil {
		f.Close()
		t.Fatal("a lock file that is a symlink was taken")
	} else if !strings.Contains(err.Error(), "credgw.db.lock") {
		t.Fatalf("the refusal does not name the lock file: %v", err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
		t.Fatalf("the symlink's target was written: %q", b)
	}
	os.Remove(path + ".lock")
	if os.Geteuid() != 0 {
		return // a hard link to someone else's file is root's danger only
	}
	// As root, in a directory the gateway's user owns: a lock file that
	// is a hard link to a file of someone else (root's) is refused, by
	// the owner of the file opened (a name swapped after the open
	// changes nothing).
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(victim, path+".lock"); err != nil {
		t.Fatal(err)
	}
	if f, err := lockSQLite(path); err == nil {
		f.Close()
		t.Fatal("a lock file linked to root's file was taken")
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
		t.Fatalf("the hard link's file was written: %q", b)
	}
	// A lock file of the directory's owner with another link (a
	// hard-linked snapshot of the directory) is taken as ever.
	os.Remove(path + ".lock")
	if err := os.WriteFile(path+".lock", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chown(path+".lock", 65534, 65534)
	if err := os.Link(path+".lock", filepath.Join(dir, "snapshot.lock")); err != nil {
		t.Fatal(err)
	}
	f, err := lockSQLite(path)
	if err != nil {
		t.Fatalf("a lock file with a snapshot's link: %v", err)
	}
	f.Close()
}
