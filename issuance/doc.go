// Package issuance is credgw's CA: it mints the three SP 800-157 derived
// certificates (derived PIV Authentication, S/MIME signature, S/MIME key
// management) to the Federal PKI Common Policy profiles, signs them with a key
// in an HSM (or a key file), lints each one before it is signed and records it
// before it is returned, escrows key-management keys, and revokes, with a CRL
// and an OCSP responder.
//
// The smallstep authority does the signing and stays inside this package:
// callers see Issuer.
package issuance
