package issuance

import (
	"crypto"
	"encoding/asn1"
	"errors"
	"math/big"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// certID is the one CertID of an OCSP request (RFC 6960 §4.1.1).
type certID struct {
	hash     crypto.Hash
	nameHash []byte
	keyHash  []byte
	serial   *big.Int
}

// Reasons parseOCSPRequest refuses a request; each is answered with
// malformedRequest.
var (
	errOCSPMalformed = errors.New("issuance: malformed OCSP request")
	// RFC 5019 §2.1.1: "clients MUST include only one Request in the
	// OCSPRequest.RequestList structure". golang.org/x/crypto/ocsp builds
	// single responses only, and ocsp.ParseRequest silently drops every
	// CertID after the first; credgw refuses the request instead of
	// answering part of it.
	errOCSPMultipleCertIDs = errors.New("issuance: OCSP request with more than one CertID")
	errOCSPHash            = errors.New("issuance: OCSP CertID hash algorithm not supported")
)

var ocspHashes = map[string]crypto.Hash{
	"1.3.14.3.2.26":          crypto.SHA1,
	"2.16.840.1.101.3.4.2.1": crypto.SHA256,
	"2.16.840.1.101.3.4.2.2": crypto.SHA384,
	"2.16.840.1.101.3.4.2.3": crypto.SHA512,
}

// parseOCSPRequest reads an OCSPRequest (RFC 6960 §4.1.1) that asks about
// exactly one certificate. The requestor name, the request and single
// request extensions (a nonce among them, RFC 8954) and an optional
// signature are skipped: responses are pre-signed, so nothing in them can
// depend on the request beyond its CertID.
func parseOCSPRequest(der []byte) (certID, error) {
	var id certID
	in := cryptobyte.String(der)
	var req, tbs, list, one, cid, alg cryptobyte.String
	if !in.ReadASN1(&req, casn1.SEQUENCE) || !in.Empty() ||
		!req.ReadASN1(&tbs, casn1.SEQUENCE) ||
		!req.SkipOptionalASN1(casn1.Tag(0).Constructed().ContextSpecific()) || !req.Empty() {
		return id, errOCSPMalformed
	}
	var version cryptobyte.String
	var hasVersion bool
	if !tbs.ReadOptionalASN1(&version, &hasVersion, casn1.Tag(0).Constructed().ContextSpecific()) {
		return id, errOCSPMalformed
	}
	if hasVersion {
		var v int64
		if !version.ReadASN1Int64WithTag(&v, casn1.INTEGER) || !version.Empty() || v != 0 {
			return id, errOCSPMalformed
		}
	}
	if !tbs.SkipOptionalASN1(casn1.Tag(1).Constructed().ContextSpecific()) || // requestorName
		!tbs.ReadASN1(&list, casn1.SEQUENCE) ||
		!tbs.SkipOptionalASN1(casn1.Tag(2).Constructed().ContextSpecific()) || // requestExtensions
		!tbs.Empty() {
		return id, errOCSPMalformed
	}
	if !list.ReadASN1(&one, casn1.SEQUENCE) {
		return id, errOCSPMalformed
	}
	if !list.Empty() {
		return id, errOCSPMultipleCertIDs
	}
	if !one.ReadASN1(&cid, casn1.SEQUENCE) ||
		!one.SkipOptionalASN1(casn1.Tag(0).Constructed().ContextSpecific()) || // singleRequestExtensions
		!one.Empty() {
		return id, errOCSPMalformed
	}
	var oid asn1.ObjectIdentifier
	var nameHash, keyHash cryptobyte.String
	serial := new(big.Int)
	if !cid.ReadASN1(&alg, casn1.SEQUENCE) || !alg.ReadASN1ObjectIdentifier(&oid) ||
		!alg.SkipOptionalASN1(casn1.NULL) || !alg.Empty() ||
		!cid.ReadASN1(&nameHash, casn1.OCTET_STRING) ||
		!cid.ReadASN1(&keyHash, casn1.OCTET_STRING) ||
		!cid.ReadASN1Integer(serial) || !cid.Empty() {
		return id, errOCSPMalformed
	}
	h, ok := ocspHashes[oid.String()]
	if !ok {
		return id, errOCSPHash
	}
	return certID{hash: h, nameHash: nameHash, keyHash: keyHash, serial: serial}, nil
}
