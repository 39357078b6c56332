package issuance

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credgw/credgw/pkcs11"
	"github.com/credgw/credgw/store"
	_ "modernc.org/sqlite"
)

// TestEscrowWithHSMKEK: the key-management key is sealed under an AES key in
// the HSM and stored before its certificate; the database alone does not
// reveal it; only the HSM key opens it.
func TestEscrowWithHSMKEK(t *testing.T) {
	ctx := context.Background()
	kek, err := testTok.GenerateAESKey(ctx, pkcs11.KeyRef{ID: []byte("kek-escrow-test"), Label: "escrow KEK"})
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEscrow(EscrowConfig{KEK: kek, KEKID: "hsm-kek-1", Store: testStore, PoolSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	id := identity(t)
	id.PersonID = "escrow-person"
	var serials, keyIDs []string
	for i := 0; i < 2; i++ {
		k, err := e.NewKey(ctx, id.PersonID)
		if err != nil {
			t.Fatal(err)
		}
		// Escrowed before its certificate exists.
		rows, _ := testStore.EscrowKeys(ctx, id.PersonID)
		if len(rows) != i+1 {
			t.Fatalf("%d escrow rows before issuance", len(rows))
		}
		der, _ := x509.MarshalPKCS8PrivateKey(k.Key)
		if bytes.Contains(rows[0].Sealed, der[len(der)-64:]) {
			t.Fatal("the sealed row contains the key in the clear")
		}
		// Each key is its own set's (as every set has one escrowed key).
		got, err := testCA.Issue(ctx, Request{Profile: KeyManagement, CSR: newCSR(t, k.Key), Identity: id, CredentialSetID: fmt.Sprintf("hsm-set-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		if got.Certificate.KeyUsage != x509.KeyUsageKeyEncipherment {
			t.Errorf("RSA key management KU %v", got.Certificate.KeyUsage)
		}
		if err := e.Certified(ctx, k.ID, got.Certificate.SerialNumber.Text(16), got.Certificate.NotAfter); err != nil {
			t.Fatal(err)
		}
		serials = append(serials, got.Certificate.SerialNumber.Text(16))
		keyIDs = append(keyIDs, k.ID)
	}
	// Not delivered yet: no device confirmed the packages of the sets.
	if h, err := e.History(ctx, id.PersonID, "", 21); err != nil || len(h) != 0 {
		t.Fatalf("history before the package was confirmed: %d keys, %v", len(h), err)
	}
	for i, k := range keyIDs {
		confirmSet(t, fmt.Sprintf("hsm-set-%d", i), id.PersonID, k)
	}
	hist, err := e.History(ctx, id.PersonID, "", 21)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 2 || hist[0].CertSerial != serials[1] || hist[1].CertSerial != serials[0] {
		t.Fatalf("history not newest first: %+v", hist)
	}
	// Beside the current key, bounded: the current key is left out.
	if h, err := e.History(ctx, id.PersonID, hist[0].ID, 21); err != nil || len(h) != 1 || h[0].CertSerial != serials[0] {
		t.Fatalf("history beside the current key: %+v %v", h, err)
	}
	if h, err := e.History(ctx, id.PersonID, "", 1); err != nil || len(h) != 1 || h[0].CertSerial != serials[1] {
		t.Fatalf("history of at most one: %+v %v", h, err)
	}
	if _, ok := hist[0].Key.(*rsa.PrivateKey); !ok {
		t.Fatalf("escrowed key is %T, want RSA (default)", hist[0].Key)
	}
	rows, _ := testStore.EscrowKeys(ctx, id.PersonID)
	if d := time.Until(rows[0].RetainUntil); d < 365*24*time.Hour+300*24*time.Hour {
		t.Errorf("kept only %v", d)
	}

	// Without the HSM key: another KEK cannot open the rows.
	other, err := testTok.GenerateAESKey(ctx, pkcs11.KeyRef{ID: []byte("kek-other")})
	if err != nil {
		t.Fatal(err)
	}
	wrong, _ := NewEscrow(EscrowConfig{KEK: other, Store: testStore})
	defer wrong.Close()
	if _, err := wrong.History(ctx, id.PersonID, "", 21); !errors.Is(err, ErrEscrowUnreadable) {
		t.Fatalf("a wrong KEK: %v", err)
	}
	// A sealed blob moved to another person does not open either.
	if err := testStore.PutEscrowKey(ctx, rowsMoved(rows[0], "someone-else")); err != nil {
		t.Fatal(err)
	}
	testStore.LinkEscrowKey(ctx, "moved-"+rows[0].ID, rows[0].CertSerial, time.Now())
	// ...and made its confirmed set's key, so that it counts as delivered.
	for i, k := range keyIDs {
		if k == rows[0].ID {
			if err := testStore.SetEscrowKey(ctx, fmt.Sprintf("hsm-set-%d", i), "moved-"+rows[0].ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := e.History(ctx, "someone-else", "", 21); !errors.Is(err, ErrEscrowUnreadable) {
		t.Fatalf("moved row: %v", err)
	}
}

// confirmSet records credential set setID, whose escrowed key is
// escrowKeyID, as redeemed and confirmed by a device: that key, certified
// for it, is delivered.
func confirmSet(t *testing.T, setID, personID, escrowKeyID string) {
	t.Helper()
	ctx := context.Background()
	now := time.Now()
	cs := store.CredentialSet{ID: setID, PersonID: personID, PIVCertSHA256: "c", CardUUID: "u", RawSubject: []byte{0x30, 0},
		IdentityName: "n", CredentialType: "t", State: store.SetPending, CreatedAt: now, EscrowKeyID: escrowKeyID}
	a := store.Activation{ID: "act-" + setID, LookupHash: "lh-" + setID, Verifier: []byte{1}, MaxAttempts: 3, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := testStore.CreateEnrollment(ctx, cs, a, 0); err != nil {
		t.Fatal(err)
	}
	if err := testStore.BeginRedemption(ctx, a.ID, "r-"+setID, now, store.Lease{}); err != nil {
		t.Fatal(err)
	}
	if err := testStore.StorePackage(ctx, a.ID, "r-"+setID, []byte{1}, "h", 1, nil, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := testStore.Confirm(ctx, "r-"+setID, now); err != nil {
		t.Fatal(err)
	}
}

func TestFileKEK(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "kek")
	if err := WriteFileKEK(path); err != nil {
		t.Fatal(err)
	}
	k, err := LoadFileKEK(path)
	if err != nil {
		t.Fatal(err)
	}
	sealed, _ := k.Seal(ctx, []byte("secret"), []byte("aad"))
	if pt, err := k.Open(ctx, sealed, []byte("aad")); err != nil || string(pt) != "secret" {
		t.Fatalf("%q %v", pt, err)
	}
	if _, err := k.Open(ctx, sealed, []byte("other")); !errors.Is(err, ErrEscrowUnreadable) {
		t.Fatalf("wrong aad: %v", err)
	}
	os.Chmod(path, 0o644)
	if _, err := LoadFileKEK(path); err == nil {
		t.Fatal("a world-readable KEK file was accepted")
	}
}

func rowsMoved(r store.EscrowKey, person string) store.EscrowKey {
	r.ID = "moved-" + r.ID
	r.PersonID = person
	r.SPKISHA256 = "moved-" + r.SPKISHA256
	return r
}

// lockedBuffer is a log sink the pool goroutine and the test share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestEscrowPoolSurvivesFailures: a failed key generation in the pool is
// logged and counted, and the pool goes on filling after a wait that
// doubles up to PoolRetryMax; Close ends it while it waits.
func TestEscrowPoolSurvivesFailures(t *testing.T) {
	kek, err := NewFileKEK(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	const failing = 8
	var calls atomic.Int64
	generate := func() (crypto.Signer, error) {
		if calls.Add(1) <= failing {
			return nil, errors.New("injected: no entropy")
		}
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	var waits []time.Duration
	after := func(d time.Duration) <-chan time.Time {
		waits = append(waits, d)
		c := make(chan time.Time, 1)
		c <- time.Time{}
		return c
	}
	var counted atomic.Int64
	logs := &lockedBuffer{}
	e, err := NewEscrow(EscrowConfig{KEK: kek, Store: testStore, KeyType: EscrowP256, PoolSize: 1, Generate: generate, After: after,
		Log: slog.New(slog.NewTextHandler(logs, nil)), PoolFailed: func(error) { counted.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	// The pool's first key: every failure and wait happened before it.
	select {
	case k := <-e.pool:
		if k == nil {
			t.Fatal("nil key")
		}
	case <-time.After(time.Minute): // a deadlock guard, not a timing check
		t.Fatal("the pool never filled after the failures")
	}
	if n := counted.Load(); n != failing {
		t.Errorf("PoolFailed called %d times, want %d", n, failing)
	}
	if n := strings.Count(logs.String(), "level=ERROR msg=\"escrow key pool: key generation failed; retrying\""); n != failing {
		t.Errorf("%d error lines, want %d:\n%s", n, failing, logs)
	}
	if !strings.Contains(logs.String(), "injected: no entropy") {
		t.Errorf("the log does not say why:\n%s", logs)
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, PoolRetryMax, PoolRetryMax}
	if !slices.Equal(waits, want) {
		t.Errorf("waits %v, want %v", waits, want)
	}
	e.Close()

	// Failing for good: Close ends the pool while it waits.
	waiting := make(chan struct{}, 1)
	e, err = NewEscrow(EscrowConfig{KEK: kek, Store: testStore, KeyType: EscrowP256, PoolSize: 1,
		Generate:   func() (crypto.Signer, error) { return nil, errors.New("injected") },
		After:      func(time.Duration) <-chan time.Time { return nil },
		PoolFailed: func(error) { waiting <- struct{}{} }})
	if err != nil {
		t.Fatal(err)
	}
	<-waiting
	e.Close()
}

// outageKEK is a KEK whose HSM went away after the keys were sealed.
type outageKEK struct {
	KEK
	down    atomic.Bool
	changed atomic.Bool
}

func (k *outageKEK) Open(ctx context.Context, sealed, aad []byte) ([]byte, error) {
	if k.down.Load() {
		return nil, &pkcs11.UnavailableError{Op: "escrow KEK", Reason: "token not present", Err: errors.New("CKR_TOKEN_NOT_PRESENT")}
	}
	if k.changed.Load() {
		return nil, fmt.Errorf("%w: secret key with CKA_ID 6b656b on token \"escrow\" is no longer the key this AES key was opened with", pkcs11.ErrKeyChanged)
	}
	return k.KEK.Open(ctx, sealed, aad)
}

// TestUnsealKeepsHSMOutage: an escrowed key that cannot be unsealed because
// the HSM is gone is an HSM outage (the gateway answers Unavailable and
// the device retries), not an unreadable key; a key that does not open is
// unreadable and nothing else.
func TestUnsealKeepsHSMOutage(t *testing.T) {
	ctx := context.Background()
	fk, err := NewFileKEK(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	kek := &outageKEK{KEK: fk}
	e, err := NewEscrow(EscrowConfig{KEK: kek, Store: testStore, KeyType: EscrowP256})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	const person = "unseal-outage@example.com"
	k, err := e.NewKey(ctx, person)
	if err != nil {
		t.Fatal(err)
	}

	kek.down.Store(true)
	_, err = e.Key(ctx, k.ID, person)
	var hsm *pkcs11.UnavailableError
	if !errors.As(err, &hsm) || !errors.Is(err, pkcs11.ErrTokenUnavailable) {
		t.Errorf("unseal with the HSM gone: %v, want a *pkcs11.UnavailableError", err)
	}
	if errors.Is(err, ErrEscrowUnreadable) {
		t.Errorf("unseal with the HSM gone reads as an unreadable key: %v", err)
	}

	// The token re-created with another key under the KEK's id: the
	// operator's matter (the gateway answers Unavailable and resumes when
	// the key is back), not an escrowed key that is unreadable.
	kek.down.Store(false)
	kek.changed.Store(true)
	_, err = e.Key(ctx, k.ID, person)
	if !errors.Is(err, pkcs11.ErrKeyChanged) || errors.Is(err, ErrEscrowUnreadable) {
		t.Errorf("unseal with the KEK changed: %v, want pkcs11.ErrKeyChanged only", err)
	}
	kek.changed.Store(false)
	if _, err := e.Key(ctx, k.ID, person); err != nil {
		t.Errorf("unseal with the KEK back: %v", err)
	}

	other, err := NewFileKEK(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	wrong, err := NewEscrow(EscrowConfig{KEK: other, Store: testStore, KeyType: EscrowP256})
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	_, err = wrong.Key(ctx, k.ID, person)
	if !errors.Is(err, ErrEscrowUnreadable) || errors.Is(err, pkcs11.ErrTokenUnavailable) {
		t.Errorf("unseal under another KEK: %v, want ErrEscrowUnreadable only", err)
	}
}

// movedSince is a store whose gateway_secrets.created_at someone with
// write access to the database has moved.
type movedSince struct {
	store.IssuanceStore
	by time.Duration
}

func (m movedSince) GatewaySecret(ctx context.Context, name string, sealed []byte, now time.Time) ([]byte, time.Time, error) {
	stored, since, err := m.IssuanceStore.GatewaySecret(ctx, name, sealed, now)
	return stored, since.Add(m.by), err
}

// TestGatewaySecretSinceIsSealed: when a gateway secret was made is sealed
// with it. The activation service lets verifiers made without the pepper
// pass for activations older than it, within a lifetime of its making; a
// database writer who moved created_at into the future (or to just now)
// would otherwise reopen that path for codes of their own, without the
// KEK. A moved time fails closed; a secret sealed before the time was
// sealed with it reads with no time at all (no such window).
func TestGatewaySecretSinceIsSealed(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "kek")
	if err := WriteFileKEK(path); err != nil {
		t.Fatal(err)
	}
	kek, err := LoadFileKEK(path)
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEscrow(EscrowConfig{KEK: kek, Store: testStore})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	secret, since, err := e.GatewaySecret(ctx, "since-test")
	if err != nil || since.IsZero() || time.Since(since) > time.Hour {
		t.Fatalf("first read: since %s, %v", since, err)
	}
	if again, at, err := e.GatewaySecret(ctx, "since-test"); err != nil || !bytes.Equal(again, secret) || !at.Equal(since) {
		t.Fatalf("second read: same %v, since %s (was %s), %v", bytes.Equal(again, secret), at, since, err)
	}
	for _, by := range []time.Duration{100 * 365 * 24 * time.Hour, time.Minute, -time.Hour} {
		moved, err := NewEscrow(EscrowConfig{KEK: kek, Store: movedSince{testStore, by}})
		if err != nil {
			t.Fatal(err)
		}
		_, at, err := moved.GatewaySecret(ctx, "since-test")
		moved.Close()
		if err == nil || !strings.Contains(err.Error(), "does not unseal") {
			t.Errorf("created_at moved by %s: read with since %s, %v; want a refusal", by, at, err)
		}
	}
	// A secret sealed before the time was sealed with it (name only).
	old, err := kek.Seal(ctx, bytes.Repeat([]byte{7}, 32), []byte("credgw gateway secret\x00since-old"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := testStore.GatewaySecret(ctx, "since-old", old, time.Now()); err != nil {
		t.Fatal(err)
	}
	got, at, err := e.GatewaySecret(ctx, "since-old")
	if err != nil || !bytes.Equal(got, bytes.Repeat([]byte{7}, 32)) || !at.IsZero() {
		t.Fatalf("a secret sealed by name only: since %s, %v; want it, with no time", at, err)
	}
}

// TestKeySealedUnderAnotherSpellingResealed: a key sealed before migration
// 00021 binds the person id as the card spelled it. It opens under the
// folded id by trying the person's other spellings, and is sealed again
// under the id its row holds, so that the next unseal costs no more than
// any other (before, every redemption paid a failed open, a look-up and
// more opens for each such key, for years).
func TestKeySealedUnderAnotherSpellingResealed(t *testing.T) {
	ctx := context.Background()
	kek, err := NewFileKEK(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEscrow(EscrowConfig{KEK: kek, KEKID: "file", Store: testStore})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	const mixed, folded = "Reseal.Me@Agency.GOV", "reseal.me@agency.gov"
	k, err := e.NewKey(ctx, mixed)
	if err != nil {
		t.Fatal(err)
	}
	// What 00021 does to the row; the set's email keeps the card's spelling.
	if _, err := testStore.AppendAudit(ctx, store.AuditEvent{At: time.Now(), Actor: "card", Action: "enroll", PersonID: mixed, Outcome: "ok"}); err != nil {
		t.Fatal(err)
	}
	if err := foldEscrowRow(ctx, k.ID, folded); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Key(ctx, k.ID, folded); err != nil {
		t.Fatalf("the key sealed under the card's spelling: %v", err)
	}
	row, err := testStore.EscrowKey(ctx, k.ID, folded)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kek.Open(ctx, row.Sealed, escrowAAD(k.ID, folded)); err != nil {
		t.Errorf("the key is not sealed again under the folded id: %v", err)
	}
}

// foldEscrowRow sets an escrowed key's person id as migration 00021 does.
func foldEscrowRow(ctx context.Context, id, personID string) error {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(testDir, "credgw.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.ExecContext(ctx, `UPDATE escrow_keys SET person_id = $1 WHERE id = $2`, personID, id)
	return err
}
