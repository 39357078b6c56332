package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

func (s *DB) CreateEnrollment(ctx context.Context, cs CredentialSet, a Activation, maxSets int) error {
	return s.tx(ctx, func(tx *stx) error {
		// The per-person cap is checked inside the transaction: SQLite has
		// one writer; on PostgreSQL an advisory lock per person orders the
		// enrollments of one person across replicas.
		if s.dialect == "postgres" {
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, "credgw-sets:"+cs.PersonID); err != nil {
				return wrapDB(err)
			}
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM credential_sets WHERE `+s.fold("person_id")+` = `+s.fold("$1")+` AND state IN ('pending', 'redeeming', 'active')`,
			cs.PersonID).Scan(&n); err != nil {
			return wrapDB(err)
		}
		if maxSets > 0 && n >= maxSets {
			return ErrLimit
		}
		if cs.RenewsSetID != "" {
			// A renewal only of a set still active, checked and locked
			// here: RevokeCredentialSet updates that row too, so a
			// revocation either comes first (and this refuses) or
			// after (and ends this renewal).
			res, err := tx.ExecContext(ctx, `UPDATE credential_sets SET updated_at = updated_at WHERE id = $1 AND state = 'active'`, cs.RenewsSetID)
			if err != nil {
				return wrapDB(err)
			}
			if n, _ := res.RowsAffected(); n != 1 {
				return fmt.Errorf("%w: the set %s to renew is not active", ErrNotFound, cs.RenewsSetID)
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO credential_sets (id, person_id, piv_cert_sha256, fascn, card_uuid, raw_subject, email, upn,
			identity_name, credential_type, escrow_key_id, state, device, created_at, updated_at, renews_set_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`,
			cs.ID, cs.PersonID, cs.PIVCertSHA256, cs.FASCN, cs.CardUUID, cs.RawSubject, cs.Email, cs.UPN, cs.IdentityName,
			cs.CredentialType, cs.EscrowKeyID, cs.State, cs.Device, ts(cs.CreatedAt), ts(cs.CreatedAt), cs.RenewsSetID)
		if err != nil {
			return wrapDB(err)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO activations (id, credential_set_id, lookup_hash, verifier, state, max_attempts, created_at, expires_at)
			VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7)`, a.ID, cs.ID, a.LookupHash, a.Verifier, a.MaxAttempts, ts(a.CreatedAt), ts(a.ExpiresAt))
		return wrapDB(err)
	})
}

func (s *DB) CountLiveSets(ctx context.Context, personID string) (int, error) {
	var n int
	err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM credential_sets WHERE `+s.fold("person_id")+` = `+s.fold("$1")+` AND state IN ('pending', 'redeeming', 'active')`, personID).Scan(&n)
	return n, wrapDB(err)
}

const setColumns = `id, person_id, piv_cert_sha256, fascn, card_uuid, raw_subject, email, upn, identity_name, credential_type, escrow_key_id, state, device, created_at, updated_at, renews_set_id, attestation`

func scanSet(row interface{ Scan(...any) error }) (CredentialSet, error) {
	var cs CredentialSet
	var created, updated int64
	err := row.Scan(&cs.ID, &cs.PersonID, &cs.PIVCertSHA256, &cs.FASCN, &cs.CardUUID, &cs.RawSubject, &cs.Email, &cs.UPN,
		&cs.IdentityName, &cs.CredentialType, &cs.EscrowKeyID, &cs.State, &cs.Device, &created, &updated, &cs.RenewsSetID, &cs.Attestation)
	if err != nil {
		return CredentialSet{}, wrapDB(err)
	}
	cs.CreatedAt, cs.UpdatedAt = fromTS(created), fromTS(updated)
	return cs, nil
}

func (s *DB) CredentialSet(ctx context.Context, id string) (CredentialSet, error) {
	return scanSet(s.r.QueryRowContext(ctx, `SELECT `+setColumns+` FROM credential_sets WHERE id = $1`, id))
}

func (s *DB) CredentialSetsOfPerson(ctx context.Context, personID string) ([]CredentialSet, error) {
	return s.querySets(ctx, `SELECT `+setColumns+` FROM credential_sets WHERE `+s.fold("person_id")+` = `+s.fold("$1")+` ORDER BY created_at DESC, id`, personID)
}

// querySets runs a query whose rows are setColumns.
func (s *DB) querySets(ctx context.Context, query string, args ...any) ([]CredentialSet, error) {
	rows, err := s.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, wrapDB(err)
	}
	defer rows.Close()
	var out []CredentialSet
	for rows.Next() {
		cs, err := scanSet(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, cs)
	}
	return out, wrapDB(rows.Err())
}

const actColumns = `id, credential_set_id, lookup_hash, verifier, state, failed_attempts, max_attempts, created_at, expires_at,
	redemption_id, redeemed_at, confirm_by, confirmed_at, package, package_sha256, package_size, manifest`

func scanAct(row interface{ Scan(...any) error }) (Activation, error) {
	var a Activation
	var created, expires int64
	var rid sql.NullString
	var redeemed, confirmBy, confirmed sql.NullInt64
	err := row.Scan(&a.ID, &a.CredentialSetID, &a.LookupHash, &a.Verifier, &a.State, &a.FailedAttempts, &a.MaxAttempts,
		&created, &expires, &rid, &redeemed, &confirmBy, &confirmed, &a.Package, &a.PackageSHA256, &a.PackageSize, &a.Manifest)
	if err != nil {
		return Activation{}, wrapDB(err)
	}
	a.CreatedAt, a.ExpiresAt = fromTS(created), fromTS(expires)
	a.RedemptionID = rid.String
	a.RedeemedAt, a.ConfirmBy, a.ConfirmedAt = fromNullTS(redeemed), fromNullTS(confirmBy), fromNullTS(confirmed)
	return a, nil
}

func (s *DB) ActivationByID(ctx context.Context, id string) (Activation, error) {
	return scanAct(s.w.QueryRowContext(ctx, `SELECT `+actColumns+` FROM activations WHERE id = $1`, id))
}

func (s *DB) ActivationOfSet(ctx context.Context, setID string) (Activation, error) {
	// Everything but the (large) package.
	cols := strings.Replace(actColumns, "package,", "NULL,", 1)
	return scanAct(s.r.QueryRowContext(ctx, `SELECT `+cols+` FROM activations WHERE credential_set_id = $1 ORDER BY created_at DESC, id LIMIT 1`, setID))
}

func (s *DB) ActivationByRedemption(ctx context.Context, rid string) (Activation, error) {
	return scanAct(s.w.QueryRowContext(ctx, `SELECT `+actColumns+` FROM activations WHERE redemption_id = $1`, rid))
}

func (s *DB) RecordFailedAttempt(ctx context.Context, id string) (int, string, error) {
	var n int
	var state, setID string
	err := s.tx(ctx, func(tx *stx) error {
		// Counted while pending and while redeeming (a resume needs the
		// password too): a photo of the QR code gives no unlimited guesses.
		err := tx.QueryRowContext(ctx, `UPDATE activations SET failed_attempts = failed_attempts + 1,
			state = CASE WHEN failed_attempts + 1 >= max_attempts THEN 'locked' ELSE state END
			WHERE id = $1 AND state IN ('pending', 'redeeming') RETURNING failed_attempts, state, credential_set_id`, id).Scan(&n, &state, &setID)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrAlreadyUsed
		}
		if err != nil {
			return wrapDB(err)
		}
		if state != ActLocked {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE activations SET package = NULL WHERE id = $1`, id); err != nil {
			return wrapDB(err)
		}
		_, err = tx.ExecContext(ctx, `UPDATE credential_sets SET state = 'abandoned' WHERE id = $1 AND state IN ('pending', 'redeeming')`, setID)
		return wrapDB(err)
	})
	if err != nil {
		return 0, "", err
	}
	return n, state, nil
}

func (s *DB) ReserveAttempt(ctx context.Context, id string) (Activation, error) {
	// One conditional UPDATE: of any number of concurrent guesses, on any
	// number of replicas, at most max_attempts get a reservation.
	a, err := scanAct(s.w.QueryRowContext(ctx, `UPDATE activations SET failed_attempts = failed_attempts + 1
		WHERE id = $1 AND state IN ('pending', 'redeeming') AND failed_attempts < max_attempts RETURNING `+actColumns, id))
	if !errors.Is(err, ErrNotFound) {
		return a, err
	}
	var state string
	var n, max int
	err = s.w.QueryRowContext(ctx, `SELECT state, failed_attempts, max_attempts FROM activations WHERE id = $1`, id).Scan(&state, &n, &max)
	switch {
	case err != nil:
		return Activation{}, wrapDB(err)
	case state == ActLocked:
		return Activation{}, ErrLocked
	case state == ActPending || state == ActRedeeming:
		// Every attempt counted (n >= max), or a right password gave its
		// attempt back between the UPDATE and this SELECT (n < max): in
		// both cases the caller tries again, it is not "used".
		return Activation{}, ErrBusy
	}
	return Activation{}, ErrAlreadyUsed
}

func (s *DB) ReturnAttempt(ctx context.Context, id string) (Activation, error) {
	a, err := scanAct(s.w.QueryRowContext(ctx, `UPDATE activations SET failed_attempts = failed_attempts - 1
		WHERE id = $1 AND state IN ('pending', 'redeeming') AND failed_attempts > 0 RETURNING `+actColumns, id))
	if errors.Is(err, ErrNotFound) {
		return a, ErrAlreadyUsed
	}
	return a, err
}

func (s *DB) LockIfSpent(ctx context.Context, id string) (locked, redeeming bool, err error) {
	err = s.tx(ctx, func(tx *stx) error {
		var setID string
		var rid sql.NullString
		err := tx.QueryRowContext(ctx, `UPDATE activations SET state = 'locked', package = NULL
			WHERE id = $1 AND state IN ('pending', 'redeeming') AND failed_attempts >= max_attempts
			RETURNING credential_set_id, redemption_id`, id).Scan(&setID, &rid)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return wrapDB(err)
		}
		// A redemption id is set from BeginRedemption until AbortRedemption.
		locked, redeeming = true, rid.Valid
		_, err = tx.ExecContext(ctx, `UPDATE credential_sets SET state = 'abandoned' WHERE id = $1 AND state IN ('pending', 'redeeming')`, setID)
		return wrapDB(err)
	})
	if err != nil {
		return false, false, err
	}
	return locked, redeeming, nil
}

func (s *DB) BeginRedemption(ctx context.Context, id, rid string, now time.Time, lease Lease) error {
	return s.tx(ctx, func(tx *stx) error {
		res, err := tx.ExecContext(ctx, `UPDATE activations SET state = 'redeeming', redemption_id = $1, redeemed_at = $2,
			claim_holder = $3, lease_until = $4
			WHERE id = $5 AND state = 'pending' AND expires_at > $6
			AND credential_set_id IN (SELECT id FROM credential_sets WHERE state = 'pending')`,
			rid, ts(now), nullString(lease.Holder), nullTS(lease.Until), id, ts(now))
		if err != nil {
			return wrapDB(err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrAlreadyUsed
		}
		_, err = tx.ExecContext(ctx, `UPDATE credential_sets SET state = 'redeeming', updated_at = $1
			WHERE id = (SELECT credential_set_id FROM activations WHERE id = $2) AND state = 'pending'`, ts(now), id)
		return wrapDB(err)
	})
}

func (s *DB) RenewLeases(ctx context.Context, holder string, ids []string, until time.Time) (int64, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	// One statement whatever the number of ids (the statement cache keeps
	// one per text): the ids go as one parameter, an array.
	in, list := `redemption_id IN (SELECT value FROM json_each($3))`, any(nil)
	if s.dialect == "postgres" {
		in, list = `redemption_id = ANY($3)`, ids
	} else {
		b, err := json.Marshal(ids)
		if err != nil {
			return 0, err
		}
		list = string(b)
	}
	res, err := s.w.ExecContext(ctx, `UPDATE activations SET lease_until = $1
		WHERE claim_holder = $2 AND `+in+` AND state = 'redeeming' AND package IS NULL`, ts(until), holder, list)
	if err != nil {
		return 0, wrapDB(err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// legacyLease is how long a claim made before leases existed is held.
const legacyLease = 5 * time.Minute

func (s *DB) LapsedRedemptions(ctx context.Context, now time.Time, all bool) ([]Redemption, error) {
	q := `SELECT id, redemption_id, credential_set_id FROM activations WHERE state = 'redeeming' AND package IS NULL`
	args := []any{}
	if !all {
		q += ` AND COALESCE(lease_until, redeemed_at + $1) < $2`
		args = append(args, legacyLease.Microseconds(), ts(now))
	}
	rows, err := s.w.QueryContext(ctx, q+` ORDER BY redeemed_at LIMIT 1000`, args...)
	if err != nil {
		return nil, wrapDB(err)
	}
	defer rows.Close()
	var out []Redemption
	for rows.Next() {
		var r Redemption
		if err := rows.Scan(&r.ActivationID, &r.RedemptionID, &r.CredentialSetID); err != nil {
			return nil, wrapDB(err)
		}
		out = append(out, r)
	}
	return out, wrapDB(rows.Err())
}

func (s *DB) ReleaseRedemption(ctx context.Context, r Redemption, escrowKeyID string, lapsedBy time.Time) (bool, error) {
	released := false
	err := s.tx(ctx, func(tx *stx) error {
		q := `UPDATE activations SET state = 'pending', redemption_id = NULL, redeemed_at = NULL, claim_holder = NULL, lease_until = NULL
			WHERE id = $1 AND redemption_id = $2 AND state = 'redeeming' AND package IS NULL`
		args := []any{r.ActivationID, r.RedemptionID}
		if !lapsedBy.IsZero() {
			q += ` AND COALESCE(lease_until, redeemed_at + $3) < $4`
			args = append(args, legacyLease.Microseconds(), ts(lapsedBy))
		}
		res, err := tx.ExecContext(ctx, q, args...)
		if err != nil {
			return wrapDB(err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return nil // released by another replica, or renewed, or done
		}
		released = true
		if escrowKeyID != "" {
			_, err = tx.ExecContext(ctx, `UPDATE credential_sets SET state = 'pending', escrow_key_id = $1 WHERE id = $2 AND state = 'redeeming'`,
				escrowKeyID, r.CredentialSetID)
		} else {
			_, err = tx.ExecContext(ctx, `UPDATE credential_sets SET state = 'pending' WHERE id = $1 AND state = 'redeeming'`, r.CredentialSetID)
		}
		return wrapDB(err)
	})
	return released, err
}

func (s *DB) LapseClaim(ctx context.Context, r Redemption, at time.Time) error {
	return s.updateOne(ctx, `UPDATE activations SET claim_holder = NULL, lease_until = $1
		WHERE id = $2 AND redemption_id = $3 AND state = 'redeeming' AND package IS NULL`, ts(at), r.ActivationID, r.RedemptionID)
}

func (s *DB) AbortRedemption(ctx context.Context, id, rid string) error {
	return s.tx(ctx, func(tx *stx) error {
		res, err := tx.ExecContext(ctx, `UPDATE activations SET state = 'pending', redemption_id = NULL, redeemed_at = NULL,
			claim_holder = NULL, lease_until = NULL
			WHERE id = $1 AND redemption_id = $2 AND state = 'redeeming' AND package IS NULL`, id, rid)
		if err != nil {
			return wrapDB(err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrNotFound
		}
		_, err = tx.ExecContext(ctx, `UPDATE credential_sets SET state = 'pending' WHERE id = (SELECT credential_set_id FROM activations WHERE id = $1) AND state = 'redeeming'`, id)
		return wrapDB(err)
	})
}

func (s *DB) StorePackage(ctx context.Context, id, rid string, sealed []byte, sha string, size int64, manifest []byte, confirmBy time.Time) error {
	return s.updateOne(ctx, `UPDATE activations SET package = $1, package_sha256 = $2, package_size = $3, manifest = $4, confirm_by = $5
		WHERE id = $6 AND redemption_id = $7 AND state = 'redeeming' AND package IS NULL`, sealed, sha, size, manifest, ts(confirmBy), id, rid)
}

func (s *DB) Confirm(ctx context.Context, rid string, now time.Time) error {
	return s.tx(ctx, func(tx *stx) error {
		res, err := tx.ExecContext(ctx, `UPDATE activations SET state = 'completed', confirmed_at = $1, package = NULL
			WHERE redemption_id = $2 AND state = 'redeeming' AND package IS NOT NULL AND confirm_by > $3`, ts(now), rid, ts(now))
		if err != nil {
			return wrapDB(err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrAlreadyUsed
		}
		// A renewal confirmed ends the set it renews in the same
		// transaction: the device holds the new one. Its certificates are
		// revoked by the caller (superseded), or by the sweep (a set
		// revoked with live certificates) if the caller cannot. The old
		// set goes first: a second renewal's CreateEnrollment locks it,
		// then inserts beside this renewal (its one-renewal index), so
		// this order makes that insert fail at once instead of a
		// deadlock.
		if _, err = tx.ExecContext(ctx, `UPDATE credential_sets SET state = 'revoked', updated_at = $1
			WHERE id = (SELECT cs.renews_set_id FROM credential_sets cs JOIN activations a ON a.credential_set_id = cs.id
				WHERE a.redemption_id = $2) AND state = 'active'`, ts(now), rid); err != nil {
			return wrapDB(err)
		}
		_, err = tx.ExecContext(ctx, `UPDATE credential_sets SET state = 'active', updated_at = $1
			WHERE id = (SELECT credential_set_id FROM activations WHERE redemption_id = $2) AND state = 'redeeming'`, ts(now), rid)
		return wrapDB(err)
	})
}

func (s *DB) ExpirePending(ctx context.Context, now time.Time) (int64, error) {
	var ids []string
	err := s.tx(ctx, func(tx *stx) error {
		// Activations first, then sets: the lock order of BeginRedemption.
		rows, err := tx.QueryContext(ctx, `UPDATE activations SET state = 'expired' WHERE state = 'pending' AND expires_at <= $1
			RETURNING credential_set_id`, ts(now))
		if err != nil {
			return wrapDB(err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return wrapDB(err)
			}
			ids = append(ids, id)
		}
		rows.Close()
		for _, id := range ids {
			if _, err := tx.ExecContext(ctx, `UPDATE credential_sets SET state = 'abandoned', updated_at = $1 WHERE id = $2 AND state = 'pending'`, ts(now), id); err != nil {
				return wrapDB(err)
			}
		}
		return nil
	})
	return int64(len(ids)), err
}

func (s *DB) ClaimUnconfirmed(ctx context.Context, now time.Time) ([]string, error) {
	var ids []string
	err := s.tx(ctx, func(tx *stx) error {
		rows, err := tx.QueryContext(ctx, `UPDATE activations SET state = 'expired', package = NULL
			WHERE state = 'redeeming' AND confirm_by IS NOT NULL AND confirm_by <= $1 RETURNING credential_set_id`, ts(now))
		if err != nil {
			return wrapDB(err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return wrapDB(err)
			}
			ids = append(ids, id)
		}
		rows.Close()
		for _, id := range ids {
			if _, err := tx.ExecContext(ctx, `UPDATE credential_sets SET state = 'revoked', updated_at = $1 WHERE id = $2`, ts(now), id); err != nil {
				return wrapDB(err)
			}
		}
		return nil
	})
	return ids, err
}

func (s *DB) SetCredentialSetState(ctx context.Context, id, state string, now time.Time) error {
	return s.updateOne(ctx, `UPDATE credential_sets SET state = $1, updated_at = $2 WHERE id = $3`, state, ts(now), id)
}

func (s *DB) CertificatesOfSet(ctx context.Context, setID string) ([]CertificateRecord, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+certColumns+` FROM certificates WHERE credential_set_id = $1 AND status <> 'lint_failed' ORDER BY created_at`, setID)
	if err != nil {
		return nil, wrapDB(err)
	}
	defer rows.Close()
	var out []CertificateRecord
	for rows.Next() {
		c, err := scanCert(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, wrapDB(rows.Err())
}

func (s *DB) ActivationCensus(ctx context.Context) (map[string]int, int, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT state, COUNT(*) FROM activations GROUP BY state`)
	if err != nil {
		return nil, 0, wrapDB(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, 0, wrapDB(err)
		}
		out[st] = n
	}
	var stuck int
	err = s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM activations WHERE state = 'redeeming' AND package IS NULL`).Scan(&stuck)
	return out, stuck, wrapDB(err)
}

func (s *DB) RevokeCredentialSet(ctx context.Context, id string, now time.Time) ([]string, error) {
	// A renewal not confirmed yet goes with its set; a confirmed one
	// (active) is the device's credential now and stays.
	const unconfirmedRenewals = liveRenewalsOf + ` AND state <> 'active'`
	var unconfirmed []string
	err := s.tx(ctx, func(tx *stx) error {
		unconfirmed = unconfirmed[:0]
		// The activations go first (the lock order of BeginRedemption and
		// Confirm): a revoked enrollment cannot be redeemed, nor its
		// renewal resumed or confirmed. package_sha256 stays: it tells,
		// in the same statement (no package stored in between is
		// missed), which held a package.
		for _, q := range []string{
			`UPDATE activations SET state = 'expired', package = NULL
			WHERE credential_set_id = $1 AND state IN ('pending', 'redeeming') RETURNING credential_set_id, package_sha256`,
			`UPDATE activations SET state = 'expired', package = NULL
			WHERE credential_set_id IN (SELECT id FROM credential_sets WHERE ` + unconfirmedRenewals + `) AND state IN ('pending', 'redeeming')
			RETURNING credential_set_id, package_sha256`,
		} {
			rows, err := tx.QueryContext(ctx, q, id)
			if err != nil {
				return wrapDB(err)
			}
			for rows.Next() {
				var set, sum string
				if err := rows.Scan(&set, &sum); err != nil {
					rows.Close()
					return wrapDB(err)
				}
				if sum != "" {
					unconfirmed = append(unconfirmed, set)
				}
			}
			if err := rows.Close(); err != nil {
				return wrapDB(err)
			}
			if err := rows.Err(); err != nil {
				return wrapDB(err)
			}
		}
		res, err := tx.ExecContext(ctx, `UPDATE credential_sets SET state = 'revoked', updated_at = $1 WHERE id = $2`, ts(now), id)
		if err != nil {
			return wrapDB(err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrNotFound
		}
		_, err = tx.ExecContext(ctx, `UPDATE credential_sets SET state = 'revoked', updated_at = $2 WHERE `+unconfirmedRenewals, id, ts(now))
		return wrapDB(err)
	})
	if err != nil {
		return nil, err
	}
	return unconfirmed, nil
}

// liveRenewalsOf selects the live renewals of the set $1 with the terms
// of the partial index credential_sets_one_renewal, word for word, so
// that SQLite uses it too.
const liveRenewalsOf = `renews_set_id = $1 AND renews_set_id <> '' AND state IN ('pending', 'redeeming', 'active')`

func (s *DB) ForgetCode(ctx context.Context, id string) error {
	// 'ended:' and an id is no SHA-256 hex, so it matches no secret and
	// stays unique.
	_, err := s.w.ExecContext(ctx, `UPDATE activations SET lookup_hash = 'ended:' || id WHERE id = $1 AND state = 'expired'`, id)
	return wrapDB(err)
}

func (s *DB) LiveRenewals(ctx context.Context, setID string) ([]CredentialSet, error) {
	return s.querySets(ctx, `SELECT `+setColumns+` FROM credential_sets WHERE `+liveRenewalsOf+` ORDER BY created_at, id`, setID)
}

func (s *DB) SetEscrowKey(ctx context.Context, setID, keyID string) error {
	return s.updateOne(ctx, `UPDATE credential_sets SET escrow_key_id = $1 WHERE id = $2`, keyID, setID)
}

func (s *DB) SetDevice(ctx context.Context, setID, device, attestation string) error {
	return s.updateOne(ctx, `UPDATE credential_sets SET device = $1, attestation = $2 WHERE id = $3`, device, attestation, setID)
}

func (s *DB) RevokedSetsWithLiveCertificates(ctx context.Context, limit int) ([]string, error) {
	return s.setsWithLiveCertificates(ctx, `SELECT DISTINCT cs.id FROM credential_sets cs JOIN certificates c ON c.credential_set_id = cs.id
		WHERE cs.state IN ('revoked', 'abandoned') AND c.revoked_at IS NULL AND c.status <> 'lint_failed' ORDER BY cs.id LIMIT $1`, limit)
}

func (s *DB) PendingSetsWithLiveCertificates(ctx context.Context, before time.Time, limit int) ([]string, error) {
	return s.setsWithLiveCertificates(ctx, `SELECT DISTINCT cs.id FROM credential_sets cs JOIN certificates c ON c.credential_set_id = cs.id
		WHERE cs.state = 'pending' AND c.revoked_at IS NULL AND c.status <> 'lint_failed' AND c.created_at < $1 ORDER BY cs.id LIMIT $2`,
		ts(before), limit)
}

func (s *DB) setsWithLiveCertificates(ctx context.Context, q string, args ...any) ([]string, error) {
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, wrapDB(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, wrapDB(err)
		}
		out = append(out, id)
	}
	return out, wrapDB(rows.Err())
}
