package server_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/credgw/credgw/server"
	"github.com/credgw/credgw/store"
)

// TestServeRefusesAMissingDatabase: serve made a new, empty SQLite
// database wherever the configured one was missing (a restore not
// finished, a typo, an unmounted volume): its next CRL listed no
// revocations, numbered above the last good one, and revoked credentials
// looked valid again. serve now refuses a database that is not there
// (or is empty), saying how to make one; `credgw migrate` makes it.
// And an older credgw on a newer SQLite schema (one file, one gateway: no
// rolling upgrade to excuse it) is refused, as migrate refuses it.
func TestServeRefusesAMissingDatabase(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for _, tc := range []struct {
		name  string
		setup func(path string)
		want  string
	}{
		{"missing", func(string) {}, "credgw migrate"},
		{"empty file", func(p string) {
			if err := os.WriteFile(p, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "credgw migrate"},
		{"newer schema", func(p string) {
			st, err := store.OpenSQLite(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			_, want, err := st.SchemaVersion(ctx)
			if err != nil {
				t.Fatal(err)
			}
			st.Close()
			db, err := sql.Open("sqlite", p)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Exec(`INSERT INTO goose_db_version (version_id, is_applied) VALUES ($1, 1)`, want+1); err != nil {
				t.Fatal(err)
			}
		}, "newer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".db")
			tc.setup(path)
			c := *cfg
			c.Listen.GRPC, c.Listen.HTTP, c.Listen.Management, c.Portal.Listen = "127.0.0.1:0", "", "", ""
			c.Store.Driver, c.Store.DSN = "sqlite", path
			gw2, err := server.New(ctx, &c, server.WithClock(now))
			if err == nil {
				gw2.Shutdown(context.Background())
				t.Fatalf("serve started on a %s database", tc.name)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("serve on a %s database: %v; want it to say %q", tc.name, err, tc.want)
			}
			if tc.name == "missing" {
				if _, err := os.Stat(path); !os.IsNotExist(err) {
					t.Errorf("serve left a database file behind: %v", err)
				}
			}
		})
	}
	// credgw migrate (CreateStore) makes it, and says so.
	c := *cfg
	c.Store.Driver, c.Store.DSN = "sqlite", filepath.Join(dir, "new.db")
	st, created, err := server.CreateStore(ctx, &c)
	if err != nil || !created {
		t.Fatalf("CreateStore: created %v, %v", created, err)
	}
	st.Close()
	st, created, err = server.CreateStore(ctx, &c)
	if err != nil || created {
		t.Fatalf("CreateStore of an existing database: created %v, %v", created, err)
	}
	st.Close()
}

// TestConfigCheckFindsNoDatabase: `config check` ("every start-up check of
// serve, without serving") passed a SQLite database that is not there, or
// is empty, or a newer credgw migrated, all of which serve refuses.
func TestConfigCheckFindsNoDatabase(t *testing.T) {
	ctx := context.Background()
	b, err := os.ReadFile(dev.Config)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "dsn: credgw.db") {
		t.Fatalf("the dev config names no dsn: credgw.db:\n%s", b)
	}
	for _, tc := range []struct{ name, want string }{
		{"missing", "credgw migrate"},
		{"empty", "credgw migrate"},
		{"newer", "newer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := "check-" + tc.name + ".db"
			path := filepath.Join(filepath.Dir(dev.Config), db)
			switch tc.name {
			case "empty":
				if err := os.WriteFile(path, nil, 0o600); err != nil {
					t.Fatal(err)
				}
			case "newer":
				st, err := store.OpenSQLite(ctx, path)
				if err != nil {
					t.Fatal(err)
				}
				_, want, _ := st.SchemaVersion(ctx)
				st.Close()
				sdb, err := sql.Open("sqlite", path)
				if err != nil {
					t.Fatal(err)
				}
				_, err = sdb.Exec(`INSERT INTO goose_db_version (version_id, is_applied) VALUES ($1, 1)`, want+1)
				sdb.Close()
				if err != nil {
					t.Fatal(err)
				}
			}
			t.Cleanup(func() { os.Remove(path) })
			cfgFile := filepath.Join(filepath.Dir(dev.Config), "check-"+tc.name+".yaml")
			if err := os.WriteFile(cfgFile, []byte(strings.Replace(string(b), "dsn: credgw.db", "dsn: "+db, 1)), 0o600); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Remove(cfgFile) })
			var found bool
			for _, p := range server.CheckConfig(ctx, cfgFile) {
				found = found || strings.Contains(p.Error(), tc.want)
			}
			if !found {
				t.Errorf("config check of a %s database: %v; want a problem saying %q", tc.name, server.CheckConfig(ctx, cfgFile), tc.want)
			}
		})
	}
}
