-- +goose Up
-- When a termination's revocations were known done (every credential set
-- of the identity ended and its certificates revoked). A process killed
-- between recording a termination and revoking its sets left them live;
-- the sweep carries out again each termination not finished (NULL),
-- those recorded before this migration included: that is idempotent.
ALTER TABLE terminations ADD COLUMN finished_at BIGINT;
CREATE INDEX terminations_unfinished ON terminations (terminated_at) WHERE finished_at IS NULL;

-- +goose Down
DROP INDEX terminations_unfinished;
ALTER TABLE terminations DROP COLUMN finished_at;
