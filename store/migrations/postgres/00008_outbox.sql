-- +goose Up
-- Notifications wait here until sent (SP 800-157r1 §2.2, Common Policy
-- §4.12.1): written with the event, delivered by any replica, retried with
-- backoff; a failure never blocks the request that caused it.
CREATE TABLE outbox (
    id            TEXT    PRIMARY KEY,
    kind          TEXT    NOT NULL,
    recipient     TEXT    NOT NULL DEFAULT '',
    subject       TEXT    NOT NULL,
    body          TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    next_attempt  BIGINT  NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    claimed_until BIGINT  NOT NULL DEFAULT 0,
    sent_at       BIGINT  NOT NULL DEFAULT 0,
    last_error    TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX outbox_due ON outbox (sent_at, next_attempt);

-- +goose Down
DROP TABLE outbox;
