// Package attest verifies key attestations of device keys: that a derived
// credential's key was made, and is held, in a device's hardware keystore.
// Android Key Attestation is the format it reads: the attestation
// certificate chain whose leaf carries a KeyDescription (OID
// 1.3.6.1.4.1.11129.2.1.17) for the attested key. What it checks follows
// the reference verifier (android/keyattestation): the chain to configured
// roots (Google's by default), no certificate on a revocation list (Google's
// status JSON), the attested key, the challenge, the security level, the
// key's origin and purpose, and the device's boot state.
package attest

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

// FormatAndroidKey is the format name of an Android Key Attestation.
const FormatAndroidKey = "android-key"

// MaxChain bounds the certificates of one attestation (a factory chain has
// four, a remotely provisioned one five).
const MaxChain = 8

//go:embed google-roots.pem
var googleRootsPEM []byte

// GoogleRootsPEM is Google's published hardware attestation roots, the
// default trust anchors (android/keyattestation's roots.json).
func GoogleRootsPEM() []byte { return slices.Clone(googleRootsPEM) }

// Reason says why an attestation was refused; each maps to one gRPC code
// at the transport.
type Reason string

// The refusals.
const (
	ReasonMalformed     Reason = "malformed"          // InvalidArgument
	ReasonUntrusted     Reason = "untrusted"          // PermissionDenied
	ReasonRevoked       Reason = "revoked"            // PermissionDenied
	ReasonChallenge     Reason = "challenge"          // PermissionDenied
	ReasonKeyMismatch   Reason = "key_mismatch"       // InvalidArgument
	ReasonSecurityLevel Reason = "security_level"     // PermissionDenied
	ReasonOrigin        Reason = "origin"             // PermissionDenied
	ReasonPurpose       Reason = "purpose"            // PermissionDenied
	ReasonBootState     Reason = "verified_boot"      // PermissionDenied
	ReasonDeviceLocked  Reason = "device_unlocked"    // PermissionDenied
	ReasonFormat        Reason = "unsupported_format" // InvalidArgument
)

// ErrStatusUnavailable: the revocation status of attestation certificates
// cannot be known now (the status list is missing or too old). Verify
// fails closed with it; the transport answers Unavailable.
var ErrStatusUnavailable = errors.New("key attestation: the attestation status list is unavailable")

// Error is a refused attestation.
type Error struct {
	Reason Reason
	Msg    string
}

func (e *Error) Error() string { return "key attestation: " + e.Msg }

func refuse(r Reason, format string, a ...any) error {
	return &Error{Reason: r, Msg: fmt.Sprintf(format, a...)}
}

// Policy is what an attestation must show.
type Policy struct {
	// Roots are the attestation roots (GoogleRootsPEM by default).
	Roots []*x509.Certificate
	// Revoked holds revoked serial numbers, lowercase hex without leading
	// zeros, as Google's status list names them.
	Revoked map[string]bool
	// Status, if set, gives the current revoked serials (a status list
	// file refreshed by the operator) or an error wrapping
	// ErrStatusUnavailable (missing, unreadable or too old): the
	// attestation is then refused, not trusted unchecked.
	Status func() (map[string]bool, error)
	// SecurityLevels accepted (default TrustedEnvironment and StrongBox).
	SecurityLevels []SecurityLevel
	// RequireVerifiedBoot: the boot state must be Verified.
	RequireVerifiedBoot bool
	// RequireDeviceLocked: the bootloader must be locked.
	RequireDeviceLocked bool
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Result is a verified attestation.
type Result struct {
	Format            string `json:"format"`
	SecurityLevel     string `json:"security_level"`
	VerifiedBootState string `json:"verified_boot_state"`
	DeviceLocked      bool   `json:"device_locked"`
	AttestationVer    int    `json:"attestation_version"`
	// RootSHA256 names the root the chain ends at.
	RootSHA256 string `json:"root_sha256"`
	// Hardware: the key is in a hardware keystore (TrustedEnvironment or
	// StrongBox): what …3.41 asks.
	Hardware bool `json:"hardware"`
	// CertificateSHA256 names the attestation certificate; Chain is the
	// attestation as the device sent it (DER, kept as evidence).
	CertificateSHA256 string   `json:"certificate_sha256"`
	Chain             [][]byte `json:"chain,omitempty"`
}

// Verify checks an attestation of pub. chain is DER, the attestation
// certificate first, the root last or left out.
func (p *Policy) Verify(format string, chain [][]byte, pub crypto.PublicKey, challenge []byte) (*Result, error) {
	if format != FormatAndroidKey {
		return nil, refuse(ReasonFormat, "format %.32q is not supported (use %q)", format, FormatAndroidKey)
	}
	if len(chain) == 0 || len(chain) > MaxChain {
		return nil, refuse(ReasonMalformed, "%d certificates: want 1 to %d, the attestation certificate first", len(chain), MaxChain)
	}
	certs := make([]*x509.Certificate, len(chain))
	for i, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, refuse(ReasonMalformed, "certificate %d does not parse as X.509", i)
		}
		certs[i] = c
	}
	root, err := p.path(certs)
	if err != nil {
		return nil, err
	}
	leaf := certs[0]
	var ext []byte
	for _, e := range leaf.Extensions {
		if e.Id.Equal(OIDKeyDescription) {
			ext = e.Value
		}
	}
	if ext == nil {
		return nil, refuse(ReasonMalformed, "the first certificate has no KeyDescription extension (%s)", OIDKeyDescription)
	}
	kd, err := ParseKeyDescription(ext)
	if err != nil {
		return nil, refuse(ReasonMalformed, "%v", err)
	}
	if subtle.ConstantTimeCompare(kd.Challenge, challenge) != 1 {
		return nil, refuse(ReasonChallenge, "the attestation challenge is not this activation's: attest the key with the challenge derived from the QR code")
	}
	if k, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(pub) {
		return nil, refuse(ReasonKeyMismatch, "the attested key is not the key of the certificate request")
	}
	level := min(kd.AttestationSecurityLevel, kd.KeyMintSecurityLevel)
	levels := p.SecurityLevels
	if len(levels) == 0 {
		levels = []SecurityLevel{TrustedEnvironment, StrongBox}
	}
	if !slices.Contains(levels, level) {
		return nil, refuse(ReasonSecurityLevel, "the key is held at security level %s; this gateway accepts %s", level, joinLevels(levels))
	}
	// What the keystore enforces is what counts: the hardware list for a
	// hardware level, the software list only for a software keystore.
	enforced := kd.HardwareEnforced
	if level == Software {
		enforced = kd.SoftwareEnforced
	}
	if enforced.Origin == nil || *enforced.Origin != OriginGenerated {
		return nil, refuse(ReasonOrigin, "the key was not generated in the device's keystore (imported or derived keys are refused)")
	}
	if !slices.Contains(enforced.Purposes, PurposeSign) {
		return nil, refuse(ReasonPurpose, "the key may not sign")
	}
	rot := enforced.RootOfTrust
	state, locked := Unverified, false
	if rot != nil {
		state, locked = rot.VerifiedBootState, rot.DeviceLocked
	}
	if p.RequireVerifiedBoot && state != Verified {
		return nil, refuse(ReasonBootState, "the device's verified boot state is %s, not Verified", state)
	}
	if p.RequireDeviceLocked && !locked {
		return nil, refuse(ReasonDeviceLocked, "the device's bootloader is unlocked")
	}
	sum := sha256.Sum256(root.Raw)
	leafSum := sha256.Sum256(leaf.Raw)
	return &Result{Format: format, SecurityLevel: level.String(), VerifiedBootState: state.String(), DeviceLocked: locked,
		AttestationVer: kd.AttestationVersion, RootSHA256: hex.EncodeToString(sum[:]), Hardware: level >= TrustedEnvironment,
		CertificateSHA256: hex.EncodeToString(leafSum[:]), Chain: chain}, nil
}

// path checks the chain from a configured root down to the attestation
// certificate: names chain, each signature verifies with the key above it,
// every certificate but the attestation certificate is within its validity
// (a device sets that one's dates itself), none is revoked, and only the
// attestation certificate carries a KeyDescription. It returns the root.
func (p *Policy) path(certs []*x509.Certificate) (*x509.Certificate, error) {
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	t := now()
	// The chain may end with the root itself (or another self-issued
	// certificate of its name and key: an older copy, maybe expired, which
	// the configured root stands for, as the reference verifier anchors by
	// key) or with a certificate one of the roots issued.
	top := certs[len(certs)-1]
	var root *x509.Certificate
	for _, r := range p.Roots {
		if bytes.Equal(r.Raw, top.Raw) || bytes.Equal(top.RawIssuer, top.RawSubject) &&
			bytes.Equal(r.RawSubject, top.RawSubject) && bytes.Equal(r.RawSubjectPublicKeyInfo, top.RawSubjectPublicKeyInfo) {
			root, certs = r, certs[:len(certs)-1]
			break
		}
	}
	if root == nil {
		for _, r := range p.Roots {
			if bytes.Equal(r.RawSubject, top.RawIssuer) && r.CheckSignature(top.SignatureAlgorithm, top.RawTBSCertificate, top.Signature) == nil {
				root = r
				break
			}
		}
	}
	if root == nil {
		return nil, refuse(ReasonUntrusted, "the chain does not end at a configured attestation root")
	}
	if len(certs) == 0 {
		return nil, refuse(ReasonMalformed, "the chain holds only the root")
	}
	if t.Before(root.NotBefore) || t.After(root.NotAfter) {
		return nil, refuse(ReasonUntrusted, "the attestation root is outside its validity")
	}
	parent := root
	for i := len(certs) - 1; i >= 0; i-- {
		c := certs[i]
		if !bytes.Equal(c.RawIssuer, parent.RawSubject) {
			return nil, refuse(ReasonUntrusted, "certificate %d is not issued by the certificate above it", i)
		}
		if err := parent.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature); err != nil {
			return nil, refuse(ReasonUntrusted, "certificate %d: its signature does not verify with the key above it", i)
		}
		if i > 0 && (t.Before(c.NotBefore) || t.After(c.NotAfter)) {
			return nil, refuse(ReasonUntrusted, "certificate %d is outside its validity", i)
		}
		if i > 0 {
			for _, e := range c.Extensions {
				if e.Id.Equal(OIDKeyDescription) {
					return nil, refuse(ReasonUntrusted, "certificate %d carries a KeyDescription: the chain was extended past the attested key", i)
				}
			}
		}
		parent = c
	}
	revoked := p.Revoked
	if p.Status != nil {
		var err error
		if revoked, err = p.Status(); err != nil {
			return nil, err
		}
	}
	for i, c := range append(certs, root) {
		if revoked[strings.ToLower(c.SerialNumber.Text(16))] {
			return nil, refuse(ReasonRevoked, "certificate %d (serial %x) is on the attestation status list as revoked", i, c.SerialNumber)
		}
	}
	return root, nil
}

func joinLevels(ls []SecurityLevel) string {
	var s []string
	for _, l := range ls {
		s = append(s, l.String())
	}
	return strings.Join(s, " or ")
}

// ParseRoots reads PEM attestation roots.
func ParseRoots(pemBytes []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, pemBytes = pem.Decode(pemBytes)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("attest: no certificate in the roots file")
	}
	return out, nil
}

// ParseStatusList reads Google's attestation status list (JSON: an
// "entries" object from lowercase hex serial numbers to {"status", …})
// and returns the revoked serials.
func ParseStatusList(b []byte) (map[string]bool, error) {
	var f struct {
		Entries map[string]struct {
			Status string `json:"status"`
		} `json:"entries"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("attest: status list: %w", err)
	}
	if f.Entries == nil {
		return nil, errors.New(`attest: status list: no "entries" object`)
	}
	out := map[string]bool{}
	for serial, e := range f.Entries {
		if e.Status == "REVOKED" {
			out[strings.TrimLeft(strings.ToLower(serial), "0")] = true
		}
	}
	return out, nil
}

// LoadStatusList reads a status list file.
func LoadStatusList(path string) (map[string]bool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseStatusList(b)
}
