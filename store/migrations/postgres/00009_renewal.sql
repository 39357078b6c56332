-- +goose Up
-- A re-key's credential set names the set it renews. At most one live
-- renewal per set; only Renewal.Confirm (with the old certificate) confirms
-- it, and that revokes the old set.
ALTER TABLE credential_sets ADD COLUMN renews_set_id TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX credential_sets_one_renewal ON credential_sets (renews_set_id)
    WHERE renews_set_id <> '' AND state IN ('pending', 'redeeming', 'active');

-- +goose Down
DROP INDEX credential_sets_one_renewal;
ALTER TABLE credential_sets DROP COLUMN renews_set_id;
