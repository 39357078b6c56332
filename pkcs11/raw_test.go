package pkcs11

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"math/big"
	"testing"
)

// TestRawRSA applies the private key to padded blocks as a PIV card's
// GENERAL AUTHENTICATE does: a PKCS#1 v1.5 type 1 signature block on a
// signing key, and a ciphertext on a decryption-only key (9D).
func TestRawRSA(t *testing.T) {
	tok := newToken(t, TokenConfig{})
	ctx := context.Background()
	sign := mustGenerate(t, tok, KeySpec{Type: RSA2048, ID: []byte{1}, Label: "sign", Usage: UsageSign})
	dec := mustGenerate(t, tok, KeySpec{Type: RSA2048, ID: []byte{3}, Label: "dec", Usage: UsageDecrypt})

	digest := sha256.Sum256([]byte("raw RSA"))
	pub := sign.Public().(*rsa.PublicKey)
	block := type1Block(pub.Size(), append(append([]byte{}, digestInfoPrefix[crypto.SHA256]...), digest[:]...))
	sig, err := sign.RawRSA(ctx, block)
	if err != nil {
		t.Fatal(err)
	}
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig); err != nil {
		t.Fatalf("raw RSA signature does not verify: %v", err)
	}

	// m^e mod n with the decryption key's public half, then RawRSA undoes it.
	dpub := dec.Public().(*rsa.PublicKey)
	m := make([]byte, dpub.Size())
	rand.Read(m[1:])
	m[0] = 0
	c := new(big.Int).Exp(new(big.Int).SetBytes(m), big.NewInt(int64(dpub.E)), dpub.N).FillBytes(make([]byte, dpub.Size()))
	got, err := dec.RawRSA(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, m) {
		t.Fatalf("raw RSA decryption: got %x, want %x", got, m)
	}
	if _, err := sign.RawRSA(ctx, block[1:]); err == nil {
		t.Fatal("a short block was accepted")
	}
}

func type1Block(k int, data []byte) []byte {
	b := make([]byte, k)
	b[1] = 1
	for i := 2; i < k-len(data)-1; i++ {
		b[i] = 0xFF
	}
	copy(b[k-len(data):], data)
	return b
}

func TestStripType1(t *testing.T) {
	good := type1Block(64, []byte("hello"))
	if d, ok := stripType1(good); !ok || string(d) != "hello" {
		t.Fatalf("stripType1(good) = %q, %v", d, ok)
	}
	bad := append([]byte{}, good...)
	bad[5] = 0x12
	if _, ok := stripType1(bad); ok {
		t.Fatal("a block with a non-FF pad byte was accepted")
	}
	if _, ok := stripType1([]byte{0, 2, 0xFF}); ok {
		t.Fatal("a short block was accepted")
	}
}

// TestECDH derives the shared secret on the token and compares it with
// the peer's side computed in Go.
func TestECDH(t *testing.T) {
	tok := newToken(t, TokenConfig{})
	ctx := context.Background()
	for i, kt := range []KeyType{ECP256, ECP384} {
		k := mustGenerate(t, tok, KeySpec{Type: kt, ID: []byte{byte(0x20 + i)}, Label: kt.String(), Usage: UsageDerive})
		curve := ecdh.P256()
		if kt == ECP384 {
			curve = ecdh.P384()
		}
		peer, err := curve.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		secret, err := k.ECDH(ctx, peer.PublicKey().Bytes())
		if err != nil {
			t.Fatalf("%v: %v", kt, err)
		}
		cardPub, err := k.Public().(*ecdsa.PublicKey).ECDH()
		if err != nil {
			t.Fatal(err)
		}
		want, err := peer.ECDH(cardPub)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(secret, want) {
			t.Fatalf("%v: ECDH secret differs", kt)
		}
		if _, err := k.ECDH(ctx, []byte{4, 1, 2}); err == nil {
			t.Fatalf("%v: a bad point was accepted", kt)
		}
	}
}
