package piv

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/credgw/credgw/pkcs11"
)

// Card is the card side of PKI-AUTH: a PIV card reached over PKCS#11, a real
// one through OpenSC's module or a simulated one through SoftHSM.
type Card struct {
	tok *pkcs11.Token
}

// OpenCard opens the card that a pkcs11: URI names (token label or serial;
// module-path, else defaultModule; the PIN from pin-source).
//
// The PIN is read once (a pipe gives it once) and checked before it
// reaches the card, where a wrong one costs a try: at most 8 bytes (the
// VERIFY buffer; SP 800-73-4 Part 2 §2.4.3 asks 6 to 8 digits, OpenSC
// takes 4 to 8 for PIV-compatible cards), no control character.
func OpenCard(ctx context.Context, u *pkcs11.URI, defaultModule string) (*Card, error) {
	if u.HasPINValue() || u.PINSource != "" {
		pin, err := u.PIN()
		if err != nil {
			return nil, err
		}
		defer clear(pin)
		if err := checkCardPIN(pin); err != nil {
			return nil, err
		}
		u = u.WithPINValue(pin)
	}
	tok, err := pkcs11.OpenURI(ctx, u, defaultModule)
	if err != nil {
		return nil, err
	}
	return &Card{tok: tok}, nil
}

// Close releases the card.
func (c *Card) Close() error { return c.tok.Close() }

// Certificate reads the certificate of a PIV slot (filtered by class and
// CKA_ID: OpenSC's data objects reuse the labels).
func (c *Card) Certificate(ctx context.Context, slot pkcs11.PIVSlot) (*x509.Certificate, error) {
	return c.tok.Certificate(ctx, slot.ID, "")
}

// AuthCertificate reads the PIV Authentication certificate (9A).
func (c *Card) AuthCertificate(ctx context.Context) (*x509.Certificate, error) {
	return c.Certificate(ctx, pkcs11.PIVAuthentication)
}

// SignChallenge signs the PKI-AUTH digest with the PIV Authentication key:
// ECDSA, or RSA PKCS#1 v1.5 (CKM_RSA_PKCS over a DigestInfo, which every
// card supports). Only 9A is used: 9E proves the card, not the cardholder.
func (c *Card) SignChallenge(ctx context.Context, gatewayID, sessionID string, challenge []byte) ([]byte, error) {
	s, err := c.tok.Signer(ctx, pkcs11.PIVAuthentication.PrivateKey())
	if err != nil {
		return nil, fmt.Errorf("piv: PIV Authentication key: %w", err)
	}
	return s.SignContext(ctx, ChallengeDigest(gatewayID, sessionID, challenge), crypto.SHA256)
}

// AuthSigner is the PIV Authentication key (9A) as a crypto.Signer: for
// TLS client authentication with the card (SP 800-157r1 App. C.1).
func (c *Card) AuthSigner(ctx context.Context) (crypto.Signer, error) {
	s, err := c.tok.Signer(ctx, pkcs11.PIVAuthentication.PrivateKey())
	if err != nil {
		return nil, fmt.Errorf("piv: PIV Authentication key: %w", err)
	}
	return s, nil
}

// checkCardPIN refuses what no card takes as its PIN, without naming it.
func checkCardPIN(pin []byte) error {
	if len(pin) < 4 || len(pin) > 8 {
		return fmt.Errorf("piv: the card PIN is %d bytes: a PIV card's PIN is 6 to 8 digits (4 to 8 characters on some "+
			"PIV-compatible cards); nothing was sent to the card (a wrong PIN costs one of its tries)", len(pin))
	}
	for _, c := range pin {
		if c < 0x20 || c == 0x7f {
			return errors.New("piv: the card PIN holds a control character (a tab, a carriage return): a PIV card's PIN " +
				"is 6 to 8 digits; nothing was sent to the card (a wrong PIN costs one of its tries)")
		}
	}
	return nil
}
