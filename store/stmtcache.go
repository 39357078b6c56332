package store

import (
	"context"
	"database/sql"
	"errors"
	"sync"
)

// maxCachedStatements bounds the statement cache: the store's statements
// are fixed strings, so a few dozen are ever cached; a query built at run
// time beyond the bound simply runs unprepared.
const maxCachedStatements = 256

// conn is a *sql.DB that, on SQLite, prepares each statement once and
// reuses it. SQLite otherwise parses and plans every statement on every
// call: about a tenth of a redemption's store time, spent while holding
// the one writer connection. PostgreSQL (pgx) caches statements itself, so
// there conn passes calls through.
type conn struct {
	*sql.DB
	cache bool
	// system is the database's name in spans: sqlite or postgresql.
	system string
	// beforeWrite, if set, runs before each call outside a transaction
	// and before each transaction (SQLite: the checkpointer keeps the WAL
	// bounded).
	beforeWrite func()

	mu      sync.Mutex
	stmts   map[string]*sql.Stmt
	pending map[string]bool // seen in a transaction: prepared once it ends
}

func newConn(db *sql.DB, cache bool, system string) *conn {
	return &conn{DB: db, cache: cache, system: system, stmts: map[string]*sql.Stmt{}, pending: map[string]bool{}}
}

// cached returns the prepared statement for query, if there is one.
func (c *conn) cached(query string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stmts[query]
}

// prepare prepares query on the pool and caches it. It must not run while
// this goroutine holds a transaction on a one-connection pool (it would
// wait for that connection): transactions note their statements as pending
// instead (stx), and inTx prepares them after the commit.
func (c *conn) prepare(ctx context.Context, query string) *sql.Stmt {
	if st := c.cached(query); st != nil {
		return st
	}
	c.mu.Lock()
	full := len(c.stmts) >= maxCachedStatements
	c.mu.Unlock()
	if full {
		return nil
	}
	st, err := c.DB.PrepareContext(ctx, query)
	if err != nil {
		return nil // the unprepared call reports the error
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.stmts[query]; old != nil {
		st.Close()
		return old
	}
	c.stmts[query] = st
	return st
}

func (c *conn) writing() {
	if c.beforeWrite != nil {
		c.beforeWrite()
	}
}

func (c *conn) ExecContext(ctx context.Context, query string, args ...any) (res sql.Result, err error) {
	ctx, span := c.startSpan(ctx, "exec")
	defer func() { endSpan(span, wrapDB(err)) }()
	c.writing()
	if c.cache {
		if st := c.prepare(ctx, query); st != nil {
			return st.ExecContext(ctx, args...)
		}
	}
	return c.DB.ExecContext(ctx, query, args...)
}

func (c *conn) QueryContext(ctx context.Context, query string, args ...any) (rows *sql.Rows, err error) {
	ctx, span := c.startSpan(ctx, "query")
	defer func() { endSpan(span, wrapDB(err)) }()
	c.writing()
	if c.cache {
		if st := c.prepare(ctx, query); st != nil {
			return st.QueryContext(ctx, args...)
		}
	}
	return c.DB.QueryContext(ctx, query, args...)
}

func (c *conn) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	ctx, span := c.startSpan(ctx, "query")
	defer span.End()
	c.writing()
	if c.cache {
		if st := c.prepare(ctx, query); st != nil {
			return st.QueryRowContext(ctx, args...)
		}
	}
	return c.DB.QueryRowContext(ctx, query, args...)
}

// preparePending prepares what transactions ran unprepared.
func (c *conn) preparePending(ctx context.Context) {
	c.mu.Lock()
	var qs []string
	for q := range c.pending {
		qs = append(qs, q)
	}
	clear(c.pending)
	c.mu.Unlock()
	for _, q := range qs {
		c.prepare(ctx, q)
	}
}

// Close closes the cached statements and the pool.
func (c *conn) Close() error {
	c.mu.Lock()
	var errs []error
	for q, st := range c.stmts {
		errs = append(errs, st.Close())
		delete(c.stmts, q)
	}
	c.mu.Unlock()
	return errors.Join(append(errs, c.DB.Close())...)
}

// stx is a transaction that runs the cached statements of its conn.
type stx struct {
	*sql.Tx
	c *conn
}

// stmt is the transaction's use of query's cached statement, or nil (then
// query is noted, to be prepared after the transaction).
func (t *stx) stmt(ctx context.Context, query string) *sql.Stmt {
	if !t.c.cache {
		return nil
	}
	if st := t.c.cached(query); st != nil {
		return t.Tx.StmtContext(ctx, st)
	}
	t.c.mu.Lock()
	if len(t.c.stmts)+len(t.c.pending) < maxCachedStatements {
		t.c.pending[query] = true
	}
	t.c.mu.Unlock()
	return nil
}

func (t *stx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if st := t.stmt(ctx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return t.Tx.ExecContext(ctx, query, args...)
}

func (t *stx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return t.Tx.QueryContext(ctx, query, args...)
}

func (t *stx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if st := t.stmt(ctx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.Tx.QueryRowContext(ctx, query, args...)
}
