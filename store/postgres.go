package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// DefaultMaxConns bounds the PostgreSQL pool when store.max_conns is not set.
const DefaultMaxConns = 16

// PostgresOptions configures OpenPostgres.
type PostgresOptions struct {
	// MaxConns bounds the pool (default DefaultMaxConns).
	MaxConns int
	// Migrate applies pending migrations (under an advisory lock, so N
	// replicas starting together are safe). Without it, a schema older than
	// this build is an error that says to run `credgw migrate`.
	Migrate bool
}

// ErrSchemaOutdated means the database needs `credgw migrate`.
var ErrSchemaOutdated = errors.New("store: the database schema is older than this credgw")

// OpenPostgres opens the scale-out store: one pool for reads and writes; every
// state change is one conditional UPDATE or a row lock, so any number of
// replicas may share the database.
func OpenPostgres(ctx context.Context, dsn string, o PostgresOptions) (*DB, error) {
	if dsn == "" {
		return nil, errors.New("store: postgres: no DSN (set store.dsn, e.g. postgres://credgw@db.example/credgw)")
	}
	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxConns
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	db.SetMaxOpenConns(o.MaxConns)
	db.SetMaxIdleConns(o.MaxConns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	c := newConn(db, false, "postgresql") // pgx caches prepared statements itself
	s := &DB{w: c, r: c, dialect: "postgres"}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("%w (PostgreSQL at store.dsn: is it running, and does it take connections from here?)", wrapDB(err))
	}
	var ro string
	if err := db.QueryRowContext(pctx, `SHOW transaction_read_only`).Scan(&ro); err != nil {
		db.Close()
		return nil, fmt.Errorf("%w (PostgreSQL at store.dsn: is it running, and does it take connections from here?)", wrapDB(err))
	}
	if ro == "on" {
		db.Close()
		return nil, errors.New("store: postgres: the DSN points at a read-only standby: point store.dsn at the primary")
	}
	if o.Migrate {
		locker, err := lock.NewPostgresSessionLocker()
		if err != nil {
			db.Close()
			return nil, err
		}
		if err := s.migrate(ctx, goose.WithSessionLocker(locker)); err != nil {
			db.Close()
			return nil, err
		}
		return s, nil
	}
	cur, want, err := s.SchemaVersion(ctx)
	if err != nil {
		db.Close()
		return nil, err
	}
	if cur < want {
		db.Close()
		return nil, fmt.Errorf("%w (version %d, this build needs %d): run `credgw migrate --config ...` first", ErrSchemaOutdated, cur, want)
	}
	return s, nil
}
