package store

import (
	"context"
	"database/sql"
	"errors"
	"time"
)

// Linkage is the check schedule of one PIV Authentication certificate.
type Linkage struct {
	CertSHA256   string
	NextCheck    time.Time
	UnknownSince time.Time // zero unless its status has been unavailable
	LastChecked  time.Time
	LastStatus   string
	// Claim is the claim this copy was taken under; FinishLinkage records
	// only while it still holds.
	Claim int64
}

// LinkageStore keeps the linkage check schedule.
type LinkageStore interface {
	// ScheduleLinkage adds a row for every PIV Authentication certificate
	// with live credential sets that has none, first due firstCheck after
	// its oldest live set was created; it returns how many it added.
	ScheduleLinkage(ctx context.Context, firstCheck time.Duration) (int64, error)
	// ClaimLinkage claims up to limit due rows until now+lease; a row
	// claimed by another replica is skipped.
	ClaimLinkage(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]Linkage, error)
	// FinishLinkage records a check's result and releases the claim.
	FinishLinkage(ctx context.Context, l Linkage) error
	// DeleteLinkage drops a certificate that has no live sets any more.
	DeleteLinkage(ctx context.Context, certSHA256 string) error
	// OldestDueLinkage is the earliest next check at or before now
	// (claimed or not); ok is false when no check is due.
	OldestDueLinkage(ctx context.Context, now time.Time) (due time.Time, ok bool, err error)
	// LiveSetsOfCert counts pending, redeeming and active sets bound to the
	// certificate.
	LiveSetsOfCert(ctx context.Context, certSHA256 string) (int, error)
}

const liveStates = `('pending', 'redeeming', 'active')`

func (s *DB) ScheduleLinkage(ctx context.Context, firstCheck time.Duration) (int64, error) {
	res, err := s.w.ExecContext(ctx, `INSERT INTO linkage (cert_sha256, next_check)
		SELECT piv_cert_sha256, MIN(created_at) + $1 FROM credential_sets
		WHERE state IN `+liveStates+` AND piv_cert_sha256 NOT IN (SELECT cert_sha256 FROM linkage)
		GROUP BY piv_cert_sha256
		ON CONFLICT (cert_sha256) DO NOTHING`, firstCheck.Microseconds())
	if err != nil {
		return 0, wrapDB(err)
	}
	return res.RowsAffected()
}

func (s *DB) ClaimLinkage(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]Linkage, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT cert_sha256 FROM linkage WHERE next_check <= $1 AND claimed_until < $1 ORDER BY next_check LIMIT $2`,
		ts(now), limit)
	if err != nil {
		return nil, wrapDB(err)
	}
	var due []string
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			rows.Close()
			return nil, wrapDB(err)
		}
		due = append(due, h)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, wrapDB(err)
	}
	var out []Linkage
	for _, h := range due {
		var l Linkage
		var next, unknown, last int64
		err := s.w.QueryRowContext(ctx, `UPDATE linkage SET claimed_until = $1 WHERE cert_sha256 = $2 AND next_check <= $3 AND claimed_until < $3
			RETURNING cert_sha256, next_check, unknown_since, last_checked, last_status, claimed_until`, ts(now.Add(lease)), h, ts(now)).Scan(
			&l.CertSHA256, &next, &unknown, &last, &l.LastStatus, &l.Claim)
		if err != nil {
			if errors.Is(wrapDB(err), ErrNotFound) {
				continue // another replica took it
			}
			return out, wrapDB(err)
		}
		l.NextCheck, l.LastChecked = fromTS(next), fromTS(last)
		if unknown != 0 {
			l.UnknownSince = fromTS(unknown)
		}
		out = append(out, l)
	}
	return out, nil
}

func (s *DB) FinishLinkage(ctx context.Context, l Linkage) error {
	var unknown int64
	if !l.UnknownSince.IsZero() {
		unknown = ts(l.UnknownSince)
	}
	_, err := s.w.ExecContext(ctx, `UPDATE linkage SET next_check = $1, unknown_since = $2, last_checked = $3, last_status = $4, claimed_until = 0
		WHERE cert_sha256 = $5 AND claimed_until = $6`, ts(l.NextCheck), unknown, ts(l.LastChecked), l.LastStatus, l.CertSHA256, l.Claim)
	return wrapDB(err)
}

func (s *DB) DeleteLinkage(ctx context.Context, certSHA256 string) error {
	_, err := s.w.ExecContext(ctx, `DELETE FROM linkage WHERE cert_sha256 = $1`, certSHA256)
	return wrapDB(err)
}

func (s *DB) OldestDueLinkage(ctx context.Context, now time.Time) (time.Time, bool, error) {
	var due sql.NullInt64
	if err := s.r.QueryRowContext(ctx, `SELECT MIN(next_check) FROM linkage WHERE next_check <= $1`, ts(now)).Scan(&due); err != nil {
		return time.Time{}, false, wrapDB(err)
	}
	if !due.Valid {
		return time.Time{}, false, nil
	}
	return fromTS(due.Int64), true, nil
}

func (s *DB) LiveSetsOfCert(ctx context.Context, certSHA256 string) (int, error) {
	var n int
	err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM credential_sets WHERE piv_cert_sha256 = $1 AND state IN `+liveStates, certSHA256).Scan(&n)
	return n, wrapDB(err)
}

var _ LinkageStore = (*DB)(nil)
