package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestWALBounded: a sustained write load from several goroutines, with
// readers running all along, never lets a passive checkpoint catch up; the
// store must still keep the WAL file below its limit, both as the store
// measures it during the load and on disk at the end.
func TestWALBounded(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "wal.db")
	const limit = 2 << 20
	s, err := OpenSQLite(ctx, path, WALLimit(limit))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	// 4 writers × 200 challenges of 8 KiB: about 12 MiB of WAL frames,
	// six times the limit.
	const writers, perWriter, readers = 4, 200, 2
	var maxWAL atomic.Int64
	observe := func() {
		for n := s.WALBytes(); ; {
			m := maxWAL.Load()
			if n <= m || maxWAL.CompareAndSwap(m, n) {
				return
			}
		}
	}
	done := make(chan struct{})
	var rwg sync.WaitGroup
	for r := range readers {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				var n int
				err := s.r.QueryRowContext(ctx, `SELECT length(challenge) FROM piv_challenges WHERE session_id = $1`,
					fmt.Sprintf("w%d-%d", (r+i)%writers, i%perWriter)).Scan(&n)
				if err != nil && wrapDB(err) != ErrNotFound {
					t.Error(err)
					return
				}
				observe()
			}
		}()
	}
	now := time.Now()
	var wwg sync.WaitGroup
	for w := range writers {
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			for i := range perWriter {
				if err := s.CreateChallenge(ctx, Challenge{SessionID: fmt.Sprintf("w%d-%d", w, i), Challenge: make([]byte, 8192),
					GatewayID: "g", CreatedAt: now, ExpiresAt: now.Add(time.Minute)}); err != nil {
					t.Error(err)
					return
				}
				observe()
			}
		}()
	}
	wwg.Wait()
	close(done)
	rwg.Wait()

	var rows int
	if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM piv_challenges`).Scan(&rows); err != nil || rows != writers*perWriter {
		t.Fatalf("%d challenges stored (%v), want %d", rows, err, writers*perWriter)
	}
	if m := maxWAL.Load(); m == 0 || m >= limit {
		t.Errorf("the WAL reached %d bytes under load (store's measurement); limit %d", m, limit)
	}
	fi, err := os.Stat(path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() >= limit {
		t.Errorf("WAL file of %d bytes after the load; limit %d", fi.Size(), limit)
	}
}

// TestCheckpointBlockedCounts: a forced checkpoint that a reader's open
// snapshot keeps from catching up counts as a failure and leaves a lag;
// once the reader is gone, the next one empties the WAL.
func TestCheckpointBlockedCounts(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "wal.db")
	s, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Only this test's checkpoints: the background one (each second, on
	// a connection of its own) would otherwise collide with them on a
	// slow machine, and a checkpoint that finds another running is busy,
	// which counts as a failure too.
	s.ckpt.halt()
	write := func(id string) {
		now := time.Now()
		if err := s.CreateChallenge(ctx, Challenge{SessionID: id, Challenge: make([]byte, 4096), GatewayID: "g",
			CreatedAt: now, ExpiresAt: now.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	write("a")
	// A reader holds a snapshot that includes "a"; "b" comes after it.
	rtx, err := s.r.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := rtx.QueryRowContext(ctx, `SELECT count(*) FROM piv_challenges`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	write("b")
	before := s.CheckpointFailures()
	s.ckpt.truncate()
	if s.CheckpointFailures() != before+1 {
		t.Errorf("a checkpoint held back by a reader was not counted as failed (%d, then %d)", before, s.CheckpointFailures())
	}
	if s.CheckpointLag() <= 0 {
		t.Errorf("checkpoint lag %d frames with a reader holding frames back", s.CheckpointLag())
	}
	rtx.Rollback()
	s.ckpt.truncate()
	if s.CheckpointFailures() != before+1 || s.CheckpointLag() != 0 || s.WALBytes() != 0 {
		t.Errorf("after the reader left: %d failures, lag %d, WAL %d bytes", s.CheckpointFailures(), s.CheckpointLag(), s.WALBytes())
	}
}

// TestSQLiteCommitsWaitForTheDisk: the writer commits with
// synchronous=FULL, so that an intent recorded before the CA key signs,
// a record and a revocation survive a power loss too; SyncNormal is the
// operator's choice of speed over that. Before, every connection ran
// synchronous=NORMAL, whose WAL commits the machine's crash may roll
// back.
func TestSQLiteCommitsWaitForTheDisk(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []SQLiteOption
		want int
	}{{"default", nil, 2}, {"SyncNormal", []SQLiteOption{SyncNormal()}, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := OpenSQLite(context.Background(), t.TempDir()+"/s.db", tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			var got int
			if err := s.w.QueryRowContext(context.Background(), `PRAGMA synchronous`).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("the writer's synchronous is %d, want %d", got, tc.want)
			}
		})
	}
}
