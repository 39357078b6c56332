-- +goose Up
-- The head row keeps the previous hash beside the last one: on PostgreSQL
-- an append is one statement whose UPDATE of the head computes the new
-- hash and hands both to the event's INSERT (store.appendAuditPG). SQLite
-- does not use it; the schemas stay alike.
ALTER TABLE audit_head ADD COLUMN prev_hash TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE audit_head DROP COLUMN prev_hash;
