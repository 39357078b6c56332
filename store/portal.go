package store

import (
	"context"
	"database/sql"
	"errors"
	"time"
)

// PortalStore is what the portal keeps for every replica: card sign-outs
// and the enroll forms taken.
type PortalStore interface {
	// NoteCardSignOut records that the card whose PIV Authentication
	// certificate has this SHA-256 (hex) signed out at at (by the clock of
	// the replica that served it; the latest note replaces the last).
	NoteCardSignOut(ctx context.Context, certSHA256 string, at time.Time) error
	// CardSignOut is when that card last signed out, as the replica that
	// served the sign-out told it (ok false: not within two hours).
	CardSignOut(ctx context.Context, certSHA256 string) (at time.Time, ok bool, err error)
	// TakePortalForm takes an enroll form by the hash of its one-time
	// value: taken is false if it was taken before (made reports whether
	// its enrollment was made, or is still being made).
	TakePortalForm(ctx context.Context, onceHash string, now time.Time) (taken, made bool, err error)
	// EndPortalForm records a taken form's outcome: made, or given back
	// (it may be taken again).
	EndPortalForm(ctx context.Context, onceHash string, made bool) error
}

// formMaking is how long a taken form stays "being made" without an
// outcome: far longer than an enrollment takes.
const formMaking = 5 * time.Minute

// portalRetention is how long sign-outs and forms are kept: longer than a
// session (20 minutes) and portal.max_connection_age (1 hour at most).
const portalRetention = 2 * time.Hour

func (s *DB) NoteCardSignOut(ctx context.Context, certSHA256 string, at time.Time) error {
	// The latest note wins whatever its time: replicas' clocks differ, and
	// each replica compares the stored value for equality only (a new
	// value is a new sign-out), never with its own clock.
	_, err := s.w.ExecContext(ctx, `INSERT INTO portal_card_sign_outs (cert_sha256, signed_out_at) VALUES ($1, $2)
		ON CONFLICT (cert_sha256) DO UPDATE SET signed_out_at = excluded.signed_out_at`, certSHA256, ts(at))
	return wrapDB(err)
}

func (s *DB) CardSignOut(ctx context.Context, certSHA256 string) (time.Time, bool, error) {
	var at int64
	err := s.r.QueryRowContext(ctx, `SELECT signed_out_at FROM portal_card_sign_outs WHERE cert_sha256 = $1`, certSHA256).Scan(&at)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, wrapDB(err)
	}
	return fromTS(at), true, nil
}

func (s *DB) TakePortalForm(ctx context.Context, onceHash string, now time.Time) (taken, made bool, err error) {
	for range 3 { // a form given back between the insert and the read is taken again
		// A form taken and never ended (its replica died, its outcome
		// could not be recorded) is taken again after formMaking.
		res, err := s.w.ExecContext(ctx, `INSERT INTO portal_forms (once_hash, taken_at) VALUES ($1, $2)
			ON CONFLICT (once_hash) DO UPDATE SET taken_at = excluded.taken_at
			WHERE portal_forms.made = 0 AND portal_forms.taken_at < $3`,
			onceHash, ts(now), ts(now.Add(-formMaking)))
		if err != nil {
			return false, false, wrapDB(err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return true, false, nil
		}
		var m int64
		err = s.w.QueryRowContext(ctx, `SELECT made FROM portal_forms WHERE once_hash = $1`, onceHash).Scan(&m)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return false, false, wrapDB(err)
		}
		return false, m != 0, nil
	}
	return false, false, nil // taken and given back over and over: being made
}

func (s *DB) EndPortalForm(ctx context.Context, onceHash string, made bool) error {
	q := `DELETE FROM portal_forms WHERE once_hash = $1`
	if made {
		q = `UPDATE portal_forms SET made = 1 WHERE once_hash = $1`
	}
	_, err := s.w.ExecContext(ctx, q, onceHash)
	return wrapDB(err)
}
