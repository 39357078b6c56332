package pkcs11

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"

	p11 "github.com/miekg/pkcs11"
)

const (
	gcmIVSize  = 12
	gcmTagBits = 128
)

// AESKey is an AES-256 secret key on a token, used with AES-GCM. The escrow
// key-encryption key is one.
type AESKey struct {
	t   *Token
	ref KeyRef

	mu     sync.Mutex
	handle p11.ObjectHandle
	epoch  uint64
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

// AESKey finds an existing AES secret key.
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
