package pkcs11

//lint:file-ignore SA1019 the tests encrypt to RSA key management keys (9D) with PKCS#1 v1.5, as PIV does

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"testing"

	p11 "github.com/miekg/pkcs11"
)

// TestImportKeyPair: an escrowed RSA key imported on a token decrypts what
// was encrypted to it there; an EC key keeps its public key; both become
// sensitive and non-extractable. Unsupported keys and a token without a
// login are refused.
func TestImportKeyPair(t *testing.T) {
	ctx := context.Background()
	tok := newToken(t, TokenConfig{})
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := tok.ImportKeyPair(ctx, []byte{0x71}, "escrowed rsa", rk)
	if err != nil {
		t.Fatal(err)
	}
	if !rs.Public().(*rsa.PublicKey).Equal(&rk.PublicKey) {
		t.Fatal("the imported RSA key has another public key")
	}
	secret := []byte("a content-encryption key")
	ct, _ := rsa.EncryptPKCS1v15(rand.Reader, &rk.PublicKey, secret)
	if pt, err := rs.Decrypt(rand.Reader, ct, nil); err != nil || !bytes.Equal(pt, secret) {
		t.Fatalf("decrypt on the token: %q, %v", pt, err)
	}

	// A key-management key only: no signature, no raw RSA.
	d := sha256.Sum256([]byte("x"))
	if _, err := rs.Sign(rand.Reader, d[:], crypto.SHA256); err == nil {
		t.Error("the imported key-management key signs")
	}
	err = tok.do(ctx, func(c *p11.Ctx, sh p11.SessionHandle, epoch uint64) error {
		h, err := rs.keyHandle(c, sh, epoch)
		if err != nil {
			return err
		}
		if err := c.DecryptInit(sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_RSA_X_509, nil)}, h); err == nil {
			c.Decrypt(sh, ct)
			t.Error("raw RSA (CKM_RSA_X_509) allowed on the imported key")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Again (a retried install): nothing new on the token.
	if _, err := tok.ImportKeyPair(ctx, []byte{0x71}, "escrowed rsa", rk); err != nil {
		t.Fatal(err)
	}
	for _, cl := range []Class{ClassPrivateKey, ClassPublicKey} {
		if objs, err := tok.FindObjects(ctx, Query{Class: cl, ID: []byte{0x71}}); err != nil || len(objs) != 1 {
			t.Fatalf("%v after a second import: %v %v", cl, objs, err)
		}
	}
	if n, err := tok.SetLabel(ctx, Query{Class: ClassPrivateKey, ID: []byte{0x71}}, "relabelled"); err != nil || n != 1 {
		t.Fatalf("SetLabel = %d, %v", n, err)
	}
	if objs, _ := tok.FindObjects(ctx, Query{Class: ClassPrivateKey, Label: "relabelled"}); len(objs) != 1 {
		t.Fatalf("relabelled: %v", objs)
	}

	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	es, err := tok.ImportKeyPair(ctx, []byte{0x72}, "escrowed ec", ek)
	if err != nil {
		t.Fatal(err)
	}
	if !es.Public().(*ecdsa.PublicKey).Equal(&ek.PublicKey) {
		t.Fatal("the imported EC key has another public key")
	}

	for _, s := range []*Signer{rs, es} {
		err := tok.do(ctx, func(c *p11.Ctx, sh p11.SessionHandle, epoch uint64) error {
			h, err := s.keyHandle(c, sh, epoch)
			if err != nil {
				return err
			}
			attrs, err := c.GetAttributeValue(sh, h, []*p11.Attribute{
				p11.NewAttribute(p11.CKA_SENSITIVE, nil), p11.NewAttribute(p11.CKA_EXTRACTABLE, nil), p11.NewAttribute(p11.CKA_PRIVATE, nil),
			})
			if err != nil {
				return err
			}
			on := func(i int) bool { return len(attrs[i].Value) == 1 && attrs[i].Value[0] != 0 }
			if !on(0) || on(1) || !on(2) {
				t.Errorf("%s: sensitive=%v extractable=%v private=%v", s.ref.Label, on(0), on(1), on(2))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	_, edk, _ := ed25519.GenerateKey(rand.Reader)
	xk, _ := ecdh.X25519().GenerateKey(rand.Reader)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	for name, k := range map[string]any{"ed25519": edk, "x25519": xk, "P-224": p224} {
		if _, err := tok.ImportKeyPair(ctx, []byte{0x73}, name, k); err == nil {
			t.Errorf("%s imported", name)
		}
	}
	if _, err := tok.ImportKeyPair(ctx, nil, "no id", rk); err == nil {
		t.Error("imported without a CKA_ID")
	}
	anon, err := openModule(t).OpenToken(ctx, TokenConfig{Label: tok.Label()}) // no PIN
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	if _, err := anon.ImportKeyPair(ctx, []byte{0x74}, "no login", rk); !errors.Is(err, ErrPINRequired) {
		t.Errorf("without a login: %v, want ErrPINRequired", err)
	}
}
