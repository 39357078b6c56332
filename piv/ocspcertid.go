package piv

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// ocspCertID is the CertID of one SingleResponse (RFC 6960 §4.1.1): which
// issuer (by the hash of its name and of its key) and serial it is about.
type ocspCertID struct {
	hash           crypto.Hash
	issuerNameHash []byte
	issuerKeyHash  []byte
	serial         *big.Int
	unknownHashOID asn1.ObjectIdentifier // set when hash is 0
}

var ocspHashOIDs = map[string]crypto.Hash{
	"1.3.14.3.2.26":          crypto.SHA1,
	"2.16.840.1.101.3.4.2.1": crypto.SHA256,
	"2.16.840.1.101.3.4.2.2": crypto.SHA384,
	"2.16.840.1.101.3.4.2.3": crypto.SHA512,
}

// ocspCertIDs reads the CertIDs of every SingleResponse of a DER
// OCSPResponse. x/crypto/ocsp matches a response to a certificate by serial
// only and does not expose the issuer hashes; they are read here.
//
//	OCSPResponse ::= SEQUENCE { responseStatus ENUMERATED, responseBytes [0] EXPLICIT ResponseBytes OPTIONAL }
//	ResponseBytes ::= SEQUENCE { responseType OID, response OCTET STRING }
//	BasicOCSPResponse ::= SEQUENCE { tbsResponseData ResponseData, ... }
//	ResponseData ::= SEQUENCE { version [0] EXPLICIT INTEGER DEFAULT v1, responderID CHOICE { [1] Name, [2] KeyHash },
//	    producedAt GeneralizedTime, responses SEQUENCE OF SingleResponse, responseExtensions [1] EXPLICIT OPTIONAL }
//	SingleResponse ::= SEQUENCE { certID CertID, ... }
//	CertID ::= SEQUENCE { hashAlgorithm AlgorithmIdentifier, issuerNameHash OCTET STRING, issuerKeyHash OCTET STRING, serialNumber INTEGER }
func ocspCertIDs(der []byte) ([]ocspCertID, error) {
	malformed := errors.New("malformed OCSP response")
	in := cryptobyte.String(der)
	var resp, bytesField, rb, basicDER cryptobyte.String
	var status int
	var respType asn1.ObjectIdentifier
	if !in.ReadASN1(&resp, casn1.SEQUENCE) || !in.Empty() ||
		!resp.ReadASN1Enum(&status) ||
		!resp.ReadASN1(&bytesField, casn1.Tag(0).Constructed().ContextSpecific()) ||
		!bytesField.ReadASN1(&rb, casn1.SEQUENCE) ||
		!rb.ReadASN1ObjectIdentifier(&respType) ||
		!rb.ReadASN1(&basicDER, casn1.OCTET_STRING) {
		return nil, malformed
	}
	var basic, data cryptobyte.String
	if !basicDER.ReadASN1(&basic, casn1.SEQUENCE) || !basic.ReadASN1(&data, casn1.SEQUENCE) {
		return nil, malformed
	}
	// version [0] EXPLICIT, optional
	if !data.SkipOptionalASN1(casn1.Tag(0).Constructed().ContextSpecific()) {
		return nil, malformed
	}
	// responderID: [1] or [2], constructed
	var tag casn1.Tag
	var responderID cryptobyte.String
	if !data.ReadAnyASN1(&responderID, &tag) ||
		(tag != casn1.Tag(1).Constructed().ContextSpecific() && tag != casn1.Tag(2).Constructed().ContextSpecific()) ||
		!data.SkipASN1(casn1.GeneralizedTime) {
		return nil, malformed
	}
	var responses cryptobyte.String
	if !data.ReadASN1(&responses, casn1.SEQUENCE) {
		return nil, malformed
	}
	var out []ocspCertID
	for !responses.Empty() {
		var single, certID, alg cryptobyte.String
		var oid asn1.ObjectIdentifier
		var id ocspCertID
		id.serial = new(big.Int)
		if !responses.ReadASN1(&single, casn1.SEQUENCE) ||
			!single.ReadASN1(&certID, casn1.SEQUENCE) ||
			!certID.ReadASN1(&alg, casn1.SEQUENCE) ||
			!alg.ReadASN1ObjectIdentifier(&oid) ||
			!certID.ReadASN1Bytes(&id.issuerNameHash, casn1.OCTET_STRING) ||
			!certID.ReadASN1Bytes(&id.issuerKeyHash, casn1.OCTET_STRING) ||
			!certID.ReadASN1Integer(id.serial) {
			return nil, malformed
		}
		if h, ok := ocspHashOIDs[oid.String()]; ok {
			id.hash = h
		} else {
			id.unknownHashOID = oid
		}
		out = append(out, id)
	}
	return out, nil
}

// checkOCSPCertID: the response's SingleResponse for the card's serial (the
// first, as x/crypto/ocsp picks it) names the card's issuer, by the hash of
// its name and of its public key (RFC 6960 §3.2 (1)). Without it, a "good"
// answer about the same serial under another CA, signed by a responder
// both CAs delegate to, would pass as the card's.
func checkOCSPCertID(der []byte, leaf, issuer *x509.Certificate) error {
	ids, err := ocspCertIDs(der)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if id.serial.Cmp(leaf.SerialNumber) != 0 {
			continue
		}
		if id.hash == 0 || !id.hash.Available() {
			return fmt.Errorf("the response's CertID uses hash %v, which credgw does not check", id.unknownHashOID)
		}
		keyBits, err := subjectPublicKeyBits(issuer)
		if err != nil {
			return err
		}
		h := id.hash.New()
		h.Write(issuer.RawSubject)
		nameHash := h.Sum(nil)
		h = id.hash.New()
		h.Write(keyBits)
		keyHash := h.Sum(nil)
		if !bytes.Equal(id.issuerNameHash, nameHash) || !bytes.Equal(id.issuerKeyHash, keyHash) {
			return errors.New("the response is about the serial under another issuer (its CertID's issuer hashes are not the card's issuer's)")
		}
		return nil
	}
	return errors.New("the response has no answer for the certificate's serial")
}

// subjectPublicKeyBits is the subjectPublicKey BIT STRING's bytes of c,
// what an OCSP issuerKeyHash hashes.
func subjectPublicKeyBits(c *x509.Certificate) ([]byte, error) {
	in := cryptobyte.String(c.RawSubjectPublicKeyInfo)
	var spki cryptobyte.String
	var bits asn1.BitString
	if !in.ReadASN1(&spki, casn1.SEQUENCE) || !spki.SkipASN1(casn1.SEQUENCE) || !spki.ReadASN1BitString(&bits) {
		return nil, errors.New("the issuer's public key does not parse")
	}
	return bits.Bytes, nil
}
