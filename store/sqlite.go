package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver, pure Go
)

//go:embed migrations/sqlite/*.sql
var sqliteMigrations embed.FS

// SQLite is the embedded store: one file, WAL, a busy timeout, one writer
// connection (SQLite allows one writer at a time) and a pool of readers.
type SQLite struct {
	w *sql.DB // writes and transactions: one connection
	r *sql.DB // reads
}

var _ Store = (*SQLite)(nil)

// OpenSQLite opens (creating if needed) the database file at path and brings
// its schema up to date.
func OpenSQLite(ctx context.Context, path string) (*SQLite, error) {
	if path == "" {
		return nil, errors.New("store: sqlite: no database path (set store.dsn)")
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("store: sqlite: %w", err)
		}
	}
	// The file may hold PIV certificates and, later, escrow material.
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: sqlite: %w", err)
	}
	f.Close()
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "busy_timeout(5000)", "foreign_keys(1)", "synchronous(NORMAL)"} {
		q.Add("_pragma", p)
	}
	dsn := "file:" + path + "?" + q.Encode()
	w, err := sql.Open("sqlite", dsn+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("store: sqlite: %w", err)
	}
	w.SetMaxOpenConns(1)
	r, err := sql.Open("sqlite", dsn+"&"+url.Values{"_pragma": {"query_only(1)"}}.Encode())
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("store: sqlite: %w", err)
	}
	r.SetMaxOpenConns(4)
	s := &SQLite{w: w, r: r}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *SQLite) migrate(ctx context.Context) error {
	sub, err := fs.Sub(sqliteMigrations, "migrations/sqlite")
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, s.w, sub)
	if err != nil {
		return fmt.Errorf("store: migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	return nil
}

// Close closes the database.
func (s *SQLite) Close() error {
	return errors.Join(s.r.Close(), s.w.Close())
}

// tx runs fn in a write transaction.
func (s *SQLite) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	return inTx(ctx, s.w, fn)
}

// inTx runs fn in a transaction on db, committing if fn succeeds.
func inTx(ctx context.Context, db *sql.DB, fn func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return wrapDB(err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return wrapDB(tx.Commit())
}

// wrapDB maps driver errors onto the store's.
func wrapDB(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, sql.ErrNoRows):
		return ErrNotFound
	case strings.Contains(err.Error(), "UNIQUE constraint failed"), strings.Contains(err.Error(), "PRIMARY KEY"):
		return fmt.Errorf("%w: %v", ErrConflict, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	}
	return fmt.Errorf("store: %w", err)
}

// Times are stored as Unix microseconds (BIGINT): portable and ordered.
func ts(t time.Time) int64 { return t.UnixMicro() }

func fromTS(v int64) time.Time { return time.UnixMicro(v).UTC() }

func (s *SQLite) CreateChallenge(ctx context.Context, c Challenge) error {
	_, err := s.w.ExecContext(ctx,
		`INSERT INTO piv_challenges (session_id, challenge, gateway_id, created_at, expires_at) VALUES (?, ?, ?, ?, ?)`,
		c.SessionID, c.Challenge, c.GatewayID, ts(c.CreatedAt), ts(c.ExpiresAt))
	return wrapDB(err)
}

func (s *SQLite) ConsumeChallenge(ctx context.Context, sessionID string, now time.Time) (Challenge, error) {
	c := Challenge{SessionID: sessionID}
	var created, expires int64
	// One conditional UPDATE: exactly one caller wins, on any replica.
	err := s.w.QueryRowContext(ctx,
		`UPDATE piv_challenges SET used_at = ? WHERE session_id = ? AND used_at IS NULL
		 RETURNING challenge, gateway_id, created_at, expires_at`,
		ts(now), sessionID).Scan(&c.Challenge, &c.GatewayID, &created, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		var one int
		if err := s.w.QueryRowContext(ctx, `SELECT 1 FROM piv_challenges WHERE session_id = ?`, sessionID).Scan(&one); err != nil {
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

func (s *SQLite) CreatePIVSession(ctx context.Context, ps PIVSession, cert PIVCertificate) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		now := ts(ps.CreatedAt)
		_, err := tx.ExecContext(ctx,
			`INSERT INTO piv_certificates (sha256, der, serial, issuer, subject, fascn, card_uuid, not_after, first_seen, last_verified)
			 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			 ON CONFLICT (sha256) DO UPDATE SET last_verified = excluded.last_verified`,
			cert.SHA256, cert.DER, cert.Serial, cert.Issuer, cert.Subject, cert.FASCN, cert.CardUUID, ts(cert.NotAfter), now, now)
		if err != nil {
			return wrapDB(err)
		}
		_, err = tx.ExecContext(ctx,
			`INSERT INTO piv_sessions (token_hash, session_id, cert_sha256, person_id, fascn, card_uuid, upn, email, email_source, subject, source_addr, created_at, expires_at)
			 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			ps.TokenHash, ps.SessionID, ps.CertSHA256, ps.PersonID, ps.FASCN, ps.CardUUID, ps.UPN, ps.Email, ps.EmailSource,
			ps.Subject, ps.SourceAddr, now, ts(ps.ExpiresAt))
		return wrapDB(err)
	})
}

func (s *SQLite) PIVSession(ctx context.Context, tokenHash string) (PIVSession, error) {
	ps := PIVSession{TokenHash: tokenHash}
	var created, expires int64
	err := s.r.QueryRowContext(ctx,
		`SELECT session_id, cert_sha256, person_id, fascn, card_uuid, upn, email, email_source, subject, source_addr, created_at, expires_at
		 FROM piv_sessions WHERE token_hash = ?`, tokenHash).Scan(
		&ps.SessionID, &ps.CertSHA256, &ps.PersonID, &ps.FASCN, &ps.CardUUID, &ps.UPN, &ps.Email, &ps.EmailSource,
		&ps.Subject, &ps.SourceAddr, &created, &expires)
	if err != nil {
		return PIVSession{}, wrapDB(err)
	}
	ps.CreatedAt, ps.ExpiresAt = fromTS(created), fromTS(expires)
	return ps, nil
}

func (s *SQLite) PIVCertificate(ctx context.Context, sha256 string) (PIVCertificate, error) {
	c := PIVCertificate{SHA256: sha256}
	var notAfter, first, last int64
	err := s.r.QueryRowContext(ctx,
		`SELECT der, serial, issuer, subject, fascn, card_uuid, not_after, first_seen, last_verified FROM piv_certificates WHERE sha256 = ?`,
		sha256).Scan(&c.DER, &c.Serial, &c.Issuer, &c.Subject, &c.FASCN, &c.CardUUID, &notAfter, &first, &last)
	if err != nil {
		return PIVCertificate{}, wrapDB(err)
	}
	c.NotAfter, c.FirstSeen, c.LastVerified = fromTS(notAfter), fromTS(first), fromTS(last)
	return c, nil
}

func (s *SQLite) DeleteExpired(ctx context.Context, now time.Time) (int64, error) {
	var n int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		for _, q := range []string{
			`DELETE FROM piv_sessions WHERE expires_at < ?`,
			`DELETE FROM piv_challenges WHERE expires_at < ? AND session_id NOT IN (SELECT session_id FROM piv_sessions)`,
		} {
			res, err := tx.ExecContext(ctx, q, ts(now))
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
