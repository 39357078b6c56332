package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// intentOp is the group op of CreateIssuanceIntent for rec.
func intentOp(ctx context.Context, rec CertificateRecord) *groupOp {
	return &groupOp{ctx: ctx, done: make(chan bool, 1), fn: func(ctx context.Context, ex execer) error {
		_, err := ex.ExecContext(ctx,
			`INSERT INTO certificates (serial, issuer, profile, status, spki_sha256, piv_cert_sha256, fascn, card_uuid, person_id,
			  credential_set_id, not_before, not_after, created_at) VALUES ($1, 'ca', 'p', 'intent', $2, '', '', '', '', '', 0, 0, 0)`,
			rec.Serial, rec.SPKISHA256)
		return wrapDB(err)
	}}
}

// TestGroupCommitFailsOnlyTheFailingWrite: a group holding a write that
// fails (a key certified before) answers that caller with the conflict
// and commits every other write of the group; a write whose caller left
// before its group ran is not written.
func TestGroupCommitFailsOnlyTheFailingWrite(t *testing.T) {
	forEachEngine(t, func(t *testing.T, st Store) {
		s := st.(*DB)
		ctx := context.Background()
		gone, cancel := context.WithCancel(ctx)
		cancel()
		var ops []*groupOp
		for _, o := range []struct {
			ctx          context.Context
			serial, spki string
		}{{ctx, "a1", "k-a"}, {ctx, "a2", "k-a"}, {gone, "a3", "k-c"}, {ctx, "a4", "k-d"}} {
			ops = append(ops, intentOp(o.ctx, CertificateRecord{Serial: o.serial, SPKISHA256: o.spki}))
		}
		g := newGroupCommit(s.w)
		g.commit(ops)
		want := []error{nil, ErrConflict, context.Canceled, nil}
		for i, op := range ops {
			if <-op.done {
				t.Fatalf("op %d was told to lead", i)
			}
			if (want[i] == nil) != (op.err == nil) || (want[i] != nil && !errors.Is(op.err, want[i])) {
				t.Errorf("op %d: %v, want %v", i, op.err, want[i])
			}
		}
		for serial, want := range map[string]bool{"a1": true, "a2": false, "a3": false, "a4": true} {
			_, err := s.Certificate(ctx, serial)
			if got := err == nil; got != want {
				t.Errorf("%s stored = %v (%v), want %v", serial, got, err, want)
			}
		}
	})
}

// TestGroupCommitConcurrent: many callers' intents and records, each
// answered only once its write is readable; a closed group refuses.
func TestGroupCommitConcurrent(t *testing.T) {
	forEachEngine(t, func(t *testing.T, st Store) {
		s := st.(*DB)
		ctx := context.Background()
		const n = 200
		commits0, writes0 := s.GroupCommits()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				serial := fmt.Sprintf("c%03x", i)
				rec := CertificateRecord{Serial: serial, Issuer: "ca", Profile: "p", SPKISHA256: "k" + serial, NotBefore: t0, NotAfter: t0, CreatedAt: t0}
				if err := s.CreateIssuanceIntent(ctx, rec); err != nil {
					errs <- err
					return
				}
				if c, err := s.Certificate(ctx, serial); err != nil || c.Status != CertIntent {
					errs <- fmt.Errorf("%s after its intent returned: %+v, %v", serial, c.Status, err)
					return
				}
				if err := s.RecordIssued(ctx, serial, []byte{1}, "h", "", t0); err != nil {
					errs <- err
					return
				}
				if c, err := s.Certificate(ctx, serial); err != nil || c.Status != CertIssued {
					errs <- fmt.Errorf("%s after its record returned: %+v, %v", serial, c.Status, err)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if err := s.RecordIssued(ctx, "c000", []byte{1}, "h", "", t0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("recording twice: %v", err)
		}
		commits, writes := s.GroupCommits()
		if s.dialect != "sqlite" {
			if commits != 0 || writes != 0 {
				t.Fatalf("PostgreSQL reports %d group commits of %d writes; its writes are not grouped", commits, writes)
			}
			return // PostgreSQL writes are not grouped
		}
		// Every intent and record counted once (the refused second record
		// not at all), in at most as many transactions.
		if w, c := writes-writes0, commits-commits0; w != 2*n || c < 1 || c > w {
			t.Fatalf("group commit counted %d writes in %d transactions; want %d writes in 1 to %d", w, c, 2*n, 2*n)
		}
		s.group.close()
		if err := s.CreateIssuanceIntent(ctx, CertificateRecord{Serial: "late", SPKISHA256: "late"}); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("after close: %v", err)
		}
	})
}

// TestGroupCommitPanicReleasesTheLead: a write that panics answers its
// caller with the panic and leaves the group usable for the next writes.
func TestGroupCommitPanicReleasesTheLead(t *testing.T) {
	s, err := OpenSQLite(context.Background(), t.TempDir()+"/p.db")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	g := newGroupCommit(s.w)
	func() {
		defer func() {
			if r := recover(); r == nil {
				t.Error("the panic was swallowed")
			}
		}()
		g.do(&groupOp{ctx: context.Background(), done: make(chan bool, 1), fn: func(context.Context, execer) error { panic("driver bug") }})
	}()
	if err := g.do(intentOp(context.Background(), CertificateRecord{Serial: "after", SPKISHA256: "k-after"})); err != nil {
		t.Fatalf("the write after a panic: %v", err)
	}
}

// TestGroupCommitPanicInTxReleasesTheWriter: a panic inside a write's
// transaction rolls the transaction back, so SQLite's one writer
// connection is free for the next write (the panic still propagates).
// Before, the open transaction kept the writer for good and every later
// write blocked.
func TestGroupCommitPanicInTxReleasesTheWriter(t *testing.T) {
	s, err := OpenSQLite(context.Background(), t.TempDir()+"/p.db")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	g := newGroupCommit(s.w)
	func() {
		defer func() {
			if r := recover(); r == nil {
				t.Error("the panic was swallowed")
			}
		}()
		g.do(&groupOp{ctx: context.Background(), done: make(chan bool, 1), tx: true, fn: func(context.Context, execer) error { panic("driver bug") }})
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- g.do(intentOp(ctx, CertificateRecord{Serial: "after", SPKISHA256: "k-after"})) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the write after a panic in a transaction: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the write after a panic in a transaction never ran: the writer is still held")
	}
}
