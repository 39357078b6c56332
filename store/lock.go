package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// InUseError: the SQLite database is held by another store, most likely
// another `credgw serve`. SQLite itself would let both run; but each
// gateway's checkpointer and single-writer design assume it is alone, and
// two gateways on one file are not replicas.
type InUseError struct {
	Path string // the database
	PID  string // the holder's process id, as it wrote it; may be stale
}

func (e *InUseError) Error() string {
	pid := e.PID
	if pid == "" {
		pid = "unknown"
	}
	return fmt.Sprintf("store: the SQLite database %s is in use by another credgw (pid %s?); one SQLite database serves one gateway: "+
		"for replicas use PostgreSQL (store.driver: postgres)", e.Path, pid)
}

// lockSQLite takes an exclusive, non-blocking flock on the database's
// lock file (0600), beside the file the path resolves to (sqliteFile), and
// writes this process's id into it. The lock lives as long as the
// returned file is open: closing it, or the process ending, releases it.
// flock locks belong to the open file description, so two opens conflict
// even within one process. The file itself stays: removing it could let
// two processes lock two different files of the same name.
func lockSQLite(path string) (*os.File, error) {
	file, err := sqliteFile(path)
	if err != nil {
		return nil, fmt.Errorf("store: sqlite: lock: %w", err)
	}
	name := file + ".lock"
	f, created, err := openLockFile(name)
	if errors.Is(err, fs.ErrPermission) {
		return nil, fmt.Errorf("store: sqlite: lock: %w: run credgw as the database's owner (the gateway's user: runuser -u credgw -- credgw ...)", err)
	}
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("store: sqlite: lock: %s is a symbolic link: remove it (credgw makes the lock file itself)", name)
	}
	if err != nil {
		return nil, fmt.Errorf("store: sqlite: lock: %w", err)
	}
	if err := checkLockFile(f, name, file, created); err != nil {
		f.Close()
		return nil, err
	}
	if created {
		takeOwner(f, file)
	}
	makeOwned(file)
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := io.ReadAll(io.LimitReader(f, 32))
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &InUseError{Path: path, PID: strings.TrimSpace(string(b))}
		}
		return nil, fmt.Errorf("store: sqlite: lock %s: %w", name, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// openLockFile opens the lock file without following a symlink (one
// planted by whoever can write the directory would have root chown and
// overwrite its target); created says this open made it.
func openLockFile(name string) (*os.File, bool, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err == nil {
		return f, true, nil
	}
	if !errors.Is(err, fs.ErrExist) {
		return nil, false, err
	}
	f, err = os.OpenFile(name, os.O_RDWR|syscall.O_NOFOLLOW, 0)
	return f, false, err
}

// checkLockFile refuses a lock file that is not a plain file, and, as
// root, one this open did not make whose owner is not the owner of the
// database's directory: a hard link to another file (someone else's)
// that root would truncate and write. The opened file's own owner is
// checked, so a name swapped after the open changes nothing.
func checkLockFile(f *os.File, name, db string, created bool) error {
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("store: sqlite: lock: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("store: sqlite: lock: %s is not a plain file: remove it (credgw makes the lock file itself)", name)
	}
	if created || os.Geteuid() != 0 {
		return nil
	}
	dir, err := os.Stat(filepath.Dir(db))
	if err != nil {
		return fmt.Errorf("store: sqlite: lock: %w", err)
	}
	if owner, want := fi.Sys().(*syscall.Stat_t).Uid, dir.Sys().(*syscall.Stat_t).Uid; owner != want {
		return fmt.Errorf("store: sqlite: lock: %s belongs to uid %d, not to the database directory's owner (uid %d): "+
			"if no credgw runs on this database, remove it (credgw makes the lock file itself)", name, owner, want)
	}
	return nil
}

// takeOwner gives a lock file made by root (credgw migrate, a restore run
// as root) to the owner of the database file, or of its directory before
// the file exists, so that the gateway, which runs as its own user, can
// open it. SQLite does the same for its -wal and -shm files.
func takeOwner(f *os.File, db string) {
	if os.Geteuid() != 0 {
		return
	}
	fi, err := os.Stat(db)
	if err != nil {
		fi, err = os.Stat(filepath.Dir(db))
	}
	if err != nil {
		return
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 {
		f.Chown(int(st.Uid), int(st.Gid))
	}
}

// makeOwned creates, as root, a database file that does not exist yet,
// empty and owned by its directory's owner: SQLite would make it root's,
// and the gateway could not open it (credgw migrate run as root before
// the first serve).
func makeOwned(db string) {
	if os.Geteuid() != 0 {
		return
	}
	if _, err := os.Stat(db); !errors.Is(err, fs.ErrNotExist) {
		return
	}
	dir, err := os.Stat(filepath.Dir(db))
	if err != nil {
		return
	}
	st, ok := dir.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 {
		return
	}
	f, err := os.OpenFile(db, os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return
	}
	f.Chown(int(st.Uid), int(st.Gid))
	f.Close()
}

// maxSymlinks bounds sqliteFile's walk, as the kernel bounds its own
// (ELOOP after 40 on Linux).
const maxSymlinks = 40

// sqliteFile is the name the database file at path has once every symlink
// is resolved, the file's own included: two configurations that reach one
// file through different names lock one lock file. The file need not exist
// yet (OpenSQLite locks before it creates it): a symlink to a missing file
// resolves to the file it will create. Hard links cannot be resolved from a
// name, and nothing cheap finds the other names of an inode; two gateways
// on two hard links of one database are not refused. (Neither is the
// database locked itself: closing any descriptor of it drops the POSIX
// locks SQLite holds on it in this process.)
func sqliteFile(path string) (string, error) {
	// Names are resolved as the kernel opens them: a symlink before "..",
	// so nothing here cleans a name lexically (filepath.Abs, Dir and Join
	// would).
	name := path
	if !filepath.IsAbs(name) {
		wd, err := os.Getwd()
		if err != nil {
			return "", err
		}
		name = wd + string(filepath.Separator) + name
	}
	for range maxSymlinks {
		if real, err := filepath.EvalSymlinks(name); err == nil {
			return real, nil
		}
		// Not there (yet), or a symlink to a file not there yet.
		cut := strings.LastIndexByte(name, filepath.Separator)
		dir, err := filepath.EvalSymlinks(name[:cut+1])
		if err != nil {
			return "", err
		}
		name = filepath.Join(dir, name[cut+1:])
		fi, err := os.Lstat(name)
		if errors.Is(err, fs.ErrNotExist) || err == nil && fi.Mode()&fs.ModeSymlink == 0 {
			return name, nil
		}
		if err != nil {
			return "", err
		}
		target, err := os.Readlink(name)
		if err != nil {
			return "", err
		}
		if !filepath.IsAbs(target) {
			target = dir + string(filepath.Separator) + target
		}
		name = target
	}
	return "", fmt.Errorf("%s: more than %d symlinks", path, maxSymlinks)
}
