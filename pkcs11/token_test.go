package pkcs11

import (
	"bytes"
	"context"
	"crypto"
	"crypto/aes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	p11 "github.com/miekg/pkcs11"
)

func TestModuleOpenedOncePerPath(t *testing.T) {
	a := openModule(t)
	b, err := OpenModule(testModulePath)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatal("second OpenModule loaded the library again")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Tokens(); err != nil {
		t.Fatalf("module unusable after one of two Closes: %v", err)
	}
	// A symlink to the same library is the same Module.
	link := filepath.Join(t.TempDir(), "libsofthsm2-link.so")
	if err := os.Symlink(testModulePath, link); err != nil {
		t.Fatal(err)
	}
	viaLink, err := OpenModule(link)
	if err != nil {
		t.Fatal(err)
	}
	if viaLink != a {
		t.Fatal("a symlink to the library loaded it as a second Module")
	}
	viaLink.Close()
	// Concurrent opens and closes share one Module.
	var wg sync.WaitGroup
	mods := make([]*Module, 8)
	for i := range mods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := OpenModule(testModulePath)
			if err != nil {
				t.Error(err)
				return
			}
			mods[i] = m
		}()
	}
	wg.Wait()
	for _, m := range mods {
		if m != a {
			t.Error("concurrent OpenModule returned another Module")
		}
		m.Close()
	}
}

func TestModuleErrors(t *testing.T) {
	tests := []struct{ name, path, want string }{
		{"empty", "", "no module path"},
		{"missing", "/nonexistent/libnothing.so", "no such file"},
		{"not a library", "/etc/hostname", "could not be loaded"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := OpenModule(tc.path)
			if !errors.Is(err, ErrModule) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrModule saying %q", err, tc.want)
			}
		})
	}
}

func TestWrongPIN(t *testing.T) {
	const wrong = "1357911"
	m := openModule(t)
	label := uniqueLabel(t)
	if _, err := m.InitToken(label, []byte(testSOPIN), []byte(testPIN)); err != nil {
		t.Fatal(err)
	}
	_, err := m.OpenToken(context.Background(), TokenConfig{Label: label, PIN: []byte(wrong)})
	if !errors.Is(err, ErrPINIncorrect) {
		t.Fatalf("err = %v, want ErrPINIncorrect", err)
	}
	if strings.Contains(err.Error(), wrong) || strings.Contains(err.Error(), testPIN) {
		t.Fatalf("error %q contains a PIN", err)
	}
	// Log in with the right PIN; the module then answers every Login with
	// CKR_USER_ALREADY_LOGGED_IN, and the wrong PIN must still fail.
	good, err := m.OpenToken(context.Background(), TokenConfig{Label: label, PIN: []byte(testPIN)})
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	if _, err := m.OpenToken(context.Background(), TokenConfig{Label: label, PIN: []byte(wrong)}); !errors.Is(err, ErrPINIncorrect) {
		t.Fatalf("wrong PIN on a logged-in token: err = %v, want ErrPINIncorrect", err)
	}
	again, err := m.OpenToken(context.Background(), TokenConfig{Label: label, PIN: []byte(testPIN)})
	if err != nil {
		t.Fatalf("right PIN on a logged-in token: %v", err)
	}
	again.Close()
}

func TestMissingToken(t *testing.T) {
	m := openModule(t)
	newToken(t, TokenConfig{Label: "present-token"})
	for _, cfg := range []TokenConfig{{Label: "no-such-card"}, {Serial: "0000deadbeef0000"}} {
		_, err := m.OpenToken(context.Background(), cfg)
		if !errors.Is(err, ErrTokenNotFound) {
			t.Fatalf("%+v: err = %v, want ErrTokenNotFound", cfg, err)
		}
		if !strings.Contains(err.Error(), `"present-token"`) {
			t.Errorf("error %q does not list the tokens that are present", err)
		}
	}
	if _, err := m.OpenToken(context.Background(), TokenConfig{}); err == nil {
		t.Error("OpenToken without label or serial succeeded")
	}
}

func TestTokenBySerialAndSlot(t *testing.T) {
	m := openModule(t)
	tok := newToken(t, TokenConfig{})
	var info TokenInfo
	tokens, err := m.Tokens()
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range tokens {
		if ti.Label == tok.Label() {
			info = ti
		}
	}
	for _, cfg := range []TokenConfig{
		{Serial: info.Serial},
		{SlotID: &info.SlotID},
		{Label: info.Label, Serial: info.Serial, SlotID: &info.SlotID},
	} {
		cfg.PIN = []byte(testPIN)
		other, err := m.OpenToken(context.Background(), cfg)
		if err != nil {
			t.Fatalf("%+v: %v", cfg, err)
		}
		other.Close()
	}
	wrongSlot := info.SlotID + 1
	if _, err := m.OpenToken(context.Background(), TokenConfig{Label: info.Label, SlotID: &wrongSlot}); !errors.Is(err, ErrTokenNotFound) {
		t.Fatalf("label with the wrong slot: %v", err)
	}
}

func TestOpenURI(t *testing.T) {
	tok := newToken(t, TokenConfig{})
	mustGenerate(t, tok, KeySpec{Type: ECP256, ID: []byte{1}, Label: "PIV AUTH key"})
	pinFile := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(pinFile, []byte(testPIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	u, err := ParseURI("pkcs11:token=" + tok.Label() + ";id=%01;type=private?module-path=" + testModulePath + "&pin-source=" + pinFile)
	if err != nil {
		t.Fatal(err)
	}
	viaURI, err := OpenURI(context.Background(), u, "")
	if err != nil {
		t.Fatal(err)
	}
	defer viaURI.Close()
	s, err := viaURI.Signer(context.Background(), KeyRef{ID: u.ID})
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("x"))
	if _, err := s.Sign(rand.Reader, d[:], crypto.SHA256); err != nil {
		t.Fatal(err)
	}

	bad, err := ParseURI("pkcs11:token=" + tok.Label() + "?module-path=" + testModulePath + "&pin-source=" + filepath.Join(t.TempDir(), "missing"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenURI(context.Background(), bad, ""); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing pin file: err = %v", err)
	}
	nomod, _ := ParseURI("pkcs11:token=x")
	if _, err := OpenURI(context.Background(), nomod, ""); !errors.Is(err, ErrModule) {
		t.Fatalf("no module: err = %v", err)
	}
}

// TestConcurrentSigning: 8 goroutines sign through one pool of 4 sessions.
func TestConcurrentSigning(t *testing.T) {
	tok := newToken(t, TokenConfig{MaxSessions: 4})
	s := mustGenerate(t, tok, KeySpec{Type: ECP256, ID: []byte{1}, Label: "k"})
	pub := s.Public().(*ecdsa.PublicKey)
	const goroutines, each = 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*each)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				d := sha256.Sum256([]byte{byte(g), byte(i)})
				sig, err := s.Sign(rand.Reader, d[:], crypto.SHA256)
				if err != nil {
					errs <- err
					return
				}
				if !ecdsa.VerifyASN1(pub, d[:], sig) {
					errs <- errors.New("bad signature")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	tok.mu.Lock()
	opened := len(tok.idle)
	tok.mu.Unlock()
	if opened > 4 {
		t.Fatalf("pool holds %d sessions, bound is 4", opened)
	}
}

func TestPoolBoundHonoursContext(t *testing.T) {
	tok := newToken(t, TokenConfig{MaxSessions: 1})
	// Occupy the only slot, then ask for another with a cancelled context.
	tok.sem <- struct{}{}
	defer func() { <-tok.sem }()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := tok.FindObjects(ctx, Query{Class: ClassPrivateKey}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

// TestSessionsClosedUnderPool: CKR_SESSION_HANDLE_INVALID (every session
// closed behind the pool's back, which also logs the token out) is survived by
// reopening and logging in again.
func TestSessionsClosedUnderPool(t *testing.T) {
	tok := newToken(t, TokenConfig{})
	s := mustGenerate(t, tok, KeySpec{Type: ECP256, ID: []byte{1}, Label: "k"})
	d := sha256.Sum256([]byte("x"))
	if _, err := s.Sign(rand.Reader, d[:], crypto.SHA256); err != nil {
		t.Fatal(err)
	}
	epoch := tok.currentEpoch()
	tok.mod.mu.RLock()
	err := tok.mod.ctx.CloseAllSessions(tok.slot)
	tok.mod.mu.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
	sig, err := s.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		t.Fatalf("sign after sessions were closed: %v", err)
	}
	if !ecdsa.VerifyASN1(s.Public().(*ecdsa.PublicKey), d[:], sig) {
		t.Fatal("bad signature")
	}
	if tok.currentEpoch() == epoch {
		t.Fatal("pool did not reconnect")
	}
}

// softhsmUtil runs softhsm2-util against the test's SoftHSM config.
func softhsmUtil(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("softhsm2-util", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util %s: %v\n%s", args[0], err, out)
	}
}

// tokenDir is the directory SoftHSM keeps token label's objects in.
func tokenDir(t *testing.T, label string) string {
	t.Helper()
	tokens := filepath.Join(filepath.Dir(os.Getenv("SOFTHSM2_CONF")), "tokens")
	entries, err := os.ReadDir(tokens)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(tokens, e.Name(), "token.object"))
		if err == nil && bytes.Contains(b, []byte(label)) {
			return filepath.Join(tokens, e.Name())
		}
	}
	t.Fatalf("no token directory in %s holds %q", tokens, label)
	return ""
}

// closeSessions closes the pool's sessions from under it, as a card pulled
// or an HSM restarted does (SoftHSM answers a search on a session of a
// deleted token with nothing rather than an error).
func closeSessions(t *testing.T, tok *Token) {
	t.Helper()
	tok.mod.mu.RLock()
	err := tok.mod.ctx.CloseAllSessions(tok.slot)
	tok.mod.mu.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
}

// TestTokenGoneAndBack: the token goes away under a running pool (its
// directory moved away by another process: an HSM or card out); calls
// fail with a clear error; another token is made under its label (the
// card holder's replacement card, whose label OpenSC makes from the same
// name; a re-initialised HSM slot): it is refused before any login, so
// the PIN is sent to no other token, on every call; the token comes back:
// the same Signer works again without a restart. A new Token (a restart)
// opens the other token.
func TestTokenGoneAndBack(t *testing.T) {
	if _, err := exec.LookPath("softhsm2-util"); err != nil {
		t.Fatal("softhsm2-util is needed (make deps)")
	}
	label := uniqueLabel(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	softhsmUtil(t, "--init-token", "--free", "--label", label, "--so-pin", testSOPIN, "--pin", testPIN)
	softhsmUtil(t, "--import", keyFile, "--token", label, "--id", "01", "--label", "PIV AUTH key", "--pin", testPIN)

	m := openModule(t)
	tok, err := m.OpenToken(context.Background(), TokenConfig{Label: label, PIN: []byte(testPIN)})
	if err != nil {
		t.Fatalf("token made by another process is not found: %v", err)
	}
	defer tok.Close()
	s, err := tok.Signer(context.Background(), KeyRef{ID: []byte{1}})
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("challenge"))
	sign := func() error {
		sig, err := s.Sign(rand.Reader, d[:], crypto.SHA256)
		if err == nil && !ecdsa.VerifyASN1(&key.PublicKey, d[:], sig) {
			t.Fatal("signature does not verify with the imported key")
		}
		return err
	}
	if err := sign(); err != nil {
		t.Fatal(err)
	}

	dir := tokenDir(t, label)
	away := filepath.Join(t.TempDir(), "away")
	if err := os.Rename(dir, away); err != nil {
		t.Fatal(err)
	}
	closeSessions(t, tok)
	for i := 0; i < 2; i++ { // every call fails while the token is gone
		err := sign()
		if err == nil {
			t.Fatal("signed with the token gone")
		}
		// A token that was there and went away is an outage (callers
		// answer Unavailable), not a configuration error.
		var u *UnavailableError
		if !errors.As(err, &u) || u.Reason != "token not present" || !errors.Is(err, ErrTokenNotFound) {
			t.Fatalf("token gone: err = %v, want ErrTokenUnavailable (token not present)", err)
		}
		if !strings.Contains(err.Error(), label) {
			t.Errorf("error %q does not name the token", err)
		}
		if strings.Contains(err.Error(), testPIN) {
			t.Fatalf("error %q contains the PIN", err)
		}
	}

	// Another token under the label, with another PIN: it was sent the
	// first token's PIN on every call (and a card counts each wrong one).
	const otherPIN = "864200"
	softhsmUtil(t, "--init-token", "--free", "--label", label, "--so-pin", testSOPIN, "--pin", otherPIN)
	for range 3 {
		err := sign()
		if !errors.Is(err, ErrTokenChanged) || !errors.Is(err, ErrTokenUnavailable) || errors.Is(err, ErrPINIncorrect) {
			t.Fatalf("another token under the label: err = %v, want ErrTokenChanged (Unavailable) and no login", err)
		}
		if strings.Contains(err.Error(), testPIN) || strings.Contains(err.Error(), otherPIN) {
			t.Fatalf("error %q contains a PIN", err)
		}
	}
	other, err := m.OpenToken(context.Background(), TokenConfig{Label: label, PIN: []byte(otherPIN)})
	if err != nil {
		t.Fatalf("a new Token (a restart) does not open the token now there: %v", err)
	}
	other.Close()

	// The first token back while the other is still there (SoftHSM sees
	// it only once the module is initialised again, which is done at
	// most every reinitEvery while another token has the label).
	reinitEvery = 0
	t.Cleanup(func() { reinitEvery = time.Minute })
	if err := os.Rename(away, dir); err != nil {
		t.Fatal(err)
	}
	if err := sign(); err != nil {
		t.Fatalf("sign after the token came back beside the other: %v", err)
	}
}

// TestKeyReplacedUnderSigner: a signer never signs with a key other than
// the one its Public reports (the key deleted and another generated under
// its CKA_ID and label).
func TestKeyReplacedUnderSigner(t *testing.T) {
	label := uniqueLabel(t)
	softhsmUtil(t, "--init-token", "--free", "--label", label, "--so-pin", testSOPIN, "--pin", testPIN)
	m := openModule(t)
	ctx := context.Background()
	tok, err := m.OpenToken(ctx, TokenConfig{Label: label, PIN: []byte(testPIN)})
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	s := mustGenerate(t, tok, KeySpec{Type: ECP256, ID: []byte{1}, Label: "k"})
	for _, class := range []Class{ClassPrivateKey, ClassPublicKey} {
		if n, err := tok.DeleteObjects(ctx, Query{Class: class, ID: []byte{1}}); err != nil || n != 1 {
			t.Fatalf("DeleteObjects = %d, %v", n, err)
		}
	}
	mustGenerate(t, tok, KeySpec{Type: ECP256, ID: []byte{1}, Label: "k"})
	closeSessions(t, tok)
	d := sha256.Sum256([]byte("x"))
	for range 2 {
		if _, err := s.Sign(rand.Reader, d[:], crypto.SHA256); !errors.Is(err, ErrKeyChanged) {
			t.Fatalf("err = %v, want ErrKeyChanged", err)
		}
	}
}

// TestAESKeyRecreatedWithAnotherKey: an AES key (the escrow KEK) never
// seals or opens with a key other than the one it was opened as. The
// token is re-created by another process with the same AES key under the
// same CKA_ID and label (a reconnect that keeps working), then with
// another key under them (ErrKeyChanged for Seal and Open, however often
// asked), then with the first key again; and, without a reconnect forced
// from outside, the key is deleted and another generated in its place.
func TestAESKeyRecreatedWithAnotherKey(t *testing.T) {
	label := uniqueLabel(t)
	dir := t.TempDir()
	keyFile := func(name string) (string, []byte) {
		// softhsm2-util --import --aes reads its file as one line of text:
		// a NUL or a newline would end the key early (a 5-byte "AES key"
		// the token refuses to encrypt with), so the test's keys have none.
		k := make([]byte, 32)
		rand.Read(k)
		for i, b := range k {
			if b == 0 || b == '\n' || b == '\r' {
				k[i] = 0x80 | b
			}
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, k, 0o600); err != nil {
			t.Fatal(err)
		}
		return p, k
	}
	first, firstKey := keyFile("first.key")
	second, secondKey := keyFile("second.key")
	create := func(file string) {
		softhsmUtil(t, "--init-token", "--free", "--label", label, "--so-pin", testSOPIN, "--pin", testPIN)
		softhsmUtil(t, "--import", file, "--aes", "--token", label, "--id", "6b656b2d31", "--label", "escrow KEK", "--pin", testPIN)
	}
	create(first)
	m := openModule(t)
	ctx := context.Background()
	tok, err := m.OpenToken(ctx, TokenConfig{Label: label, PIN: []byte(testPIN)})
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	ref := KeyRef{ID: []byte("kek-1"), Label: "escrow KEK"}
	k, err := tok.AESKey(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	aad := []byte("escrowed key 1")
	sealed, err := k.Seal(ctx, []byte("an escrowed private key"), aad)
	if err != nil {
		t.Fatal(err)
	}
	// The key replaced by another process under the same CKA_ID and label,
	// and the pool's sessions closed from under it (an HSM restarted):
	// the pool reconnects and finds the key that is there now.
	recreate := func(file string) {
		if n, err := tok.DeleteObjects(ctx, Query{Class: ClassSecretKey, ID: ref.ID}); err != nil || n != 1 {
			t.Fatalf("DeleteObjects = %d, %v", n, err)
		}
		softhsmUtil(t, "--import", file, "--aes", "--token", label, "--id", "6b656b2d31", "--label", "escrow KEK", "--pin", testPIN)
		closeSessions(t, tok)
		_, _ = k.Seal(ctx, []byte("x"), aad) // may fail while reconnecting
	}
	works := func(when string) {
		t.Helper()
		if _, err := k.Seal(ctx, []byte("another escrowed key"), aad); err != nil {
			t.Fatalf("%s: Seal: %v", when, err)
		}
		if pt, err := k.Open(ctx, sealed, aad); err != nil || string(pt) != "an escrowed private key" {
			t.Fatalf("%s: Open: %v", when, err)
		}
	}
	refused := func(when string) {
		t.Helper()
		for range 2 {
			_, err := k.Seal(ctx, []byte("another escrowed key"), aad)
			if !errors.Is(err, ErrKeyChanged) {
				t.Fatalf("%s: Seal: err = %v, want ErrKeyChanged", when, err)
			}
			for _, key := range [][]byte{firstKey, secondKey} {
				if strings.Contains(err.Error(), fmt.Sprintf("%x", key)) || strings.Contains(err.Error(), fmt.Sprintf("%x", key[:3])) {
					t.Fatalf("error %q shows key material", err)
				}
			}
			if _, err := k.Open(ctx, sealed, aad); !errors.Is(err, ErrKeyChanged) {
				t.Fatalf("%s: Open: err = %v, want ErrKeyChanged", when, err)
			}
		}
	}

	epoch := tok.currentEpoch()
	recreate(first)
	if tok.currentEpoch() == epoch {
		t.Fatal("the pool did not reconnect")
	}
	works("the same key imported again")

	recreate(second)
	refused("the key replaced by another")

	// The first key back: a refused key is not remembered as refused.
	recreate(first)
	works("the first key back")

	// Deleted and generated again under the same CKA_ID and label by
	// someone else on the same token: the handle goes stale, the pool
	// reconnects, the key found is another.
	if n, err := tok.DeleteObjects(ctx, Query{Class: ClassSecretKey, ID: ref.ID}); err != nil || n != 1 {
		t.Fatalf("DeleteObjects = %d, %v", n, err)
	}
	if _, err := tok.GenerateAESKey(ctx, ref); err != nil {
		t.Fatal(err)
	}
	refused("another key generated in its place")
}

// TestAESKeyFingerprint: the fingerprint an AESKey keeps is the known
// answer of the first mechanism the key allows (AES-ECB, else AES-GCM),
// else CKA_CHECK_VALUE, which is what PKCS#11 v2.40 says: the first 3
// bytes of the ECB encryption of a zero block.
func TestAESKeyFingerprint(t *testing.T) {
	tok := newToken(t, TokenConfig{})
	ctx := context.Background()
	value := make([]byte, 32)
	rand.Read(value)
	block, _ := aes.NewCipher(value)
	create := func(id string, allowed ...uint) {
		t.Helper()
		tpl := []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
			p11.NewAttribute(p11.CKA_TOKEN, true),
			p11.NewAttribute(p11.CKA_PRIVATE, true),
			p11.NewAttribute(p11.CKA_SENSITIVE, true),
			p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
			p11.NewAttribute(p11.CKA_ENCRYPT, true),
			p11.NewAttribute(p11.CKA_DECRYPT, true),
			p11.NewAttribute(p11.CKA_VALUE, value),
			p11.NewAttribute(p11.CKA_ID, []byte(id)),
			p11.NewAttribute(p11.CKA_ALLOWED_MECHANISMS, mechanisms(allowed...)),
		}
		if err := tok.do(ctx, func(c *p11.Ctx, sh p11.SessionHandle, _ uint64) error {
			_, err := c.CreateObject(sh, tpl)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	ecb := make([]byte, aes.BlockSize)
	block.Encrypt(ecb, aesKATBlock)
	ecbSum := sha256.Sum256(ecb)
	zero := make([]byte, aes.BlockSize)
	block.Encrypt(zero, zero)
	for _, tc := range []struct {
		id      string
		allowed []uint
		method  string
		value   []byte
	}{
		{"ecb", []uint{p11.CKM_AES_ECB, p11.CKM_AES_GCM}, "AES-ECB known answer", ecbSum[:]},
		{"gcm", []uint{p11.CKM_AES_GCM}, "AES-GCM known answer", nil},
		{"check value", []uint{p11.CKM_AES_CBC_PAD}, "CKA_CHECK_VALUE", zero[:3]},
	} {
		create(tc.id, tc.allowed...)
		k, err := tok.AESKey(ctx, KeyRef{ID: []byte(tc.id)})
		if err != nil {
			t.Fatalf("%s: %v", tc.id, err)
		}
		if k.fp.method != tc.method || (tc.value != nil && !bytes.Equal(k.fp.value, tc.value)) {
			t.Errorf("%s: fingerprint by %s, want %s (or the value differs)", tc.id, k.fp.method, tc.method)
		}
		if bytes.Contains(k.fp.value, value[:8]) {
			t.Errorf("%s: the fingerprint holds key bytes", tc.id)
		}
	}
}

func TestCertificateReadWrite(t *testing.T) {
	tok := newToken(t, TokenConfig{})
	s := mustGenerate(t, tok, KeySpec{Type: ECP256, ID: PIVAuthentication.ID, Label: PIVAuthentication.PrivateLabel})
	mk := func(cn string) *x509.Certificate {
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(time.Now().UnixNano()),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, s.Public(), s)
		if err != nil {
			t.Fatalf("self-signing through the token: %v", err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx := context.Background()
	first := mk("first")
	if err := tok.ImportCertificate(ctx, PIVAuthentication.ID, PIVAuthentication.CertLabel, first); err != nil {
		t.Fatal(err)
	}
	got, err := tok.Certificate(ctx, PIVAuthentication.ID, "")
	if err != nil || !bytes.Equal(got.Raw, first.Raw) {
		t.Fatalf("Certificate = %v, %v", got, err)
	}
	second := mk("second")
	if err := tok.ImportCertificate(ctx, PIVAuthentication.ID, PIVAuthentication.CertLabel, second); err != nil {
		t.Fatal(err)
	}
	got, err = tok.Certificate(ctx, PIVAuthentication.ID, PIVAuthentication.CertLabel)
	if err != nil || got.Subject.CommonName != "second" {
		t.Fatalf("replaced certificate: %v, %v", got, err)
	}
	objs, err := tok.FindObjects(ctx, Query{Class: ClassCertificate})
	if err != nil || len(objs) != 1 || objs[0].Label != PIVAuthentication.CertLabel || !bytes.Equal(objs[0].ID, []byte{1}) {
		t.Fatalf("FindObjects = %+v, %v", objs, err)
	}
	if _, err := tok.Certificate(ctx, PIVAuthentication.ID, "wrong label"); !errors.Is(err, ErrObjectNotFound) {
		t.Fatalf("wrong label: %v", err)
	}
	n, err := tok.DeleteObjects(ctx, Query{Class: ClassCertificate, ID: PIVAuthentication.ID})
	if err != nil || n != 1 {
		t.Fatalf("DeleteObjects = %d, %v", n, err)
	}
}

func TestAESGCM(t *testing.T) {
	tok := newToken(t, TokenConfig{})
	ctx := context.Background()
	k, err := tok.GenerateAESKey(ctx, KeyRef{ID: []byte("kek-1"), Label: "escrow KEK"})
	if err != nil {
		t.Fatal(err)
	}
	pt := bytes.Repeat([]byte("escrowed key "), 300)
	aad := []byte("credential 42")
	a, err := k.Seal(ctx, pt, aad)
	if err != nil {
		t.Fatal(err)
	}
	b, err := k.Seal(ctx, pt, aad)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a[:gcmIVSize], b[:gcmIVSize]) {
		t.Fatal("two seals used the same IV")
	}
	if bytes.Contains(a, pt[:32]) {
		t.Fatal("sealed data contains plaintext")
	}
	got, err := k.Open(ctx, a, aad)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("Open = %v", err)
	}
	other, err := tok.GenerateAESKey(ctx, KeyRef{ID: []byte("kek-2")})
	if err != nil {
		t.Fatal(err)
	}
	tampered := append([]byte{}, a...)
	tampered[len(tampered)/2] ^= 0x01
	tests := []struct {
		name   string
		key    *AESKey
		sealed []byte
		aad    []byte
	}{
		{"tampered ciphertext", k, tampered, aad},
		{"wrong aad", k, a, []byte("credential 43")},
		{"wrong key", other, a, aad},
		{"truncated", k, a[:10], aad},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.key.Open(ctx, tc.sealed, tc.aad); !errors.Is(err, ErrDecrypt) {
				t.Fatalf("err = %v, want ErrDecrypt", err)
			}
		})
	}
	// The key stays usable after failed opens.
	if _, err := k.Open(ctx, a, aad); err != nil {
		t.Fatalf("open after failures: %v", err)
	}
	// And it is sensitive and non-extractable.
	err = tok.do(ctx, func(c *p11.Ctx, sh p11.SessionHandle, epoch uint64) error {
		h, err := k.keyHandle(c, sh, epoch)
		if err != nil {
			return err
		}
		attrs, err := c.GetAttributeValue(sh, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_EXTRACTABLE, nil), p11.NewAttribute(p11.CKA_SENSITIVE, nil)})
		if err != nil {
			return err
		}
		if attrs[0].Value[0] != 0 || attrs[1].Value[0] == 0 {
			t.Errorf("AES key extractable=%v sensitive=%v", attrs[0].Value, attrs[1].Value)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestInitTokenRejects(t *testing.T) {
	m := openModule(t)
	label := uniqueLabel(t)
	if _, err := m.InitToken(label, []byte(testSOPIN), []byte(testPIN)); err != nil {
		t.Fatal(err)
	}
	if _, err := m.InitToken(label, []byte(testSOPIN), []byte(testPIN)); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("duplicate label: err = %v", err)
	}
	if _, err := m.InitToken("", []byte(testSOPIN), []byte(testPIN)); err == nil {
		t.Fatal("empty label accepted")
	}
	if _, err := m.InitToken(strings.Repeat("x", 33), []byte(testSOPIN), []byte(testPIN)); err == nil {
		t.Fatal("33-byte label accepted")
	}
	tokens, err := m.Tokens()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ti := range tokens {
		if ti.Label == label && ti.Initialized && ti.UserPINInitialized && ti.Serial != "" {
			found = true
		}
	}
	if !found {
		t.Fatalf("initialised token %q not listed: %+v", label, tokens)
	}
}

// TestWrongPINNotSentAgain: every wrong PIN costs one of a token's tries
// (an HSM's user PIN, a card's PIV PIN), and a PIN read once at start is
// the same on every reconnect: a PIN the token refused is not sent to it
// again by this process.
func TestWrongPINNotSentAgain(t *testing.T) {
	const wrong = "1357911"
	m := openModule(t)
	label := uniqueLabel(t)
	if _, err := m.InitToken(label, []byte(testSOPIN), []byte(testPIN)); err != nil {
		t.Fatal(err)
	}
	_, err := m.OpenToken(context.Background(), TokenConfig{Label: label, PIN: []byte(wrong)})
	if !errors.Is(err, ErrPINIncorrect) || strings.Contains(err.Error(), "not sent again") {
		t.Fatalf("first wrong PIN: err = %v, want ErrPINIncorrect from the token", err)
	}
	for range 2 {
		_, err = m.OpenToken(context.Background(), TokenConfig{Label: label, PIN: []byte(wrong)})
		if !errors.Is(err, ErrPINIncorrect) || !strings.Contains(err.Error(), "not sent again") {
			t.Fatalf("the refused PIN again: err = %v, want ErrPINIncorrect saying it was not sent again", err)
		}
		if strings.Contains(err.Error(), wrong) {
			t.Fatalf("error %q contains the PIN", err)
		}
	}
	good, err := m.OpenToken(context.Background(), TokenConfig{Label: label, PIN: []byte(testPIN)})
	if err != nil {
		t.Fatalf("the right PIN after a refused one: %v", err)
	}
	good.Close()
}

// TestWrongPINSentOnceUnderConcurrency: Tokens of one token connecting at
// once (two URIs naming it; callers starting together) send a wrong PIN to
// it once between them, not once each.
func TestWrongPINSentOnceUnderConcurrency(t *testing.T) {
	const wrong = "97979797"
	m := openModule(t)
	label := uniqueLabel(t)
	if _, err := m.InitToken(label, []byte(testSOPIN), []byte(testPIN)); err != nil {
		t.Fatal(err)
	}
	const n = 8
	errs := make(chan error, n)
	var start sync.WaitGroup
	start.Add(1)
	for range n {
		go func() {
			start.Wait()
			_, err := m.OpenToken(context.Background(), TokenConfig{Label: label, PIN: []byte(wrong)})
			errs <- err
		}()
	}
	start.Done()
	sent := 0
	for range n {
		err := <-errs
		if !errors.Is(err, ErrPINIncorrect) {
			t.Fatalf("err = %v, want ErrPINIncorrect", err)
		}
		if !strings.Contains(err.Error(), "not sent again") {
			sent++
		}
	}
	if sent != 1 {
		t.Errorf("the wrong PIN reached the token %d times, want once", sent)
	}
}

// TestTokenFoundByCardName: OpenSC labels a PIV card's token with the 9A
// certificate's common name, cut to PKCS#11's 32 bytes, with ':' made '.'.
// A person naming the card by the name on its certificate (as the docs
// say) was told no such token for a long or colon-bearing name.
func TestTokenFoundByCardName(t *testing.T) {
	const name = "Public, Jane Q.: Contractor Agency X 7"
	label := strings.ReplaceAll(name, ":", ".")[:32]
	softhsmUtil(t, "--init-token", "--free", "--label", label, "--so-pin", testSOPIN, "--pin", testPIN)
	m := openModule(t)
	tok, err := m.OpenToken(context.Background(), TokenConfig{Label: name, PIN: []byte(testPIN)})
	if err != nil {
		t.Fatalf("the card named by its certificate's name: %v", err)
	}
	tok.Close()
	if _, err := m.OpenToken(context.Background(), TokenConfig{Label: "Public, John Q.: Contractor Agency X 7", PIN: []byte(testPIN)}); !errors.Is(err, ErrTokenNotFound) {
		t.Errorf("another name: %v, want ErrTokenNotFound", err)
	}
	// A second card whose name has the same first 32 bytes: which one is
	// meant is not known, and neither is sent the PIN.
	softhsmUtil(t, "--init-token", "--free", "--label", label, "--so-pin", testSOPIN, "--pin", "135792")
	if err := m.reinitialize(m.gen.Load()); err != nil { // SoftHSM sees it then; a card middleware at once
		t.Fatal(err)
	}
	_, err = m.OpenToken(context.Background(), TokenConfig{Label: name, PIN: []byte(testPIN)})
	if !errors.Is(err, ErrTokenNotFound) || !strings.Contains(err.Error(), "serial=") {
		t.Errorf("two cards under the cut name: %v, want ErrTokenNotFound asking for serial=", err)
	}
}
