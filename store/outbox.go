package store

import (
	"context"
	"errors"
	"time"
)

// Notification is one message in the outbox. It never holds a secret.
type Notification struct {
	ID        string
	Kind      string // binding, key-delivery, failed-attempt, revocation, lockout, termination
	Recipient string // the address of record; "" when there is none
	Subject   string
	Body      string
	CreatedAt time.Time
	Attempts  int
	SentAt    time.Time
	LastError string
	// DoneBackends lists (comma-separated) the back ends that delivered it
	// already.
	DoneBackends string
	// Claim is the claim this copy was taken under; the outcome is
	// recorded only while it still holds.
	Claim int64
}

// OutboxStore is the durable notification outbox.
type OutboxStore interface {
	// EnqueueNotification stores a notification, due at once; one whose
	// id is stored already is left as it is (a notice queued again).
	EnqueueNotification(ctx context.Context, n Notification) error
	// ClaimNotifications claims up to limit unsent, due notifications
	// until now+lease.
	ClaimNotifications(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]Notification, error)
	// NotificationSent marks a claimed notification delivered.
	NotificationSent(ctx context.Context, n Notification, now time.Time) error
	// NotificationFailed records a failed attempt of a claimed
	// notification (n.DoneBackends: those that delivered it); next is when
	// to retry.
	NotificationFailed(ctx context.Context, n Notification, cause string, next time.Time) error
	// Notifications lists the outbox, oldest first (administration, tests).
	Notifications(ctx context.Context) ([]Notification, error)
	// PruneSentNotifications deletes notifications sent before before (at
	// most 1000 a call) and says how many.
	PruneSentNotifications(ctx context.Context, before time.Time) (int64, error)
	// OutboxBacklog counts the notifications not delivered yet.
	OutboxBacklog(ctx context.Context) (int, error)
}

func (s *DB) OutboxBacklog(ctx context.Context) (int, error) {
	var n int
	err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM outbox WHERE sent_at = 0`).Scan(&n)
	return n, wrapDB(err)
}

func (s *DB) EnqueueNotification(ctx context.Context, n Notification) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO outbox (id, kind, recipient, subject, body, created_at, next_attempt) VALUES ($1, $2, $3, $4, $5, $6, $6)
		ON CONFLICT (id) DO NOTHING`,
		n.ID, n.Kind, n.Recipient, n.Subject, n.Body, ts(n.CreatedAt))
	return wrapDB(err)
}

const outboxColumns = `id, kind, recipient, subject, body, created_at, attempts, sent_at, last_error, claimed_until, done_backends`

func scanNotification(row interface{ Scan(...any) error }) (Notification, error) {
	var n Notification
	var created, sent int64
	if err := row.Scan(&n.ID, &n.Kind, &n.Recipient, &n.Subject, &n.Body, &created, &n.Attempts, &sent, &n.LastError, &n.Claim, &n.DoneBackends); err != nil {
		return n, wrapDB(err)
	}
	n.CreatedAt = fromTS(created)
	if sent != 0 {
		n.SentAt = fromTS(sent)
	}
	return n, nil
}

func (s *DB) ClaimNotifications(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]Notification, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id FROM outbox WHERE sent_at = 0 AND next_attempt <= $1 AND claimed_until < $1 ORDER BY next_attempt LIMIT $2`,
		ts(now), limit)
	if err != nil {
		return nil, wrapDB(err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, wrapDB(err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, wrapDB(err)
	}
	var out []Notification
	for _, id := range ids {
		n, err := scanNotification(s.w.QueryRowContext(ctx, `UPDATE outbox SET claimed_until = $1, attempts = attempts + 1
			WHERE id = $2 AND sent_at = 0 AND claimed_until < $3 AND next_attempt <= $3 RETURNING `+outboxColumns, ts(now.Add(lease)), id, ts(now)))
		if errors.Is(err, ErrNotFound) {
			continue // another replica took it
		}
		if err != nil {
			return out, err
		}
		out = append(out, n)
	}
	return out, nil
}

func (s *DB) NotificationSent(ctx context.Context, n Notification, now time.Time) error {
	_, err := s.w.ExecContext(ctx, `UPDATE outbox SET sent_at = $1, claimed_until = 0, last_error = '' WHERE id = $2 AND claimed_until = $3`, ts(now), n.ID, n.Claim)
	return wrapDB(err)
}

func (s *DB) PruneSentNotifications(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.w.ExecContext(ctx, `DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE sent_at > 0 AND sent_at < $1 LIMIT 1000)`, ts(before))
	if err != nil {
		return 0, wrapDB(err)
	}
	return res.RowsAffected()
}

func (s *DB) NotificationFailed(ctx context.Context, n Notification, cause string, next time.Time) error {
	if len(cause) > 500 {
		cause = cause[:500]
	}
	// Only while the claim holds: a replica that finishes after its lease
	// ran out does not overwrite what another one recorded.
	_, err := s.w.ExecContext(ctx, `UPDATE outbox SET next_attempt = $1, claimed_until = 0, last_error = $2, done_backends = $5
		WHERE id = $3 AND claimed_until = $4 AND sent_at = 0`, ts(next), cause, n.ID, n.Claim, n.DoneBackends)
	return wrapDB(err)
}

func (s *DB) Notifications(ctx context.Context) ([]Notification, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+outboxColumns+` FROM outbox ORDER BY created_at, id`)
	if err != nil {
		return nil, wrapDB(err)
	}
	defer rows.Close()
	var out []Notification
	for rows.Next() {
		n, err := scanNotification(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, wrapDB(rows.Err())
}

var _ OutboxStore = (*DB)(nil)
