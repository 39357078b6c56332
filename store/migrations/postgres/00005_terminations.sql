-- +goose Up
-- Terminated PIV identities (FIPS 201-3 §2.9.4, SP 800-157r1 §2.4): once a
-- card (by FASC-N or UUID) or a person is terminated, PKI-AUTH, enrollment
-- and redemption refuse it, even if its card certificate was never revoked.
-- kind is fascn (hex), card_uuid or person_id.
CREATE TABLE terminations (
    kind          TEXT   NOT NULL,
    value         TEXT   NOT NULL,
    terminated_at BIGINT NOT NULL,
    comment       TEXT   NOT NULL DEFAULT '',
    PRIMARY KEY (kind, value)
);

-- +goose Down
DROP TABLE terminations;
