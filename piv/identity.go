package piv

import (
	"crypto/x509"
	"fmt"
)

// Identity is what a PIV Authentication certificate says about its card and
// cardholder.
type Identity struct {
	// FASCN is the card's FASC-N (from the SAN otherName); FASCNRaw its 25 bytes.
	FASCN    FASCN
	FASCNRaw []byte
	// CardUUID is the card UUID (lower-case, from the urn:uuid: SAN).
	CardUUID string
	UPN      string
	Email    string
	// Subject is the certificate's subject DN (RFC 4514 text).
	Subject string
	// PersonID identifies the person across card re-issues, per the
	// configured attribute (default the FASC-N identifier). Set by Verifier.
	PersonID string
}

// IdentityFromCertificate reads the identity from a PIV Authentication
// certificate. FIPS 201-3 requires both the FASC-N and the card UUID there.
func IdentityFromCertificate(cert *x509.Certificate) (Identity, error) {
	san, err := SANFromCertificate(cert)
	if err != nil {
		return Identity{}, err
	}
	id := Identity{Subject: cert.Subject.String()}
	if san.FASCN == nil {
		return Identity{}, fmt.Errorf("piv: PIV Authentication certificate has no FASC-N in its subjectAltName")
	}
	if id.FASCN, err = ParseFASCN(san.FASCN); err != nil {
		return Identity{}, err
	}
	id.FASCNRaw = san.FASCN
	if len(san.UUIDs) != 1 {
		return Identity{}, fmt.Errorf("piv: PIV Authentication certificate has %d card UUIDs in its subjectAltName, want 1", len(san.UUIDs))
	}
	id.CardUUID = san.UUIDs[0]
	if len(san.UPNs) > 0 {
		id.UPN = san.UPNs[0]
	}
	if len(san.Emails) > 0 {
		id.Email = san.Emails[0]
	}
	return id, nil
}
