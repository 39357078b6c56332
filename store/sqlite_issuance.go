package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

func nullTS(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return ts(t)
}

func nullString(v string) any {
	if v == "" {
		return nil
	}
	return v
}

func fromNullTS(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return fromTS(v.Int64)
}

// CreateIssuanceIntent and RecordIssued are group writes (groupCommit):
// two per certificate, on the path of every issuance.
func (s *DB) CreateIssuanceIntent(ctx context.Context, c CertificateRecord) error {
	return s.grouped(ctx, func(ctx context.Context, tx execer) error {
		_, err := tx.ExecContext(ctx,
			`INSERT INTO certificates (serial, issuer, profile, status, spki_sha256, piv_cert_sha256, fascn, card_uuid, person_id,
		  credential_set_id, not_before, not_after, created_at) VALUES ($1, $2, $3, 'intent', $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
			c.Serial, c.Issuer, c.Profile, c.SPKISHA256, c.PIVCertSHA256, c.FASCN, c.CardUUID, c.PersonID, c.CredentialSetID,
			ts(c.NotBefore), ts(c.NotAfter), ts(c.CreatedAt))
		return wrapDB(err)
	})
}

func (s *DB) KeyCertified(ctx context.Context, spki string) (bool, error) {
	var one int
	err := s.r.QueryRowContext(ctx, `SELECT 1 FROM certificates WHERE spki_sha256 = $1 AND status <> 'lint_failed' LIMIT 1`, spki).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, wrapDB(err)
}

func (s *DB) MarkLintFailed(ctx context.Context, serial, findings string) error {
	return s.updateOne(ctx, `UPDATE certificates SET status = 'lint_failed', lint_warnings = $1 WHERE serial = $2 AND status = 'intent'`, findings, serial)
}

// RecordIssued keeps the certificate of an intent. An intent revoked
// meanwhile (RevokeStaleIntents: a signing so slow the sweep took it for
// a crash) is recorded all the same, revoked, and ErrRevokedMeanwhile
// says it must not be delivered.
func (s *DB) RecordIssued(ctx context.Context, serial string, der []byte, sha256, warnings string, at time.Time) error {
	var revoked bool
	err := s.grouped(ctx, func(ctx context.Context, tx execer) error {
		var revokedAt sql.NullInt64
		err := tx.QueryRowContext(ctx, `UPDATE certificates SET status = 'issued', der = $1, sha256 = $2, lint_warnings = $3, issued_at = $4
			WHERE serial = $5 AND status = 'intent' RETURNING revoked_at`, der, sha256, warnings, ts(at), serial).Scan(&revokedAt)
		revoked = revokedAt.Valid
		return wrapDB(err)
	})
	if err == nil && revoked {
		return fmt.Errorf("%w: %s", ErrRevokedMeanwhile, serial)
	}
	return err
}

// updateOne runs a conditional UPDATE that must change exactly one row.
func (s *DB) updateOne(ctx context.Context, q string, args ...any) error {
	return oneRow(s.w.ExecContext(ctx, q, args...))
}

// oneRow is the outcome of an UPDATE that must change exactly one row.
func oneRow(res sql.Result, err error) error {
	if err != nil {
		return wrapDB(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return ErrNotFound
	}
	return nil
}

const certColumns = `serial, issuer, profile, status, spki_sha256, piv_cert_sha256, fascn, card_uuid, person_id, credential_set_id,
	not_before, not_after, der, sha256, lint_warnings, created_at, issued_at, revoked_at, revocation_reason`

func scanCert(row interface{ Scan(...any) error }) (CertificateRecord, error) {
	var c CertificateRecord
	var nb, na, created int64
	var issued, revoked sql.NullInt64
	err := row.Scan(&c.Serial, &c.Issuer, &c.Profile, &c.Status, &c.SPKISHA256, &c.PIVCertSHA256, &c.FASCN, &c.CardUUID,
		&c.PersonID, &c.CredentialSetID, &nb, &na, &c.DER, &c.SHA256, &c.LintWarnings, &created, &issued, &revoked, &c.RevocationReason)
	if err != nil {
		return CertificateRecord{}, wrapDB(err)
	}
	c.NotBefore, c.NotAfter, c.CreatedAt = fromTS(nb), fromTS(na), fromTS(created)
	c.IssuedAt, c.RevokedAt = fromNullTS(issued), fromNullTS(revoked)
	return c, nil
}

func (s *DB) Certificate(ctx context.Context, serial string) (CertificateRecord, error) {
	return scanCert(s.r.QueryRowContext(ctx, `SELECT `+certColumns+` FROM certificates WHERE serial = $1`, serial))
}

func (s *DB) RevokeCertificate(ctx context.Context, serial string, reason int, at time.Time) (CertificateRecord, error) {
	// The issuer's CRL is marked stale in the same transaction: a
	// revocation stored without it would reach OCSP and not the CRL,
	// and a retry finds it revoked already.
	var c CertificateRecord
	err := s.tx(ctx, func(tx *stx) error {
		var err error
		c, err = scanCert(tx.QueryRowContext(ctx, `UPDATE certificates SET revoked_at = $1, revocation_reason = $2
			WHERE serial = $3 AND revoked_at IS NULL AND status IN ('intent', 'issued') RETURNING `+certColumns, ts(at), reason, serial))
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, markCRLStale, c.Issuer)
		return wrapDB(err)
	})
	if !errors.Is(err, ErrNotFound) {
		return c, err
	}
	c, err = scanCert(s.w.QueryRowContext(ctx, `SELECT `+certColumns+` FROM certificates WHERE serial = $1`, serial))
	if err != nil {
		return CertificateRecord{}, err
	}
	if c.Status == CertLintFailed {
		return c, ErrNotFound // never signed: nothing to revoke
	}
	return c, ErrAlreadyUsed
}

func (s *DB) RevokedCertificates(ctx context.Context, issuer string, expiredBefore time.Time) ([]RevokedEntry, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT serial, revoked_at, revocation_reason FROM certificates
		WHERE issuer = $1 AND revoked_at IS NOT NULL AND (not_after >= $2 OR revoked_at >= $2) ORDER BY revoked_at`, issuer, ts(expiredBefore))
	if err != nil {
		return nil, wrapDB(err)
	}
	defer rows.Close()
	var out []RevokedEntry
	for rows.Next() {
		var e RevokedEntry
		var at int64
		if err := rows.Scan(&e.Serial, &at, &e.Reason); err != nil {
			return nil, wrapDB(err)
		}
		e.RevokedAt = fromTS(at)
		out = append(out, e)
	}
	return out, wrapDB(rows.Err())
}

func (s *DB) LiveIssuers(ctx context.Context, now time.Time) ([]LiveIssuer, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT issuer, COUNT(*) FROM certificates WHERE status = 'issued' AND not_after > $1 GROUP BY issuer ORDER BY issuer`, ts(now))
	if err != nil {
		return nil, wrapDB(err)
	}
	var out []LiveIssuer
	for rows.Next() {
		var l LiveIssuer
		if err := rows.Scan(&l.Name, &l.Count); err != nil {
			rows.Close()
			return nil, wrapDB(err)
		}
		out = append(out, l)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, wrapDB(err)
	}
	for i := range out {
		for _, q := range []struct {
			order string
			der   *[]byte
		}{{"ASC", &out[i].Oldest}, {"DESC", &out[i].Newest}} {
			if err := s.r.QueryRowContext(ctx, `SELECT der FROM certificates WHERE issuer = $1 AND status = 'issued' AND not_after > $2
				ORDER BY created_at `+q.order+`, serial `+q.order+` LIMIT 1`, out[i].Name, ts(now)).Scan(q.der); err != nil {
				return nil, wrapDB(err)
			}
		}
	}
	return out, nil
}

func (s *DB) NextCRLNumber(ctx context.Context, issuer string, atLeast int64) (int64, error) {
	var n int64
	err := s.w.QueryRowContext(ctx, `INSERT INTO crl_numbers (issuer, number) VALUES ($1, CASE WHEN CAST($2 AS BIGINT) > 1 THEN CAST($2 AS BIGINT) ELSE 1 END)
		ON CONFLICT (issuer) DO UPDATE SET number = CASE WHEN crl_numbers.number + 1 > CAST($2 AS BIGINT)
			THEN crl_numbers.number + 1 ELSE CAST($2 AS BIGINT) END
		RETURNING number`, issuer, atLeast).Scan(&n)
	return n, wrapDB(err)
}

func (s *DB) PutEscrowKey(ctx context.Context, k EscrowKey) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO escrow_keys (id, person_id, key_type, spki_sha256, kek_id, sealed, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, k.ID, k.PersonID, k.KeyType, k.SPKISHA256, k.KEKID, k.Sealed, ts(k.CreatedAt))
	return wrapDB(err)
}

func (s *DB) LinkEscrowKey(ctx context.Context, id, serial string, retainUntil time.Time) error {
	return s.updateOne(ctx, `UPDATE escrow_keys SET cert_serial = $1, retain_until = $2 WHERE id = $3`, serial, ts(retainUntil), id)
}

func (s *DB) EscrowKeys(ctx context.Context, personID string) ([]EscrowKey, error) {
	// Delivered: the key is its certificate's set's escrowed key (not one
	// a failed issuance certified before the set was given a new key for
	// the retry) and the set has an activation a device confirmed
	// (confirmed_at stays when the set is revoked later).
	rows, err := s.r.QueryContext(ctx, `SELECT e.id, e.person_id, e.key_type, e.spki_sha256, e.kek_id, e.sealed, e.cert_serial, e.created_at, e.retain_until, e.retired_at, c.der, CASE WHEN c.revoked_at IS NULL THEN -1 ELSE c.revocation_reason END,
		EXISTS (SELECT 1 FROM activations a JOIN credential_sets cs ON cs.id = a.credential_set_id
			WHERE a.credential_set_id = c.credential_set_id AND a.confirmed_at IS NOT NULL AND cs.escrow_key_id = e.id)
		FROM escrow_keys e LEFT JOIN certificates c ON c.serial = e.cert_serial AND e.cert_serial <> ''
		WHERE `+s.fold("e.person_id")+` = `+s.fold("$1")+` ORDER BY e.created_at DESC, e.id DESC`, personID)
	if err != nil {
		return nil, wrapDB(err)
	}
	defer rows.Close()
	var out []EscrowKey
	for rows.Next() {
		var k EscrowKey
		var created int64
		var retain, retired sql.NullInt64
		var reason sql.NullInt64 // NULL without a certificate row
		if err := rows.Scan(&k.ID, &k.PersonID, &k.KeyType, &k.SPKISHA256, &k.KEKID, &k.Sealed, &k.CertSerial, &created, &retain, &retired, &k.CertDER, &reason, &k.Delivered); err != nil {
			return nil, wrapDB(err)
		}
		k.CreatedAt, k.RetainUntil, k.RetiredAt = fromTS(created), fromNullTS(retain), fromNullTS(retired)
		k.CertRevocationReason = -1
		if reason.Valid {
			k.CertRevocationReason = int(reason.Int64)
		}
		out = append(out, k)
	}
	return out, wrapDB(rows.Err())
}

func (s *DB) RetireEscrowKeys(ctx context.Context, personID string, at time.Time) (int, error) {
	res, err := s.w.ExecContext(ctx, `UPDATE escrow_keys SET retired_at = $2
		WHERE `+s.fold("person_id")+` = `+s.fold("$1")+` AND retired_at IS NULL AND created_at <= $2`, personID, ts(at))
	if err != nil {
		return 0, wrapDB(err)
	}
	n, err := res.RowsAffected()
	return int(n), wrapDB(err)
}

func (s *DB) ResealEscrowKey(ctx context.Context, id string, old, sealed []byte) (bool, error) {
	res, err := s.w.ExecContext(ctx, `UPDATE escrow_keys SET sealed = $1 WHERE id = $2 AND sealed = $3`, sealed, id, old)
	if err != nil {
		return false, wrapDB(err)
	}
	n, err := res.RowsAffected()
	return n == 1, wrapDB(err)
}

func (s *DB) PersonIDSpellings(ctx context.Context, personID string) ([]string, error) {
	f := s.fold("$1")
	rows, err := s.r.QueryContext(ctx, `SELECT DISTINCT v FROM (
		SELECT email AS v FROM credential_sets WHERE `+s.fold("person_id")+` = `+f+`
		UNION SELECT upn FROM credential_sets WHERE `+s.fold("person_id")+` = `+f+`
		UNION SELECT person_id FROM audit_events WHERE `+s.fold("person_id")+` = `+f+`
	) spellings WHERE `+s.fold("v")+` = `+f+` AND v <> $1 ORDER BY v LIMIT 16`, personID)
	if err != nil {
		return nil, wrapDB(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, wrapDB(err)
		}
		out = append(out, v)
	}
	return out, wrapDB(rows.Err())
}

func (s *DB) EscrowKey(ctx context.Context, id, personID string) (EscrowKey, error) {
	var k EscrowKey
	var created int64
	var retain sql.NullInt64
	err := s.r.QueryRowContext(ctx, `SELECT id, person_id, key_type, spki_sha256, kek_id, sealed, cert_serial, created_at, retain_until
		FROM escrow_keys WHERE id = $1 AND `+s.fold("person_id")+` = `+s.fold("$2"), id, personID).Scan(
		&k.ID, &k.PersonID, &k.KeyType, &k.SPKISHA256, &k.KEKID, &k.Sealed, &k.CertSerial, &created, &retain)
	if err != nil {
		return EscrowKey{}, wrapDB(err)
	}
	k.CreatedAt, k.RetainUntil = fromTS(created), fromNullTS(retain)
	return k, nil
}

func (s *DB) DeleteUncertifiedEscrowKeys(ctx context.Context, olderThan time.Time) (int, error) {
	res, err := s.w.ExecContext(ctx, `DELETE FROM escrow_keys WHERE cert_serial = '' AND created_at < $1
		AND NOT EXISTS (SELECT 1 FROM credential_sets cs WHERE cs.escrow_key_id = escrow_keys.id AND cs.state IN ('pending', 'redeeming'))
		AND NOT EXISTS (SELECT 1 FROM certificates c WHERE c.spki_sha256 = escrow_keys.spki_sha256 AND c.status <> 'lint_failed')`, ts(olderThan))
	if err != nil {
		return 0, wrapDB(err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

func (s *DB) PurgeEscrowKeys(ctx context.Context, now time.Time) (int, error) {
	res, err := s.w.ExecContext(ctx, `DELETE FROM escrow_keys WHERE retain_until IS NOT NULL AND retain_until <= $1`, ts(now))
	if err != nil {
		return 0, wrapDB(err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

func (s *DB) RevokeStaleIntents(ctx context.Context, issuer string, olderThan, now time.Time) (int, error) {
	var n int64
	err := s.tx(ctx, func(tx *stx) error {
		res, err := tx.ExecContext(ctx, `UPDATE certificates SET revoked_at = $1, revocation_reason = 0
			WHERE issuer = $2 AND status = 'intent' AND revoked_at IS NULL AND created_at < $3`, ts(now), issuer, ts(olderThan))
		if err != nil {
			return wrapDB(err)
		}
		if n, _ = res.RowsAffected(); n == 0 {
			return nil
		}
		// The CRL is made stale with the revocations, as by
		// RevokeCertificate.
		_, err = tx.ExecContext(ctx, markCRLStale, issuer)
		return wrapDB(err)
	})
	return int(n), err
}

func (s *DB) GatewaySecret(ctx context.Context, name string, sealed []byte, now time.Time) ([]byte, time.Time, error) {
	if _, err := s.w.ExecContext(ctx, `INSERT INTO gateway_secrets (name, sealed, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING`,
		name, sealed, ts(now)); err != nil {
		return nil, time.Time{}, wrapDB(err)
	}
	var stored []byte
	var created int64
	err := s.w.QueryRowContext(ctx, `SELECT sealed, created_at FROM gateway_secrets WHERE name = $1`, name).Scan(&stored, &created)
	return stored, fromTS(created), wrapDB(err)
}
