package store

import (
	"context"
	"database/sql"
	"errors"
	"time"
)

// StoredCRL is the current CRL of an issuing CA.
type StoredCRL struct {
	Number     int64
	DER        []byte
	ThisUpdate time.Time
	NextUpdate time.Time
	// Stale: something was revoked after it was built.
	Stale bool
}

// CRLStore keeps one CRL per issuer for all replicas.
type CRLStore interface {
	// CRL returns the stored CRL (ErrNotFound before the first).
	CRL(ctx context.Context, issuer string) (StoredCRL, error)
	// CRLState is CRL without the DER: what a replica that holds the
	// CRL of that number in memory needs to serve it.
	CRLState(ctx context.Context, issuer string) (StoredCRL, error)
	// MarkCRLStale makes an issuer's CRL stale (RevokeCertificate and
	// RevokeStaleIntents do it themselves, in their transactions).
	MarkCRLStale(ctx context.Context, issuer string) error
	// ClaimCRL takes the lease to rebuild the CRL until now+lease, if no
	// other replica holds it (one conditional UPDATE), and returns the
	// revocation generation the rebuild covers.
	ClaimCRL(ctx context.Context, issuer string, now time.Time, lease time.Duration) (claimed bool, generation int64, err error)
	// SaveCRL stores a CRL built at generation and releases the lease.
	SaveCRL(ctx context.Context, issuer string, c StoredCRL, generation int64) error
	// ReleaseCRL gives back the lease claimed until until (ClaimCRL's
	// now+lease) without a new CRL; a lease another replica claimed since
	// (this one ran out) stays.
	ReleaseCRL(ctx context.Context, issuer string, until time.Time) error
}

// CRL and CRLState read on the reader pool: anyone may fetch a CRL, and
// on SQLite the writer connection is one (a flood of CRL fetches queued
// every write behind it, and each fetch waited for the write in progress).
// A reader sees every commit made before its read.
func (s *DB) CRL(ctx context.Context, issuer string) (StoredCRL, error) {
	var c StoredCRL
	var this, next, gen, built int64
	err := s.r.QueryRowContext(ctx, `SELECT number, der, this_update, next_update, generation, built_generation
		FROM crls WHERE issuer = $1 AND der IS NOT NULL`, issuer).Scan(&c.Number, &c.DER, &this, &next, &gen, &built)
	if err != nil {
		return StoredCRL{}, wrapDB(err)
	}
	c.ThisUpdate, c.NextUpdate, c.Stale = fromTS(this), fromTS(next), gen > built
	return c, nil
}

func (s *DB) CRLState(ctx context.Context, issuer string) (StoredCRL, error) {
	var c StoredCRL
	var this, next, gen, built int64
	err := s.r.QueryRowContext(ctx, `SELECT number, this_update, next_update, generation, built_generation
		FROM crls WHERE issuer = $1 AND der IS NOT NULL`, issuer).Scan(&c.Number, &this, &next, &gen, &built)
	if err != nil {
		return StoredCRL{}, wrapDB(err)
	}
	c.ThisUpdate, c.NextUpdate, c.Stale = fromTS(this), fromTS(next), gen > built
	return c, nil
}

// markCRLStale bumps an issuer's CRL generation: the CRL is rebuilt.
const markCRLStale = `INSERT INTO crls (issuer, generation) VALUES ($1, 2)
		ON CONFLICT (issuer) DO UPDATE SET generation = crls.generation + 1`

func (s *DB) MarkCRLStale(ctx context.Context, issuer string) error {
	_, err := s.w.ExecContext(ctx, markCRLStale, issuer)
	return wrapDB(err)
}

// MarkAllCRLsStale makes every stored CRL stale, so that the next fetch
// rebuilds it: after a restore from a backup, the stored CRL may be older
// (and numbered lower) than one published since the backup (credgw
// migrate calls it).
func (s *DB) MarkAllCRLsStale(ctx context.Context) error {
	_, err := s.w.ExecContext(ctx, `UPDATE crls SET generation = generation + 1`)
	return wrapDB(err)
}

func (s *DB) ClaimCRL(ctx context.Context, issuer string, now time.Time, lease time.Duration) (bool, int64, error) {
	if _, err := s.w.ExecContext(ctx, `INSERT INTO crls (issuer) VALUES ($1) ON CONFLICT (issuer) DO NOTHING`, issuer); err != nil {
		return false, 0, wrapDB(err)
	}
	var gen int64
	err := s.w.QueryRowContext(ctx, `UPDATE crls SET claimed_until = $1 WHERE issuer = $2 AND claimed_until < $3 RETURNING generation`,
		ts(now.Add(lease)), issuer, ts(now)).Scan(&gen)
	if errors.Is(err, sql.ErrNoRows) {
		return false, 0, nil
	}
	if err != nil {
		return false, 0, wrapDB(err)
	}
	return true, gen, nil
}

func (s *DB) SaveCRL(ctx context.Context, issuer string, c StoredCRL, generation int64) error {
	// A replica whose lease ran out must not replace a newer CRL.
	return s.updateOne(ctx, `UPDATE crls SET number = $1, der = $2, this_update = $3, next_update = $4, built_generation = $5, claimed_until = 0
		WHERE issuer = $6 AND number < $1 AND built_generation <= $5`, c.Number, c.DER, ts(c.ThisUpdate), ts(c.NextUpdate), generation, issuer)
}

func (s *DB) ReleaseCRL(ctx context.Context, issuer string, until time.Time) error {
	_, err := s.w.ExecContext(ctx, `UPDATE crls SET claimed_until = 0 WHERE issuer = $1 AND claimed_until = $2`, issuer, ts(until))
	return wrapDB(err)
}
