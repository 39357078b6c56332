package store

import (
	"errors"
	"fmt"
	"io"
	"os"
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

// lockSQLite takes an exclusive, non-blocking flock on path+".lock" (0600)
// and writes this process's id into it. The lock lives as long as the
// returned file is open: closing it, or the process ending, releases it.
// flock locks belong to the open file description, so two opens conflict
// even within one process. The file itself stays: removing it could let
// two processes lock two different files of the same name.
func lockSQLite(path string) (*os.File, error) {
	name := path + ".lock"
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: sqlite: lock: %w", err)
	}
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
