-- +goose Up
-- Enrollments: a credential set per enrollment, one activation (QR + password)
-- per set. The activation row holds a lookup hash of the secret and a verifier
-- keyed by the secret over the password, never either value; the package is
-- sealed under a key derived from both.
CREATE TABLE credential_sets (
    id               TEXT    PRIMARY KEY,
    person_id        TEXT    NOT NULL,
    piv_cert_sha256  TEXT    NOT NULL,
    fascn            BYTEA,
    card_uuid        TEXT    NOT NULL,
    raw_subject      BYTEA    NOT NULL,
    email            TEXT    NOT NULL DEFAULT '',
    upn              TEXT    NOT NULL DEFAULT '',
    identity_name    TEXT    NOT NULL,
    credential_type  TEXT    NOT NULL,
    escrow_key_id    TEXT    NOT NULL DEFAULT '',
    state            TEXT    NOT NULL,        -- pending | redeeming | active | revoked | abandoned
    device           TEXT    NOT NULL DEFAULT '',
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL
);
CREATE INDEX credential_sets_person ON credential_sets (person_id, state);

CREATE TABLE activations (
    id                TEXT    PRIMARY KEY,
    credential_set_id TEXT    NOT NULL UNIQUE REFERENCES credential_sets (id),
    lookup_hash       TEXT    NOT NULL UNIQUE,
    verifier          BYTEA    NOT NULL,
    state             TEXT    NOT NULL,        -- pending | redeeming | completed | locked | expired
    failed_attempts   INTEGER NOT NULL DEFAULT 0,
    max_attempts      INTEGER NOT NULL,
    created_at        BIGINT  NOT NULL,
    expires_at        BIGINT  NOT NULL,
    redemption_id     TEXT    UNIQUE,
    redeemed_at       BIGINT,
    confirm_by        BIGINT,
    confirmed_at      BIGINT,
    package           BYTEA,                    -- sealed; deleted on confirm or expiry
    package_sha256    TEXT    NOT NULL DEFAULT '',
    package_size      BIGINT  NOT NULL DEFAULT 0,
    manifest          BYTEA
);
CREATE INDEX activations_confirm ON activations (state, confirm_by);

-- +goose Down
DROP TABLE activations;
DROP TABLE credential_sets;
