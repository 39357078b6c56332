package issuance

import (
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"slices"
	"text/template"

	"go.step.sm/crypto/x509util"
)

// Profile is a derived credential certificate profile.
type Profile string

// The three profiles of a mobile derived credential (STANDARDS.md §3.3).
const (
	DerivedPIVAuth   Profile = "derived-piv-auth"
	DigitalSignature Profile = "digital-signature"
	KeyManagement    Profile = "key-management"
)

// Profiles lists them.
func Profiles() []Profile { return []Profile{DerivedPIVAuth, DigitalSignature, KeyManagement} }

// ParseProfile checks a profile name.
func ParseProfile(s string) (Profile, error) {
	for _, p := range Profiles() {
		if string(p) == s {
			return p, nil
		}
	}
	return "", fmt.Errorf("issuance: unknown profile %q (derived-piv-auth, digital-signature, key-management)", s)
}

// Common Policy OIDs (CP v2.6 §1.2) the profiles assert.
var (
	oidCommonPolicy      = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 2, 1, 3, 6}
	oidDerivedPIVAuth    = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 2, 1, 3, 40}
	oidDerivedPIVAuthHW  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 2, 1, 3, 41}
	oidEKUSmartCardLogon = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 2}
	oidEKUPKINITKDC      = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 2, 3, 5}
	oidEKUPKINITClient   = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 2, 3, 4}
	oidEKUPIVCardAuth    = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 6, 8}
	oidEKUMSEFS          = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 10, 3, 4}
	oidEKUMSDocSigning   = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 10, 3, 12}
	oidEKUSSHClient      = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 21}
)

// Default templates: go.step.sm/crypto x509util JSON templates. The data they
// see is templateData; names and keys never come from the CSR. Operators may
// replace them in the config; whatever a template produces must still pass
// checkProfile.
var defaultTemplates = map[Profile]string{
	DerivedPIVAuth: `{
	"rawSubject": {{ toJson .RawSubject }},
	"sans": [
		{"type": "uri", "value": {{ toJson .UUIDURN }}}
		{{- if .UPN }}, {"type": "userPrincipalName", "value": {{ toJson .UPN }}}{{ end }}
	],
	"keyUsage": ["digitalSignature"],
	"extKeyUsage": ["clientAuth"],
	"policyIdentifiers": [{{ toJson .DerivedPIVAuthPolicy }}],
	"ocspServer": {{ toJson .OCSPServer }},
	"issuingCertificateURL": {{ toJson .IssuingCertificateURL }},
	"crlDistributionPoints": {{ toJson .CRLDistributionPoints }}
}`,
	DigitalSignature: `{
	"rawSubject": {{ toJson .RawSubject }},
	"sans": [
		{"type": "uri", "value": {{ toJson .UUIDURN }}},
		{"type": "email", "value": {{ toJson .Email }}}
	],
	"keyUsage": ["digitalSignature", "contentCommitment"],
	"extKeyUsage": ["emailProtection"],
	"policyIdentifiers": ["2.16.840.1.101.3.2.1.3.6"],
	"ocspServer": {{ toJson .OCSPServer }},
	"issuingCertificateURL": {{ toJson .IssuingCertificateURL }},
	"crlDistributionPoints": {{ toJson .CRLDistributionPoints }}
}`,
	KeyManagement: `{
	"rawSubject": {{ toJson .RawSubject }},
	"sans": [
		{"type": "uri", "value": {{ toJson .UUIDURN }}},
		{"type": "email", "value": {{ toJson .Email }}}
	],
	"keyUsage": [{{ if .RSAKey }}"keyEncipherment"{{ else }}"keyAgreement"{{ end }}],
	"extKeyUsage": ["emailProtection"],
	"policyIdentifiers": ["2.16.840.1.101.3.2.1.3.6"],
	"ocspServer": {{ toJson .OCSPServer }},
	"issuingCertificateURL": {{ toJson .IssuingCertificateURL }},
	"crlDistributionPoints": {{ toJson .CRLDistributionPoints }}
}`,
}

// DefaultTemplate returns the built-in template of a profile.
func DefaultTemplate(p Profile) string { return defaultTemplates[p] }

// parseTemplate parses a profile template with x509util's functions (an
// operator's template must at least parse; the profile rules check what it
// renders).
func parseTemplate(p Profile, text string) (*template.Template, error) {
	funcs := x509util.GetFuncMap()
	// x509util's "fail" records its message in state shared by every
	// execution of the map; this one returns it, so one parsed template
	// serves concurrent certificates without a clone each.
	funcs["fail"] = func(msg string) (string, error) { return "", &x509util.TemplateError{Message: msg} }
	tmpl, err := template.New(string(p)).Funcs(funcs).Parse(text)
	if err != nil {
		return nil, fmt.Errorf("issuance: template of profile %s: %w", p, err)
	}
	return tmpl, nil
}

// profileRule is what checkProfile enforces for one profile (STANDARDS.md
// §3.3, SSP profile v2.2 worksheets 8–10, Common Policy §6.1.7, §7.1).
type profileRule struct {
	keyUsage      x509.KeyUsage // exactly
	keyUsageRSA   x509.KeyUsage // for RSA keys where it differs
	ekuRequired   []x509.ExtKeyUsage
	ekuForbidden  []x509.ExtKeyUsage
	oidsForbidden []asn1.ObjectIdentifier
	policies      []asn1.ObjectIdentifier // at least one
	needEmail     bool
}

var rules = map[Profile]profileRule{
	DerivedPIVAuth: {
		keyUsage:      x509.KeyUsageDigitalSignature,
		ekuRequired:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		ekuForbidden:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageEmailProtection, x509.ExtKeyUsageCodeSigning, x509.ExtKeyUsageAny, x509.ExtKeyUsageTimeStamping, x509.ExtKeyUsageOCSPSigning},
		oidsForbidden: []asn1.ObjectIdentifier{oidEKUPKINITKDC, oidEKUMSDocSigning, oidEKUMSEFS, oidEKUPIVCardAuth},
		policies:      []asn1.ObjectIdentifier{oidDerivedPIVAuth, oidDerivedPIVAuthHW},
	},
	DigitalSignature: {
		keyUsage:      x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		ekuRequired:   []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
		ekuForbidden:  []x509.ExtKeyUsage{x509.ExtKeyUsageAny, x509.ExtKeyUsageTimeStamping, x509.ExtKeyUsageOCSPSigning, x509.ExtKeyUsageCodeSigning},
		oidsForbidden: []asn1.ObjectIdentifier{oidEKUSSHClient, oidEKUPIVCardAuth, oidEKUMSEFS},
		policies:      []asn1.ObjectIdentifier{oidCommonPolicy},
		needEmail:     true,
	},
	KeyManagement: {
		keyUsage:      x509.KeyUsageKeyAgreement,
		keyUsageRSA:   x509.KeyUsageKeyEncipherment,
		ekuRequired:   []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
		ekuForbidden:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageCodeSigning, x509.ExtKeyUsageAny},
		oidsForbidden: []asn1.ObjectIdentifier{oidEKUSSHClient, oidEKUSmartCardLogon, oidEKUPKINITClient, oidEKUMSDocSigning},
		policies:      []asn1.ObjectIdentifier{oidCommonPolicy},
		needEmail:     true,
	},
}

// Extensions a derived certificate must not carry (SSP profile: SIA,
// issuerAltName, policyMappings, nameConstraints, policyConstraints,
// inhibitAnyPolicy, ocsp-nocheck, privateKeyUsagePeriod).
var forbiddenExtensions = []asn1.ObjectIdentifier{
	{1, 3, 6, 1, 5, 5, 7, 1, 11}, {2, 5, 29, 18}, {2, 5, 29, 33}, {2, 5, 29, 30},
	{2, 5, 29, 36}, {2, 5, 29, 54}, {1, 3, 6, 1, 5, 5, 7, 48, 1, 5}, {2, 5, 29, 16},
}

// allowedCriticalExtensions: only keyUsage may be critical (and basic
// constraints, if an operator adds it, as non-CA).
var allowedCritical = []asn1.ObjectIdentifier{{2, 5, 29, 15}, {2, 5, 29, 19}}

func hasOID(list []asn1.ObjectIdentifier, o asn1.ObjectIdentifier) bool {
	return slices.ContainsFunc(list, o.Equal)
}

// AssertsHardwareBacked tells whether cert asserts
// id-fpki-common-pivAuth-derived-hardware (…3.41): its key is in a
// hardware module.
func AssertsHardwareBacked(cert *x509.Certificate) bool {
	for _, p := range cert.PolicyIdentifiers {
		if p.Equal(oidDerivedPIVAuthHW) {
			return true
		}
	}
	return false
}
