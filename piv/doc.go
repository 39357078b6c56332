// Package piv owns PKI-AUTH: the PIV authentication mechanism of NIST
// SP 800-73-4 and SP 800-116 in which a card proves possession of its PIV
// Authentication private key by signing a fresh challenge, and identity
// extraction from PIV Authentication certificates (FASC-N, card UUID, UPN,
// email). Identity extraction rests on two codecs the standard library lacks:
// the FASC-N of FIPS 201 (ParseFASCN, FASCN.Marshal) and a subjectAltName
// encoder/decoder that understands the otherName forms crypto/x509 ignores
// (MarshalSAN, ParseSAN, SANFromCertificate).
package piv
