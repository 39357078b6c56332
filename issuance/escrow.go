package issuance

import (
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/credgw/credgw/pkcs11"
	"github.com/credgw/credgw/store"
)

// KEK is a key-encryption key: AES-256-GCM, in the HSM (*pkcs11.AESKey
// satisfies it) or, in the embedded default, in a file.
type KEK interface {
	Seal(ctx context.Context, plaintext, aad []byte) ([]byte, error)
	Open(ctx context.Context, sealed, aad []byte) ([]byte, error)
}

// ErrEscrowUnreadable means an escrowed key could not be unsealed: wrong
// key-encryption key, or the row was altered.
var ErrEscrowUnreadable = errors.New("issuance: escrowed key cannot be unsealed")

// FileKEK is an AES-256 key read from a file (32 raw bytes or 64 hex
// digits). For the embedded default only: production keeps the KEK in an HSM.
type FileKEK struct{ aead cipher.AEAD }

// LoadFileKEK reads a key file, which must not be readable by others.
func LoadFileKEK(path string) (*FileKEK, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("issuance: escrow KEK: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("issuance: escrow KEK %s has mode %v: make it 0600", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) != 32 {
		if h, err := hex.DecodeString(string(trimNL(b))); err == nil && len(h) == 32 {
			b = h
		} else {
			return nil, fmt.Errorf("issuance: escrow KEK %s: want 32 bytes or 64 hex digits", path)
		}
	}
	return NewFileKEK(b)
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// NewFileKEK wraps a 32-byte key.
func NewFileKEK(key []byte) (*FileKEK, error) {
	if len(key) != 32 {
		return nil, errors.New("issuance: a KEK is 32 bytes")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &FileKEK{aead: aead}, nil
}

// WriteFileKEK makes a new random KEK file (0600).
func WriteFileKEK(path string) error {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(hex.EncodeToString(k)+"\n"), 0o600)
}

// Seal encrypts under a random nonce: nonce ‖ ciphertext ‖ tag.
func (k *FileKEK) Seal(_ context.Context, pt, aad []byte) ([]byte, error) {
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return k.aead.Seal(nonce, nonce, pt, aad), nil
}

// Open decrypts what Seal made.
func (k *FileKEK) Open(_ context.Context, sealed, aad []byte) ([]byte, error) {
	n := k.aead.NonceSize()
	if len(sealed) < n {
		return nil, ErrEscrowUnreadable
	}
	pt, err := k.aead.Open(nil, sealed[:n], sealed[n:], aad)
	if err != nil {
		return nil, ErrEscrowUnreadable
	}
	return pt, nil
}

// EscrowKeyType is the key type of escrowed key-management keys.
type EscrowKeyType string

// RSA-3072 is the default: RSA for S/MIME interoperability, 3072 bits so
// that certificates may be valid past 2030-12-31 (RSA2048Until). RSA-2048
// is allowed for certificates ending before; EC P-256 is an option.
const (
	EscrowRSA3072 EscrowKeyType = "rsa3072"
	EscrowRSA2048 EscrowKeyType = "rsa2048"
	EscrowP256    EscrowKeyType = "p256"
)

// RetainAfterExpiry: escrowed keys are kept at least a year after their
// certificate expires (Common Policy §4.12.1).
const RetainAfterExpiry = 366 * 24 * time.Hour

// Escrow makes key-management keys, seals them under the KEK and stores
// them before their certificate is issued. A background pool keeps keys
// ready so that a request does not wait for RSA key generation.
type Escrow struct {
	kek     KEK
	kekID   string
	store   store.IssuanceStore
	keyType EscrowKeyType
	now     func() time.Time
	pool    chan crypto.Signer
	stop    chan struct{}
	wg      sync.WaitGroup
	// The pool's failure handling (EscrowConfig).
	log        *slog.Logger
	poolFailed func(error)
	generateFn func() (crypto.Signer, error)
	after      func(time.Duration) <-chan time.Time
}

// The escrow pool retries a failed key generation after PoolRetryMin,
// doubling the wait after each failure in a row up to PoolRetryMax.
const (
	PoolRetryMin = time.Second
	PoolRetryMax = time.Minute
)

// EscrowConfig configures Escrow.
type EscrowConfig struct {
	KEK KEK
	// KEKID names the KEK (recorded with each key, for rotation).
	KEKID   string
	Store   store.IssuanceStore
	KeyType EscrowKeyType
	// PoolSize keys are kept ready (0: generate on demand).
	PoolSize int
	Now      func() time.Time
	// Log receives the pool's failures (default: discarded).
	Log *slog.Logger
	// PoolFailed is called after each failed key generation in the pool
	// (the server counts them: credgw_escrow_pool_failures_total).
	PoolFailed func(error)
	// Generate makes one key (default: of KeyType from crypto/rand) and
	// After waits before the pool retries (default: time.After); tests
	// inject both.
	Generate func() (crypto.Signer, error)
	After    func(time.Duration) <-chan time.Time
}

// NewEscrow starts the key pool.
func NewEscrow(cfg EscrowConfig) (*Escrow, error) {
	if cfg.KEK == nil || cfg.Store == nil {
		return nil, errors.New("issuance: escrow needs a KEK and a store")
	}
	switch cfg.KeyType {
	case "":
		cfg.KeyType = EscrowRSA3072
	case EscrowRSA3072, EscrowRSA2048, EscrowP256:
	default:
		return nil, fmt.Errorf("issuance: escrow key type %q: rsa3072, rsa2048 or p256", cfg.KeyType)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.KEKID == "" {
		cfg.KEKID = "kek-1"
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.PoolFailed == nil {
		cfg.PoolFailed = func(error) {}
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	e := &Escrow{kek: cfg.KEK, kekID: cfg.KEKID, store: cfg.Store, keyType: cfg.KeyType, now: cfg.Now, stop: make(chan struct{}),
		log: cfg.Log, poolFailed: cfg.PoolFailed, generateFn: cfg.Generate, after: cfg.After}
	if cfg.PoolSize > 0 {
		e.pool = make(chan crypto.Signer, cfg.PoolSize)
		e.wg.Add(1)
		go e.fill()
	}
	return e, nil
}

// Close stops the pool.
func (e *Escrow) Close() {
	close(e.stop)
	e.wg.Wait()
}

// fill keeps the pool full until Close. A failed key generation does not
// end it: it is logged and counted, and retried after a wait that doubles
// with each failure in a row (PoolRetryMin to PoolRetryMax). Meanwhile
// NewKey generates on demand.
func (e *Escrow) fill() {
	defer e.wg.Done()
	wait := PoolRetryMin
	for failures := 1; ; {
		k, err := e.generate()
		if err != nil {
			e.poolFailed(err)
			e.log.Error("escrow key pool: key generation failed; retrying", "err", err.Error(),
				"failures_in_a_row", failures, "retry_in", wait.String())
			select {
			case <-e.after(wait):
			case <-e.stop:
				return
			}
			wait, failures = min(2*wait, PoolRetryMax), failures+1
			continue
		}
		wait, failures = PoolRetryMin, 1
		select {
		case e.pool <- k:
		case <-e.stop:
			return
		}
	}
}

func (e *Escrow) generate() (crypto.Signer, error) {
	if e.generateFn != nil {
		return e.generateFn()
	}
	switch e.keyType {
	case EscrowP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case EscrowRSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	}
	return rsa.GenerateKey(rand.Reader, 3072)
}

// EscrowedKey is a key-management key: its private key is used once to make
// the CSR and the package, and lives on only sealed in the store.
type EscrowedKey struct {
	ID        string
	Key       crypto.Signer
	CreatedAt time.Time
	// CertSerial is set once its certificate is issued; CertDER once it is
	// recorded.
	CertSerial string
	CertDER    []byte
	// Compromised: its certificate was revoked for key compromise (a key
	// history still carries it, for old mail, marked so).
	Compromised bool
}

// NewKey makes a key for a person, seals it and stores it: it is escrowed
// before any certificate for it exists.
func (e *Escrow) NewKey(ctx context.Context, personID string) (*EscrowedKey, error) {
	var key crypto.Signer
	select {
	case key = <-e.pool:
	default:
		var err error
		if key, err = e.generate(); err != nil {
			return nil, err
		}
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	spki, err := SPKIHash(key.Public())
	if err != nil {
		return nil, err
	}
	idb := make([]byte, 16)
	if _, err := rand.Read(idb); err != nil {
		return nil, err
	}
	id := hex.EncodeToString(idb)
	sealed, err := e.kek.Seal(ctx, der, escrowAAD(id, personID))
	clear(der)
	if err != nil {
		return nil, fmt.Errorf("issuance: seal escrowed key: %w", err)
	}
	now := e.now()
	if err := e.store.PutEscrowKey(ctx, store.EscrowKey{ID: id, PersonID: personID, KeyType: string(e.keyType),
		SPKISHA256: spki, KEKID: e.kekID, Sealed: sealed, CreatedAt: now}); err != nil {
		return nil, err
	}
	return &EscrowedKey{ID: id, Key: key, CreatedAt: now}, nil
}

// escrowAAD binds a sealed key to its row and person: a sealed blob moved
// to another row or person does not open.
func escrowAAD(id, personID string) []byte {
	h := sha256.Sum256([]byte("credgw-escrow-v1\x00" + id + "\x00" + personID))
	return h[:]
}

// Certified records the key's certificate; the key is kept until a year
// after the certificate expires.
func (e *Escrow) Certified(ctx context.Context, keyID, serial string, notAfter time.Time) error {
	return e.store.LinkEscrowKey(ctx, keyID, serial, notAfter.Add(RetainAfterExpiry))
}

// unseal opens one escrow row with the KEK.
func (e *Escrow) unseal(ctx context.Context, r store.EscrowKey) (*EscrowedKey, error) {
	der, err := e.kek.Open(ctx, r.Sealed, escrowAAD(r.ID, r.PersonID))
	if err != nil && !errors.Is(err, pkcs11.ErrTokenUnavailable) && !errors.Is(err, pkcs11.ErrKeyChanged) && ctx.Err() == nil {
		der, err = e.unsealSpelled(ctx, r, err)
	}
	if err != nil {
		// An HSM that is gone, or a call given up, says nothing about the
		// key: the caller answers Unavailable (or the context's error)
		// and the device asks again.
		// Nor does a KEK the token no longer holds (re-created with
		// another key under its id): the operator's matter, and the key
		// opens again once the KEK is back.
		if errors.Is(err, pkcs11.ErrTokenUnavailable) || errors.Is(err, pkcs11.ErrKeyChanged) {
			return nil, fmt.Errorf("issuance: unsealing escrowed key %s: %w", r.ID, err)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("issuance: unsealing escrowed key %s: %w (%v)", r.ID, ctx.Err(), err)
		}
		return nil, fmt.Errorf("%w: key %s: %v", ErrEscrowUnreadable, r.ID, err)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	clear(der)
	if err != nil {
		return nil, fmt.Errorf("%w: key %s: %v", ErrEscrowUnreadable, r.ID, err)
	}
	return &EscrowedKey{ID: r.ID, Key: k.(crypto.Signer), CreatedAt: r.CreatedAt, CertSerial: r.CertSerial, CertDER: r.CertDER}, nil
}

// unsealSpelled opens a key sealed under another spelling of its person
// id: before migration 00021 folded the stored ids, a key was sealed with
// the id as the card spelled it (an email address or a UPN), and a replica
// of the older release still does so while an upgrade rolls. Only
// spellings that fold to the row's person id are tried, so a blob moved to
// another person still does not open. It returns the first error when
// none opens it.
func (e *Escrow) unsealSpelled(ctx context.Context, r store.EscrowKey, first error) ([]byte, error) {
	spellings, err := e.store.PersonIDSpellings(ctx, r.PersonID)
	if err != nil {
		return nil, errors.Join(first, err)
	}
	for _, p := range spellings {
		if der, err := e.kek.Open(ctx, r.Sealed, escrowAAD(r.ID, p)); err == nil {
			e.reseal(ctx, r, der)
			return der, nil
		}
	}
	return nil, first
}

// reseal seals a key opened under another spelling again under the id its
// row holds, so that the next unseal needs no search. A failure only
// leaves it as it was (the search opens it next time).
func (e *Escrow) reseal(ctx context.Context, r store.EscrowKey, der []byte) {
	sealed, err := e.kek.Seal(ctx, der, escrowAAD(r.ID, r.PersonID))
	if err == nil {
		_, err = e.store.ResealEscrowKey(ctx, r.ID, r.Sealed, sealed)
	}
	if err != nil && e.log != nil {
		e.log.WarnContext(ctx, "sealing an escrowed key again under its folded person id", "escrow_key_id", r.ID, "err", err.Error())
	}
}

// History unseals the key history a device receives beside the current
// key: up to max of the person's keys other than currentID that are
// certified, whose certificate is recorded and whose package a device
// confirmed (store.EscrowKey.Delivered) and that no termination retired,
// newest first. A key whose package
// was never confirmed was revoked before anyone could encrypt to it: it
// stays in escrow until retain_until but is not delivered. Only those are
// unsealed (a long history costs nothing here). It does not depend on the
// current key's certificate, so it runs while that is being issued.
func (e *Escrow) History(ctx context.Context, personID, currentID string, max int) ([]*EscrowedKey, error) {
	rows, err := e.store.EscrowKeys(ctx, personID) // newest first
	if err != nil {
		return nil, err
	}
	out := make([]*EscrowedKey, 0, min(max, len(rows)))
	for _, r := range rows {
		if len(out) >= max {
			break
		}
		if r.ID == currentID || r.CertDER == nil || !r.Delivered { // the current key; not certified, recorded or delivered
			continue
		}
		if !r.RetiredAt.IsZero() { // a termination ended its person: perhaps another holder of the address now
			continue
		}
		k, err := e.unseal(ctx, r)
		if err != nil {
			return nil, err
		}
		k.Compromised = RevocationReason(r.CertRevocationReason) == ReasonKeyCompromise
		out = append(out, k)
	}
	return out, nil
}

// Key unseals one escrowed key of a person (the key made at enrollment,
// before its certificate exists). Its CertDER is nil: History carries the
// certificates of the keys it returns.
func (e *Escrow) Key(ctx context.Context, id, personID string) (*EscrowedKey, error) {
	r, err := e.store.EscrowKey(ctx, id, personID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w: no escrowed key %s for this person", ErrEscrowUnreadable, id)
	}
	if err != nil {
		return nil, err
	}
	return e.unseal(ctx, r)
}

// GatewaySecret returns the gateway's 32-byte secret of that name and when
// it was made, sealed under the KEK in the store: made by the first replica
// that asks, read by the others. A copy of the database without the KEK
// does not reveal it.
//
// The time is sealed with the secret (in the AAD): what it was made
// before may pass a check the secret did not exist for (the activation
// pepper's upgrade window), so a database writer who moved created_at
// would reopen that window for rows of their own. A moved time does not
// unseal. A secret sealed by an earlier credgw, with its name only,
// comes with the zero time: its time is not known, so no such window.
func (e *Escrow) GatewaySecret(ctx context.Context, name string) ([]byte, time.Time, error) {
	fresh := make([]byte, 32)
	if _, err := rand.Read(fresh); err != nil {
		return nil, time.Time{}, err
	}
	now := e.now()
	sealed, err := e.kek.Seal(ctx, fresh, gatewaySecretAAD(name, now))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("issuance: sealing the gateway secret %s: %w", name, err)
	}
	stored, since, err := e.store.GatewaySecret(ctx, name, sealed, now)
	if err != nil {
		return nil, time.Time{}, err
	}
	if secret, err := e.kek.Open(ctx, stored, gatewaySecretAAD(name, since)); err == nil {
		return secret, since, nil
	}
	secret, err := e.kek.Open(ctx, stored, []byte("credgw gateway secret\x00"+name))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("issuance: the gateway secret %s does not unseal under this KEK (escrow.kek_uri or kek_file), or its row in gateway_secrets was changed: %w", name, err)
	}
	return secret, time.Time{}, nil
}

// gatewaySecretAAD binds a gateway secret to its name and to when it was
// made, as the store keeps it (microseconds).
func gatewaySecretAAD(name string, made time.Time) []byte {
	return []byte("credgw gateway secret v2\x00" + name + "\x00" + strconv.FormatInt(made.UnixMicro(), 10))
}

// PoolDepth is how many pre-generated keys wait in the pool now (the
// gateway's credgw_escrow_pool_depth gauge).
func (e *Escrow) PoolDepth() int { return len(e.pool) }
