package code

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"golang.org/x/crypto/hkdf"
)

// SecretSize is the QR secret: 256 bits (DESIGN: ≥ 128; SP 800-63B-4 asks
// ≥ 112 without a user identifier).
const SecretSize = 32

// Password lengths.
const (
	DefaultPasswordDigits = 8
	MinPasswordDigits     = 6
	MaxPasswordDigits     = 12
)

// NewSecret returns a fresh 256-bit secret.
func NewSecret() ([]byte, error) {
	s := make([]byte, SecretSize)
	_, err := rand.Read(s)
	return s, err
}

// NewPassword returns n uniformly random decimal digits.
func NewPassword(n int) (string, error) {
	if n < MinPasswordDigits || n > MaxPasswordDigits {
		return "", fmt.Errorf("activation: a password has %d to %d digits", MinPasswordDigits, MaxPasswordDigits)
	}
	var b strings.Builder
	for i := 0; i < n; i++ {
		d, err := rand.Int(rand.Reader, big.NewInt(10)) // uniform: no modulo bias
		if err != nil {
			return "", err
		}
		b.WriteByte(byte('0' + d.Int64()))
	}
	return b.String(), nil
}

// ErrPasswordFormat means a typed password is not digits.
var ErrPasswordFormat = errors.New("activation: the password is digits only")

// NormalizePassword drops the spaces and dashes people type and checks that
// the rest is digits.
func NormalizePassword(p string) (string, error) {
	var b strings.Builder
	for _, r := range p {
		switch {
		case r == ' ' || r == '-' || r == '\t':
		case r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			return "", ErrPasswordFormat
		}
	}
	if b.Len() < MinPasswordDigits || b.Len() > MaxPasswordDigits {
		return "", ErrPasswordFormat
	}
	return b.String(), nil
}

// LookupHash is how the database finds an activation by its secret: a hash,
// so that the database never holds the secret.
func LookupHash(secret []byte) string {
	h := sha256.New()
	h.Write([]byte("credgw-activation-lookup-v1\x00"))
	h.Write(secret)
	return hex.EncodeToString(h.Sum(nil))
}

// Verifier is an HMAC keyed by the secret over the password: only someone
// holding the secret can test a password, and only online, against the
// attempt counter.
func Verifier(secret []byte, password string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("credgw-activation-password-v1\x00"))
	m.Write([]byte(password))
	return m.Sum(nil)
}

// AttestationChallenge is the challenge a device attests its keys with
// (Android: KeyGenParameterSpec.setAttestationChallenge), binding the
// attestation to one activation without a round trip: an HMAC keyed by the
// secret (the QR code's, or the one the device makes for a renewal) over
// context — the activation id for a redemption, "rekey:" and the lowercase
// hex serial of the device's current derived PIV Authentication
// certificate for a renewal. Only the device and the gateway it redeems
// at can compute it.
func AttestationChallenge(secret []byte, context string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("credgw-key-attestation-v1\x00"))
	m.Write([]byte(context))
	return m.Sum(nil)
}

// RekeyAttestationContext is AttestationChallenge's context for a renewal
// by the holder of the certificate with this serial.
func RekeyAttestationContext(serial string) string { return "rekey:" + serial }

// CheckPassword compares in constant time.
func CheckPassword(secret []byte, password string, verifier []byte) bool {
	return hmac.Equal(Verifier(secret, password), verifier)
}

// deriveKey derives a key from the two secrets that only the device and
// credgw know (Common Policy §4.12.1: a shared secret protecting recovered
// keys must be known only to the requester and the sender).
func deriveKey(secret []byte, password, purpose string, n int) ([]byte, error) {
	r := hkdf.New(sha256.New, secret, []byte("credgw-package-v1"), []byte(purpose+"\x00"+password))
	out := make([]byte, n)
	if _, err := r.Read(out); err != nil {
		return nil, err
	}
	return out, nil
}

// PKCS12Password is the password of the delivered PKCS#12 files: derived
// with HKDF-SHA-256 from the QR secret and the typed password, 256 bits.
// See TransportPKCS12Iterations.
func PKCS12Password(secret []byte, password string) (string, error) {
	k, err := deriveKey(secret, password, "pkcs12-password", 32)
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(k), nil
}

// TransportPKCS12Iterations is the PBKDF2 and MAC iteration count of the
// delivered PKCS#12 (package pfx: PBES2, AES-256-CBC, PBKDF2-HMAC-SHA-256,
// HMAC-SHA-256 MAC), instead of the 2,048 of files under a person's PIN.
// Stretching protects low-entropy passwords (SP 800-132 §5.2); this
// password is a 256-bit HKDF output of the QR secret and the typed
// password, which no guess reaches without the QR secret. Whoever holds
// both a copy of the QR code and a copy of the delivered file (it exists
// only in the TLS stream and the agent's memory: the reference agent
// re-protects it under the keystore PIN and keeps no copy) faces only the
// typed password, 10^8 tries for 8 digits at one HKDF and 1,000 PBKDF2
// rounds each: an agent must never store the transport file, and the QR
// code and the password must not travel together. More rounds would not
// change that order of magnitude affordably, and would cost the gateway
// on every redemption. 1,000 is the floor OpenSSL 3's
// FIPS provider accepts for PBKDF2. The MAC's PKCS#12 key derivation is
// not a FIPS-approved algorithm, so an agent restricted to a FIPS provider
// also needs a provider that has it (PBMAC1, the approved alternative, is
// unreadable by Debian 12's OpenSSL).
const TransportPKCS12Iterations = 1000

// SealKey is the package's at-rest key: from the secret and the password,
// so a database reader learns nothing and a resume needs both again.
func SealKey(secret []byte, password string) (cipher.AEAD, error) {
	k, err := deriveKey(secret, password, "package-seal", 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// CompromisedMark ends the friendly name of a history key whose
// certificate was revoked for key compromise: kept to read old mail, never
// to be trusted for new.
const CompromisedMark = " (revoked: key compromise; for decrypting old mail only)"

// KeyHistoryName is the friendly name of the i-th key of encryption.p12
// (0 is the current key): what a keystore shows the person.
func KeyHistoryName(i int, cert *x509.Certificate) string {
	serial := cert.SerialNumber.Text(16)
	if i == 0 {
		return "encryption key (current), serial " + serial
	}
	return fmt.Sprintf("encryption key (history %d, until %s), serial %s", i, cert.NotAfter.UTC().Format("2006-01-02"), serial)
}
