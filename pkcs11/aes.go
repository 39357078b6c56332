package pkcs11

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"sync"

	p11 "github.com/miekg/pkcs11"
)

const (
	gcmIVSize  = 12
	gcmTagBits = 128
)

// AESKey is an AES-256 secret key on a token, used with AES-GCM. The escrow
// key-encryption key is one. It is found by CKA_ID and label, again after
// every reconnect, and then checked to be the key first found (a
// fingerprint, aesFingerprint): a token re-created, or another token with
// the label, that holds another key under them gives ErrKeyChanged, and
// that key is never used.
type AESKey struct {
	t   *Token
	ref KeyRef

	mu     sync.Mutex
	handle p11.ObjectHandle
	epoch  uint64
	fp     *aesFingerprint // of the key first found: every re-find must match it
}

// aesFingerprint tells one AES key from another without revealing it: a
// known answer, the SHA-256 of the encryption of a fixed block by the
// token (only the hash is kept), or, if the token performs neither
// known-answer mechanism, the key's CKA_CHECK_VALUE (PKCS#11 v2.40: the
// first 3 bytes of the ECB encryption of a zero block). The known answer
// is preferred: 3 bytes tell an accidental swap, but whoever chooses a key
// can match them in some 2^24 tries.
type aesFingerprint struct {
	method string // aesKATMethods[i].name or "CKA_CHECK_VALUE"
	value  []byte
}

// aesKATBlock is what the known answer encrypts. It is not the zero block,
// whose encryption is the GCM hash key, and as a counter block its IV part
// is one a random 96-bit IV meets with probability 2^-96.
var aesKATBlock = []byte("credgw KEK check")

// aesKATMethods are the known-answer mechanisms, tried in order. GCM with a
// fixed IV serves a token that refuses ECB; it encrypts only aesKATBlock
// under that IV, so the IV's reuse shows nothing new.
var aesKATMethods = []struct {
	name string
	mech func() (*p11.Mechanism, func())
}{
	{"AES-ECB known answer", func() (*p11.Mechanism, func()) { return p11.NewMechanism(p11.CKM_AES_ECB, nil), func() {} }},
	{"AES-GCM known answer", func() (*p11.Mechanism, func()) {
		params := p11.NewGCMParams([]byte("credgw KAT 1"), nil, gcmTagBits) // a 12-byte IV
		return p11.NewMechanism(p11.CKM_AES_GCM, params), params.Free
	}},
}

// aesFingerprintBy computes the fingerprint of h by method ("" for the
// first method the token performs).
func aesFingerprintBy(c *p11.Ctx, sh p11.SessionHandle, h p11.ObjectHandle, method string) (*aesFingerprint, error) {
	var lastErr error
	for _, m := range aesKATMethods {
		if method != "" && method != m.name {
			continue
		}
		mech, free := m.mech()
		err := c.EncryptInit(sh, []*p11.Mechanism{mech}, h)
		var out []byte
		if err == nil {
			out, err = c.Encrypt(sh, aesKATBlock)
		}
		free()
		if err == nil {
			sum := sha256.Sum256(out)
			clear(out)
			return &aesFingerprint{method: m.name, value: sum[:]}, nil
		}
		if sessionLost(err) {
			return nil, err
		}
		lastErr = err
	}
	if method == "" || method == "CKA_CHECK_VALUE" {
		attrs, err := c.GetAttributeValue(sh, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_CHECK_VALUE, nil)})
		if err == nil && len(attrs) == 1 && len(attrs[0].Value) > 0 {
			return &aesFingerprint{method: "CKA_CHECK_VALUE", value: attrs[0].Value}, nil
		}
		if err != nil && sessionLost(err) {
			return nil, err
		}
		if err == nil {
			err = errors.New("empty CKA_CHECK_VALUE")
		}
		lastErr = err
	}
	return nil, lastErr
}

// GenerateAESKey makes an AES-256 key on the token: private, sensitive,
// non-extractable, for encrypt/decrypt and wrap/unwrap.
func (t *Token) GenerateAESKey(ctx context.Context, ref KeyRef) (*AESKey, error) {
	if len(ref.ID) == 0 {
		return nil, fmt.Errorf("pkcs11: generate AES key: CKA_ID must not be empty")
	}
	if t.pin == nil {
		return nil, fmt.Errorf("%w: generating secret keys on %s needs a user login", ErrPINRequired, t.name)
	}
	tpl := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_VALUE_LEN, 32),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_ENCRYPT, true),
		p11.NewAttribute(p11.CKA_DECRYPT, true),
		p11.NewAttribute(p11.CKA_WRAP, true),
		p11.NewAttribute(p11.CKA_UNWRAP, true),
		p11.NewAttribute(p11.CKA_ID, ref.ID),
		p11.NewAttribute(p11.CKA_LABEL, ref.Label),
	}
	err := t.do(ctx, func(c *p11.Ctx, sh p11.SessionHandle, _ uint64) error {
		_, err := c.GenerateKey(sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)}, tpl)
		return err
	})
	if err != nil {
		return nil, wrapOp(fmt.Sprintf("generate AES key on %s", t.name), err)
	}
	return t.AESKey(ctx, ref)
}

// AESKey finds an existing AES secret key and takes its fingerprint. A key
// that can be fingerprinted by none of AES-ECB, AES-GCM and CKA_CHECK_VALUE
// is refused: a reconnect could not tell it from another.
func (t *Token) AESKey(ctx context.Context, ref KeyRef) (*AESKey, error) {
	if len(ref.ID) == 0 {
		return nil, fmt.Errorf("pkcs11: AES key on %s: a CKA_ID is required", t.name)
	}
	k := &AESKey{t: t, ref: ref}
	err := t.do(ctx, func(c *p11.Ctx, sh p11.SessionHandle, epoch uint64) error {
		_, err := k.keyHandle(c, sh, epoch)
		return err
	})
	if err != nil {
		return nil, wrapOp("find AES key", err)
	}
	return k, nil
}

func (k *AESKey) query() Query {
	return Query{Class: ClassSecretKey, ID: k.ref.ID, Label: k.ref.Label}
}

func (k *AESKey) keyHandle(c *p11.Ctx, sh p11.SessionHandle, epoch uint64) (p11.ObjectHandle, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.epoch == epoch && k.handle != 0 {
		return k.handle, nil
	}
	h, err := k.t.findOne(c, sh, k.query())
	if err != nil {
		return 0, err
	}
	// After a reconnect the id and label may name another key (the token
	// re-created, another token given the label): never seal or open with
	// a key other than the one first found, or new escrow would be sealed
	// under a foreign KEK and earlier escrow would no longer open.
	if k.fp == nil {
		fp, err := aesFingerprintBy(c, sh, h, "")
		if err != nil {
			if sessionLost(err) {
				return 0, err
			}
			return 0, fmt.Errorf("pkcs11: %s on %s: the token neither encrypts a known answer (AES-ECB, AES-GCM) "+
				"nor gives CKA_CHECK_VALUE, so a reconnect could not tell it from another key: %w", k.query(), k.t.name, err)
		}
		k.fp = fp
	} else {
		fp, err := aesFingerprintBy(c, sh, h, k.fp.method)
		if err != nil {
			if sessionLost(err) {
				return 0, err
			}
			return 0, fmt.Errorf("%w: %s on %s can no longer be checked to be the key this AES key was opened with "+
				"(its %s fails: %v); refusing to use it", ErrKeyChanged, k.query(), k.t.name, k.fp.method, err)
		}
		if subtle.ConstantTimeCompare(fp.value, k.fp.value) != 1 {
			return 0, fmt.Errorf("%w: %s on %s is no longer the key this AES key was opened with (its %s differs; "+
				"was the token re-created, or another token given its label?); refusing to seal or open with it",
				ErrKeyChanged, k.query(), k.t.name, k.fp.method)
		}
	}
	k.handle, k.epoch = h, epoch
	return h, nil
}

// Seal encrypts plaintext with AES-256-GCM under a fresh random 12-byte IV
// (never an empty one: SoftHSM accepts an empty IV and then reuses the
// nonce). The result is IV ‖ ciphertext ‖ 16-byte tag; aad is authenticated,
// not stored.
func (k *AESKey) Seal(ctx context.Context, plaintext, aad []byte) ([]byte, error) {
	iv := make([]byte, gcmIVSize)
	if _, err := rand.Read(iv); err != nil {
		return nil, err
	}
	var ct []byte
	err := k.t.do(ctx, func(c *p11.Ctx, sh p11.SessionHandle, epoch uint64) error {
		h, err := k.keyHandle(c, sh, epoch)
		if err != nil {
			return err
		}
		params := p11.NewGCMParams(iv, aad, gcmTagBits)
		defer params.Free()
		if err := c.EncryptInit(sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, params)}, h); err != nil {
			return err
		}
		ct, err = c.Encrypt(sh, plaintext)
		return err
	})
	if err != nil {
		return nil, wrapOp(fmt.Sprintf("AES-GCM seal with %s", k.query()), err)
	}
	return append(iv, ct...), nil
}

// Open decrypts what Seal produced. A wrong key, a wrong aad or any change to
// sealed gives ErrDecrypt.
func (k *AESKey) Open(ctx context.Context, sealed, aad []byte) ([]byte, error) {
	if len(sealed) < gcmIVSize+gcmTagBits/8 {
		return nil, fmt.Errorf("%w: sealed data of %d bytes is too short", ErrDecrypt, len(sealed))
	}
	iv, ct := sealed[:gcmIVSize], sealed[gcmIVSize:]
	var pt []byte
	err := k.t.do(ctx, func(c *p11.Ctx, sh p11.SessionHandle, epoch uint64) error {
		h, err := k.keyHandle(c, sh, epoch)
		if err != nil {
			return err
		}
		params := p11.NewGCMParams(iv, aad, gcmTagBits)
		defer params.Free()
		if err := c.DecryptInit(sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_GCM, params)}, h); err != nil {
			return err
		}
		pt, err = c.Decrypt(sh, ct)
		if err == nil {
			return nil
		}
		if is(err, p11.CKR_ENCRYPTED_DATA_INVALID) || is(err, p11.CKR_ENCRYPTED_DATA_LEN_RANGE) {
			return ErrDecrypt
		}
		// SoftHSM reports a bad tag as CKR_GENERAL_ERROR. If the key is
		// still readable the session is fine and the data is at fault.
		if is(err, p11.CKR_GENERAL_ERROR) {
			if _, aerr := c.GetAttributeValue(sh, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, nil)}); aerr == nil {
				return ErrDecrypt
			}
		}
		return err
	})
	if err != nil {
		return nil, wrapOp(fmt.Sprintf("AES-GCM open with %s", k.query()), err)
	}
	return pt, nil
}
