-- +goose Up
-- The sweep deletes escrowed keys never certified that no live set holds
-- (looked up by the set's escrow_key_id) and purges certified keys past
-- their retain_until.
CREATE INDEX credential_sets_escrow_key ON credential_sets (escrow_key_id);
CREATE INDEX escrow_keys_retain ON escrow_keys (retain_until);

-- +goose Down
DROP INDEX escrow_keys_retain;
DROP INDEX credential_sets_escrow_key;
