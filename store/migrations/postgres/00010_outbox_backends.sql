-- +goose Up
-- The back ends (smtp, webhook) that already delivered a notification: a
-- retry goes only to the others.
ALTER TABLE outbox ADD COLUMN done_backends TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE outbox DROP COLUMN done_backends;
