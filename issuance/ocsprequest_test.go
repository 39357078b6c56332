package issuance

import (
	"bytes"
	"math/big"
	"testing"

	"golang.org/x/crypto/ocsp"
)

// FuzzOCSPRequest: credgw's OCSP request parser never panics; what it
// accepts, golang.org/x/crypto/ocsp reads the same way (the one CertID);
// and the responder answers any input without signing unless the input
// names a certificate this CA issued.
func FuzzOCSPRequest(f *testing.F) {
	known := issue(f, DerivedPIVAuth, p256(f), identity(f)).Certificate.SerialNumber
	f.Add(ocspRequestFor(f, known, testInit.Issuing))
	f.Add(ocspRequestFor(f, big.NewInt(12345), testInit.Issuing))
	f.Add(rawOCSPRequest(f, oidSHA1, testNonce, known))
	f.Add(rawOCSPRequest(f, oidSHA1, nil, known, known))
	f.Add(rawOCSPRequest(f, oidMD5, nil, known))
	f.Add([]byte{0x30, 0x00})
	r := newReplica(f)
	f.Fuzz(func(t *testing.T, der []byte) {
		before := r.signatures()
		answer := r.OCSP(t.Context(), der)
		id, err := parseOCSPRequest(der)
		if err != nil {
			if !bytes.Equal(answer, ocsp.MalformedRequestErrorResponse) {
				t.Fatalf("refused request (%v) answered %x", err, answer)
			}
			if r.signatures() != before {
				t.Fatal("a malformed request was signed for")
			}
			return
		}
		req, err := ocsp.ParseRequest(der)
		if err != nil {
			t.Fatalf("credgw accepts what x/crypto/ocsp refuses: %v", err)
		}
		if req.HashAlgorithm != id.hash || req.SerialNumber.Cmp(id.serial) != 0 ||
			!bytes.Equal(req.IssuerNameHash, id.nameHash) || !bytes.Equal(req.IssuerKeyHash, id.keyHash) {
			t.Fatalf("x/crypto/ocsp reads %+v, credgw %+v", req, id)
		}
		if id.serial.Cmp(known) != 0 && r.signatures() != before {
			t.Fatalf("serial %x, not issued here, cost a signature", id.serial)
		}
	})
}
