// Package store is credgw's persistence behind one interface: SQLite (the
// embedded default) today and PostgreSQL for scale-out, with migrations
// embedded in the binary and every multi-statement change in a transaction.
//
// Every state change that must happen once is one conditional UPDATE (or a
// row lock), never a lock in memory, so that N replicas on one database stay
// correct.
package store

import (
	"context"
	"errors"
	"time"
)

// Errors a caller branches on.
var (
	// ErrNotFound means no such row.
	ErrNotFound = errors.New("store: not found")
	// ErrAlreadyUsed means a single-use row was used before.
	ErrAlreadyUsed = errors.New("store: already used")
	// ErrLocked means an activation has no attempt left.
	ErrLocked = errors.New("store: locked")
	// ErrBusy means every attempt of an activation is counted but the
	// activation is not locked: their passwords are being compared.
	ErrBusy = errors.New("store: every attempt is being compared")
	// ErrConflict means a unique value exists already.
	ErrConflict = errors.New("store: conflict")
	// ErrLimit means a configured limit (e.g. credential sets per person)
	// is reached.
	ErrLimit = errors.New("store: limit reached")
	// ErrUnavailable means the database cannot be reached.
	ErrUnavailable = errors.New("store: database unavailable")
	// ErrRevokedMeanwhile means a certificate was recorded, but its intent
	// had been revoked meanwhile (the sweep took a slow signing for a
	// crash): it is on the CRL and must not be delivered.
	ErrRevokedMeanwhile = errors.New("store: the certificate's intent was revoked while it was being signed")
	// ErrInvalidText means a text value holds a NUL or is not UTF-8, which
	// PostgreSQL's text refuses: the caller's input, not a database fault.
	ErrInvalidText = errors.New("store: text holds a NUL character or is not UTF-8")
)

// Store is everything credgw keeps.
type Store interface {
	// CreateChallenge records a PKI-AUTH challenge.
	CreateChallenge(ctx context.Context, c Challenge) error
	// ConsumeChallenge marks the challenge used and returns it, once: a
	// second call gets ErrAlreadyUsed, an unknown id ErrNotFound. Expiry is
	// the caller's to check; an expired challenge is consumed all the same.
	ConsumeChallenge(ctx context.Context, sessionID string, now time.Time) (Challenge, error)
	// CreatePIVSession keeps a copy of the verified PIV Authentication
	// certificate (Common Policy §3.2.3) and records the session, in one
	// transaction.
	CreatePIVSession(ctx context.Context, s PIVSession, cert PIVCertificate) error
	// PIVSession finds a session by the hash of its token.
	PIVSession(ctx context.Context, tokenHash string) (PIVSession, error)
	// EndPIVSession ends a session at now (sign-out); ending an unknown or
	// already ended session is not an error.
	EndPIVSession(ctx context.Context, tokenHash string, now time.Time) error
	// PIVCertificate returns the kept copy of a PIV Authentication
	// certificate by its SHA-256 (hex).
	PIVCertificate(ctx context.Context, sha256 string) (PIVCertificate, error)
	// Ping checks that the database answers a query (readiness).
	Ping(ctx context.Context) error
	IssuanceStore
	ActivationStore
	TerminationStore
	AuditStore
	LinkageStore
	OutboxStore
	AdminStore
	PortalStore
	// DeleteExpired removes challenges and sessions that expired before
	// now, and the portal's sign-outs and forms older than two hours.
	DeleteExpired(ctx context.Context, now time.Time) (int64, error)
	// Close releases the database.
	Close() error
}

// Challenge is one PKI-AUTH challenge.
type Challenge struct {
	SessionID string
	Challenge []byte
	GatewayID string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// PIVCertificate is the kept copy of a verified PIV Authentication
// certificate.
type PIVCertificate struct {
	SHA256   string // hex, the key
	DER      []byte
	Serial   string // hex
	Issuer   string
	Subject  string
	FASCN    []byte
	CardUUID string
	NotAfter time.Time
	// DigitalSignature is the DER of the card's Digital Signature (9C)
	// certificate that a PKI-AUTH verified with this one (same subject, its
	// own path), or nil. A session without one keeps the one kept before;
	// a session with one replaces it.
	DigitalSignature []byte
	// FirstSeen and LastVerified are set by the store.
	FirstSeen    time.Time
	LastVerified time.Time
}

// PIVSession is a verified PKI-AUTH: what its token stands for.
type PIVSession struct {
	// TokenHash is the hex SHA-256 of the token; the token is never stored.
	TokenHash   string
	SessionID   string
	CertSHA256  string
	PersonID    string
	FASCN       []byte
	CardUUID    string
	UPN         string
	Email       string
	EmailSource string
	Subject     string
	SourceAddr  string
	CreatedAt   time.Time
	ExpiresAt   time.Time
}
