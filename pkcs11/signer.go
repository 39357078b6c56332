package pkcs11

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sync"

	p11 "github.com/miekg/pkcs11"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// KeyRef names a key pair on a token by CKA_ID and, optionally, CKA_LABEL of
// the private key.
type KeyRef struct {
	ID    []byte
	Label string
}

// Signer is a private key on a token. It implements crypto.Signer,
// crypto.MessageSigner and (for RSA) crypto.Decrypter, and is safe for
// concurrent use.
type Signer struct {
	t          *Token
	ref        KeyRef
	pub        crypto.PublicKey
	keyType    uint
	alwaysAuth bool

	mu     sync.Mutex
	handle p11.ObjectHandle
	epoch  uint64
}

var (
	_ crypto.Signer        = (*Signer)(nil)
	_ crypto.MessageSigner = (*Signer)(nil)
	_ crypto.Decrypter     = (*Signer)(nil)
)

// Signer finds the private key ref and its public half (from the public key
// object, else the certificate with the same CKA_ID).
func (t *Token) Signer(ctx context.Context, ref KeyRef) (*Signer, error) {
	if len(ref.ID) == 0 {
		return nil, fmt.Errorf("pkcs11: signer on %s: a CKA_ID is required", t.name)
	}
	s := &Signer{t: t, ref: ref}
	err := t.do(ctx, func(c *p11.Ctx, sh p11.SessionHandle, epoch uint64) error {
		h, err := t.findOne(c, sh, s.query())
		if err != nil {
			return err
		}
		attrs, err := c.GetAttributeValue(sh, h, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_KEY_TYPE, nil),
			p11.NewAttribute(p11.CKA_ALWAYS_AUTHENTICATE, nil),
		})
		if err != nil {
			return err
		}
		if s.keyType, err = attrUint(attrs[0].Value); err != nil {
			return err
		}
		s.alwaysAuth = len(attrs[1].Value) == 1 && attrs[1].Value[0] != 0
		if s.pub, err = t.publicKey(c, sh, ref.ID, h, s.keyType); err != nil {
			return err
		}
		s.handle, s.epoch = h, epoch
		return nil
	})
	if err != nil {
		return nil, wrapOp("find key", err)
	}
	if s.alwaysAuth && t.pin == nil {
		return nil, fmt.Errorf("%w: %s on %s has CKA_ALWAYS_AUTHENTICATE and needs a PIN for every signature", ErrPINRequired, s.query(), t.name)
	}
	return s, nil
}

func (s *Signer) query() Query {
	return Query{Class: ClassPrivateKey, ID: s.ref.ID, Label: s.ref.Label}
}

// publicKey reads the public half of private key priv.
func (t *Token) publicKey(c *p11.Ctx, sh p11.SessionHandle, id []byte, priv p11.ObjectHandle, keyType uint) (crypto.PublicKey, error) {
	pubQ := Query{Class: ClassPublicKey, ID: id}
	if hs, err := findHandles(c, sh, pubQ, 1); err == nil && len(hs) == 1 {
		return readPublicKey(c, sh, hs[0], keyType)
	}
	if hs, err := findHandles(c, sh, Query{Class: ClassCertificate, ID: id}, 1); err == nil && len(hs) == 1 {
		attrs, err := c.GetAttributeValue(sh, hs[0], []*p11.Attribute{p11.NewAttribute(p11.CKA_VALUE, nil)})
		if err == nil {
			if cert, err := x509.ParseCertificate(attrs[0].Value); err == nil {
				return cert.PublicKey, nil
			}
		}
	}
	if keyType == p11.CKK_RSA { // RSA private keys carry modulus and exponent
		return readPublicKey(c, sh, priv, keyType)
	}
	return nil, fmt.Errorf("%w: no public key or certificate with the private key's CKA_ID on %s", ErrObjectNotFound, t.name)
}

func readPublicKey(c *p11.Ctx, sh p11.SessionHandle, h p11.ObjectHandle, keyType uint) (crypto.PublicKey, error) {
	switch keyType {
	case p11.CKK_RSA:
		attrs, err := c.GetAttributeValue(sh, h, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_MODULUS, nil),
			p11.NewAttribute(p11.CKA_PUBLIC_EXPONENT, nil),
		})
		if err != nil {
			return nil, err
		}
		e := new(big.Int).SetBytes(attrs[1].Value)
		if !e.IsInt64() || e.Int64() > 1<<31-1 || e.Int64() < 3 {
			return nil, fmt.Errorf("pkcs11: RSA public exponent out of range")
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(attrs[0].Value), E: int(e.Int64())}, nil
	case p11.CKK_EC:
		attrs, err := c.GetAttributeValue(sh, h, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_EC_PARAMS, nil),
			p11.NewAttribute(p11.CKA_EC_POINT, nil),
		})
		if err != nil {
			return nil, err
		}
		return parseECPoint(attrs[0].Value, attrs[1].Value)
	}
	return nil, fmt.Errorf("pkcs11: key type %#x is not supported (RSA and EC are)", keyType)
}

var (
	oidP256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	oidP384 = asn1.ObjectIdentifier{1, 3, 132, 0, 34}
)

func curveFromParams(params []byte) (elliptic.Curve, error) {
	var oid asn1.ObjectIdentifier
	if rest, err := asn1.Unmarshal(params, &oid); err != nil || len(rest) > 0 {
		return nil, fmt.Errorf("pkcs11: CKA_EC_PARAMS is not a named curve")
	}
	switch {
	case oid.Equal(oidP256):
		return elliptic.P256(), nil
	case oid.Equal(oidP384):
		return elliptic.P384(), nil
	}
	return nil, fmt.Errorf("pkcs11: curve %v is not supported (P-256 and P-384 are)", oid)
}

// parseECPoint decodes CKA_EC_POINT, a DER OCTET STRING around the
// uncompressed point (some modules omit the wrapper).
func parseECPoint(params, point []byte) (*ecdsa.PublicKey, error) {
	curve, err := curveFromParams(params)
	if err != nil {
		return nil, err
	}
	var raw []byte
	if rest, err := asn1.Unmarshal(point, &raw); err != nil || len(rest) > 0 {
		raw = point
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(curve, raw)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: CKA_EC_POINT: %w", err)
	}
	return pub, nil
}

// Public returns the public key.
func (s *Signer) Public() crypto.PublicKey { return s.pub }

// Ref returns the key's CKA_ID and label.
func (s *Signer) Ref() KeyRef { return s.ref }

// AlwaysAuthenticate reports whether the key needs a context-specific login
// before every signature (PIV 9C).
func (s *Signer) AlwaysAuthenticate() bool { return s.alwaysAuth }

// Sign signs digest: ECDSA with CKM_ECDSA (the raw r‖s converted to ASN.1),
// RSA PKCS#1 v1.5 with CKM_RSA_PKCS over a DigestInfo (the form every token,
// PIV cards included, supports), RSA-PSS with CKM_RSA_PKCS_PSS when opts is
// *rsa.PSSOptions.
func (s *Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return s.SignContext(context.Background(), digest, opts)
}

// SignContext is Sign with a context that bounds the wait for a session.
func (s *Signer) SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts == nil {
		return nil, errors.New("pkcs11: sign: opts must name the hash")
	}
	h := opts.HashFunc()
	if h != 0 && len(digest) != h.Size() {
		return nil, fmt.Errorf("pkcs11: sign: digest is %d bytes, %v needs %d", len(digest), h, h.Size())
	}
	switch s.keyType {
	case p11.CKK_EC:
		raw, err := s.sign(ctx, []*p11.Mechanism{p11.NewMechanism(p11.CKM_ECDSA, nil)}, padToKey(s.pub, digest))
		if err != nil {
			return nil, err
		}
		return ecdsaRawToASN1(raw)
	case p11.CKK_RSA:
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			mech, err := s.pssMechanism(h, pss)
			if err != nil {
				return nil, err
			}
			return s.sign(ctx, []*p11.Mechanism{mech}, digest)
		}
		prefix, ok := digestInfoPrefix[h]
		if !ok {
			return nil, fmt.Errorf("pkcs11: sign: hash %v is not supported for RSA PKCS#1 v1.5", h)
		}
		return s.sign(ctx, []*p11.Mechanism{p11.NewMechanism(p11.CKM_RSA_PKCS, nil)}, append(append([]byte{}, prefix...), digest...))
	}
	return nil, fmt.Errorf("pkcs11: sign: key type %#x is not supported", s.keyType)
}

// padToKey left-pads an ECDSA input shorter than the key's order with
// zeros: the same integer (FIPS 186-5 §6.4.1 reads the input as one), so
// the signature verifies against the digest as given, but as long as the
// key, which strict PIV applets require (SP 800-73-4 Part 2 §3.2.4: a
// P-384 card answers 6A80 to a SHA-256 digest, and OpenSC passes a short
// input through unchanged). A longer input is the token's to truncate.
func padToKey(pub crypto.PublicKey, digest []byte) []byte {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok || k.Curve == nil {
		return digest
	}
	size := (k.Curve.Params().BitSize + 7) / 8
	if len(digest) >= size {
		return digest
	}
	return append(make([]byte, size-len(digest), size), digest...)
}

// SignMessage signs msg. For RSA PKCS#1 v1.5 it lets the token hash
// (CKM_SHA256_RSA_PKCS and friends) when the token offers that mechanism;
// otherwise, and for ECDSA and PSS, it hashes in Go and calls Sign.
func (s *Signer) SignMessage(_ io.Reader, msg []byte, opts crypto.SignerOpts) ([]byte, error) {
	h := opts.HashFunc()
	if !h.Available() {
		return nil, fmt.Errorf("pkcs11: sign: hash %v is not available", h)
	}
	if _, isPSS := opts.(*rsa.PSSOptions); s.keyType == p11.CKK_RSA && !isPSS {
		if m, ok := rsaHashMechanism[h]; ok && s.t.hasMechanism(m) {
			return s.sign(context.Background(), []*p11.Mechanism{p11.NewMechanism(m, nil)}, msg)
		}
	}
	hh := h.New()
	hh.Write(msg)
	return s.Sign(nil, hh.Sum(nil), opts)
}

// sign runs one C_SignInit/C_Sign, with the context-specific login a
// CKA_ALWAYS_AUTHENTICATE key needs between them.
func (s *Signer) sign(ctx context.Context, mech []*p11.Mechanism, data []byte) ([]byte, error) {
	var sig []byte
	err := s.t.do(ctx, func(c *p11.Ctx, sh p11.SessionHandle, epoch uint64) error {
		h, err := s.keyHandle(c, sh, epoch)
		if err != nil {
			return err
		}
		if err := c.SignInit(sh, mech, h); err != nil {
			return err
		}
		if s.alwaysAuth {
			if err := c.Login(sh, p11.CKU_CONTEXT_SPECIFIC, string(s.t.pin)); err != nil {
				_, _ = c.Sign(sh, data) // end the operation
				if sessionLost(err) {
					return err
				}
				return opError("context-specific login", err)
			}
		}
		sig, err = c.Sign(sh, data)
		return err
	})
	if err != nil {
		return nil, wrapOp(fmt.Sprintf("sign with %s", s.query()), err)
	}
	return sig, nil
}

// keyHandle returns the cached private key handle, finding it again after a
// reconnect.
func (s *Signer) keyHandle(c *p11.Ctx, sh p11.SessionHandle, epoch uint64) (p11.ObjectHandle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.epoch == epoch {
		return s.handle, nil
	}
	h, err := s.t.findOne(c, sh, s.query())
	if err != nil {
		return 0, err
	}
	// After a reconnect the id may name another key (a token deleted and
	// re-created): never sign with a key other than the one Public reports.
	pub, err := s.t.publicKey(c, sh, s.ref.ID, h, s.keyType)
	if err != nil {
		return 0, err
	}
	if eq, ok := pub.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(s.pub) {
		return 0, fmt.Errorf("%w: %s on %s is no longer the key this signer was opened with", ErrKeyChanged, s.query(), s.t.name)
	}
	s.handle, s.epoch = h, epoch
	return h, nil
}

func (s *Signer) pssMechanism(h crypto.Hash, opts *rsa.PSSOptions) (*p11.Mechanism, error) {
	hm, ok := hashMechanism[h]
	if !ok {
		return nil, fmt.Errorf("pkcs11: sign: hash %v is not supported for RSA-PSS", h)
	}
	pub := s.pub.(*rsa.PublicKey)
	var salt int
	switch opts.SaltLength {
	case rsa.PSSSaltLengthAuto:
		salt = (pub.N.BitLen()-1+7)/8 - 2 - h.Size() // as crypto/rsa: the largest that fits
	case rsa.PSSSaltLengthEqualsHash:
		salt = h.Size()
	default:
		salt = opts.SaltLength
	}
	if salt < 0 {
		return nil, fmt.Errorf("pkcs11: sign: PSS salt length %d does not fit the key", salt)
	}
	return p11.NewMechanism(p11.CKM_RSA_PKCS_PSS, p11.NewPSSParams(hm, mgfFor[h], uint(salt))), nil
}

// Decrypt decrypts an RSA ciphertext: OAEP when opts is *rsa.OAEPOptions,
// PKCS#1 v1.5 when opts is nil or *rsa.PKCS1v15DecryptOptions.
func (s *Signer) Decrypt(_ io.Reader, ciphertext []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	if s.keyType != p11.CKK_RSA {
		return nil, fmt.Errorf("pkcs11: decrypt: %s is not an RSA key", s.query())
	}
	var mech *p11.Mechanism
	switch o := opts.(type) {
	//lint:ignore SA1019 PIV key management keys (9D) are RSA PKCS#1 v1.5 (SP 800-78-4); a caller asks for it
	case nil, *rsa.PKCS1v15DecryptOptions:
		mech = p11.NewMechanism(p11.CKM_RSA_PKCS, nil)
	case *rsa.OAEPOptions:
		hm, ok := hashMechanism[o.Hash]
		if !ok {
			return nil, fmt.Errorf("pkcs11: decrypt: OAEP hash %v is not supported", o.Hash)
		}
		mgfHash := o.MGFHash
		if mgfHash == 0 {
			mgfHash = o.Hash
		}
		var src uint
		if len(o.Label) > 0 {
			src = p11.CKZ_DATA_SPECIFIED
		}
		mech = p11.NewMechanism(p11.CKM_RSA_PKCS_OAEP, p11.NewOAEPParams(hm, mgfFor[mgfHash], src, o.Label))
	default:
		return nil, fmt.Errorf("pkcs11: decrypt: options %T are not supported", opts)
	}
	var out []byte
	err := s.t.do(context.Background(), func(c *p11.Ctx, sh p11.SessionHandle, epoch uint64) error {
		h, err := s.keyHandle(c, sh, epoch)
		if err != nil {
			return err
		}
		if err := c.DecryptInit(sh, []*p11.Mechanism{mech}, h); err != nil {
			if is(err, p11.CKR_ARGUMENTS_BAD) || is(err, p11.CKR_MECHANISM_PARAM_INVALID) || is(err, p11.CKR_MECHANISM_INVALID) {
				return fmt.Errorf("pkcs11: the token does not support these decryption parameters (%T): %w", opts, err)
			}
			return err
		}
		if s.alwaysAuth {
			if err := c.Login(sh, p11.CKU_CONTEXT_SPECIFIC, string(s.t.pin)); err != nil {
				_, _ = c.Decrypt(sh, ciphertext)
				return opError("context-specific login", err)
			}
		}
		out, err = c.Decrypt(sh, ciphertext)
		if is(err, p11.CKR_ARGUMENTS_BAD) || is(err, p11.CKR_MECHANISM_PARAM_INVALID) {
			return fmt.Errorf("pkcs11: the token does not support these decryption parameters (%T): %w", opts, err)
		}
		if is(err, p11.CKR_ENCRYPTED_DATA_INVALID) || is(err, p11.CKR_ENCRYPTED_DATA_LEN_RANGE) {
			return ErrDecrypt
		}
		return err
	})
	if err != nil {
		return nil, wrapOp(fmt.Sprintf("decrypt with %s", s.query()), err)
	}
	return out, nil
}

// ecdsaRawToASN1 turns PKCS#11's r‖s into the ASN.1 SEQUENCE Go verifies.
func ecdsaRawToASN1(raw []byte) ([]byte, error) {
	if len(raw) == 0 || len(raw)%2 != 0 {
		return nil, fmt.Errorf("pkcs11: ECDSA signature of %d bytes is not r‖s", len(raw))
	}
	n := len(raw) / 2
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		addASN1UnsignedInt(b, raw[:n])
		addASN1UnsignedInt(b, raw[n:])
	})
	return b.Bytes()
}

// addASN1UnsignedInt writes a big-endian unsigned integer as a DER INTEGER.
func addASN1UnsignedInt(b *cryptobyte.Builder, v []byte) {
	for len(v) > 1 && v[0] == 0 {
		v = v[1:]
	}
	b.AddASN1(cbasn1.INTEGER, func(b *cryptobyte.Builder) {
		if len(v) == 0 || v[0]&0x80 != 0 {
			b.AddUint8(0)
		}
		b.AddBytes(v)
	})
}

// digestInfoPrefix is the DER DigestInfo header for each hash (RFC 8017 §9.2
// note 1); CKM_RSA_PKCS signs DigestInfo ‖ digest.
var digestInfoPrefix = map[crypto.Hash][]byte{
	crypto.SHA256: {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20},
	crypto.SHA384: {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30},
	crypto.SHA512: {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40},
}

var hashMechanism = map[crypto.Hash]uint{
	crypto.SHA1:   p11.CKM_SHA_1, // OAEP only: SoftHSM 2.6 supports no other OAEP hash
	crypto.SHA256: p11.CKM_SHA256,
	crypto.SHA384: p11.CKM_SHA384,
	crypto.SHA512: p11.CKM_SHA512,
}

var mgfFor = map[crypto.Hash]uint{
	crypto.SHA1:   p11.CKG_MGF1_SHA1,
	crypto.SHA256: p11.CKG_MGF1_SHA256,
	crypto.SHA384: p11.CKG_MGF1_SHA384,
	crypto.SHA512: p11.CKG_MGF1_SHA512,
}

var rsaHashMechanism = map[crypto.Hash]uint{
	crypto.SHA256: p11.CKM_SHA256_RSA_PKCS,
	crypto.SHA384: p11.CKM_SHA384_RSA_PKCS,
	crypto.SHA512: p11.CKM_SHA512_RSA_PKCS,
}
