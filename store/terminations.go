package store

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// ErrNoSelector means an IdentitySelector has no field set, or more than one.
var ErrNoSelector = errors.New("store: give exactly one of FASC-N, card UUID or person id")

// key is the selector's (kind, value) and its credential_sets column.
func (sel IdentitySelector) key() (kind, value, column string, arg any, err error) {
	n := 0
	if len(sel.FASCN) > 0 {
		n++
		kind, value, column, arg = "fascn", hex.EncodeToString(sel.FASCN), "fascn", sel.FASCN
	}
	if sel.CardUUID != "" {
		n++
		kind, value, column, arg = "card_uuid", sel.CardUUID, "card_uuid", sel.CardUUID
	}
	if sel.PersonID != "" {
		n++
		kind, value, column, arg = "person_id", sel.PersonID, "person_id", sel.PersonID
	}
	if sel.CertSHA256 != "" {
		n++
		kind, value, column, arg = "piv_cert_sha256", sel.CertSHA256, "piv_cert_sha256", sel.CertSHA256
	}
	if n != 1 {
		return "", "", "", nil, ErrNoSelector
	}
	return kind, value, column, arg, nil
}

// String names the selector for logs: "fascn:…", "card_uuid:…" or
// "person_id:…".
func (sel IdentitySelector) String() string {
	kind, value, _, _, err := sel.key()
	if err != nil {
		return "invalid"
	}
	return kind + ":" + value
}

func (s *DB) Terminate(ctx context.Context, t Termination) error {
	kind, value, _, _, err := t.Selector.key()
	if err != nil {
		return err
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO terminations (kind, value, terminated_at, comment) VALUES ($1, $2, $3, $4)
		ON CONFLICT (kind, value) DO NOTHING`, kind, value, ts(t.TerminatedAt), t.Comment)
	return wrapDB(err)
}

func (s *DB) Terminated(ctx context.Context, fascn []byte, cardUUID, personID string) (bool, error) {
	var n int
	err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM terminations WHERE
		(kind = 'fascn' AND value = $1) OR (kind = 'card_uuid' AND value = $2 AND $2 <> '') OR
		(kind = 'person_id' AND `+s.fold("value")+` = `+s.fold("$3")+` AND $3 <> '')`,
		hex.EncodeToString(fascn), cardUUID, personID).Scan(&n)
	if err != nil {
		return false, wrapDB(err)
	}
	return n > 0, nil
}

func (s *DB) RememberDelivery(ctx context.Context, signature string, expires time.Time) (bool, error) {
	res, err := s.w.ExecContext(ctx, `INSERT INTO webhook_deliveries (signature, expires_at) VALUES ($1, $2)
		ON CONFLICT (signature) DO NOTHING`, signature, ts(expires))
	if err != nil {
		return false, wrapDB(err)
	}
	n, err := res.RowsAffected()
	return n == 1, wrapDB(err)
}

func (s *DB) ForgetDelivery(ctx context.Context, signature string) error {
	_, err := s.w.ExecContext(ctx, `DELETE FROM webhook_deliveries WHERE signature = $1`, signature)
	return wrapDB(err)
}

func (s *DB) FinishTermination(ctx context.Context, sel IdentitySelector, at time.Time) error {
	kind, value, _, _, err := sel.key()
	if err != nil {
		return err
	}
	match := `value = $2`
	if kind == "person_id" {
		match = s.fold("value") + ` = ` + s.fold("$2")
	}
	_, err = s.w.ExecContext(ctx, `UPDATE terminations SET finished_at = $3 WHERE kind = $1 AND `+match+` AND finished_at IS NULL`,
		kind, value, ts(at))
	return wrapDB(err)
}

func (s *DB) TerminatedAt(ctx context.Context, sel IdentitySelector) (time.Time, error) {
	kind, value, _, _, err := sel.key()
	if err != nil {
		return time.Time{}, err
	}
	match := `value = $2`
	if kind == "person_id" {
		match = s.fold("value") + ` = ` + s.fold("$2")
	}
	var at sql.NullInt64
	err = s.r.QueryRowContext(ctx, `SELECT MIN(terminated_at) FROM terminations WHERE kind = $1 AND `+match, kind, value).Scan(&at)
	if err != nil {
		return time.Time{}, wrapDB(err)
	}
	if !at.Valid {
		return time.Time{}, ErrNotFound
	}
	return fromTS(at.Int64), nil
}

func (s *DB) TerminationUnfinished(ctx context.Context, sel IdentitySelector, before time.Time) (bool, error) {
	kind, value, _, _, err := sel.key()
	if err != nil {
		return false, err
	}
	match := `value = $2`
	if kind == "person_id" {
		match = s.fold("value") + ` = ` + s.fold("$2")
	}
	var n int
	err = s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM terminations WHERE kind = $1 AND `+match+` AND finished_at IS NULL AND terminated_at < $3`,
		kind, value, ts(before)).Scan(&n)
	return n > 0, wrapDB(err)
}

func (s *DB) UnfinishedTerminations(ctx context.Context, before time.Time, limit int) ([]Termination, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT kind, value, terminated_at, comment FROM terminations
		WHERE finished_at IS NULL AND terminated_at < $1 ORDER BY random() LIMIT $2`, ts(before), limit)
	if err != nil {
		return nil, wrapDB(err)
	}
	defer rows.Close()
	var out []Termination
	for rows.Next() {
		var kind, value string
		var at int64
		var t Termination
		if err := rows.Scan(&kind, &value, &at, &t.Comment); err != nil {
			return nil, wrapDB(err)
		}
		switch kind {
		case "fascn":
			if t.Selector.FASCN, err = hex.DecodeString(value); err != nil {
				return nil, fmt.Errorf("store: termination of FASC-N %q: %w", value, err)
			}
		case "card_uuid":
			t.Selector.CardUUID = value
		case "person_id":
			t.Selector.PersonID = value
		default:
			return nil, fmt.Errorf("store: a termination of unknown kind %q", kind)
		}
		t.TerminatedAt = fromTS(at)
		out = append(out, t)
	}
	return out, wrapDB(rows.Err())
}

func (s *DB) CredentialSetsOfIdentity(ctx context.Context, sel IdentitySelector) ([]CredentialSet, error) {
	_, _, column, arg, err := sel.key()
	if err != nil {
		return nil, err
	}
	where := column + ` = $1`
	if column == "person_id" {
		where = s.fold(column) + ` = ` + s.fold("$1")
	}
	return s.querySets(ctx, `SELECT `+setColumns+` FROM credential_sets WHERE `+where+` ORDER BY created_at DESC, id`, arg)
}

var _ TerminationStore = (*DB)(nil)
