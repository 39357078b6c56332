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

// ChallengeSize is the challenge length: 32 random bytes (SP 800-63B asks
// for at least 64 bits).
const ChallengeSize = 32

// SignatureAlgorithm is how the card signed the challenge digest.
type SignatureAlgorithm int

// The accepted algorithms; SigAuto infers it from the key (ECDSA, or RSA
// PKCS#1 v1.5 then PSS).
const (
	SigAuto SignatureAlgorithm = iota
	SigECDSASHA256
	SigRSAPKCS1SHA256
	SigRSAPSSSHA256
)

// VerifyChallengeSignature checks sig over digest with pub: ECDSA (ASN.1),
// RSA PKCS#1 v1.5 or RSA-PSS (SHA-256, any salt length).
func VerifyChallengeSignature(pub crypto.PublicKey, alg SignatureAlgorithm, digest, sig []byte) error {
	if len(sig) == 0 || len(sig) > 1024 {
		return fmt.Errorf("%w: signature of %d bytes", ErrBadSignature, len(sig))
	}
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if alg != SigAuto && alg != SigECDSASHA256 {
			return fmt.Errorf("%w: an ECDSA key cannot make that signature algorithm", ErrBadSignature)
		}
		if ecdsa.VerifyASN1(k, digest, sig) {
			return nil
		}
	case *rsa.PublicKey:
		if alg == SigECDSASHA256 {
			return fmt.Errorf("%w: an RSA key cannot make an ECDSA signature", ErrBadSignature)
		}
		if (alg == SigAuto || alg == SigRSAPKCS1SHA256) && rsa.VerifyPKCS1v15(k, crypto.SHA256, digest, sig) == nil {
			return nil
		}
		if (alg == SigAuto || alg == SigRSAPSSSHA256) &&
			rsa.VerifyPSS(k, crypto.SHA256, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: crypto.SHA256}) == nil {
			return nil
		}
	default:
		return fmt.Errorf("%w: %T; PIV Authentication allows RSA and ECDSA", ErrKey, pub)
	}
	return ErrBadSignature
}
