package store

import (
	"context"
	"time"
)

// Certificate statuses.
const (
	CertIntent     = "intent"
	CertIssued     = "issued"
	CertLintFailed = "lint_failed"
)

// CertificateRecord is one certificate credgw has decided to issue.
type CertificateRecord struct {
	Serial           string
	Issuer           string
	Profile          string
	Status           string
	SPKISHA256       string
	PIVCertSHA256    string
	FASCN            []byte
	CardUUID         string
	PersonID         string
	CredentialSetID  string
	NotBefore        time.Time
	NotAfter         time.Time
	DER              []byte
	SHA256           string
	LintWarnings     string
	CreatedAt        time.Time
	IssuedAt         time.Time // zero until issued
	RevokedAt        time.Time // zero unless revoked
	RevocationReason int
}

// Revoked reports whether the record is revoked.
func (c CertificateRecord) Revoked() bool { return !c.RevokedAt.IsZero() }

// RevokedEntry is one CRL entry.
type RevokedEntry struct {
	Serial    string
	RevokedAt time.Time
	Reason    int
}

// LiveIssuer is an issuer name with unexpired certificates (LiveIssuers).
type LiveIssuer struct {
	Name   string
	Count  int
	Oldest []byte // the DER of its oldest unexpired certificate
	Newest []byte // and of its newest
}

// EscrowKey is one sealed key-management key.
type EscrowKey struct {
	ID          string
	PersonID    string
	KeyType     string
	SPKISHA256  string
	KEKID       string
	Sealed      []byte
	CertSerial  string
	CreatedAt   time.Time
	RetainUntil time.Time // zero until certified
	// RetiredAt: a termination of the person retired the key (zero: not
	// retired). It stays in escrow but joins no key history.
	RetiredAt time.Time
	// CertRevocationReason is its certificate's revocation reason (RFC
	// 5280 code), -1 while it is not revoked (read with CertDER).
	CertRevocationReason int
	// CertDER is the certificate of CertSerial once it is recorded as
	// issued (read with the key: the key history needs both).
	CertDER []byte
	// Delivered: the certificate's credential set was confirmed by a
	// device (its activation completed; a later revocation does not undo
	// it). Only delivered keys join a key history: a package never
	// confirmed was revoked, and nothing was ever encrypted to its key.
	Delivered bool
}

// IssuanceStore is what the CA keeps. Store embeds it.
type IssuanceStore interface {
	// GatewaySecret keeps a secret of the gateway, sealed: the first call
	// for a name stores sealed (made at now), and every call returns what
	// is stored and when it was made (another replica's, if it came
	// first).
	GatewaySecret(ctx context.Context, name string, sealed []byte, now time.Time) ([]byte, time.Time, error)
	// CreateIssuanceIntent records the serial before anything is signed.
	// A public key certified before gives ErrConflict.
	CreateIssuanceIntent(ctx context.Context, c CertificateRecord) error
	// KeyCertified reports whether a public key (SPKI SHA-256) has an intent
	// or a certificate.
	KeyCertified(ctx context.Context, spkiSHA256 string) (bool, error)
	// MarkLintFailed ends an intent whose certificate failed the lint.
	MarkLintFailed(ctx context.Context, serial, findings string) error
	// RecordIssued stores the signed certificate of an intent.
	RecordIssued(ctx context.Context, serial string, der []byte, sha256, lintWarnings string, at time.Time) error
	// Certificate returns a record by serial.
	Certificate(ctx context.Context, serial string) (CertificateRecord, error)
	// RevokeCertificate revokes an intent or issued certificate once, and
	// makes its issuer's CRL stale in the same transaction; revoking
	// again returns ErrAlreadyUsed with the record unchanged.
	RevokeCertificate(ctx context.Context, serial string, reason int, at time.Time) (CertificateRecord, error)
	// RevokeStaleIntents revokes an issuer's intents created before
	// olderThan and never recorded, returning how many, and makes the
	// issuer's CRL stale with them.
	RevokeStaleIntents(ctx context.Context, issuer string, olderThan, now time.Time) (int, error)
	// RevokedCertificates lists the CRL entries of an issuer, but for
	// certificates that expired and were revoked before expiredBefore
	// (RFC 5280 §5 lets an entry go once a CRL issued past its expiry
	// listed it; one revoked after that CRL was not listed by it).
	RevokedCertificates(ctx context.Context, issuer string, expiredBefore time.Time) ([]RevokedEntry, error)
	// LiveIssuers lists the issuers of certificates issued and not
	// expired at now, each with how many and the DER of its oldest and
	// newest.
	LiveIssuers(ctx context.Context, now time.Time) ([]LiveIssuer, error)
	// NextCRLNumber returns the next CRL number of an issuer: one more
	// than the last, and at least atLeast (the CA passes the time, so that
	// a database restored from a backup, whose counter went back, never
	// numbers a CRL as one it published before).
	NextCRLNumber(ctx context.Context, issuer string, atLeast int64) (int64, error)
	CRLStore

	// PutEscrowKey stores a sealed key (before its certificate is issued).
	PutEscrowKey(ctx context.Context, k EscrowKey) error
	// LinkEscrowKey records the key's certificate and how long to keep it.
	LinkEscrowKey(ctx context.Context, id, serial string, retainUntil time.Time) error
	// EscrowKeys returns a person's escrowed keys, newest first.
	EscrowKeys(ctx context.Context, personID string) ([]EscrowKey, error)
	// EscrowKey returns one escrowed key of a person, without CertDER and
	// Delivered (ErrNotFound: the person has no key of that id).
	EscrowKey(ctx context.Context, id, personID string) (EscrowKey, error)
	// PersonIDSpellings returns how else a person id was written: the
	// email addresses and UPNs of the person's credential sets and the
	// person ids of their audit events that fold to it, other than
	// personID itself (at most 16). Keys and codes sealed before
	// migration 00021 folded person ids bind the spelling they were
	// sealed with.
	PersonIDSpellings(ctx context.Context, personID string) ([]string, error)
	// ResealEscrowKey replaces a key's sealed blob if it is still old (a
	// key opened under an older spelling of its person id, sealed again
	// under the id its row holds); false if another got there first.
	ResealEscrowKey(ctx context.Context, id string, old, sealed []byte) (bool, error)
	// RetireEscrowKeys retires the escrowed keys of a person id (in any
	// spelling) made up to at and not retired yet, returning how many.
	RetireEscrowKeys(ctx context.Context, personID string, at time.Time) (int, error)
	// DeleteUncertifiedEscrowKeys deletes the keys never certified that no
	// pending or redeeming credential set holds and that were made before
	// olderThan (a key is made just before the set that holds it): the keys
	// of enrollments that expired, were cancelled, locked or revoked, and
	// keys replaced after a failed issuance. A key with a certificate or an
	// intent (its link not recorded) is kept. It returns how many.
	DeleteUncertifiedEscrowKeys(ctx context.Context, olderThan time.Time) (int, error)
	// PurgeEscrowKeys deletes the certified keys whose retain_until is not
	// after now, returning how many.
	PurgeEscrowKeys(ctx context.Context, now time.Time) (int, error)
}
