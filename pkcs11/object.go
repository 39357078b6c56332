package pkcs11

import (
	"context"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/big"

	p11 "github.com/miekg/pkcs11"
)

// Class is a PKCS#11 object class.
type Class uint

// The object classes credgw uses.
const (
	ClassData        Class = p11.CKO_DATA
	ClassCertificate Class = p11.CKO_CERTIFICATE
	ClassPublicKey   Class = p11.CKO_PUBLIC_KEY
	ClassPrivateKey  Class = p11.CKO_PRIVATE_KEY
	ClassSecretKey   Class = p11.CKO_SECRET_KEY
)

func (c Class) String() string {
	switch c {
	case ClassData:
		return "data object"
	case ClassCertificate:
		return "certificate"
	case ClassPublicKey:
		return "public key"
	case ClassPrivateKey:
		return "private key"
	case ClassSecretKey:
		return "secret key"
	}
	return fmt.Sprintf("object class %#x", uint(c))
}

// Query selects objects by class and CKA_ID, optionally also by CKA_LABEL.
// An empty ID matches any id.
type Query struct {
	Class Class
	ID    []byte
	Label string
}

func (q Query) String() string {
	s := q.Class.String()
	if len(q.ID) > 0 {
		s += " with CKA_ID " + hex.EncodeToString(q.ID)
	}
	if q.Label != "" {
		s += fmt.Sprintf(" labelled %q", q.Label)
	}
	return s
}

func (q Query) template() []*p11.Attribute {
	tpl := []*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, uint(q.Class))}
	if len(q.ID) > 0 {
		tpl = append(tpl, p11.NewAttribute(p11.CKA_ID, q.ID))
	}
	if q.Label != "" {
		tpl = append(tpl, p11.NewAttribute(p11.CKA_LABEL, q.Label))
	}
	return tpl
}

// Object describes an object found on a token.
type Object struct {
	Class Class
	ID    []byte
	Label string
}

// findHandles returns the handles matching q on session sh.
func findHandles(c *p11.Ctx, sh p11.SessionHandle, q Query, max int) ([]p11.ObjectHandle, error) {
	if err := c.FindObjectsInit(sh, q.template()); err != nil {
		return nil, err
	}
	var out []p11.ObjectHandle
	for {
		hs, _, err := c.FindObjects(sh, 16)
		if err != nil {
			_ = c.FindObjectsFinal(sh)
			return nil, err
		}
		out = append(out, hs...)
		if len(hs) == 0 || (max > 0 && len(out) >= max) {
			break
		}
	}
	if err := c.FindObjectsFinal(sh); err != nil {
		return nil, err
	}
	return out, nil
}

// noPINError is a key not found on a token opened without a PIN: it is
// errors.Is both ErrPINRequired and ErrObjectNotFound, and says the PIN
// is missing.
type noPINError struct{ msg string }

func (e *noPINError) Error() string { return e.msg }
func (e *noPINError) Is(target error) bool {
	return target == ErrPINRequired || target == ErrObjectNotFound
}

// findOne returns the single object matching q, or ErrObjectNotFound (and
// ErrPINRequired for a key on a token opened without a PIN).
func (t *Token) findOne(c *p11.Ctx, sh p11.SessionHandle, q Query) (p11.ObjectHandle, error) {
	hs, err := findHandles(c, sh, q, 2)
	if err != nil {
		return 0, err
	}
	switch len(hs) {
	case 0:
		if len(t.pin) == 0 && (q.Class == ClassPrivateKey || q.Class == ClassSecretKey) {
			// A token shows its keys only after a login: without a
			// PIN, "not found" would send the reader looking for the
			// wrong fault.
			return 0, &noPINError{msg: fmt.Sprintf("pkcs11: no PIN given: %s shows its keys only after a login with the PIN (looking for a %s)", t.name, q)}
		}
		return 0, fmt.Errorf("%w: no %s on %s", ErrObjectNotFound, q, t.name)
	case 1:
		return hs[0], nil
	}
	return 0, fmt.Errorf("pkcs11: more than one %s on %s: add a label to choose", q, t.name)
}

// FindObjects lists the objects matching q.
func (t *Token) FindObjects(ctx context.Context, q Query) ([]Object, error) {
	var out []Object
	err := t.do(ctx, func(c *p11.Ctx, sh p11.SessionHandle, _ uint64) error {
		out = out[:0]
		hs, err := findHandles(c, sh, q, 0)
		if err != nil {
			return err
		}
		for _, h := range hs {
			attrs, err := c.GetAttributeValue(sh, h, []*p11.Attribute{
				p11.NewAttribute(p11.CKA_CLASS, nil),
				p11.NewAttribute(p11.CKA_ID, nil),
				p11.NewAttribute(p11.CKA_LABEL, nil),
			})
			if err != nil {
				return err
			}
			cls, _ := attrUint(attrs[0].Value)
			out = append(out, Object{Class: Class(cls), ID: attrs[1].Value, Label: string(attrs[2].Value)})
		}
		return nil
	})
	if err != nil {
		return nil, wrapOp("find objects", err)
	}
	return out, nil
}

// DeleteObjects destroys every object matching q and reports how many.
func (t *Token) DeleteObjects(ctx context.Context, q Query) (int, error) {
	n, err := t.eachObject(ctx, q, func(c *p11.Ctx, sh p11.SessionHandle, h p11.ObjectHandle) error {
		return c.DestroyObject(sh, h)
	})
	return n, wrapOp("delete objects", err)
}

// SetLabel sets CKA_LABEL of every object matching q and reports how
// many.
func (t *Token) SetLabel(ctx context.Context, q Query, label string) (int, error) {
	n, err := t.eachObject(ctx, q, func(c *p11.Ctx, sh p11.SessionHandle, h p11.ObjectHandle) error {
		return c.SetAttributeValue(sh, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_LABEL, label)})
	})
	return n, wrapOp("set label", err)
}

// eachObject runs fn on every object matching q, in one session, and
// counts them.
func (t *Token) eachObject(ctx context.Context, q Query, fn func(*p11.Ctx, p11.SessionHandle, p11.ObjectHandle) error) (int, error) {
	n := 0
	err := t.do(ctx, func(c *p11.Ctx, sh p11.SessionHandle, _ uint64) error {
		n = 0
		hs, err := findHandles(c, sh, q, 0)
		if err != nil {
			return err
		}
		for _, h := range hs {
			if err := fn(c, sh, h); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

// Certificate reads the X.509 certificate with CKA_ID id (and CKA_LABEL
// label, if not empty).
func (t *Token) Certificate(ctx context.Context, id []byte, label string) (*x509.Certificate, error) {
	q := Query{Class: ClassCertificate, ID: id, Label: label}
	var der []byte
	err := t.do(ctx, func(c *p11.Ctx, sh p11.SessionHandle, _ uint64) error {
		h, err := t.findOne(c, sh, q)
		if err != nil {
			return err
		}
		attrs, err := c.GetAttributeValue(sh, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_VALUE, nil)})
		if err != nil {
			return err
		}
		der = attrs[0].Value
		return nil
	})
	if err != nil {
		return nil, wrapOp("read certificate", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: %s on %s does not parse: %w", q, t.name, err)
	}
	return cert, nil
}

// ImportCertificate stores cert on the token as a public token object with
// CKA_ID id and CKA_LABEL label, replacing any certificate with that id.
func (t *Token) ImportCertificate(ctx context.Context, id []byte, label string, cert *x509.Certificate) error {
	if len(id) == 0 {
		return fmt.Errorf("pkcs11: import certificate: CKA_ID must not be empty")
	}
	serial, err := asn1.Marshal(new(big.Int).Set(cert.SerialNumber))
	if err != nil {
		return fmt.Errorf("pkcs11: import certificate: serial: %w", err)
	}
	tpl := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_CERTIFICATE),
		p11.NewAttribute(p11.CKA_CERTIFICATE_TYPE, p11.CKC_X_509),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, false),
		p11.NewAttribute(p11.CKA_MODIFIABLE, true),
		p11.NewAttribute(p11.CKA_ID, id),
		p11.NewAttribute(p11.CKA_LABEL, label),
		p11.NewAttribute(p11.CKA_SUBJECT, cert.RawSubject),
		p11.NewAttribute(p11.CKA_ISSUER, cert.RawIssuer),
		p11.NewAttribute(p11.CKA_SERIAL_NUMBER, serial),
		p11.NewAttribute(p11.CKA_VALUE, cert.Raw),
	}
	err = t.do(ctx, func(c *p11.Ctx, sh p11.SessionHandle, _ uint64) error {
		old, err := findHandles(c, sh, Query{Class: ClassCertificate, ID: id}, 0)
		if err != nil {
			return err
		}
		if _, err := c.CreateObject(sh, tpl); err != nil {
			return err
		}
		for _, h := range old {
			if err := c.DestroyObject(sh, h); err != nil {
				return err
			}
		}
		return nil
	})
	return wrapOp("import certificate", err)
}

// wrapOp adds context to errors that are not already credgw errors.
func wrapOp(op string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := returnValue(err); ok {
		return opError(op, err)
	}
	return err
}

// attrUint decodes a CK_ULONG attribute value (native byte order and size).
func attrUint(b []byte) (uint, error) {
	switch len(b) {
	case 8, 4:
	default:
		return 0, fmt.Errorf("pkcs11: attribute of %d bytes is not a CK_ULONG", len(b))
	}
	if len(b) == 8 {
		return uint(binary.NativeEndian.Uint64(b)), nil
	}
	return uint(binary.NativeEndian.Uint32(b)), nil
}
