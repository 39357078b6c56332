-- +goose Up
-- Issuance (Boulder order): an intent row with the serial before anything is
-- signed; the certificate recorded before it is returned. A crash between
-- sign and record leaves the intent, which revocation and the CRL cover.
CREATE TABLE certificates (
    serial            TEXT    PRIMARY KEY,      -- hex
    issuer            TEXT    NOT NULL,         -- issuing CA name
    profile           TEXT    NOT NULL,
    status            TEXT    NOT NULL,         -- intent | issued | lint_failed
    spki_sha256       TEXT    NOT NULL,         -- hex SHA-256 of the SubjectPublicKeyInfo
    piv_cert_sha256   TEXT    NOT NULL DEFAULT '',
    fascn             BYTEA,
    card_uuid         TEXT    NOT NULL DEFAULT '',
    person_id         TEXT    NOT NULL DEFAULT '',
    credential_set_id TEXT    NOT NULL DEFAULT '',
    not_before        BIGINT  NOT NULL,
    not_after         BIGINT  NOT NULL,
    der               BYTEA,
    sha256            TEXT    NOT NULL DEFAULT '',
    lint_warnings     TEXT    NOT NULL DEFAULT '',
    created_at        BIGINT  NOT NULL,
    issued_at         BIGINT,
    revoked_at        BIGINT,
    revocation_reason INTEGER NOT NULL DEFAULT 0
);
-- A key is certified once, ever (lint failures do not count).
CREATE UNIQUE INDEX certificates_spki ON certificates (spki_sha256) WHERE status <> 'lint_failed';
CREATE INDEX certificates_person ON certificates (person_id);
CREATE INDEX certificates_card ON certificates (card_uuid);
CREATE INDEX certificates_revoked ON certificates (issuer, revoked_at);

-- Escrowed key-management keys, sealed under the key-encryption key.
CREATE TABLE escrow_keys (
    id            TEXT    PRIMARY KEY,
    person_id     TEXT    NOT NULL,
    key_type      TEXT    NOT NULL,
    spki_sha256   TEXT    NOT NULL UNIQUE,
    kek_id        TEXT    NOT NULL,
    sealed        BYTEA    NOT NULL,
    cert_serial   TEXT    NOT NULL DEFAULT '',
    created_at    BIGINT  NOT NULL,
    retain_until  BIGINT                       -- NULL until a certificate is issued
);
CREATE INDEX escrow_keys_person ON escrow_keys (person_id, created_at);

-- CRL numbers per issuing CA, increased by one conditional UPDATE.
CREATE TABLE crl_numbers (
    issuer  TEXT    PRIMARY KEY,
    number  BIGINT  NOT NULL
);

-- +goose Down
DROP TABLE crl_numbers;
DROP TABLE escrow_keys;
DROP TABLE certificates;
