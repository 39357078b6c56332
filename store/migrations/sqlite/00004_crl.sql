-- +goose Up
-- The current CRL of each issuing CA, shared by every replica: one replica
-- claims the rebuild (a lease taken by a conditional UPDATE), the others
-- serve what is stored. generation counts revocations; a CRL built at
-- generation g is stale once generation > g.
CREATE TABLE crls (
    issuer           TEXT    PRIMARY KEY,
    number           BIGINT  NOT NULL DEFAULT 0,
    der              BLOB,
    this_update      BIGINT  NOT NULL DEFAULT 0,
    next_update      BIGINT  NOT NULL DEFAULT 0,
    generation       BIGINT  NOT NULL DEFAULT 1,
    built_generation BIGINT  NOT NULL DEFAULT 0,
    claimed_until    BIGINT  NOT NULL DEFAULT 0
);

-- +goose Down
DROP TABLE crls;
