-- +goose NO TRANSACTION
-- +goose Up
-- The certificates of a credential set are read on every redemption,
-- confirmation, audit event and portal page; the sweep finds sets by state.
-- CONCURRENTLY: a live gateway keeps writing while the indexes build.
CREATE INDEX CONCURRENTLY IF NOT EXISTS certificates_set ON certificates (credential_set_id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS credential_sets_state ON credential_sets (state);

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS credential_sets_state;
DROP INDEX CONCURRENTLY IF EXISTS certificates_set;
