package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
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
	_, err := BackupSQLite(ctx, s.path, path)
	return err
}

// backupCopied, if set, is called with the copy's own name once it is
// written, before it is checked (tests).
var backupCopied func(tmp string)

// BackupSQLite writes a consistent copy of the SQLite database at db to
// path, as Backup does, whatever its schema version (the backup an upgrade
// takes before it migrates is of the older schema), and returns the copy's
// schema version. The copy is written and checked under a name of its own
// beside path (0600), and given path (which must not exist) only once it
// is whole: a backup that fails, or is killed, leaves no file that looks
// like a backup under that name.
func BackupSQLite(ctx context.Context, db, path string) (version int64, err error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return 0, fmt.Errorf("store: backup: %w", err)
	}
	dir := filepath.Dir(abs)
	switch _, err := os.Lstat(abs); {
	case err == nil:
		return 0, fmt.Errorf("store: backup: %s exists (the backup file must not exist yet: name a new one)", abs)
	case !errors.Is(err, fs.ErrNotExist):
		return 0, fmt.Errorf("store: backup: %w", err)
	}
	if _, err := os.Stat(db); err != nil {
		return 0, fmt.Errorf("store: backup: the database: %w", err)
	}
	// The copy's own name, made here, 0600 (it holds escrowed keys,
	// sealed, and PIV certificates): VACUUM INTO writes into an empty file.
	f, err := os.CreateTemp(dir, "."+filepath.Base(abs)+".partial-*")
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return 0, fmt.Errorf("store: backup: the folder %s does not exist: make the folder first (install -d -m 0700 %s)", dir, dir)
	case err != nil:
		return 0, fmt.Errorf("store: backup: %w", err)
	}
	tmp := f.Name()
	f.Close()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o600); err != nil {
		return 0, fmt.Errorf("store: backup: %w", err)
	}
	// A connection of its own: the store's readers are query-only, which
	// VACUUM INTO counts as writing; it writes only the new file.
	c, err := sql.Open("sqlite", sqliteDSN(db, busyTimeout))
	if err != nil {
		return 0, fmt.Errorf("store: backup: %w", err)
	}
	_, err = c.ExecContext(ctx, `VACUUM INTO $1`, tmp)
	c.Close()
	if err != nil {
		return 0, fmt.Errorf("store: backup: %w", wrapDB(err))
	}
	if backupCopied != nil {
		backupCopied(tmp)
	}
	if version, err = checkCopy(ctx, tmp); err != nil {
		return 0, err
	}
	if err := syncFile(tmp); err != nil {
		return 0, fmt.Errorf("store: backup: %w", err)
	}
	// A link, not a rename: a file made at path meanwhile is not replaced.
	if err := os.Link(tmp, abs); err != nil {
		return 0, fmt.Errorf("store: backup: %w (the backup file must not exist yet: name a new one)", err)
	}
	os.Remove(tmp)
	if err := syncFile(dir); err != nil {
		return 0, fmt.Errorf("store: backup: %w", err)
	}
	return version, nil
}

// checkCopy opens a backup copy read-only and checks its integrity; it
// returns its schema version.
func checkCopy(ctx context.Context, path string) (int64, error) {
	// Read-only, and without the WAL journal mode every other connection
	// sets: checking a backup (before a restore) leaves it as it was.
	c, err := sql.Open("sqlite", sqliteURI(path)+"?mode=ro&_pragma=query_only(1)")
	if err != nil {
		return 0, fmt.Errorf("store: backup: the copy does not open: %w", err)
	}
	defer c.Close()
	var ok string
	if err := c.QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&ok); err != nil || ok != "ok" {
		return 0, fmt.Errorf("store: backup: the copy fails its integrity check: %q %v", ok, err)
	}
	var version int64
	if err := c.QueryRowContext(ctx, `SELECT COALESCE(MAX(version_id), 0) FROM goose_db_version WHERE is_applied`).Scan(&version); err != nil {
		return 0, fmt.Errorf("store: backup: the copy has no schema version (is the database credgw's?): %w", wrapDB(err))
	}
	return version, nil
}

// syncFile writes a file's (or folder's) data to the disk.
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// RestoreSQLite puts the backup at db, the database of a gateway that is
// stopped: it refuses while a gateway holds db (InUseError), and a backup
// that is not a whole database, before it changes anything. The database
// it replaces is kept beside it, with its -wal (its last writes), under
// the name it returns (empty if there was none); a -wal left by a database
// that is gone is kept aside too (SQLite would replay it onto the backup),
// and the -shm goes. Run as root, the restored file is given to the owner
// of the database it replaces (else of its folder), as the gateway's user
// must open it. The restored copy's stored CRLs are marked stale before it
// is put in place; a backup with a -wal of its own is refused. The caller
// then migrates and verifies the audit log, as after any restore.
func RestoreSQLite(ctx context.Context, backup, db string) (aside string, err error) {
	// The backup as SQLite reads it (a symlink resolved): its -wal is
	// beside the file it names.
	if backup, err = filepath.EvalSymlinks(backup); err != nil {
		return "", fmt.Errorf("store: restore: %w", err)
	}
	file, err := sqliteFile(db)
	if err != nil {
		return "", fmt.Errorf("store: restore: %w", err)
	}
	// Before the lock, which as root makes an empty database file.
	had := false
	if fi, err := os.Lstat(file); err == nil && fi.Size() > 0 {
		had = true
	}
	lock, err := lockSQLite(db)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	// A backup with a -wal of its own (a copy of a live database, a
	// snapshot) has writes the file alone lacks: the check would read
	// them, the copy would not carry them.
	if fi, err := os.Stat(backup + "-wal"); err == nil && fi.Size() > 0 {
		return "", fmt.Errorf("store: restore: %s has a -wal beside it, with writes the file itself lacks: restore a copy made by credgw backup, "+
			"or open this one once with sqlite3 (it folds the -wal in) and restore it then", backup)
	}
	if _, err := checkCopy(ctx, backup); err != nil {
		return "", fmt.Errorf("store: restore: %s: %w", backup, err)
	}
	dir := filepath.Dir(file)
	tmp, err := copyInto(backup, dir, "."+filepath.Base(file)+".restoring-*")
	if err != nil {
		return "", fmt.Errorf("store: restore: %w", err)
	}
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	giveOwner(tmp, file)
	// Its stored CRLs are stale before anyone can open it (a gateway
	// started before the caller's migrate would serve a CRL numbered below
	// those published since the backup): marked on the copy, before
	// anything in place changes.
	if err := markCRLsStale(ctx, tmp); err != nil {
		return "", fmt.Errorf("store: restore: marking the restored CRLs stale: %w", err)
	}
	// A name no earlier restore took.
	base := fmt.Sprintf("%s.replaced-%s", file, time.Now().UTC().Format("20060102T150405Z"))
	kept := base
	for i := 2; ; i++ {
		_, err1 := os.Lstat(kept)
		_, err2 := os.Lstat(kept + "-wal")
		if errors.Is(err1, fs.ErrNotExist) && errors.Is(err2, fs.ErrNotExist) {
			break
		}
		kept = fmt.Sprintf("%s-%d", base, i)
	}
	if had {
		if err := os.Rename(file, kept); err != nil {
			return "", fmt.Errorf("store: restore: keeping the database replaced: %w", err)
		}
		aside = kept
	}
	if err := os.Rename(file+"-wal", kept+"-wal"); err == nil && !had {
		aside = kept + "-wal" // a gone database's last writes
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		// The database goes back with its -wal: nothing changed.
		if had {
			if berr := os.Rename(kept, file); berr != nil {
				return aside, fmt.Errorf("store: restore: keeping the replaced database's -wal: %w (the database is kept as %s, its -wal is still %s-wal: put them together before anything opens them)", err, kept, file)
			}
		}
		return "", fmt.Errorf("store: restore: keeping the replaced database's -wal: %w (nothing was changed)", err)
	}
	moved := ""
	if aside != "" {
		moved = " (what it replaced is kept as " + aside + ")"
	}
	if err := os.Remove(file + "-shm"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return aside, fmt.Errorf("store: restore: %w%s", err, moved)
	}
	if err := os.Rename(tmp, file); err != nil {
		return aside, fmt.Errorf("store: restore: %w%s", err, moved)
	}
	if err := syncFile(dir); err != nil {
		return aside, fmt.Errorf("store: restore: %w%s", err, moved)
	}
	return aside, nil
}

// markCRLsStale makes every stored CRL of the database at path stale (a
// database from before the CRLs were stored has none).
func markCRLsStale(ctx context.Context, path string) error {
	c, err := sql.Open("sqlite", sqliteDSN(path, busyTimeout))
	if err != nil {
		return err
	}
	defer c.Close()
	var n int
	if err := c.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'crls'`).Scan(&n); err != nil || n == 0 {
		return wrapDB(err)
	}
	_, err = c.ExecContext(ctx, `UPDATE crls SET generation = generation + 1`)
	return wrapDB(err)
}

// giveOwner, run as root, gives path to the owner of like (else of its
// folder) when that is not root.
func giveOwner(path, like string) {
	if os.Geteuid() != 0 {
		return
	}
	fi, err := os.Stat(like)
	if err != nil || fi.Size() == 0 {
		fi, err = os.Stat(filepath.Dir(like))
	}
	if err != nil {
		return
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 {
		os.Chown(path, int(st.Uid), int(st.Gid))
	}
}

// copyInto copies src to a new file in dir (0600, name from pattern) and
// syncs it; it returns the new file's name.
func copyInto(src, dir, pattern string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return "", err
	}
	name := out.Name()
	err = out.Chmod(0o600)
	if err == nil {
		if _, err = io.Copy(out, in); err == nil {
			err = out.Sync()
		}
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return "", err
	}
	return name, nil
}
