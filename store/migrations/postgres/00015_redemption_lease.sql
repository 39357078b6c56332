-- +goose Up
-- A redemption that is issuing is claimed by one gateway process (holder,
-- random per process start) until lease_until; the process renews the lease
-- while it lives. A claim whose lease ran out (its process died: kill -9, a
-- crash, a lost host) is released by any replica, and the device's retry
-- redeems the code. NULL on claims made before this migration: those are
-- released five minutes after redeemed_at, as before.
ALTER TABLE activations ADD COLUMN claim_holder TEXT;
ALTER TABLE activations ADD COLUMN lease_until BIGINT;

-- +goose Down
ALTER TABLE activations DROP COLUMN lease_until;
ALTER TABLE activations DROP COLUMN claim_holder;
