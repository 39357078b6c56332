-- +goose Up
-- A CRL leaves out the revoked certificates that expired before the CRL
-- it follows (RFC 5280 §5): its read takes those still listed, by issuer
-- and expiry, from revoked rows only (no cost to an issuance, whose row is
-- not revoked).
CREATE INDEX certificates_revoked_expiry ON certificates (issuer, not_after) WHERE revoked_at IS NOT NULL;

-- +goose Down
DROP INDEX certificates_revoked_expiry;
