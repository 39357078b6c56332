package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Backup writes a consistent copy of an SQLite store to path (a new file,
// 0600), online: the gateway may go on serving, and the copy is one
// snapshot (VACUUM INTO, in one read transaction). The copy is then opened
// and checked (integrity and schema version). PostgreSQL is backed up with
// its own tools (pg_dump, or base backups with WAL archiving for
// point-in-time recovery): see docs/key-ceremony.md.
func (s *DB) Backup(ctx context.Context, path string) error {
	if s.dialect != "sqlite" {
		return errors.New("store: backup: a PostgreSQL store is backed up with PostgreSQL's tools (pg_dump, or base backups and WAL archiving): see docs/key-ceremony.md")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("store: backup: %w", err)
	}
	// The file is made here, 0600 (it holds escrowed keys, sealed, and
	// PIV certificates): VACUUM INTO writes into an empty file.
	f, err := os.OpenFile(abs, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	switch {
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("store: backup: %w (the backup file must not exist yet: name a new one)", err)
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("store: backup: the folder %s does not exist: make the folder first (install -d -m 0700 %s)", filepath.Dir(abs), filepath.Dir(abs))
	case err != nil:
		return fmt.Errorf("store: backup: %w", err)
	}
	f.Close()
	// A connection of its own: the store's readers are query-only, which
	// VACUUM INTO counts as writing; it writes only the new file.
	c, err := sql.Open("sqlite", sqliteDSN(s.path, busyTimeout))
	if err != nil {
		os.Remove(abs)
		return fmt.Errorf("store: backup: %w", err)
	}
	_, err = c.ExecContext(ctx, `VACUUM INTO $1`, abs)
	c.Close()
	if err != nil {
		os.Remove(abs)
		return fmt.Errorf("store: backup: %w", wrapDB(err))
	}
	if err := os.Chmod(abs, 0o600); err != nil {
		return fmt.Errorf("store: backup: %w", err)
	}
	copyDB, err := OpenSQLiteReadOnly(ctx, abs)
	if err != nil {
		return fmt.Errorf("store: backup: the copy does not open: %w", err)
	}
	defer copyDB.Close()
	var ok string
	if err := copyDB.r.QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&ok); err != nil || ok != "ok" {
		return fmt.Errorf("store: backup: the copy fails its integrity check: %q %v", ok, err)
	}
	return nil
}
