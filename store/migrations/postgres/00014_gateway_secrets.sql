-- +goose Up
-- Secrets of the gateway that must not be readable from a database copy,
-- each sealed under the key-encryption key in the HSM (escrow.kek_uri):
-- e.g. the key of the activation password verifiers and package seals.
-- The first replica to start makes each one; the others read it.
CREATE TABLE gateway_secrets (
    name       TEXT   PRIMARY KEY,
    sealed     BYTEA  NOT NULL,
    created_at BIGINT NOT NULL
);

-- +goose Down
DROP TABLE gateway_secrets;
