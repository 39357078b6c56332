package piv_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/pkcs11"
)

const cardPIN = "123456"

// softCard makes a SoftHSM token holding a 9A key (CKA_ID 01) and its
// certificate under the labels a middleware gives them, and returns the
// module's path.
func softCard(t *testing.T, token, keyLabel, pubLabel, certLabel string) string {
	t.Helper()
	// The SoftHSM of TestMain's simulated environment (the module reads
	// its configuration once per process).
	mod, err := pkcs11.SoftHSMModule()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m, err := pkcs11.OpenModule(mod)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.InitToken(token, []byte("12345678"), []byte(cardPIN)); err != nil {
		t.Fatal(err)
	}
	tok, err := m.OpenToken(ctx, pkcs11.TokenConfig{Label: token, PIN: []byte(cardPIN)})
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	s, err := tok.GenerateKeyPair(ctx, pkcs11.KeySpec{Type: pkcs11.ECP256, ID: []byte{1}, Label: keyLabel, PublicLabel: pubLabel})
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: token},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, s.Public(), s)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.ImportCertificate(ctx, []byte{1}, certLabel, cert); err != nil {
		t.Fatal(err)
	}
	return mod
}

func openSoftCard(t *testing.T, mod, token string) *piv.Card {
	t.Helper()
	pf := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(pf, []byte(cardPIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := piv.OpenCard(context.Background(), &pkcs11.URI{Token: token, ModulePath: mod, PINSource: pf}, mod)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestCardKeyFoundByID: middlewares name a PIV card's objects their own
// way; SP 800-73-4 fixes the key references, which OpenSC and Yubico's
// ykcs11 both map to CKA_ID 01 for 9A. The key was looked up by CKA_ID and
// OpenSC's label "PIV AUTH key", so a YubiKey through ykcs11 ("Private
// key for PIV Authentication") read its certificate and then could not
// sign.
func TestCardKeyFoundByID(t *testing.T) {
	for _, tc := range []struct{ middleware, token, key, pub, cert string }{
		{"OpenSC", "Jane Doe", "PIV AUTH key", "PIV AUTH pubkey", "Certificate for PIV Authentication"},
		{"ykcs11", "YubiKey PIV #12345678", "Private key for PIV Authentication", "Public key for PIV Authentication", "X.509 Certificate for PIV Authentication"},
		{"unlabelled", "Card", "", "", ""},
	} {
		t.Run(tc.middleware, func(t *testing.T) {
			mod := softCard(t, tc.token, tc.key, tc.pub, tc.cert)
			c := openSoftCard(t, mod, tc.token)
			ctx := context.Background()
			cert, err := c.AuthCertificate(ctx)
			if err != nil {
				t.Fatal(err)
			}
			challenge := make([]byte, 32)
			sig, err := c.SignChallenge(ctx, "gw", "session", challenge)
			if err != nil {
				t.Fatalf("SignChallenge with %s's labels: %v", tc.middleware, err)
			}
			if !ecdsa.VerifyASN1(cert.PublicKey.(*ecdsa.PublicKey), piv.ChallengeDigest("gw", "session", challenge), sig) {
				t.Error("the signature does not verify with the 9A certificate's key")
			}
		})
	}
}

// TestCardPINFormatCheckedFirst: a card PIN is at most 8 bytes (the
// VERIFY buffer; SP 800-73-4 Part 2 §2.4.3 asks 6 to 8 digits, OpenSC
// takes 4 to 8 for PIV-compatible cards), and every VERIFY that fails
// costs a try. A PIN file holding a PIN no card takes (too short, too
// long, a tab) was sent to the card; it is refused before, saying why.
func TestCardPINFormatCheckedFirst(t *testing.T) {
	const token = "Format Checked"
	mod := softCard(t, token, "PIV AUTH key", "PIV AUTH pubkey", "Certificate for PIV Authentication")
	for _, bad := range []string{"123", "123456789", "1234\t56"} {
		pf := filepath.Join(t.TempDir(), "pin")
		if err := os.WriteFile(pf, []byte(bad+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := piv.OpenCard(context.Background(), &pkcs11.URI{Token: token, ModulePath: mod, PINSource: pf}, mod)
		if err == nil || errors.Is(err, pkcs11.ErrPINIncorrect) || !strings.Contains(err.Error(), "nothing was sent to the card") {
			t.Errorf("PIN %q: err = %v, want a refusal before the card", bad, err)
		}
		if err != nil && strings.Contains(err.Error(), bad) {
			t.Errorf("the refusal shows the PIN: %v", err)
		}
	}
	openSoftCard(t, mod, token) // the right PIN opens it
}

// TestCardPINReadOnce: the PIN source is read once. A pipe (--pin-file
// /dev/stdin, a shell's <(pass card-pin)) gives its content once: reading
// it for the form check and again to log in left the card "empty".
func TestCardPINReadOnce(t *testing.T) {
	const token = "Piped PIN"
	mod := softCard(t, token, "PIV AUTH key", "PIV AUTH pubkey", "Certificate for PIV Authentication")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := w.Write([]byte(cardPIN + "\n")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	pipe := fmt.Sprintf("/dev/fd/%d", r.Fd())
	c, err := piv.OpenCard(context.Background(), &pkcs11.URI{Token: token, ModulePath: mod, PINSource: pipe}, mod)
	if err != nil {
		t.Fatalf("a PIN from a pipe: %v", err)
	}
	c.Close()
}
