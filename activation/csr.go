package activation

import (
	"crypto/x509"

	"github.com/credgw/credgw/issuance"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
)

var protoProfiles = map[credgwv1.Profile]issuance.Profile{
	credgwv1.Profile_PROFILE_DERIVED_PIV_AUTH:  issuance.DerivedPIVAuth,
	credgwv1.Profile_PROFILE_DIGITAL_SIGNATURE: issuance.DigitalSignature,
	credgwv1.Profile_PROFILE_KEY_MANAGEMENT:    issuance.KeyManagement,
}

// ParseCSRs reads the device's CSRs, one per device-keyed profile.
func ParseCSRs(in []*credgwv1.CertificateRequest) (map[issuance.Profile]*x509.CertificateRequest, error) {
	csrs := map[issuance.Profile]*x509.CertificateRequest{}
	for _, c := range in {
		p, ok := protoProfiles[c.GetProfile()]
		if !ok {
			return nil, invalid("csrs: profile %v is not a derived credential profile", c.GetProfile())
		}
		if _, dup := csrs[p]; dup {
			return nil, invalid("csrs: two CSRs for %s", p)
		}
		csr, err := x509.ParseCertificateRequest(c.GetCsrDer())
		if err != nil {
			return nil, invalid("csrs: the %s CSR does not parse: %v", p, err)
		}
		csrs[p] = csr
	}
	return csrs, nil
}
