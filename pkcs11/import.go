package pkcs11

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/asn1"
	"fmt"
	"math/big"

	p11 "github.com/miekg/pkcs11"
)

// ImportKeyPair stores a private key made elsewhere (an escrowed
// key-management key arriving in a PKCS#12) on the token, with its public
// half, under CKA_ID id: private, sensitive and non-extractable from then
// on, and a key-management key only: RSA keys may decrypt and unwrap with
// PKCS#1 v1.5 or OAEP, EC keys may derive (ECDH); neither signs, nor
// recovers signatures (CKA_ALLOWED_MECHANISMS says so to tokens that
// enforce it). If a private key with that id is there already, nothing is
// created. It returns the key's Signer (its Decrypter for RSA).
func (t *Token) ImportKeyPair(ctx context.Context, id []byte, label string, key crypto.PrivateKey) (*Signer, error) {
	if len(id) == 0 {
		return nil, fmt.Errorf("pkcs11: import key: CKA_ID must not be empty")
	}
	if t.pin == nil {
		return nil, fmt.Errorf("%w: storing private keys on %s needs a user login", ErrPINRequired, t.name)
	}
	common := func(class uint, private bool) []*p11.Attribute {
		return []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, class),
			p11.NewAttribute(p11.CKA_TOKEN, true),
			p11.NewAttribute(p11.CKA_PRIVATE, private),
			p11.NewAttribute(p11.CKA_ID, id),
			p11.NewAttribute(p11.CKA_LABEL, label),
		}
	}
	pub := common(p11.CKO_PUBLIC_KEY, false)
	pub = append(pub,
		p11.NewAttribute(p11.CKA_VERIFY, false),
		p11.NewAttribute(p11.CKA_VERIFY_RECOVER, false))
	priv := append(common(p11.CKO_PRIVATE_KEY, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_SIGN, false),
		p11.NewAttribute(p11.CKA_SIGN_RECOVER, false))
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if len(k.Primes) != 2 {
			return nil, fmt.Errorf("pkcs11: import key: multi-prime RSA keys are not supported")
		}
		k.Precompute()
		e := big.NewInt(int64(k.E)).Bytes()
		pub = append(pub,
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_RSA),
			p11.NewAttribute(p11.CKA_ENCRYPT, true),
			p11.NewAttribute(p11.CKA_WRAP, true),
			p11.NewAttribute(p11.CKA_MODULUS, k.N.Bytes()),
			p11.NewAttribute(p11.CKA_PUBLIC_EXPONENT, e))
		priv = append(priv,
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_RSA),
			p11.NewAttribute(p11.CKA_DECRYPT, true),
			p11.NewAttribute(p11.CKA_UNWRAP, true),
			p11.NewAttribute(p11.CKA_MODULUS, k.N.Bytes()),
			p11.NewAttribute(p11.CKA_PUBLIC_EXPONENT, e),
			p11.NewAttribute(p11.CKA_PRIVATE_EXPONENT, k.D.Bytes()),
			p11.NewAttribute(p11.CKA_PRIME_1, k.Primes[0].Bytes()),
			p11.NewAttribute(p11.CKA_PRIME_2, k.Primes[1].Bytes()),
			p11.NewAttribute(p11.CKA_EXPONENT_1, k.Precomputed.Dp.Bytes()),
			p11.NewAttribute(p11.CKA_EXPONENT_2, k.Precomputed.Dq.Bytes()),
			p11.NewAttribute(p11.CKA_COEFFICIENT, k.Precomputed.Qinv.Bytes()),
			p11.NewAttribute(p11.CKA_ALLOWED_MECHANISMS, mechanisms(p11.CKM_RSA_PKCS, p11.CKM_RSA_PKCS_OAEP)))
	case *ecdsa.PrivateKey:
		var oid asn1.ObjectIdentifier
		switch k.Curve {
		case elliptic.P256():
			oid = oidP256
		case elliptic.P384():
			oid = oidP384
		default:
			return nil, fmt.Errorf("pkcs11: import key: curve %s is not supported", k.Curve.Params().Name)
		}
		params, err := asn1.Marshal(oid)
		if err != nil {
			return nil, err
		}
		d, err := k.Bytes()
		if err != nil {
			return nil, fmt.Errorf("pkcs11: import key: %w", err)
		}
		q, err := k.PublicKey.Bytes()
		if err != nil {
			return nil, fmt.Errorf("pkcs11: import key: %w", err)
		}
		point, err := asn1.Marshal(q) // CKA_EC_POINT is a DER OCTET STRING
		if err != nil {
			return nil, err
		}
		pub = append(pub,
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC),
			p11.NewAttribute(p11.CKA_DERIVE, true),
			p11.NewAttribute(p11.CKA_EC_PARAMS, params),
			p11.NewAttribute(p11.CKA_EC_POINT, point))
		priv = append(priv,
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC),
			p11.NewAttribute(p11.CKA_DERIVE, true),
			p11.NewAttribute(p11.CKA_EC_PARAMS, params),
			p11.NewAttribute(p11.CKA_VALUE, d),
			p11.NewAttribute(p11.CKA_ALLOWED_MECHANISMS, mechanisms(p11.CKM_ECDH1_DERIVE, p11.CKM_ECDH1_COFACTOR_DERIVE)))
	default:
		return nil, fmt.Errorf("pkcs11: import key: %T keys are not supported: use RSA or ECDSA", key)
	}
	err := t.do(ctx, func(c *p11.Ctx, sh p11.SessionHandle, _ uint64) error {
		// Idempotent (a retried install, or a retry of this closure after a
		// lost session): an existing private key stands; a public half left
		// without one is replaced.
		if have, err := findHandles(c, sh, Query{Class: ClassPrivateKey, ID: id}, 1); err != nil || len(have) > 0 {
			return err
		}
		stale, err := findHandles(c, sh, Query{Class: ClassPublicKey, ID: id}, 0)
		if err != nil {
			return err
		}
		for _, h := range stale {
			if err := c.DestroyObject(sh, h); err != nil {
				return err
			}
		}
		ph, err := c.CreateObject(sh, pub)
		if err != nil {
			return err
		}
		if _, err := c.CreateObject(sh, priv); err != nil {
			c.DestroyObject(sh, ph) // no public half without its private one
			return err
		}
		return nil
	})
	if err != nil {
		return nil, wrapOp("import key on "+t.name, err)
	}
	return t.Signer(ctx, KeyRef{ID: id})
}

// mechanisms encodes a CKA_ALLOWED_MECHANISMS value: CK_MECHANISM_TYPEs in
// the platform's CK_ULONG layout.
func mechanisms(ms ...uint) []byte {
	var b []byte
	for _, m := range ms {
		b = append(b, p11.NewAttribute(0, m).Value...)
	}
	return b
}
