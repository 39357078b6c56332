package piv

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
)

// ChallengeDomain separates credgw's PKI-AUTH signatures from any other use
// of the PIV Authentication key.
const ChallengeDomain = "credgw-piv-auth-v1"

// ChallengeDigest is the SHA-256 digest the card signs in PKI-AUTH:
// SHA-256("credgw-piv-auth-v1" ‖ 0x00 ‖ gateway id ‖ 0x00 ‖ session id ‖
// challenge). The server always recomputes it; a client never supplies it.
func ChallengeDigest(gatewayID, sessionID string, challenge []byte) []byte {
	h := sha256.New()
	h.Write([]byte(ChallengeDomain))
	h.Write([]byte{0})
	h.Write([]byte(gatewayID))
	h.Write([]byte{0})
	h.Write([]byte(sessionID))
	h.Write(challenge)
	return h.Sum(nil)
}

// ErrBadSignature means a challenge signature does not verify with the
// certificate's key.
var ErrBadSignature = errors.New("piv: challenge signature does not verify with the PIV Authentication certificate")

// VerifyChallengeSignature checks sig over digest with pub: ECDSA (ASN.1),
// RSA PKCS#1 v1.5 or RSA-PSS (SHA-256, any salt length).
func VerifyChallengeSignature(pub crypto.PublicKey, digest, sig []byte) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if ecdsa.VerifyASN1(k, digest, sig) {
			return nil
		}
	case *rsa.PublicKey:
		if rsa.VerifyPKCS1v15(k, crypto.SHA256, digest, sig) == nil {
			return nil
		}
		if rsa.VerifyPSS(k, crypto.SHA256, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto}) == nil {
			return nil
		}
	default:
		return fmt.Errorf("piv: public key type %T is not allowed for PIV Authentication (RSA and ECDSA are)", pub)
	}
	return ErrBadSignature
}
