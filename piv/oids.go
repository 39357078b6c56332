package piv

import "encoding/asn1"

// Certificate policy OIDs of the Federal PKI Common Policy (CP v2.6 §1.2).
var (
	PolicyCommonPolicy         = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 2, 1, 3, 6}
	PolicyCommonHardware       = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 2, 1, 3, 7}
	PolicyCommonAuthentication = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 2, 1, 3, 13}
	PolicyCommonHigh           = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 2, 1, 3, 16}
	PolicyCommonCardAuth       = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 2, 1, 3, 17}
	PolicyCommonContentSigning = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 2, 1, 3, 39}
	PolicyDerivedPIVAuth       = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 2, 1, 3, 40}
	PolicyDerivedPIVAuthHW     = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 2, 1, 3, 41}
	PolicyPIVIAuthentication   = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 2, 1, 3, 45}
	PolicyPIVICardAuth         = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 2, 1, 3, 46}
	PolicyPIVIContentSigning   = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 2, 1, 3, 47}
	PolicyPIVIHardware         = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 2, 1, 3, 18}
	PolicyAnyPolicy            = asn1.ObjectIdentifier{2, 5, 29, 32, 0}
)

// Extended key usage OIDs used by PIV and derived PIV certificates
// (FIPS 201-3 App. B; SSP profile v2.2).
var (
	EKUPIVCardAuth       = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 6, 8}
	EKUPIVContentSigning = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 6, 7}
	EKUSmartCardLogon    = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 2}
	EKUPKINITClientAuth  = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 2, 3, 4}
)
