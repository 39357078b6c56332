package pkcs11

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"

	p11 "github.com/miekg/pkcs11"
)

// RawRSA applies the RSA private key to a block of exactly the modulus'
// size (m^d mod n), the operation a PIV card's GENERAL AUTHENTICATE does
// with an RSA key: the middleware pads (PKCS#1 v1.5 type 1 for a
// signature) or the block is a ciphertext (key management, 9D). It uses
// CKM_RSA_X_509 (C_Sign on a signing key, C_Decrypt on a decryption-only
// key). A token without CKM_RSA_X_509 signs a PKCS#1 v1.5 type 1 block with
// CKM_RSA_PKCS after stripping the padding; other blocks then fail.
func (s *Signer) RawRSA(ctx context.Context, block []byte) ([]byte, error) {
	pub, ok := s.pub.(*rsa.PublicKey)
	if !ok || s.keyType != p11.CKK_RSA {
		return nil, fmt.Errorf("pkcs11: raw RSA: %s is not an RSA key", s.query())
	}
	k := pub.Size()
	if len(block) != k {
		return nil, fmt.Errorf("pkcs11: raw RSA: block is %d bytes, the key needs %d", len(block), k)
	}
	if s.t.hasMechanism(p11.CKM_RSA_X_509) {
		mech := []*p11.Mechanism{p11.NewMechanism(p11.CKM_RSA_X_509, nil)}
		out, err := s.sign(ctx, mech, block)
		if err == nil || !keyFunctionRefused(err) {
			return leftPad(out, k), err
		}
		// A decryption-only key (PIV key management) refuses C_Sign.
		out, err = s.decryptRaw(ctx, mech, block)
		return leftPad(out, k), err
	}
	data, ok := stripType1(block)
	if !ok {
		return nil, fmt.Errorf("pkcs11: raw RSA: %s has no CKM_RSA_X_509 and the block is not PKCS#1 v1.5 type 1", s.t.name)
	}
	return s.sign(ctx, []*p11.Mechanism{p11.NewMechanism(p11.CKM_RSA_PKCS, nil)}, data)
}

func keyFunctionRefused(err error) bool {
	return is(err, p11.CKR_KEY_FUNCTION_NOT_PERMITTED) || is(err, p11.CKR_KEY_TYPE_INCONSISTENT) ||
		is(err, p11.CKR_MECHANISM_INVALID)
}

// decryptRaw runs one C_DecryptInit/C_Decrypt with the context-specific
// login a CKA_ALWAYS_AUTHENTICATE key needs.
func (s *Signer) decryptRaw(ctx context.Context, mech []*p11.Mechanism, data []byte) ([]byte, error) {
	var out []byte
	err := s.t.do(ctx, func(c *p11.Ctx, sh p11.SessionHandle, epoch uint64) error {
		h, err := s.keyHandle(c, sh, epoch)
		if err != nil {
			return err
		}
		if err := c.DecryptInit(sh, mech, h); err != nil {
			return err
		}
		if s.alwaysAuth {
			if err := c.Login(sh, p11.CKU_CONTEXT_SPECIFIC, string(s.t.pin)); err != nil {
				_, _ = c.Decrypt(sh, data)
				return opError("context-specific login", err)
			}
		}
		out, err = c.Decrypt(sh, data)
		return err
	})
	if err != nil {
		return nil, wrapOp(fmt.Sprintf("raw RSA with %s", s.query()), err)
	}
	return out, nil
}

// stripType1 removes PKCS#1 v1.5 type 1 padding: 00 01 FF… 00 data.
func stripType1(block []byte) ([]byte, bool) {
	if len(block) < 11 || block[0] != 0 || block[1] != 1 {
		return nil, false
	}
	i := bytes.IndexByte(block[2:], 0)
	if i < 8 {
		return nil, false
	}
	for _, b := range block[2 : 2+i] {
		if b != 0xFF {
			return nil, false
		}
	}
	return block[2+i+1:], true
}

func leftPad(b []byte, n int) []byte {
	if b == nil || len(b) >= n {
		return b
	}
	return append(make([]byte, n-len(b)), b...)
}

// ECDH derives the shared secret (the x-coordinate, SP 800-56A) of the EC
// private key and a peer's uncompressed point with CKM_ECDH1_DERIVE; the
// secret is a session object read once and destroyed.
func (s *Signer) ECDH(ctx context.Context, peerPoint []byte) ([]byte, error) {
	pub, ok := s.pub.(*ecdsa.PublicKey)
	if !ok || s.keyType != p11.CKK_EC {
		return nil, fmt.Errorf("pkcs11: ECDH: %s is not an EC key", s.query())
	}
	if _, err := ecdsa.ParseUncompressedPublicKey(pub.Curve, peerPoint); err != nil {
		return nil, fmt.Errorf("pkcs11: ECDH: the peer's point is not on %s: %w", pub.Curve.Params().Name, err)
	}
	size := (pub.Curve.Params().BitSize + 7) / 8
	var secret []byte
	err := s.t.do(ctx, func(c *p11.Ctx, sh p11.SessionHandle, epoch uint64) error {
		h, err := s.keyHandle(c, sh, epoch)
		if err != nil {
			return err
		}
		mech := []*p11.Mechanism{p11.NewMechanism(p11.CKM_ECDH1_DERIVE, p11.NewECDH1DeriveParams(p11.CKD_NULL, nil, peerPoint))}
		tmpl := []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_GENERIC_SECRET),
			p11.NewAttribute(p11.CKA_TOKEN, false),
			p11.NewAttribute(p11.CKA_SENSITIVE, false),
			p11.NewAttribute(p11.CKA_EXTRACTABLE, true),
			p11.NewAttribute(p11.CKA_VALUE_LEN, size),
		}
		if s.alwaysAuth {
			// Derivation has no Init/Final pair to log in between;
			// a context-specific login right before it is accepted.
			if err := c.Login(sh, p11.CKU_CONTEXT_SPECIFIC, string(s.t.pin)); err != nil && !is(err, p11.CKR_OPERATION_NOT_INITIALIZED) {
				return opError("context-specific login", err)
			}
		}
		dk, err := c.DeriveKey(sh, mech, h, tmpl)
		if err != nil {
			return err
		}
		defer c.DestroyObject(sh, dk)
		attrs, err := c.GetAttributeValue(sh, dk, []*p11.Attribute{p11.NewAttribute(p11.CKA_VALUE, nil)})
		if err != nil {
			return err
		}
		secret = attrs[0].Value
		return nil
	})
	if err != nil {
		return nil, wrapOp(fmt.Sprintf("ECDH with %s", s.query()), err)
	}
	if len(secret) != size {
		return nil, errors.New("pkcs11: ECDH: the token returned a secret of the wrong size")
	}
	return secret, nil
}

// Curve is the EC key's curve, nil for RSA.
func (s *Signer) Curve() elliptic.Curve {
	if k, ok := s.pub.(*ecdsa.PublicKey); ok {
		return k.Curve
	}
	return nil
}
