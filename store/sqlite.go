package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver, pure Go
)

//go:embed migrations
var migrations embed.FS

// DB is the store on a SQL database: SQLite (the embedded default) or
// PostgreSQL (scale-out). The SQL is the same for both ($n placeholders,
// RETURNING, ON CONFLICT); only the migrations differ where the types do.
type DB struct {
	w       *conn         // writes and transactions (SQLite: one connection)
	r       *conn         // reads
	dialect string        // "sqlite" or "postgres"
	ckpt    *checkpointer // SQLite: WAL checkpoints off the request path
	lock    *os.File      // SQLite: held while open, one gateway per file (lockSQLite)
	path    string        // SQLite: the database file

	// group carries issuance intents and records in shared transactions
	// (group commit), started on first use.
	groupOnce sync.Once
	group     *groupCommit
	closed    bool // set by Close under groupOnce: no group starts after it
}

// ErrNoDatabase: the SQLite database to open (MustExist) is not there, or
// is an empty file.
var ErrNoDatabase = errors.New("store: no SQLite database")

// SQLite is the embedded store: one file, WAL, a busy timeout, one writer
// connection (SQLite allows one writer at a time) and a pool of readers.
type SQLite = DB

var _ Store = (*DB)(nil)

// sqliteCacheKiB is the page cache of each connection.
const sqliteCacheKiB = 32 << 10

// busyTimeout is how long a SQLite connection waits for a lock.
const busyTimeout = 5 * time.Second

// OpenSQLite opens (creating if needed, unless MustExist) the database file at path and brings
// its schema up to date. The store holds the database alone, as one
// gateway: while it is open, a second OpenSQLite of the same file, in this
// process or another, fails with an InUseError (readers use
// OpenSQLiteReadOnly).
func OpenSQLite(ctx context.Context, path string, opts ...SQLiteOption) (*SQLite, error) {
	o := sqliteOptions{walLimit: DefaultWALLimit}
	for _, opt := range opts {
		opt(&o)
	}
	// Past a quarter of the limit a forced checkpoint runs (checkpointer);
	// a WAL that restarts is cut back to that size.
	trigger := o.walLimit / 4
	if path == "" {
		return nil, errors.New("store: sqlite: no database path (set store.dsn)")
	}
	if o.mustExist {
		if fi, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s does not exist", ErrNoDatabase, path)
		} else if err != nil {
			return nil, fmt.Errorf("store: sqlite: %w", err)
		} else if fi.Size() == 0 {
			return nil, fmt.Errorf("%w: %s is empty", ErrNoDatabase, path)
		}
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("store: sqlite: %w", err)
		}
	}
	lock, err := lockSQLite(path)
	if err != nil {
		return nil, err
	}
	// SQLite keeps the WAL beside the file the name resolves to.
	file, err := sqliteFile(path)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("store: sqlite: %w", err)
	}
	// The file may hold PIV certificates and, later, escrow material.
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("store: sqlite: %w", err)
	}
	f.Close()
	// A store copied or restored with cp keeps its mode, and SQLite gives
	// the -wal and -shm files the database's: none of them is for others.
	for _, p := range []string{file, file + "-wal", file + "-shm"} {
		if err := tightenMode(p); err != nil {
			lock.Close()
			return nil, fmt.Errorf("store: sqlite: %w", err)
		}
	}
	// No automatic checkpoints: SQLite would run them (and their fsync) on
	// the writer's commit, inside some request. A background checkpointer
	// does them instead (checkpointer).
	//
	// Every commit waits for the disk (synchronous=FULL) unless the
	// operator chose otherwise (SyncNormal): an intent recorded before
	// the CA key signs must survive the machine's crash too.
	sync := "synchronous(FULL)"
	if o.relaxed {
		sync = "synchronous(NORMAL)"
	}
	pragmas := []string{"wal_autocheckpoint(0)", fmt.Sprintf("journal_size_limit(%d)", trigger), sync}
	w, r, err := openPools(path, busyTimeout, pragmas, []string{"query_only(1)"})
	if err != nil {
		lock.Close()
		return nil, err
	}
	// The checkpointer never waits: a checkpoint that finds the database
	// busy is left to the next one (busy_timeout 0 on its connection).
	ck, err := sql.Open("sqlite", sqliteDSN(path, 0, pragmas...))
	if err != nil {
		w.Close()
		r.Close()
		lock.Close()
		return nil, fmt.Errorf("store: sqlite: %w", err)
	}
	ck.SetMaxOpenConns(1)
	s := &DB{w: newConn(w, true, "sqlite"), r: newConn(r, true, "sqlite"), dialect: "sqlite", ckpt: newCheckpointer(ck, w, file+"-wal", trigger), lock: lock, path: path}
	s.w.beforeWrite = s.ckpt.beforeWrite
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// OpenSQLiteReadOnly opens an existing SQLite database to read it beside
// the gateway that holds it (`credgw audit`, the bench's checks): it takes
// no lock, runs no checkpoints and no migrations, and refuses a schema
// older than this build's.
func OpenSQLiteReadOnly(ctx context.Context, path string) (*SQLite, error) {
	if path == "" {
		return nil, errors.New("store: sqlite: no database path (set store.dsn)")
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("store: sqlite: %w", err)
	}
	w, r, err := openPools(path, busyTimeout, []string{"query_only(1)"}, nil)
	if err != nil {
		return nil, err
	}
	s := &DB{w: newConn(w, true, "sqlite"), r: newConn(r, true, "sqlite"), dialect: "sqlite", path: path}
	// goose would create its table in a database never migrated.
	var migrated int
	err = s.r.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'goose_db_version'`).Scan(&migrated)
	var cur, want int64 = 0, 1
	if err == nil && migrated == 1 {
		cur, want, err = s.SchemaVersion(ctx)
	}
	if err == nil && cur < want {
		err = fmt.Errorf("store: the SQLite database %s is at schema version %d, this credgw expects %d: start credgw serve or run credgw migrate", path, cur, want)
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// sqliteDSN is the DSN of path with the pragmas every connection has, a
// busy timeout of busy, and more.
func sqliteDSN(path string, busy time.Duration, more ...string) string {
	q := url.Values{}
	for _, p := range append([]string{"journal_mode(WAL)", fmt.Sprintf("busy_timeout(%d)", busy.Milliseconds()), "foreign_keys(1)",
		// A page cache that holds the working set: with the default
		// 2 MiB, under load a page read (a pread system call) was a
		// tenth of the gateway's CPU.
		fmt.Sprintf("cache_size(-%d)", sqliteCacheKiB)}, more...) {
		q.Add("_pragma", p)
	}
	return sqliteURI(path) + "?" + q.Encode()
}

// sqliteURI is path as a file: URI, without a query.
func sqliteURI(path string) string {
	if strings.HasPrefix(path, "/") {
		// An empty authority: "//srv/db" is a path, not a host.
		return "file://" + uriPath.Replace(path)
	}
	return "file:" + uriPath.Replace(path)
}

// uriPath escapes what a file: URI would read otherwise in a path: a
// "gw#1.db" opened "gw", the rest a fragment (SQLite decodes the escapes).
var uriPath = strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23")

// openPools opens the one-connection writer pool and the reader pool, with
// pragmas on both and readers more on the readers.
func openPools(path string, busy time.Duration, pragmas, readers []string) (w, r *sql.DB, err error) {
	w, err = sql.Open("sqlite", sqliteDSN(path, busy, pragmas...)+"&_txlock=immediate")
	if err != nil {
		return nil, nil, fmt.Errorf("store: sqlite: %w", err)
	}
	w.SetMaxOpenConns(1)
	r, err = sql.Open("sqlite", sqliteDSN(path, busy, append(pragmas, readers...)...))
	if err != nil {
		w.Close()
		return nil, nil, fmt.Errorf("store: sqlite: %w", err)
	}
	r.SetMaxOpenConns(4)
	// Readers stay open: a new connection reads the schema and starts
	// with a cold page cache (database/sql keeps only 2 idle by default).
	r.SetMaxIdleConns(4)
	r.SetConnMaxIdleTime(0)
	return w, r, nil
}

// provider is goose over the dialect's embedded migrations.
func (s *DB) provider(opts ...goose.ProviderOption) (*goose.Provider, error) {
	sub, err := fs.Sub(migrations, "migrations/"+s.dialect)
	if err != nil {
		return nil, err
	}
	d := goose.DialectSQLite3
	if s.dialect == "postgres" {
		d = goose.DialectPostgres
	}
	p, err := goose.NewProvider(d, s.w.DB, sub, opts...)
	if err != nil {
		return nil, fmt.Errorf("store: migrations: %w", err)
	}
	return p, nil
}

func (s *DB) migrate(ctx context.Context, opts ...goose.ProviderOption) error {
	p, err := s.provider(opts...)
	if err != nil {
		return err
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("store: migrate: %w", wrapDB(err))
	}
	if s.dialect == "postgres" {
		return s.rebuildInvalidIndexes(ctx)
	}
	return nil
}

// rebuildInvalidIndexes rebuilds the indexes credgw's migrations build
// CONCURRENTLY (rebuildable) that such a build left INVALID when it was
// interrupted (a migrate killed, a statement_timeout, a cancel): the
// migration's re-run skips them (IF NOT EXISTS) and is recorded as
// applied, and PostgreSQL never uses them. It holds the migrations' lock
// (or leaves the work to the replica that holds it), so no other replica's
// migrate builds one meanwhile; indexes of anyone else are left alone.
// rebuildable are the indexes of the schema that migrations build
// CONCURRENTLY (00011, 00024; 00019's Up drops the two it builds on the way
// down).
var rebuildable = []string{"certificates_set", "credential_sets_state", "certificates_revoked_expiry"}

func (s *DB) rebuildInvalidIndexes(ctx context.Context) error {
	conn, err := s.w.Conn(ctx)
	if err != nil {
		return fmt.Errorf("store: migrate: %w", wrapDB(err))
	}
	defer conn.Close()
	// Tried, not waited for: a wait would hold a snapshot that another
	// replica's concurrent build waits on (a deadlock). Whoever holds the
	// lock is migrating, and rebuilds after its own migrations.
	var locked bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, lock.DefaultLockID).Scan(&locked); err != nil {
		return fmt.Errorf("store: migrate: taking the migrations' lock: %w", wrapDB(err))
	}
	if !locked {
		return nil
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, lock.DefaultLockID)
	rows, err := conn.QueryContext(ctx, `SELECT quote_ident(c.relname), pg_get_indexdef(i.indexrelid) FROM pg_index i
		JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE NOT i.indisvalid AND n.nspname = current_schema() AND c.relname = ANY($1)
			AND NOT EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.index_relid = i.indexrelid)`, rebuildable)
	if err != nil {
		return fmt.Errorf("store: migrate: looking for invalid indexes: %w", wrapDB(err))
	}
	type index struct{ name, def string }
	var invalid []index
	for rows.Next() {
		var ix index
		if err := rows.Scan(&ix.name, &ix.def); err != nil {
			rows.Close()
			return wrapDB(err)
		}
		invalid = append(invalid, ix)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return wrapDB(err)
	}
	for _, ix := range invalid {
		def, ok := strings.CutPrefix(ix.def, "CREATE INDEX ")
		create := "CREATE INDEX CONCURRENTLY IF NOT EXISTS "
		if !ok {
			if def, ok = strings.CutPrefix(ix.def, "CREATE UNIQUE INDEX "); !ok {
				return fmt.Errorf("store: migrate: invalid index %s: cannot rebuild %q", ix.name, ix.def)
			}
			create = "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "
		}
		if _, err := conn.ExecContext(ctx, `DROP INDEX CONCURRENTLY IF EXISTS `+ix.name); err != nil {
			return fmt.Errorf("store: migrate: dropping invalid index %s: %w", ix.name, wrapDB(err))
		}
		if _, err := conn.ExecContext(ctx, create+def); err != nil {
			return fmt.Errorf("store: migrate: rebuilding invalid index %s: %w", ix.name, wrapDB(err))
		}
	}
	return nil
}

// SchemaVersion reports the database's schema version and the version this
// build expects.
func (s *DB) SchemaVersion(ctx context.Context) (current, expected int64, err error) {
	p, err := s.provider()
	if err != nil {
		return 0, 0, err
	}
	current, expected, err = p.GetVersions(ctx)
	return current, expected, wrapDB(err)
}

// Close closes the database.
func (s *DB) Close() error {
	s.groupOnce.Do(func() { s.closed = true })
	if s.group != nil {
		s.group.close() // its last group commits on the writer
	}
	if s.ckpt != nil {
		s.ckpt.halt() // its forced checkpoints use the writer connection
	}
	err := errors.Join(s.r.Close(), s.w.Close())
	if s.ckpt != nil {
		err = errors.Join(err, s.ckpt.Close())
	}
	if s.lock != nil {
		s.lock.Close() // after the last checkpoint; releases the flock
	}
	return err
}

// tx runs fn in a write transaction.
func (s *DB) tx(ctx context.Context, fn func(*stx) error) error {
	return inTx(ctx, s.w, fn)
}

// inTx runs fn in a transaction on db, committing if fn succeeds.
func inTx(ctx context.Context, c *conn, fn func(*stx) error) (err error) {
	ctx, span := c.startSpan(ctx, "tx")
	defer func() { endSpan(span, err) }()
	c.writing()
	tx, err := c.BeginTx(ctx, nil)
	if err != nil {
		return wrapDB(err)
	}
	// Statements first seen in a transaction are prepared after it, when
	// the (SQLite: only) connection is free again.
	defer c.preparePending(context.WithoutCancel(ctx))
	// A panic in fn rolls back before it goes on up: an open transaction
	// would hold SQLite's one writer connection for good.
	defer func() {
		if r := recover(); r != nil {
			_ = tx.Rollback()
			panic(r)
		}
	}()
	if err := fn(&stx{Tx: tx, c: c}); err != nil {
		_ = tx.Rollback()
		return err
	}
	return wrapDB(tx.Commit())
}

// fold is the SQL of expr (a column or a placeholder) with ASCII letters
// in lower case, as piv.FoldPersonID folds person ids: SQLite's lower()
// folds ASCII only, PostgreSQL's under the "C" collation. Person ids are
// compared folded on both sides (the expression the person indexes are
// on, migration 00021), so rows in another spelling (written by an older
// release) are found too.
func (s *DB) fold(expr string) string {
	if s.dialect == "postgres" {
		return "lower(" + expr + ` COLLATE "C")`
	}
	return "lower(" + expr + ")"
}

// wrapDB maps driver errors onto the store's.
func wrapDB(err error) error {
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, sql.ErrNoRows):
		return ErrNotFound
	case errors.As(err, &pgErr):
		switch {
		case pgErr.Code == "23505": // unique_violation
			return fmt.Errorf("%w: %s", ErrConflict, pgErr.ConstraintName)
		case pgErr.Code == "23503": // foreign_key_violation
			return fmt.Errorf("%w: %s", ErrConflict, pgErr.ConstraintName)
		case strings.HasPrefix(pgErr.Code, "08"), strings.HasPrefix(pgErr.Code, "57P"), pgErr.Code == "25006": // connection, shutdown, read-only
			return fmt.Errorf("%w: %s", ErrUnavailable, pgErr.Message)
		case pgErr.Code == "22021", pgErr.Code == "22P05": // character_not_in_repertoire (NUL, invalid UTF-8), untranslatable_character
			return ErrInvalidText
		}
		return fmt.Errorf("store: %w", err)
	case strings.Contains(err.Error(), "UNIQUE constraint failed"), strings.Contains(err.Error(), "PRIMARY KEY"),
		strings.Contains(err.Error(), "FOREIGN KEY constraint failed"):
		return fmt.Errorf("%w: %v", ErrConflict, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, driver.ErrBadConn), isNetErr(err):
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return fmt.Errorf("store: %w", err)
}

func isNetErr(err error) bool {
	var ne net.Error
	var ce *pgconn.ConnectError
	return errors.As(err, &ne) || errors.As(err, &ce) || strings.Contains(err.Error(), "conn closed") ||
		strings.Contains(err.Error(), "connection refused")
}

// Times are stored as Unix microseconds (BIGINT): portable and ordered.
func ts(t time.Time) int64 { return t.UnixMicro() }

func fromTS(v int64) time.Time { return time.UnixMicro(v).UTC() }

func (s *DB) CreateChallenge(ctx context.Context, c Challenge) error {
	_, err := s.w.ExecContext(ctx,
		`INSERT INTO piv_challenges (session_id, challenge, gateway_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)`,
		c.SessionID, c.Challenge, c.GatewayID, ts(c.CreatedAt), ts(c.ExpiresAt))
	return wrapDB(err)
}

func (s *DB) ConsumeChallenge(ctx context.Context, sessionID string, now time.Time) (Challenge, error) {
	c := Challenge{SessionID: sessionID}
	var created, expires int64
	// One conditional UPDATE: exactly one caller wins, on any replica.
	err := s.w.QueryRowContext(ctx,
		`UPDATE piv_challenges SET used_at = $1 WHERE session_id = $2 AND used_at IS NULL
		 RETURNING challenge, gateway_id, created_at, expires_at`,
		ts(now), sessionID).Scan(&c.Challenge, &c.GatewayID, &created, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		var one int
		if err := s.w.QueryRowContext(ctx, `SELECT 1 FROM piv_challenges WHERE session_id = $1`, sessionID).Scan(&one); err != nil {
			return Challenge{}, wrapDB(err)
		}
		return Challenge{}, ErrAlreadyUsed
	}
	if err != nil {
		return Challenge{}, wrapDB(err)
	}
	c.CreatedAt, c.ExpiresAt = fromTS(created), fromTS(expires)
	return c, nil
}

func (s *DB) CreatePIVSession(ctx context.Context, ps PIVSession, cert PIVCertificate) error {
	return s.tx(ctx, func(tx *stx) error {
		now := ts(ps.CreatedAt)
		_, err := tx.ExecContext(ctx,
			`INSERT INTO piv_certificates (sha256, der, serial, issuer, subject, fascn, card_uuid, not_after, first_seen, last_verified, digital_signature)
			 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
			 ON CONFLICT (sha256) DO UPDATE SET last_verified = excluded.last_verified,
			   digital_signature = COALESCE(excluded.digital_signature, piv_certificates.digital_signature)`,
			cert.SHA256, cert.DER, cert.Serial, cert.Issuer, cert.Subject, cert.FASCN, cert.CardUUID, ts(cert.NotAfter), now, now,
			nilIfEmpty(cert.DigitalSignature))
		if err != nil {
			return wrapDB(err)
		}
		_, err = tx.ExecContext(ctx,
			`INSERT INTO piv_sessions (token_hash, session_id, cert_sha256, person_id, fascn, card_uuid, upn, email, email_source, subject, source_addr, created_at, expires_at)
			 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
			ps.TokenHash, ps.SessionID, ps.CertSHA256, ps.PersonID, ps.FASCN, ps.CardUUID, ps.UPN, ps.Email, ps.EmailSource,
			ps.Subject, ps.SourceAddr, now, ts(ps.ExpiresAt))
		return wrapDB(err)
	})
}

// nilIfEmpty makes an absent byte string NULL on both engines (COALESCE
// keeps the value kept before).
func nilIfEmpty(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

func (s *DB) PIVSession(ctx context.Context, tokenHash string) (PIVSession, error) {
	ps := PIVSession{TokenHash: tokenHash}
	var created, expires int64
	err := s.r.QueryRowContext(ctx,
		`SELECT session_id, cert_sha256, person_id, fascn, card_uuid, upn, email, email_source, subject, source_addr, created_at, expires_at
		 FROM piv_sessions WHERE token_hash = $1`, tokenHash).Scan(
		&ps.SessionID, &ps.CertSHA256, &ps.PersonID, &ps.FASCN, &ps.CardUUID, &ps.UPN, &ps.Email, &ps.EmailSource,
		&ps.Subject, &ps.SourceAddr, &created, &expires)
	if err != nil {
		return PIVSession{}, wrapDB(err)
	}
	ps.CreatedAt, ps.ExpiresAt = fromTS(created), fromTS(expires)
	return ps, nil
}

func (s *DB) EndPIVSession(ctx context.Context, tokenHash string, now time.Time) error {
	_, err := s.w.ExecContext(ctx, `UPDATE piv_sessions SET expires_at = $1 WHERE token_hash = $2 AND expires_at > $1`, ts(now), tokenHash)
	return wrapDB(err)
}

func (s *DB) PIVCertificate(ctx context.Context, sha256 string) (PIVCertificate, error) {
	c := PIVCertificate{SHA256: sha256}
	var notAfter, first, last int64
	err := s.r.QueryRowContext(ctx,
		`SELECT der, serial, issuer, subject, fascn, card_uuid, not_after, first_seen, last_verified, digital_signature
		 FROM piv_certificates WHERE sha256 = $1`,
		sha256).Scan(&c.DER, &c.Serial, &c.Issuer, &c.Subject, &c.FASCN, &c.CardUUID, &notAfter, &first, &last, &c.DigitalSignature)
	if err != nil {
		return PIVCertificate{}, wrapDB(err)
	}
	c.NotAfter, c.FirstSeen, c.LastVerified = fromTS(notAfter), fromTS(first), fromTS(last)
	return c, nil
}

func (s *DB) DeleteExpired(ctx context.Context, now time.Time) (int64, error) {
	var n int64
	err := s.tx(ctx, func(tx *stx) error {
		for _, q := range []string{
			`DELETE FROM piv_sessions WHERE expires_at < $1`,
			`DELETE FROM piv_challenges WHERE expires_at < $1 AND session_id NOT IN (SELECT session_id FROM piv_sessions)`,
			`DELETE FROM webhook_deliveries WHERE expires_at < $1`,
			`DELETE FROM portal_card_sign_outs WHERE signed_out_at < $2`,
			`DELETE FROM portal_forms WHERE taken_at < $2`,
		} {
			var res sql.Result
			var err error
			if strings.Contains(q, "$2") {
				res, err = tx.ExecContext(ctx, strings.Replace(q, "$2", "$1", 1), ts(now.Add(-portalRetention)))
			} else {
				res, err = tx.ExecContext(ctx, q, ts(now))
			}
			if err != nil {
				return wrapDB(err)
			}
			k, _ := res.RowsAffected()
			n += k
		}
		return nil
	})
	return n, err
}

// Ping checks that the database answers a query (readiness probes).
func (d *DB) Ping(ctx context.Context) error {
	var one int
	if err := d.r.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("store: database does not answer: %w", err)
	}
	return nil
}

// tightenMode takes group and other access away from file p, if it exists.
func tightenMode(p string) error {
	fi, err := os.Stat(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		// Best effort: a file the gateway may write but not chmod (another
		// owner's, group-writable) is the operator's to set.
		_ = os.Chmod(p, perm&^0o077)
	}
	return nil
}
