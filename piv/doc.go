// Package piv owns PKI-AUTH (FIPS 201-3 §6.2.3.1): the challenge a PIV card
// signs with its PIV Authentication key, the check of that signature, and the
// card-side helper that has a card sign over PKCS#11. It also extracts the
// identity a PIV Authentication certificate carries (FASC-N, card UUID, UPN,
// email, subject), with the two codecs the standard library lacks: the FASC-N
// (ParseFASCN, FASCN.Marshal) and a subjectAltName encoder/decoder that
// understands the otherName forms crypto/x509 ignores (MarshalSAN, ParseSAN).
package piv
