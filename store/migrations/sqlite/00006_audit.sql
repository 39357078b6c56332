-- +goose Up
-- The audit log: append-only and hash-chained. Each event's hash covers the
-- previous event's hash and the event's canonical form; audit_head holds the
-- last seq and hash, and its row is updated first in every append, which
-- serialises appends across replicas (a row lock on PostgreSQL, the single
-- writer on SQLite) and lets verify notice deleted trailing events.
CREATE TABLE audit_events (
    seq       BIGINT PRIMARY KEY,
    at        BIGINT NOT NULL,
    actor     TEXT   NOT NULL,
    action    TEXT   NOT NULL,
    person_id TEXT   NOT NULL DEFAULT '',
    card_uuid TEXT   NOT NULL DEFAULT '',
    serials   TEXT   NOT NULL DEFAULT '',
    source    TEXT   NOT NULL DEFAULT '',
    outcome   TEXT   NOT NULL,
    detail    TEXT   NOT NULL DEFAULT '',
    prev_hash TEXT   NOT NULL,
    hash      TEXT   NOT NULL
);
CREATE INDEX audit_events_person ON audit_events (person_id);
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY,
    seq  BIGINT  NOT NULL,
    hash TEXT    NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- +goose Down
DROP TABLE audit_head;
DROP TABLE audit_events;
