package store

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestSQLiteFileModeTightened: the store holds sealed escrowed keys, code
// verifiers, session hashes and personal data. A store copied or restored
// with cp kept its 0644 (and SQLite gives its -wal and -shm files the
// database's mode): others could read it. Opening it takes the group and
// other bits away, from the -wal and -shm files too.
func TestSQLiteFileModeTightened(t *testing.T) {
	path := filepath.Join(t.TempDir(), "credgw.db")
	s, err := OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	for _, f := range []string{path, path + "-wal", path + "-shm"} {
		if _, err := os.Stat(f); os.IsNotExist(err) {
			if err := os.WriteFile(f, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chmod(f, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s, err = OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, f := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(f)
		if err != nil {
			continue // SQLite removed it (an empty WAL)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s is %v after the store opened it, want no access for group or others", filepath.Base(f), fi.Mode().Perm())
		}
	}
}
