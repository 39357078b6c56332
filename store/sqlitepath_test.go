package store

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSQLitePathTakenAsIs: the database path was pasted into a file: URI,
// so "gw#1.db" and "gw#2.db" both opened the file "gw" (each with a lock of
// its own: two gateways on one database), the named file an empty decoy.
// A path is the file it names, whatever its characters.
func TestSQLitePathTakenAsIs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for _, name := range []string{"gw#1.db", "gw#2.db", "a?b.db", "50%25.db", "sp ace.db"} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name)
			s, err := OpenSQLite(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			enroll(t, s, "only-in-"+name, t0.Add(time.Hour))
			s.Close()
			if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
				t.Fatalf("%s: %v, size %v: the database is elsewhere", name, err, fi)
			}
			ro, err := OpenSQLiteReadOnly(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			defer ro.Close()
			if _, err := ro.ActivationByID(ctx, "only-in-"+name); err != nil {
				t.Fatalf("%s: its own activation: %v", name, err)
			}
		})
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() == "gw" || e.Name() == "a" || e.Name() == "50%.db" {
			t.Errorf("a file %q was made: a path was read as a URI", e.Name())
		}
	}
}
