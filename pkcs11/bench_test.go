package pkcs11

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	p11 "github.com/miekg/pkcs11"
)

// BenchmarkSign compares a signature through credgw's layer (pool, handle
// cache, r‖s → ASN.1) with the bare miekg calls on the same key. The goal is
// an overhead of at most 10 %; `make bench` prints both.
func BenchmarkSign(b *testing.B) {
	for _, kt := range []KeyType{ECP256, RSA2048} {
		tok := newToken(b, TokenConfig{})
		s := mustGenerate(b, tok, KeySpec{Type: kt, ID: []byte{1}, Label: "bench"})
		digest := sha256.Sum256([]byte("benchmark"))
		data, mech := digest[:], uint(p11.CKM_ECDSA)
		if kt.IsRSA() {
			data, mech = append(append([]byte{}, digestInfoPrefix[crypto.SHA256]...), digest[:]...), p11.CKM_RSA_PKCS
		}
		b.Run(kt.String()+"/miekg", func(b *testing.B) {
			c := tok.mod.ctx
			sh, err := c.OpenSession(tok.slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
			if err != nil {
				b.Fatal(err)
			}
			defer c.CloseSession(sh)
			hs, err := findHandles(c, sh, s.query(), 1)
			if err != nil || len(hs) != 1 {
				b.Fatal(err)
			}
			m := []*p11.Mechanism{p11.NewMechanism(mech, nil)}
			for b.Loop() {
				if err := c.SignInit(sh, m, hs[0]); err != nil {
					b.Fatal(err)
				}
				if _, err := c.Sign(sh, data); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(kt.String()+"/credgw", func(b *testing.B) {
			for b.Loop() {
				if _, err := s.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSignParallel signs from GOMAXPROCS goroutines through one pool.
func BenchmarkSignParallel(b *testing.B) {
	tok := newToken(b, TokenConfig{})
	s := mustGenerate(b, tok, KeySpec{Type: ECP256, ID: []byte{1}, Label: "bench"})
	digest := sha256.Sum256([]byte("benchmark"))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkAESGCMSeal seals 4 KiB with a token AES-256 key.
func BenchmarkAESGCMSeal(b *testing.B) {
	tok := newToken(b, TokenConfig{})
	k, err := tok.GenerateAESKey(context.Background(), KeyRef{ID: []byte("kek")})
	if err != nil {
		b.Fatal(err)
	}
	pt := make([]byte, 4096)
	b.SetBytes(int64(len(pt)))
	for b.Loop() {
		if _, err := k.Seal(context.Background(), pt, nil); err != nil {
			b.Fatal(err)
		}
	}
}
