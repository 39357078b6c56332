-- +goose Up
-- The certificates of a credential set are read on every redemption,
-- confirmation, audit event and portal page; the sweep finds sets by state.
CREATE INDEX certificates_set ON certificates (credential_set_id);
CREATE INDEX credential_sets_state ON credential_sets (state);

-- +goose Down
DROP INDEX credential_sets_state;
DROP INDEX certificates_set;
