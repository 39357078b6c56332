-- +goose Up
-- PKI-AUTH (FIPS 201-3 §6.2.3.1): challenges, sessions and the copy of each
-- verified PIV Authentication certificate (Common Policy §3.2.3).
-- PostgreSQL dialect of the same migration: BLOB is BYTEA here; times are
-- BIGINT Unix microseconds, ids TEXT.

CREATE TABLE piv_challenges (
    session_id  TEXT    PRIMARY KEY,
    challenge   BYTEA    NOT NULL,
    gateway_id  TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL,
    used_at     BIGINT
);
CREATE INDEX piv_challenges_expires ON piv_challenges (expires_at);

CREATE TABLE piv_certificates (
    sha256        TEXT    PRIMARY KEY,
    der           BYTEA    NOT NULL,
    serial        TEXT    NOT NULL,
    issuer        TEXT    NOT NULL,
    subject       TEXT    NOT NULL,
    fascn         BYTEA,
    card_uuid     TEXT    NOT NULL,
    not_after     BIGINT  NOT NULL,
    first_seen    BIGINT  NOT NULL,
    last_verified BIGINT  NOT NULL
);
CREATE INDEX piv_certificates_card ON piv_certificates (card_uuid);

CREATE TABLE piv_sessions (
    token_hash    TEXT    PRIMARY KEY,
    session_id    TEXT    NOT NULL UNIQUE REFERENCES piv_challenges (session_id),
    cert_sha256   TEXT    NOT NULL REFERENCES piv_certificates (sha256),
    person_id     TEXT    NOT NULL,
    fascn         BYTEA,
    card_uuid     TEXT    NOT NULL,
    upn           TEXT    NOT NULL DEFAULT '',
    email         TEXT    NOT NULL DEFAULT '',
    email_source  TEXT    NOT NULL DEFAULT '',
    subject       TEXT    NOT NULL,
    source_addr   TEXT    NOT NULL DEFAULT '',
    created_at    BIGINT  NOT NULL,
    expires_at    BIGINT  NOT NULL
);
CREATE INDEX piv_sessions_person ON piv_sessions (person_id);
CREATE INDEX piv_sessions_expires ON piv_sessions (expires_at);

-- +goose Down
DROP TABLE piv_sessions;
DROP TABLE piv_certificates;
DROP TABLE piv_challenges;
