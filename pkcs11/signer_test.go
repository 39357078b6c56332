package pkcs11

//lint:file-ignore SA1019 the tests encrypt to RSA key management keys (9D) with PKCS#1 v1.5, as PIV does

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"errors"
	"testing"

	p11 "github.com/miekg/pkcs11"
)

// verify checks sig over msg with the standard library.
func verify(t *testing.T, pub crypto.PublicKey, msg, sig []byte, opts crypto.SignerOpts) {
	t.Helper()
	h := opts.HashFunc().New()
	h.Write(msg)
	digest := h.Sum(nil)
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, digest, sig) {
			t.Fatalf("ECDSA signature does not verify")
		}
	case *rsa.PublicKey:
		var err error
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			err = rsa.VerifyPSS(k, opts.HashFunc(), digest, sig, pss)
		} else {
			err = rsa.VerifyPKCS1v15(k, opts.HashFunc(), digest, sig)
		}
		if err != nil {
			t.Fatalf("RSA signature does not verify: %v", err)
		}
	default:
		t.Fatalf("unexpected public key %T", pub)
	}
}

func TestSignerMechanisms(t *testing.T) {
	tok := newToken(t, TokenConfig{})
	keys := map[KeyType]*Signer{}
	for i, kt := range []KeyType{ECP256, ECP384, RSA2048, RSA3072} {
		keys[kt] = mustGenerate(t, tok, KeySpec{Type: kt, ID: []byte{byte(0x10 + i)}, Label: kt.String()})
	}
	msg := []byte("credgw-piv-auth-v1 test message")
	tests := []struct {
		name    string
		key     KeyType
		opts    crypto.SignerOpts
		message bool // SignMessage instead of Sign
	}{
		{"ecdsa p256 sha256", ECP256, crypto.SHA256, false},
		{"ecdsa p256 sha384", ECP256, crypto.SHA384, false},
		{"ecdsa p384 sha384", ECP384, crypto.SHA384, false},
		{"ecdsa p256 message", ECP256, crypto.SHA256, true},
		{"rsa2048 pkcs1v15 sha256 (CKM_RSA_PKCS + DigestInfo)", RSA2048, crypto.SHA256, false},
		{"rsa2048 pkcs1v15 sha384", RSA2048, crypto.SHA384, false},
		{"rsa2048 pkcs1v15 sha512", RSA2048, crypto.SHA512, false},
		{"rsa2048 pkcs1v15 message (CKM_SHA256_RSA_PKCS)", RSA2048, crypto.SHA256, true},
		{"rsa3072 pkcs1v15 sha256", RSA3072, crypto.SHA256, false},
		{"rsa2048 pss salt=hash", RSA2048, &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthEqualsHash}, false},
		{"rsa2048 pss salt=auto", RSA2048, &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthAuto}, false},
		{"rsa3072 pss sha384 salt=32", RSA3072, &rsa.PSSOptions{Hash: crypto.SHA384, SaltLength: 32}, false},
		{"rsa2048 pss message", RSA2048, &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthEqualsHash}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := keys[tc.key]
			var sig []byte
			var err error
			if tc.message {
				sig, err = s.SignMessage(rand.Reader, msg, tc.opts)
			} else {
				h := tc.opts.HashFunc().New()
				h.Write(msg)
				sig, err = s.Sign(rand.Reader, h.Sum(nil), tc.opts)
			}
			if err != nil {
				t.Fatalf("sign: %v", err)
			}
			verify(t, s.Public(), msg, sig, tc.opts)
			// A signature over another message must not verify: the check
			// above is not vacuous.
			other := append([]byte{}, msg...)
			other[0] ^= 1
			h := tc.opts.HashFunc().New()
			h.Write(other)
			switch k := s.Public().(type) {
			case *ecdsa.PublicKey:
				if ecdsa.VerifyASN1(k, h.Sum(nil), sig) {
					t.Fatal("signature verifies for another message")
				}
			case *rsa.PublicKey:
				if rsa.VerifyPKCS1v15(k, tc.opts.HashFunc(), h.Sum(nil), sig) == nil {
					t.Fatal("signature verifies for another message")
				}
			}
		})
	}
}

// TestSignMessageWithoutHashMechanisms: a token without CKM_SHA256_RSA_PKCS
// (a PIV card through OpenSC may lack it) still signs, through CKM_RSA_PKCS
// over a DigestInfo, and both paths give the same PKCS#1 v1.5 signature.
func TestSignMessageWithoutHashMechanisms(t *testing.T) {
	tok := newToken(t, TokenConfig{})
	s := mustGenerate(t, tok, KeySpec{Type: RSA2048, ID: []byte{1}, Label: "k"})
	msg := []byte("challenge")
	if !tok.hasMechanism(p11.CKM_SHA256_RSA_PKCS) {
		t.Fatal("SoftHSM should offer CKM_SHA256_RSA_PKCS")
	}
	withHash, err := s.SignMessage(rand.Reader, msg, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	tok.mu.Lock()
	delete(tok.mechs, p11.CKM_SHA256_RSA_PKCS)
	tok.mu.Unlock()
	without, err := s.SignMessage(rand.Reader, msg, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	verify(t, s.Public(), msg, without, crypto.SHA256)
	if !bytes.Equal(withHash, without) { // PKCS#1 v1.5 is deterministic
		t.Fatal("the two mechanisms gave different signatures")
	}
}

func TestSignRejectsBadInput(t *testing.T) {
	tok := newToken(t, TokenConfig{})
	s := mustGenerate(t, tok, KeySpec{Type: ECP256, ID: []byte{1}, Label: "k"})
	if _, err := s.Sign(rand.Reader, make([]byte, 20), crypto.SHA256); err == nil {
		t.Error("a 20-byte digest for SHA-256 was accepted")
	}
	if _, err := s.Sign(rand.Reader, make([]byte, 32), nil); err == nil {
		t.Error("nil opts accepted")
	}
	if _, err := s.Decrypt(rand.Reader, []byte{1}, nil); err == nil {
		t.Error("EC key decrypted")
	}
}

func TestDecrypter(t *testing.T) {
	tok := newToken(t, TokenConfig{})
	s := mustGenerate(t, tok, KeySpec{Type: RSA2048, ID: []byte{0x03}, Label: "KEY MAN key"})
	pub := s.Public().(*rsa.PublicKey)
	secret := []byte("an escrowed key-encryption secret")
	tests := []struct {
		name string
		enc  func() ([]byte, error)
		opts crypto.DecrypterOpts
	}{
		{"oaep sha1", func() ([]byte, error) { return rsa.EncryptOAEP(sha1.New(), rand.Reader, pub, secret, nil) },
			&rsa.OAEPOptions{Hash: crypto.SHA1}},
		{"pkcs1v15 nil opts", func() ([]byte, error) { return rsa.EncryptPKCS1v15(rand.Reader, pub, secret) }, nil},
		{"pkcs1v15 opts", func() ([]byte, error) { return rsa.EncryptPKCS1v15(rand.Reader, pub, secret) },
			&rsa.PKCS1v15DecryptOptions{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ct, err := tc.enc()
			if err != nil {
				t.Fatal(err)
			}
			pt, err := s.Decrypt(rand.Reader, ct, tc.opts)
			if err != nil {
				t.Fatalf("Decrypt: %v", err)
			}
			if !bytes.Equal(pt, secret) {
				t.Fatalf("Decrypt = %q, want %q", pt, secret)
			}
		})
	}
	t.Run("oaep wrong label", func(t *testing.T) {
		ct, _ := rsa.EncryptOAEP(sha1.New(), rand.Reader, pub, secret, []byte("a"))
		if _, err := s.Decrypt(rand.Reader, ct, &rsa.OAEPOptions{Hash: crypto.SHA1, Label: []byte("b")}); err == nil {
			t.Fatal("OAEP with the wrong label decrypted")
		}
	})
	// SoftHSM 2.6 implements OAEP with SHA-1 and no label only; other
	// parameters must either work or fail with an error (and leave the pool
	// usable), never decrypt wrongly.
	for _, tc := range []struct {
		h     crypto.Hash
		label []byte
	}{{crypto.SHA256, nil}, {crypto.SHA384, nil}, {crypto.SHA1, []byte("credgw")}} {
		t.Run("oaep "+tc.h.String()+" label="+string(tc.label), func(t *testing.T) {
			ct, err := rsa.EncryptOAEP(tc.h.New(), rand.Reader, pub, secret, tc.label)
			if err != nil {
				t.Fatal(err)
			}
			pt, err := s.Decrypt(rand.Reader, ct, &rsa.OAEPOptions{Hash: tc.h, Label: tc.label})
			if err == nil && !bytes.Equal(pt, secret) {
				t.Fatalf("Decrypt = %q", pt)
			}
			if errors.Is(err, ErrTokenUnavailable) {
				t.Fatalf("an unsupported parameter was taken for a lost token: %v", err)
			}
		})
	}
	ct, _ := rsa.EncryptPKCS1v15(rand.Reader, pub, secret)
	if _, err := s.Decrypt(rand.Reader, ct, nil); err != nil {
		t.Fatalf("decrypt after unsupported parameters: %v", err)
	}
}

// TestAlwaysAuthenticate: a PIV 9C-style key signs only with a
// context-specific login before each signature, and the Signer does that.
func TestAlwaysAuthenticate(t *testing.T) {
	tok := newToken(t, TokenConfig{})
	s := mustGenerate(t, tok, KeySpec{Type: ECP256, ID: PIVSignature.ID, Label: PIVSignature.PrivateLabel, AlwaysAuthenticate: true})
	if !s.AlwaysAuthenticate() {
		t.Fatal("CKA_ALWAYS_AUTHENTICATE not read back")
	}
	digest := sha256.Sum256([]byte("sign me"))
	for i := 0; i < 3; i++ { // one login per operation, every time
		sig, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
		if err != nil {
			t.Fatalf("sign %d: %v", i, err)
		}
		if !ecdsa.VerifyASN1(s.Public().(*ecdsa.PublicKey), digest[:], sig) {
			t.Fatal("signature does not verify")
		}
	}
	// Without the context-specific login the module refuses: the attribute
	// is real, so the test above would fail without the login.
	err := tok.do(context.Background(), func(c *p11.Ctx, sh p11.SessionHandle, epoch uint64) error {
		h, err := s.keyHandle(c, sh, epoch)
		if err != nil {
			return err
		}
		if err := c.SignInit(sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_ECDSA, nil)}, h); err != nil {
			return err
		}
		_, err = c.Sign(sh, digest[:])
		if err == nil {
			t.Error("module signed without a context-specific login")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// A token opened without a PIN cannot use such a key.
	m := openModule(t)
	nopin, err := m.OpenToken(context.Background(), TokenConfig{Label: tok.Label()})
	if err != nil {
		t.Fatal(err)
	}
	defer nopin.Close()
	if _, err := nopin.Signer(context.Background(), KeyRef{ID: PIVSignature.ID}); err == nil {
		t.Error("opened a CKA_ALWAYS_AUTHENTICATE key without a PIN")
	}
}

func TestGeneratedKeyAttributes(t *testing.T) {
	tok := newToken(t, TokenConfig{})
	for i, tc := range []struct {
		spec              KeySpec
		sensitive, extrac bool
	}{
		{KeySpec{Type: ECP256, Label: "default"}, true, false},
		{KeySpec{Type: ECP384, Label: "extractable", Extractable: true}, false, true},
	} {
		tc.spec.ID = []byte{byte(0x40 + i)}
		s := mustGenerate(t, tok, tc.spec)
		err := tok.do(context.Background(), func(c *p11.Ctx, sh p11.SessionHandle, epoch uint64) error {
			h, err := s.keyHandle(c, sh, epoch)
			if err != nil {
				return err
			}
			attrs, err := c.GetAttributeValue(sh, h, []*p11.Attribute{
				p11.NewAttribute(p11.CKA_SENSITIVE, nil),
				p11.NewAttribute(p11.CKA_EXTRACTABLE, nil),
				p11.NewAttribute(p11.CKA_PRIVATE, nil),
				p11.NewAttribute(p11.CKA_TOKEN, nil),
			})
			if err != nil {
				return err
			}
			got := func(i int) bool { return len(attrs[i].Value) == 1 && attrs[i].Value[0] != 0 }
			if got(0) != tc.sensitive || got(1) != tc.extrac || !got(2) || !got(3) {
				t.Errorf("%s: sensitive=%v extractable=%v private=%v token=%v", tc.spec.Label, got(0), got(1), got(2), got(3))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestMissingObject(t *testing.T) {
	tok := newToken(t, TokenConfig{})
	_, err := tok.Signer(context.Background(), KeyRef{ID: []byte{0x77}})
	if !errors.Is(err, ErrObjectNotFound) {
		t.Fatalf("err = %v, want ErrObjectNotFound", err)
	}
	if want := "CKA_ID 77"; !bytes.Contains([]byte(err.Error()), []byte(want)) {
		t.Errorf("error %q does not say %q", err, want)
	}
	if _, err := tok.Certificate(context.Background(), []byte{0x01}, ""); !errors.Is(err, ErrObjectNotFound) {
		t.Errorf("Certificate: err = %v, want ErrObjectNotFound", err)
	}
	if _, err := tok.AESKey(context.Background(), KeyRef{ID: []byte{0x09}}); !errors.Is(err, ErrObjectNotFound) {
		t.Errorf("AESKey: err = %v, want ErrObjectNotFound", err)
	}
}

func TestECDSARawToASN1(t *testing.T) {
	tests := []struct{ raw, want []byte }{
		{[]byte{1, 2}, []byte{0x30, 6, 2, 1, 1, 2, 1, 2}},
		{[]byte{0x80, 0x00}, []byte{0x30, 7, 2, 2, 0, 0x80, 2, 1, 0}},
		{[]byte{0, 0x7f, 0, 0}, []byte{0x30, 6, 2, 1, 0x7f, 2, 1, 0}},
	}
	for _, tc := range tests {
		got, err := ecdsaRawToASN1(tc.raw)
		if err != nil || !bytes.Equal(got, tc.want) {
			t.Errorf("ecdsaRawToASN1(%x) = %x, %v; want %x", tc.raw, got, err, tc.want)
		}
	}
	for _, bad := range [][]byte{nil, {1}, {1, 2, 3}} {
		if _, err := ecdsaRawToASN1(bad); err == nil {
			t.Errorf("ecdsaRawToASN1(%x) accepted", bad)
		}
	}
}
