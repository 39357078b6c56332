-- +goose Up
-- When a termination retired a person's escrowed keys: they stay in
-- escrow (until retain_until) but join no later key history. With email
-- or UPN person ids, an address given to a new hire would otherwise hand
-- the new holder the previous holder's keys.
ALTER TABLE escrow_keys ADD COLUMN retired_at INTEGER;

-- +goose Down
ALTER TABLE escrow_keys DROP COLUMN retired_at;
