package issuance

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
	"golang.org/x/crypto/ocsp"
)

// x/crypto/ocsp parses OCSP and encodes requests; its CreateResponse sets
// producedAt to the current minute, truncated, with no way to set it. A
// response signed in the minute of a revocation then says it was produced
// before the revocation and the thisUpdate it reports (RFC 6960 §4.2.1:
// producedAt is when the responder signed). So credgw encodes its basic
// responses itself (RFC 6960 §4.2.1, one SingleResponse, the CA as the
// responder by name, no extensions), and the tests read them back with
// x/crypto/ocsp and openssl.

var (
	oidOCSPBasic  = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 1}
	oidECDSA256   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECDSA384   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidECDSA512   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}
	oidRSASHA256  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidHashSHA1   = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidHashSHA256 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidHashSHA384 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	oidHashSHA512 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}
)

// signingAlgorithm is the signature algorithm of the CA key's responses,
// as x509 would sign a certificate with it: ECDSA with the curve's hash,
// RSA PKCS #1 v1.5 with SHA-256.
func signingAlgorithm(pub crypto.PublicKey) (asn1.ObjectIdentifier, crypto.Hash, bool, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return oidECDSA256, crypto.SHA256, false, nil
		case elliptic.P384():
			return oidECDSA384, crypto.SHA384, false, nil
		case elliptic.P521():
			return oidECDSA512, crypto.SHA512, false, nil
		}
	case *rsa.PublicKey:
		return oidRSASHA256, crypto.SHA256, true, nil
	}
	return nil, 0, false, fmt.Errorf("issuance: OCSP: no signature algorithm for a %T key", pub)
}

func certIDHashOID(h crypto.Hash) (asn1.ObjectIdentifier, error) {
	switch h {
	case crypto.SHA1:
		return oidHashSHA1, nil
	case crypto.SHA256:
		return oidHashSHA256, nil
	case crypto.SHA384:
		return oidHashSHA384, nil
	case crypto.SHA512:
		return oidHashSHA512, nil
	}
	return nil, fmt.Errorf("issuance: OCSP: CertID hash %v", h)
}

// generalizedTime adds t as a GeneralizedTime in UTC, whole seconds.
func generalizedTime(b *cryptobyte.Builder, t time.Time) {
	b.AddASN1(cbasn1.GeneralizedTime, func(b *cryptobyte.Builder) {
		b.AddBytes([]byte(t.UTC().Format("20060102150405Z")))
	})
}

// createOCSPResponse signs a successful basic OCSP response for r (good or
// revoked; SerialNumber, IssuerHash, ThisUpdate, NextUpdate, RevokedAt and
// RevocationReason are used) by ca's key, produced at producedAt.
func createOCSPResponse(ca *x509.Certificate, r ocsp.Response, producedAt time.Time, signer crypto.Signer) ([]byte, error) {
	sigOID, sigHash, rsaKey, err := signingAlgorithm(signer.Public())
	if err != nil {
		return nil, err
	}
	hashOID, err := certIDHashOID(r.IssuerHash)
	if err != nil {
		return nil, err
	}
	if !r.IssuerHash.Available() {
		return nil, fmt.Errorf("issuance: OCSP: hash %v not linked in", r.IssuerHash)
	}
	keyBits, err := publicKeyBits(ca)
	if err != nil {
		return nil, err
	}
	h := r.IssuerHash.New()
	h.Write(ca.RawSubject)
	nameHash := h.Sum(nil)
	h.Reset()
	h.Write(keyBits)
	keyHash := h.Sum(nil)
	if r.Status != ocsp.Good && r.Status != ocsp.Revoked {
		return nil, errors.New("issuance: OCSP: only good and revoked answers are signed")
	}

	var tbs cryptobyte.Builder
	tbs.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // ResponseData (version v1, the default, omitted)
		b.AddASN1(cbasn1.Tag(1).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) { // responderID byName
			b.AddBytes(ca.RawSubject)
		})
		generalizedTime(b, producedAt)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // responses
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // SingleResponse
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // CertID
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1ObjectIdentifier(hashOID)
						b.AddASN1NULL()
					})
					b.AddASN1OctetString(nameHash)
					b.AddASN1OctetString(keyHash)
					b.AddASN1BigInt(r.SerialNumber)
				})
				if r.Status == ocsp.Good {
					b.AddASN1(cbasn1.Tag(0).ContextSpecific(), func(*cryptobyte.Builder) {}) // good [0] IMPLICIT NULL
				} else {
					b.AddASN1(cbasn1.Tag(1).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) { // revoked [1] IMPLICIT RevokedInfo
						generalizedTime(b, r.RevokedAt)
						if r.RevocationReason != ocsp.Unspecified {
							b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
								b.AddASN1(cbasn1.ENUM, func(b *cryptobyte.Builder) { b.AddUint8(uint8(r.RevocationReason)) })
							})
						}
					})
				}
				generalizedTime(b, r.ThisUpdate)
				b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
					generalizedTime(b, r.NextUpdate)
				})
			})
		})
	})
	tbsDER, err := tbs.Bytes()
	if err != nil {
		return nil, err
	}
	d := sigHash.New()
	d.Write(tbsDER)
	sig, err := signer.Sign(rand.Reader, d.Sum(nil), sigHash)
	if err != nil {
		return nil, fmt.Errorf("issuance: OCSP: signing: %w", err)
	}

	var basic cryptobyte.Builder
	basic.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // BasicOCSPResponse
		b.AddBytes(tbsDER)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(sigOID)
			if rsaKey {
				b.AddASN1NULL()
			}
		})
		b.AddASN1BitString(sig)
	})
	basicDER, err := basic.Bytes()
	if err != nil {
		return nil, err
	}
	var out cryptobyte.Builder
	out.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // OCSPResponse
		b.AddASN1(cbasn1.ENUM, func(b *cryptobyte.Builder) { b.AddUint8(0) }) // successful
		b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // ResponseBytes
				b.AddASN1ObjectIdentifier(oidOCSPBasic)
				b.AddASN1OctetString(basicDER)
			})
		})
	})
	return out.Bytes()
}
