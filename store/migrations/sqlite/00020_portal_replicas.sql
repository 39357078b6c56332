-- +goose Up
-- What the portal must know on every replica: when a card last signed
-- out (a keep-alive connection of that card opened before, on any
-- replica, must not sign the next person in without the card), and the
-- enroll forms taken (a resubmission sent to another replica must not
-- make a second enrollment). Rows live two hours at most (DeleteExpired).
CREATE TABLE portal_card_sign_outs (
    cert_sha256    TEXT    PRIMARY KEY,
    signed_out_at  INTEGER NOT NULL
);
CREATE TABLE portal_forms (
    once_hash  TEXT    PRIMARY KEY,
    made       INTEGER NOT NULL DEFAULT 0,
    taken_at   INTEGER NOT NULL
);

-- +goose Down
DROP TABLE portal_forms;
DROP TABLE portal_card_sign_outs;
