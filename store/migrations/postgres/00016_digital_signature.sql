-- +goose Up
-- The card's Digital Signature (9C) certificate, verified with its PIV
-- Authentication certificate in a PKI-AUTH: many cards carry the email of
-- record only there, and a browser's TLS sign-in (the portal) presents 9A
-- alone. The portal re-verifies it against the card it signs in with.
ALTER TABLE piv_certificates ADD COLUMN digital_signature BYTEA;

-- +goose Down
ALTER TABLE piv_certificates DROP COLUMN digital_signature;
