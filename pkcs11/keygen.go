package pkcs11

import (
	"context"
	"encoding/asn1"
	"fmt"

	p11 "github.com/miekg/pkcs11"
)

// KeyType is a key pair type credgw generates on tokens.
type KeyType int

// The key pair types SP 800-78 allows for PIV and derived PIV keys.
const (
	RSA2048 KeyType = iota + 1
	RSA3072
	ECP256
	ECP384
)

// ParseKeyType reads the names the CLI and config use: rsa2048, rsa3072,
// p256, p384.
func ParseKeyType(s string) (KeyType, error) {
	for _, k := range []KeyType{RSA2048, RSA3072, ECP256, ECP384} {
		if k.String() == s {
			return k, nil
		}
	}
	return 0, fmt.Errorf("pkcs11: key type %q: use one of rsa2048, rsa3072, p256, p384", s)
}

func (k KeyType) String() string {
	switch k {
	case RSA2048:
		return "rsa2048"
	case RSA3072:
		return "rsa3072"
	case ECP256:
		return "p256"
	case ECP384:
		return "p384"
	}
	return fmt.Sprintf("KeyType(%d)", int(k))
}

// IsRSA reports whether k is an RSA type.
func (k KeyType) IsRSA() bool { return k == RSA2048 || k == RSA3072 }

// Usage says what a generated private key may do.
type Usage uint

// Key usages; zero means the default for the type (sign for EC, sign and
// decrypt for RSA).
const (
	UsageSign Usage = 1 << iota
	UsageDecrypt
	UsageDerive
)

// KeySpec describes a key pair to generate on a token.
type KeySpec struct {
	Type KeyType
	// ID is the CKA_ID of both halves.
	ID []byte
	// Label is the private key's CKA_LABEL; PublicLabel the public key's
	// (defaults to Label).
	Label, PublicLabel string
	Usage              Usage
	// Extractable lets the private key be wrapped off the token. Keys are
	// sensitive and non-extractable by default.
	Extractable bool
	// AlwaysAuthenticate sets CKA_ALWAYS_AUTHENTICATE: a context-specific
	// login before every use, as a PIV card's 9C key.
	AlwaysAuthenticate bool
	// NoLogin makes the private key usable without a user login
	// (CKA_PRIVATE false), as a PIV card's Card Authentication key (9E).
	NoLogin bool
}

// GenerateKeyPair makes a key pair on the token (private, sensitive and
// non-extractable unless spec says otherwise) and returns its Signer.
func (t *Token) GenerateKeyPair(ctx context.Context, spec KeySpec) (*Signer, error) {
	if len(spec.ID) == 0 {
		return nil, fmt.Errorf("pkcs11: generate key: CKA_ID must not be empty")
	}
	if t.pin == nil {
		return nil, fmt.Errorf("%w: generating private keys on %s needs a user login", ErrPINRequired, t.name)
	}
	usage := spec.Usage
	if usage == 0 {
		usage = UsageSign
		if spec.Type.IsRSA() {
			usage |= UsageDecrypt
		}
	}
	pubLabel := spec.PublicLabel
	if pubLabel == "" {
		pubLabel = spec.Label
	}
	pub := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, false),
		p11.NewAttribute(p11.CKA_ID, spec.ID),
		p11.NewAttribute(p11.CKA_LABEL, pubLabel),
		p11.NewAttribute(p11.CKA_VERIFY, usage&UsageSign != 0),
		p11.NewAttribute(p11.CKA_ENCRYPT, spec.Type.IsRSA() && usage&UsageDecrypt != 0),
		p11.NewAttribute(p11.CKA_WRAP, spec.Type.IsRSA() && usage&UsageDecrypt != 0),
		p11.NewAttribute(p11.CKA_DERIVE, usage&UsageDerive != 0),
	}
	priv := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, !spec.NoLogin),
		p11.NewAttribute(p11.CKA_SENSITIVE, !spec.Extractable),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, spec.Extractable),
		p11.NewAttribute(p11.CKA_ID, spec.ID),
		p11.NewAttribute(p11.CKA_LABEL, spec.Label),
		p11.NewAttribute(p11.CKA_SIGN, usage&UsageSign != 0),
		p11.NewAttribute(p11.CKA_DECRYPT, spec.Type.IsRSA() && usage&UsageDecrypt != 0),
		p11.NewAttribute(p11.CKA_UNWRAP, spec.Type.IsRSA() && usage&UsageDecrypt != 0),
		p11.NewAttribute(p11.CKA_DERIVE, usage&UsageDerive != 0),
	}
	if spec.AlwaysAuthenticate {
		priv = append(priv, p11.NewAttribute(p11.CKA_ALWAYS_AUTHENTICATE, true))
	}
	var mech *p11.Mechanism
	switch spec.Type {
	case RSA2048, RSA3072:
		bits := 2048
		if spec.Type == RSA3072 {
			bits = 3072
		}
		mech = p11.NewMechanism(p11.CKM_RSA_PKCS_KEY_PAIR_GEN, nil)
		pub = append(pub,
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_RSA),
			p11.NewAttribute(p11.CKA_MODULUS_BITS, bits),
			p11.NewAttribute(p11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}))
		priv = append(priv, p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_RSA))
	case ECP256, ECP384:
		oid := oidP256
		if spec.Type == ECP384 {
			oid = oidP384
		}
		params, err := asn1.Marshal(oid)
		if err != nil {
			return nil, err
		}
		mech = p11.NewMechanism(p11.CKM_EC_KEY_PAIR_GEN, nil)
		pub = append(pub,
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC),
			p11.NewAttribute(p11.CKA_EC_PARAMS, params))
		priv = append(priv, p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC))
	default:
		return nil, fmt.Errorf("pkcs11: generate key: unsupported key type %v", spec.Type)
	}
	err := t.do(ctx, func(c *p11.Ctx, sh p11.SessionHandle, _ uint64) error {
		_, _, err := c.GenerateKeyPair(sh, []*p11.Mechanism{mech}, pub, priv)
		return err
	})
	if err != nil {
		return nil, wrapOp(fmt.Sprintf("generate %v key on %s", spec.Type, t.name), err)
	}
	return t.Signer(ctx, KeyRef{ID: spec.ID, Label: spec.Label})
}
