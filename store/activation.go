package store

import (
	"context"
	"time"
)

// Credential set and activation states.
const (
	SetPending   = "pending"
	SetRedeeming = "redeeming"
	SetActive    = "active"
	SetRevoked   = "revoked"
	SetAbandoned = "abandoned"

	ActPending   = "pending"
	ActRedeeming = "redeeming"
	ActCompleted = "completed"
	ActLocked    = "locked"
	ActExpired   = "expired"
)

// CredentialSet is one enrollment's credentials.
type CredentialSet struct {
	ID             string
	PersonID       string
	PIVCertSHA256  string
	FASCN          []byte
	CardUUID       string
	RawSubject     []byte
	Email, UPN     string
	IdentityName   string
	CredentialType string
	EscrowKeyID    string
	State          string
	Device         string // JSON
	Attestation    string // JSON: the verified key attestations by profile ("{}": none)
	CreatedAt      time.Time
	UpdatedAt      time.Time
	// RenewsSetID is the set a re-key renews ("" for an enrollment).
	RenewsSetID string
}

// Activation is the QR code + password of a credential set.
type Activation struct {
	ID              string
	CredentialSetID string
	LookupHash      string
	Verifier        []byte
	State           string
	FailedAttempts  int
	MaxAttempts     int
	CreatedAt       time.Time
	ExpiresAt       time.Time
	RedemptionID    string
	RedeemedAt      time.Time
	ConfirmBy       time.Time
	ConfirmedAt     time.Time
	Package         []byte
	PackageSHA256   string
	PackageSize     int64
	Manifest        []byte
}

// Lease is a claim's holder (a gateway process) and how long it holds.
type Lease struct {
	Holder string
	Until  time.Time
}

// Redemption names a claimed redemption.
type Redemption struct {
	ActivationID, RedemptionID, CredentialSetID string
}

// ActivationStore is what enrollment and redemption keep. Every transition
// is one conditional UPDATE: correct with any number of replicas.
type ActivationStore interface {
	// CreateEnrollment stores a credential set and its activation together,
	// refusing with ErrLimit when the person has maxSets live sets already,
	// and a renewal (cs.RenewsSetID) with ErrNotFound unless the set it
	// renews is active.
	CreateEnrollment(ctx context.Context, cs CredentialSet, a Activation, maxSets int) error
	// RevokeCredentialSet marks a set revoked and expires its activation
	// (deleting any package), in one transaction; a renewal of the set
	// that is not confirmed yet (pending or redeeming) is revoked with it
	// in the same way: a renewal of a lost device's set is that device's.
	// It returns the ids of the sets (this one, or its renewal) whose
	// package was stored and not confirmed: a device may have downloaded
	// it, escrowed keys and all.
	RevokeCredentialSet(ctx context.Context, id string, now time.Time) (unconfirmed []string, err error)
	// ForgetCode frees the lookup hash of an ended (expired) activation,
	// so that its secret can make a new one: a device retrying a refused
	// renewal sends the same secret. A live activation keeps its hash.
	ForgetCode(ctx context.Context, id string) error
	// LiveRenewals lists the sets renewing setID that are pending,
	// redeeming or active (at most one: credential_sets_one_renewal).
	LiveRenewals(ctx context.Context, setID string) ([]CredentialSet, error)
	// SetDevice records what the redeeming device said about itself (JSON)
	// and the verdict of its key attestations (JSON by profile, "{}" for
	// none).
	SetDevice(ctx context.Context, setID, device, attestation string) error
	// SetEscrowKey points a set at another escrowed key.
	SetEscrowKey(ctx context.Context, setID, keyID string) error
	// CountLiveSets counts a person's credential sets that are pending,
	// redeeming or active.
	CountLiveSets(ctx context.Context, personID string) (int, error)
	CredentialSet(ctx context.Context, id string) (CredentialSet, error)
	ActivationByID(ctx context.Context, id string) (Activation, error)
	// RevokedSetsWithLiveCertificates lists up to limit sets marked revoked
	// or abandoned that still have unrevoked certificates (a revocation that
	// failed half way), for the sweep to finish.
	RevokedSetsWithLiveCertificates(ctx context.Context, limit int) ([]string, error)
	// PendingSetsWithLiveCertificates lists up to limit pending sets that
	// have unrevoked certificates made before before. A pending set has
	// none of its own (a redemption moves it to redeeming first): they are
	// what a redemption given back left, when their revocation failed.
	PendingSetsWithLiveCertificates(ctx context.Context, before time.Time, limit int) ([]string, error)
	// ActivationOfSet returns a credential set's newest activation, without
	// its package.
	ActivationOfSet(ctx context.Context, setID string) (Activation, error)
	ActivationByRedemption(ctx context.Context, redemptionID string) (Activation, error)
	// RecordFailedAttempt counts a wrong password on a pending activation,
	// locking it for good at max_attempts. It returns the new count and
	// state; ErrAlreadyUsed if the activation is not pending.
	RecordFailedAttempt(ctx context.Context, id string) (failed int, state string, err error)
	// ReserveAttempt counts an attempt on a pending or redeeming
	// activation before its password is compared, and returns the
	// activation with the count. ErrLocked if it is locked; ErrBusy if
	// max_attempts are counted but not settled, or the count changed
	// under it (compare nothing; try again);
	// ErrAlreadyUsed if the activation is in another state.
	ReserveAttempt(ctx context.Context, id string) (Activation, error)
	// ReturnAttempt gives back an attempt whose password was right, and
	// returns the activation; ErrAlreadyUsed if it is no longer pending or
	// redeeming (locked meanwhile, say).
	ReturnAttempt(ctx context.Context, id string) (Activation, error)
	// LockIfSpent locks a pending or redeeming activation whose count
	// reached max_attempts, deleting any package and abandoning its set.
	// It reports whether it locked and whether a redemption had begun
	// (its certificates are the caller's to revoke).
	LockIfSpent(ctx context.Context, id string) (locked, redeeming bool, err error)
	// BeginRedemption moves a pending, unexpired activation to redeeming,
	// once: every other caller gets ErrAlreadyUsed. The claim is held under
	// lease until the redemption stores its package or gives it back.
	BeginRedemption(ctx context.Context, id, redemptionID string, now time.Time, lease Lease) error
	// RenewLeases extends to until the leases of holder's claims on the
	// redemptions ids that have no package yet.
	RenewLeases(ctx context.Context, holder string, ids []string, until time.Time) (int64, error)
	// AbortRedemption returns a redeeming activation without a package to
	// pending (issuance failed before anything was delivered).
	AbortRedemption(ctx context.Context, id, redemptionID string) error
	// StorePackage keeps the sealed package of a redeeming activation.
	StorePackage(ctx context.Context, id, redemptionID string, sealed []byte, sha256 string, size int64, manifest []byte, confirmBy time.Time) error
	// Confirm completes a redeeming activation, deletes its package and
	// makes the set active; ErrAlreadyUsed if it is not redeeming.
	Confirm(ctx context.Context, redemptionID string, now time.Time) error
	// ExpirePending marks pending activations past expiry expired and their
	// sets abandoned.
	ExpirePending(ctx context.Context, now time.Time) (int64, error)
	// ClaimUnconfirmed marks redeeming activations past confirm_by expired,
	// deletes their packages and returns their credential set ids (whose
	// certificates the caller revokes).
	ClaimUnconfirmed(ctx context.Context, now time.Time) ([]string, error)
	// LapsedRedemptions lists the redeeming activations without a package
	// whose lease ran out before now (all of them, with all: at the start
	// of the only process of an embedded store, every claim is a dead one).
	LapsedRedemptions(ctx context.Context, now time.Time, all bool) ([]Redemption, error)
	// ReleaseRedemption gives a lapsed claim back: the activation returns
	// to pending and its set, when escrowKeyID is set, gets that escrow
	// key instead of the one the dead issuance may have certified; in one
	// transaction. With a non-zero lapsedBy the lease must have run out by
	// then. It reports whether it released (false: another replica did,
	// the holder renewed, or the package was stored meanwhile).
	ReleaseRedemption(ctx context.Context, r Redemption, escrowKeyID string, lapsedBy time.Time) (bool, error)
	// LapseClaim ends the claim on a redemption without a package that
	// its process gives up but cannot give back yet (the escrow cannot
	// make the set a new key): no holder renews it, its lease ran out at
	// at, and LapsedRedemptions lists it from then on. ErrNotFound if the
	// claim is not that redemption's, or the package was stored.
	LapseClaim(ctx context.Context, r Redemption, at time.Time) error
	// ActivationCensus counts activations by state, and the redeeming ones
	// without a package.
	ActivationCensus(ctx context.Context) (map[string]int, int, error)
	// SetCredentialSetState changes a set's state.
	SetCredentialSetState(ctx context.Context, id, state string, now time.Time) error
	// CredentialSetsOfPerson lists a person's credential sets, newest first.
	CredentialSetsOfPerson(ctx context.Context, personID string) ([]CredentialSet, error)
	// CertificatesOfSet lists the certificates issued for a set.
	CertificatesOfSet(ctx context.Context, setID string) ([]CertificateRecord, error)
}

// IdentitySelector picks a PIV identity: one card by FASC-N or card UUID,
// or every card of a person. Exactly one field is set.
type IdentitySelector struct {
	FASCN    []byte
	CardUUID string
	PersonID string
	// CertSHA256 picks the sets bound to one PIV Authentication
	// certificate (linkage checks); it is not for terminations.
	CertSHA256 string
}

// Termination is a terminated PIV identity.
type Termination struct {
	Selector     IdentitySelector
	TerminatedAt time.Time
	Comment      string
}

// TerminationStore keeps terminated PIV identities.
type TerminationStore interface {
	// Terminate records a termination; terminating again keeps the first
	// record and is not an error.
	Terminate(ctx context.Context, t Termination) error
	// Terminated reports whether the card (FASC-N, UUID) or its person is
	// terminated.
	Terminated(ctx context.Context, fascn []byte, cardUUID, personID string) (bool, error)
	// CredentialSetsOfIdentity lists the identity's credential sets.
	CredentialSetsOfIdentity(ctx context.Context, sel IdentitySelector) ([]CredentialSet, error)
	// RememberDelivery records an accepted webhook request by its
	// signature until expires; it reports false when the signature is
	// recorded already (a replay). DeleteExpired forgets it after.
	RememberDelivery(ctx context.Context, signature string, expires time.Time) (first bool, err error)
	// ForgetDelivery drops a recorded signature (the request failed and
	// its sender will send it again).
	ForgetDelivery(ctx context.Context, signature string) error
	// FinishTermination records that the termination of sel (in any
	// spelling of a person id) was carried out: every set ended, every
	// certificate revoked.
	FinishTermination(ctx context.Context, sel IdentitySelector, at time.Time) error
	// TerminatedAt is when sel (in any spelling of a person id) was
	// terminated, as first recorded; ErrNotFound if it was not.
	TerminatedAt(ctx context.Context, sel IdentitySelector) (time.Time, error)
	// TerminationUnfinished reports whether sel (in any spelling of a
	// person id) has a termination recorded before before and not
	// finished.
	TerminationUnfinished(ctx context.Context, sel IdentitySelector, before time.Time) (bool, error)
	// UnfinishedTerminations lists up to limit terminations recorded
	// before before and not finished, picked at random (some that keep
	// failing must not hold back the others).
	UnfinishedTerminations(ctx context.Context, before time.Time, limit int) ([]Termination, error)
}
