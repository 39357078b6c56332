-- +goose Up
-- The verdict of the device's key attestations (JSON by profile: security
-- level, verified boot state, device locked, root): what made a derived PIV
-- Authentication certificate assert id-fpki-common-pivAuth-derived-hardware.
ALTER TABLE credential_sets ADD COLUMN attestation TEXT NOT NULL DEFAULT '{}';

-- +goose Down
ALTER TABLE credential_sets DROP COLUMN attestation;
