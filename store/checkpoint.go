package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultWALLimit is the size the SQLite WAL file is kept below. A forced
// checkpoint runs once the WAL passes a quarter of it, which leaves room
// for the writes that land while the checkpoint waits for its turn.
const DefaultWALLimit = 64 << 20

// checkpointInterval is how often the background checkpointer copies the
// WAL into the database file.
const checkpointInterval = time.Second

// forcedCheckpointBusyTimeout is how long a forced checkpoint waits for
// readers to leave the WAL before it gives up (and counts a failure).
// Writers wait for it meanwhile, so it is short.
const forcedCheckpointBusyTimeout = 200 * time.Millisecond

// SQLiteOption configures OpenSQLite.
type SQLiteOption func(*sqliteOptions)

type sqliteOptions struct {
	walLimit int64
	// relaxed: synchronous=NORMAL (SyncNormal) rather than FULL.
	relaxed bool
	// mustExist: a missing or empty database file is refused (MustExist).
	mustExist bool
}

// MustExist refuses to open a SQLite database that does not exist or is
// empty (ErrNoDatabase), rather than making a new one: what serve opens.
func MustExist() SQLiteOption {
	return func(o *sqliteOptions) { o.mustExist = true }
}

// SyncNormal commits without waiting for the disk (SQLite's
// synchronous=NORMAL in WAL mode): a commit survives credgw's crash but
// not the machine's (power loss, a kernel panic), which may roll back the
// last commits before the next checkpoint — issuance intents and records
// and revocations among them. By default every commit is on the disk
// before it returns (synchronous=FULL), so what was recorded before the
// CA key signed is there after any crash.
func SyncNormal() SQLiteOption {
	return func(o *sqliteOptions) { o.relaxed = true }
}

// WALLimit keeps the SQLite WAL file below n bytes (DefaultWALLimit).
func WALLimit(n int64) SQLiteOption {
	return func(o *sqliteOptions) {
		if n > 0 {
			o.walLimit = n
		}
	}
}

// checkpointer runs SQLite's WAL checkpoints off the request path. Every
// second a PASSIVE one, on a connection of its own, which never waits for
// the writer or readers. Under a sustained load that never catches up: a
// reader always holds some frames, so the WAL never restarts and grows
// without bound. So once the WAL passes trigger bytes, the checkpointer
// takes the store's writer connection and runs a TRUNCATE checkpoint,
// which copies every frame and empties the file, waiting briefly for
// readers; writers queue for the connection meanwhile. Should writes
// outrun it to twice trigger, each write waits for that checkpoint first:
// the bound holds whatever the write rate.
type checkpointer struct {
	db      *sql.DB // passive checkpoints; busy timeout 0
	w       *sql.DB // the store's one writer connection: forced checkpoints
	wal     string  // the WAL file
	trigger int64   // WAL bytes past which a forced checkpoint runs

	// Past next bytes a write wakes the checkpointer, past stall it waits
	// for a forced checkpoint: trigger and twice trigger, or more after a
	// failed one (force).
	next, stall atomic.Int64
	forcing     sync.Mutex // one forced checkpoint at a time

	kick   chan struct{}
	stop   chan struct{}
	done   chan struct{}
	halted sync.Once
	closed sync.Once
	// failures counts checkpoints that failed, were blocked, or (forced)
	// could not copy every frame: a count that keeps rising means the WAL
	// grows.
	failures atomic.Int64
	// lag is the frames the last checkpoint left in the WAL.
	lag atomic.Int64
}

func newCheckpointer(db, w *sql.DB, wal string, trigger int64) *checkpointer {
	c := &checkpointer{db: db, w: w, wal: wal, trigger: trigger,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	c.next.Store(trigger)
	c.stall.Store(2 * trigger)
	go c.run()
	return c
}

func (c *checkpointer) run() {
	defer close(c.done)
	t := time.NewTicker(checkpointInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-c.kick:
			c.force(c.next.Load())
		case <-t.C:
			c.checkpoint("PASSIVE")
			c.force(c.trigger)
		}
	}
}

// beforeWrite runs before each write on the store's writer connection,
// while the caller holds no connection: past next it wakes the
// checkpointer; past stall it runs the forced checkpoint itself, so
// writers wait until the WAL is back under its bound.
func (c *checkpointer) beforeWrite() {
	switch n := c.walBytes(); {
	case n > c.stall.Load():
		c.force(c.stall.Load())
	case n > c.next.Load():
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
}

// force runs a forced checkpoint if the WAL is still over bytes (another
// may have run meanwhile). If it fails (a reader holds the WAL), writers,
// who waited for it once, run on until the WAL has grown by another
// trigger's worth or the next tick.
func (c *checkpointer) force(over int64) {
	c.forcing.Lock()
	defer c.forcing.Unlock()
	if c.walBytes() <= over {
		return
	}
	base := int64(0)
	if !c.truncate() {
		base = c.walBytes()
	}
	c.next.Store(base + c.trigger)
	c.stall.Store(base + 2*c.trigger)
}

// walBytes is the size of the WAL file (0 when there is none).
func (c *checkpointer) walBytes() int64 {
	fi, err := os.Stat(c.wal)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// checkpoint runs one checkpoint on the checkpointer's own connection; a
// failure (the database busy) is left to the next one.
func (c *checkpointer) checkpoint(mode string) error {
	return c.record(c.db.QueryRow("PRAGMA wal_checkpoint("+mode+")"), false)
}

// truncate runs a TRUNCATE checkpoint on the writer connection, so no
// writer of this store can be in the way, with a short busy timeout for
// readers. A PASSIVE one first copies most of the WAL while writers still
// run, so they wait only for the rest. It reports whether the WAL was
// emptied.
func (c *checkpointer) truncate() bool {
	ctx := context.Background()
	c.checkpoint("PASSIVE")
	conn, err := c.w.Conn(ctx)
	if err != nil {
		c.failures.Add(1)
		return false
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, fmt.Sprintf("PRAGMA busy_timeout = %d", forcedCheckpointBusyTimeout.Milliseconds())); err != nil {
		c.failures.Add(1)
		return false
	}
	defer conn.ExecContext(ctx, fmt.Sprintf("PRAGMA busy_timeout = %d", busyTimeout.Milliseconds()))
	return c.record(conn.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"), true) == nil
}

// errCheckpointBehind: a forced checkpoint left frames in the WAL.
var errCheckpointBehind = errors.New("store: sqlite: WAL checkpoint blocked")

// record reads a checkpoint's result (busy, frames in the WAL, frames
// copied) and counts a failure: an error, busy, or, for a forced
// checkpoint, frames it could not copy.
func (c *checkpointer) record(row *sql.Row, forced bool) error {
	var busy, log, done int64
	if err := row.Scan(&busy, &log, &done); err != nil {
		c.failures.Add(1)
		return err
	}
	if log >= done && done >= 0 {
		c.lag.Store(log - done)
	}
	if busy != 0 || (forced && log > done) {
		c.failures.Add(1)
		return errCheckpointBehind
	}
	return nil
}

// halt stops the background checkpoints; the store closes its pools after.
func (c *checkpointer) halt() {
	c.halted.Do(func() {
		close(c.stop)
		<-c.done
	})
}

// Close stops the checkpointer after a last, truncating checkpoint, which
// does not wait for other processes that have the database open (a read-only
// `credgw audit`, say): then the WAL simply stays.
func (c *checkpointer) Close() error {
	c.halt()
	var err error
	c.closed.Do(func() {
		c.checkpoint("TRUNCATE") // busy: left to the next checkpoint of whoever runs
		err = c.db.Close()
	})
	return err
}

// CheckpointFailures is how many background WAL checkpoints failed or were
// blocked (SQLite; 0 on PostgreSQL). The gateway exports
// it as credgw_sqlite_checkpoint_failures_total.
func (s *DB) CheckpointFailures() int64 {
	if s.ckpt == nil {
		return 0
	}
	return s.ckpt.failures.Load()
}

// WALBytes is the size of the SQLite WAL file (0 on PostgreSQL). The
// gateway exports it as credgw_sqlite_wal_bytes.
func (s *DB) WALBytes() int64 {
	if s.ckpt == nil {
		return 0
	}
	return s.ckpt.walBytes()
}

// CheckpointLag is how many WAL frames the last checkpoint could not copy
// into the database (0 on PostgreSQL). The gateway exports it as
// credgw_sqlite_checkpoint_lag_frames.
func (s *DB) CheckpointLag() int64 {
	if s.ckpt == nil {
		return 0
	}
	return s.ckpt.lag.Load()
}
