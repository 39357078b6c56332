package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// maxGroup bounds the writes one group transaction carries.
const maxGroup = 128

// errStoreClosed answers a write that arrives after Close.
var errStoreClosed = fmt.Errorf("%w: the store is closed", ErrUnavailable)

// groupCommit runs the small writes of many callers in shared SQLite
// transactions (group commit): issuance intents and records, two per certificate, and
// audit events, each of which would otherwise be a transaction of its own
// through the one SQLite writer. A caller's
// write is in the database when its call returns, exactly as with its own
// transaction: the caller waits for the commit of the group that carries
// it.
//
// The callers commit for each other: the first to arrive leads, commits
// what is queued (its own write first) and passes the lead to the first
// caller that queued meanwhile. A lone caller runs its statement on its
// own goroutine and commits alone, as before; under load, the writes that
// queue while one group commits form the next group.
//
// One write that fails (a unique conflict, a conditional UPDATE that
// matches nothing) must fail only its caller: the group is rolled back and
// each of its writes is retried on its own, which answers each caller with
// its own outcome. That costs a few extra statements on a rare path and
// keeps the common path free of savepoints.
type groupCommit struct {
	c *conn

	mu      sync.Mutex
	idle    *sync.Cond // signalled when leading turns false
	queue   []*groupOp // queue[0], if any, is the leader's or the next leader's
	leading bool
	closed  bool

	// commits counts the transactions that committed writes of the
	// group, writes the writes they carried: writes/commits is the mean
	// group size (DB.GroupCommits).
	commits, writes atomic.Int64
}

// execer runs statements: the writer itself (a write alone commits on
// its own) or a transaction.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// groupOp is one caller's write: one statement, run on its own or in the
// group's transaction, or (tx) statements that must commit together, run
// in a transaction of their own or in the group's.
type groupOp struct {
	ctx context.Context
	fn  func(context.Context, execer) error
	tx  bool
	err error
	// finished is set by the leader that answered it (only the leader
	// reads it).
	finished bool
	done     chan bool // one value: false (finished, see err) or true (lead)
}

func newGroupCommit(c *conn) *groupCommit {
	g := &groupCommit{c: c}
	g.idle = sync.NewCond(&g.mu)
	return g
}

// do runs op and returns its outcome: nil once a transaction holding its
// write committed, or an error when its write is not in the database.
func (g *groupCommit) do(op *groupOp) error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return errStoreClosed
	}
	g.queue = append(g.queue, op)
	lead := !g.leading
	g.leading = true
	g.mu.Unlock()
	// A follower waits whatever its ctx does: its write may already be in
	// a transaction that commits.
	if !lead && !<-op.done {
		return op.err
	}
	g.mu.Lock()
	n := min(len(g.queue), maxGroup)
	group := g.queue[:n:n]
	g.queue = g.queue[n:]
	g.mu.Unlock()
	defer g.handOff()
	defer func() {
		// A panic in a write (a driver bug) must not leave its group's
		// callers waiting, nor the lead with no one: answer them, hand
		// the lead on (deferred above), then let the panic go on.
		if r := recover(); r != nil {
			for _, o := range group {
				if !o.finished {
					o.finish(fmt.Errorf("store: a group write panicked: %v", r))
				}
			}
			panic(r)
		}
	}()
	g.commit(group)
	return op.err
}

// handOff passes the lead to the first caller queued, or ends it.
func (g *groupCommit) handOff() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.queue) > 0 {
		g.queue[0].done <- true
		return
	}
	g.leading = false
	g.queue = nil
	g.idle.Broadcast()
}

// commit writes one group and answers its callers.
func (g *groupCommit) commit(group []*groupOp) {
	live := make([]*groupOp, 0, len(group))
	for _, op := range group {
		if err := op.ctx.Err(); err != nil {
			op.finish(err) // its caller has left: nothing written
			continue
		}
		live = append(live, op)
	}
	switch len(live) {
	case 0:
		return
	case 1:
		live[0].finish(g.alone(context.WithoutCancel(live[0].ctx), live[0]))
		return
	}
	// One caller's cancellation must not undo the others' writes; the
	// group's span joins its first caller's trace.
	ctx := context.WithoutCancel(live[0].ctx)
	errOp := errors.New("store: a write of the group failed")
	err := inTx(ctx, g.c, func(tx *stx) error {
		for _, op := range live {
			if err := op.fn(ctx, tx); err != nil {
				return errOp
			}
		}
		return nil
	})
	if err == nil {
		g.commits.Add(1)
		g.writes.Add(int64(len(live)))
		for _, op := range live {
			op.finish(nil)
		}
		return
	}
	for _, op := range live {
		op.finish(g.alone(ctx, op))
	}
}

// alone runs op by itself and counts it if it committed.
func (g *groupCommit) alone(ctx context.Context, op *groupOp) error {
	err := alone(ctx, g.c, op)
	if err == nil {
		g.commits.Add(1)
		g.writes.Add(1)
	}
	return err
}

// alone runs op by itself: a single statement commits itself (no BEGIN
// and COMMIT), statements that must commit together get a transaction.
func alone(ctx context.Context, c *conn, op *groupOp) error {
	if !op.tx {
		return op.fn(ctx, c)
	}
	return inTx(ctx, c, func(tx *stx) error { return op.fn(ctx, tx) })
}

func (op *groupOp) finish(err error) {
	op.err, op.finished = err, true
	op.done <- false // buffered: a leader's own op is not received
}

// close refuses new writes and waits for the groups in hand to commit.
func (g *groupCommit) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	for g.leading {
		g.idle.Wait()
	}
}

// GroupCommits reports how many transactions the SQLite group commit
// committed and how many writes they carried (0, 0 on PostgreSQL, whose
// writes are not grouped). The gateway exports them as
// credgw_sqlite_group_commits_total and credgw_sqlite_group_writes_total.
func (s *DB) GroupCommits() (commits, writes int64) {
	if s.dialect != "sqlite" {
		return 0, 0
	}
	s.groupOnce.Do(func() {
		if !s.closed {
			s.group = newGroupCommit(s.w)
		}
	})
	if s.group == nil {
		return 0, 0
	}
	return s.group.commits.Load(), s.group.writes.Load()
}

// grouped runs fn, one statement, as one write of a group transaction
// (groupCommit).
func (s *DB) grouped(ctx context.Context, fn func(context.Context, execer) error) error {
	return s.groupedOp(ctx, fn, false)
}

// groupedTx runs fn, statements that must commit together, as one write
// of a group transaction.
func (s *DB) groupedTx(ctx context.Context, fn func(context.Context, execer) error) error {
	return s.groupedOp(ctx, fn, true)
}

func (s *DB) groupedOp(ctx context.Context, fn func(context.Context, execer) error, tx bool) error {
	op := &groupOp{ctx: ctx, fn: fn, tx: tx, done: make(chan bool, 1)}
	if s.dialect != "sqlite" {
		// PostgreSQL runs writes on many connections at once and groups
		// concurrent commits' WAL flushes itself: a queue here would only
		// serialise them.
		return alone(ctx, s.w, op)
	}
	s.groupOnce.Do(func() {
		if !s.closed {
			s.group = newGroupCommit(s.w)
		}
	})
	if s.group == nil {
		return errStoreClosed
	}
	return s.group.do(op)
}
