package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
)

func pgDSN(t *testing.T) string {
	t.Helper()
	dsn := os.Getenv("CREDGW_TEST_POSTGRES_DSN")
	if dsn == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("CI: CREDGW_TEST_POSTGRES_DSN is not set (make test starts PostgreSQL)")
		}
		t.Skip("CREDGW_TEST_POSTGRES_DSN not set")
	}
	return dsn
}

func withParam(dsn, k, v string) string {
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	return dsn + sep + k + "=" + strings.ReplaceAll(url.QueryEscape(v), "+", "%20")
}

// TestPostgresRefusesStandby: a read-only database (as a hot standby is) is
// a clear start-up error.
func TestPostgresRefusesStandby(t *testing.T) {
	dsn := withParam(pgDSN(t), "options", "-c default_transaction_read_only=on")
	_, err := OpenPostgres(context.Background(), dsn, PostgresOptions{Migrate: true})
	if err == nil || !strings.Contains(err.Error(), "read-only standby") {
		t.Fatalf("err = %v", err)
	}
}

// TestPostgresSchemaCheck: without migrate, an empty or old schema is
// refused with a message saying to run credgw migrate; after migrate it opens.
func TestPostgresSchemaCheck(t *testing.T) {
	dsn := pgDSN(t)
	ctx := context.Background()
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	schema := fmt.Sprintf("t_schema_%d", os.Getpid())
	admin.ExecContext(ctx, `DROP SCHEMA IF EXISTS `+schema+` CASCADE`)
	if _, err := admin.ExecContext(ctx, `CREATE SCHEMA `+schema); err != nil {
		t.Fatal(err)
	}
	defer admin.ExecContext(ctx, `DROP SCHEMA `+schema+` CASCADE`)
	sdsn := withParam(dsn, "search_path", schema)
	if _, err := OpenPostgres(ctx, sdsn, PostgresOptions{}); !errors.Is(err, ErrSchemaOutdated) || !strings.Contains(err.Error(), "credgw migrate") {
		t.Fatalf("empty schema: %v", err)
	}
	s, err := OpenPostgres(ctx, sdsn, PostgresOptions{Migrate: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = OpenPostgres(ctx, sdsn, PostgresOptions{})
	if err != nil {
		t.Fatalf("after migrate: %v", err)
	}
	cur, want, err := s.SchemaVersion(ctx)
	s.Close()
	if err != nil || cur != want || want < 3 {
		t.Fatalf("version %d/%d %v", cur, want, err)
	}
	if _, err := OpenPostgres(ctx, "postgres://nobody@127.0.0.1:1/x?sslmode=disable&connect_timeout=2", PostgresOptions{}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("unreachable server: %v", err)
	}
}
