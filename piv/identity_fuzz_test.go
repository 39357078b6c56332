package piv

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"regexp"
	"testing"
)

var uuidRe = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// FuzzIdentityFromCertificate feeds arbitrary subjectAltName extension values
// to the identity extraction PKI-AUTH uses: it never panics, and what it
// accepts is well formed (a FASC-N that re-encodes to the same bytes, a
// canonical card UUID, a 14-digit person id).
func FuzzIdentityFromCertificate(f *testing.F) {
	fascn := FASCN{AgencyCode: "9999", SystemCode: "9999", CredentialNumber: "123456", CredentialSeries: "0",
		IndividualCredentialIssue: "1", PersonIdentifier: "1234567890", OrganizationalCategory: "1",
		OrganizationalIdentifier: "9999", PersonOrgAssociation: "1"}
	raw, err := fascn.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	for _, san := range []SAN{
		{FASCN: raw, UUIDs: []string{"f81d4fae-7dec-11d0-a765-00a0c91e6bf6"}},
		{FASCN: raw, UUIDs: []string{"f81d4fae-7dec-11d0-a765-00a0c91e6bf6"}, UPNs: []string{"a@b.example"}, Emails: []string{"a@b.example"}},
		{UUIDs: []string{"f81d4fae-7dec-11d0-a765-00a0c91e6bf6"}},
	} {
		ext, err := MarshalSAN(san)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(ext.Value)
	}
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, value []byte) {
		cert := &x509.Certificate{Extensions: []pkix.Extension{{Id: OIDSubjectAltName, Value: value}}}
		id, err := IdentityFromCertificate(cert)
		if err != nil {
			return
		}
		again, err := id.FASCN.Marshal()
		if err != nil || string(again) != string(id.FASCNRaw) {
			t.Fatalf("accepted FASC-N %x does not re-encode: %x, %v", id.FASCNRaw, again, err)
		}
		if !uuidRe.MatchString(id.CardUUID) {
			t.Fatalf("accepted card UUID %q", id.CardUUID)
		}
		if n := len(id.FASCN.Identifier()); n != 14 {
			t.Fatalf("FASC-N identifier of %d digits", n)
		}
	})
}
