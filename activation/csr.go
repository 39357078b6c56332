package activation

import (
	"crypto/x509"

	"github.com/credgw/credgw/activation/attest"

	"github.com/credgw/credgw/issuance"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
)

var protoProfiles = map[credgwv1.Profile]issuance.Profile{
	credgwv1.Profile_PROFILE_DERIVED_PIV_AUTH:  issuance.DerivedPIVAuth,
	credgwv1.Profile_PROFILE_DIGITAL_SIGNATURE: issuance.DigitalSignature,
	credgwv1.Profile_PROFILE_KEY_MANAGEMENT:    issuance.KeyManagement,
}

// ParseCSRs reads the device's CSRs, one per device-keyed profile, and the
// attestations of their keys (not verified yet: Redeem and Rekey do).
func ParseCSRs(in []*credgwv1.CertificateRequest) (map[issuance.Profile]*x509.CertificateRequest, map[issuance.Profile]Attestation, error) {
	csrs := map[issuance.Profile]*x509.CertificateRequest{}
	atts := map[issuance.Profile]Attestation{}
	for _, c := range in {
		p, ok := protoProfiles[c.GetProfile()]
		if !ok {
			return nil, nil, invalid("csrs: profile %v is not a derived credential profile", c.GetProfile())
		}
		if _, dup := csrs[p]; dup {
			return nil, nil, invalid("csrs: two CSRs for %s", p)
		}
		csr, err := x509.ParseCertificateRequest(c.GetCsrDer())
		if err != nil {
			return nil, nil, invalid("csrs: the %s CSR does not parse: %v", p, err)
		}
		csrs[p] = csr
		if a := c.GetAttestation(); a != nil {
			if len(a.GetCertificateChain()) == 0 || len(a.GetCertificateChain()) > attest.MaxChain {
				return nil, nil, invalid("csrs: the %s attestation has %d certificates: want 1 to %d", p, len(a.GetCertificateChain()), attest.MaxChain)
			}
			atts[p] = Attestation{Format: a.GetFormat(), Chain: a.GetCertificateChain()}
		}
	}
	return csrs, atts, nil
}
