-- +goose Up
-- Person ids from an email address or a UPN are compared without regard to
-- case (ASCII letters, as piv.FoldPersonID folds them): a termination, a
-- key history or a limit that named the person in another case missed them.
-- Ids already stored are folded here in every table but the audit log,
-- whose hash chain covers what was written; its person index is on the
-- folded id, which is how a person's events are selected. lower() under
-- the "C" collation folds ASCII letters only, as the gateway does.
UPDATE piv_sessions SET person_id = lower(person_id COLLATE "C") WHERE person_id <> lower(person_id COLLATE "C");
UPDATE certificates SET person_id = lower(person_id COLLATE "C") WHERE person_id <> lower(person_id COLLATE "C");
UPDATE escrow_keys SET person_id = lower(person_id COLLATE "C") WHERE person_id <> lower(person_id COLLATE "C");
UPDATE credential_sets SET person_id = lower(person_id COLLATE "C") WHERE person_id <> lower(person_id COLLATE "C");
-- One person terminated under two spellings keeps the first termination.
DELETE FROM terminations WHERE kind = 'person_id' AND EXISTS (
    SELECT 1 FROM terminations u WHERE u.kind = 'person_id' AND lower(u.value COLLATE "C") = lower(terminations.value COLLATE "C")
        AND (u.terminated_at < terminations.terminated_at OR (u.terminated_at = terminations.terminated_at AND u.value < terminations.value)));
UPDATE terminations SET value = lower(value COLLATE "C") WHERE kind = 'person_id' AND value <> lower(value COLLATE "C");
DROP INDEX audit_events_person;
CREATE INDEX audit_events_person ON audit_events (lower(person_id COLLATE "C"), seq);
-- A person's sets and escrowed keys are looked up by the folded id too:
-- rows a replica of the older release writes while the upgrade rolls keep
-- the card's spelling, and are found all the same.
DROP INDEX credential_sets_person;
CREATE INDEX credential_sets_person ON credential_sets (lower(person_id COLLATE "C"), state);
DROP INDEX escrow_keys_person;
CREATE INDEX escrow_keys_person ON escrow_keys (lower(person_id COLLATE "C"), created_at);
CREATE INDEX terminations_folded ON terminations (kind, lower(value COLLATE "C"));

-- +goose Down
-- The folded ids stay folded: the old code reads them as the cards of now
-- spell them, or as an administrator gives them.
DROP INDEX audit_events_person;
CREATE INDEX audit_events_person ON audit_events (person_id);
DROP INDEX credential_sets_person;
CREATE INDEX credential_sets_person ON credential_sets (person_id, state);
DROP INDEX escrow_keys_person;
CREATE INDEX escrow_keys_person ON escrow_keys (person_id, created_at);
DROP INDEX terminations_folded;
