-- +goose Up
-- Accepted termination-webhook requests (by their signature), kept for the
-- timestamp window: a replay inside it is answered 409 by every replica and
-- changes nothing.
CREATE TABLE webhook_deliveries (
    signature  TEXT   PRIMARY KEY,
    expires_at BIGINT NOT NULL
);

-- +goose Down
DROP TABLE webhook_deliveries;
