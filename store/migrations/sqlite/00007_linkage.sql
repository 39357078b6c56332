-- +goose Up
-- Linkage checks (SP 800-157r1 §2.4): every PIV Authentication certificate
-- with live derived credentials is re-checked on a schedule. A replica
-- claims a due row with a conditional UPDATE of claimed_until.
CREATE TABLE linkage (
    cert_sha256   TEXT   PRIMARY KEY,
    next_check    BIGINT NOT NULL,
    unknown_since BIGINT NOT NULL DEFAULT 0,
    claimed_until BIGINT NOT NULL DEFAULT 0,
    last_checked  BIGINT NOT NULL DEFAULT 0,
    last_status   TEXT   NOT NULL DEFAULT ''
);

-- +goose Down
DROP TABLE linkage;
