-- +goose Up
-- No query reads certificates by person or by card: every lookup of a
-- person's or a card's certificates goes through credential_sets and
-- certificates_set. The two indexes only cost every issuance intent two
-- more B-tree leaves to write (on SQLite, two more WAL frames of the
-- pages they touch: about a sixth of an intent's).
DROP INDEX certificates_person;
DROP INDEX certificates_card;

-- +goose Down
CREATE INDEX certificates_person ON certificates (person_id);
CREATE INDEX certificates_card ON certificates (card_uuid);
