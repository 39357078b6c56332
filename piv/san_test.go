package piv

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const testUUID = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"

// tlv builds one DER element for the tests, independently of the encoder.
func tlv(id byte, parts ...[]byte) []byte {
	content := bytes.Join(parts, nil)
	n := len(content)
	out := []byte{id}
	switch {
	case n < 0x80:
		out = append(out, byte(n))
	case n < 0x100:
		out = append(out, 0x81, byte(n))
	default:
		out = append(out, 0x82, byte(n>>8), byte(n))
	}
	return append(out, content...)
}

func h(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

var (
	derOIDFASCN = h("06 08 60 86 48 01 65 03 06 06")       // 2.16.840.1.101.3.6.6
	derOIDUPN   = h("06 0A 2B 06 01 04 01 82 37 14 02 03") // 1.3.6.1.4.1.311.20.2.3
	derOIDOther = h("06 03 2A 03 04")                      // 1.2.3.4
)

// otherName builds [0] { type-id, [0] EXPLICIT value }.
func otherName(oid, value []byte) []byte { return tlv(0xA0, oid, tlv(0xA0, value)) }

// generalNames builds the GeneralNames SEQUENCE.
func generalNames(names ...[]byte) []byte { return tlv(0x30, names...) }

func testSAN(t testing.TB) SAN {
	return SAN{
		FASCN:  mustHex(t, testFASCNHex),
		UUIDs:  []string{testUUID},
		UPNs:   []string{"jane.doe@example.gov"},
		Emails: []string{"jane.doe@example.gov"},
	}
}

func TestSANCertificateRoundTrip(t *testing.T) {
	want := testSAN(t)
	ext, err := MarshalSAN(want)
	if err != nil {
		t.Fatalf("MarshalSAN: %v", err)
	}
	if !ext.Id.Equal(OIDSubjectAltName) || ext.Critical {
		t.Fatalf("extension id %v critical %v, want %v non-critical", ext.Id, ext.Critical, OIDSubjectAltName)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	template := &x509.Certificate{
		SerialNumber:    big.NewInt(42),
		Subject:         pkix.Name{CommonName: "Jane Doe"},
		NotBefore:       now.Add(-time.Minute),
		NotAfter:        now.Add(time.Hour),
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		ExtraExtensions: []pkix.Extension{ext},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("CreateCertificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("ParseCertificate: %v", err)
	}

	if !reflect.DeepEqual(cert.EmailAddresses, want.Emails) {
		t.Errorf("cert.EmailAddresses = %q, want %q", cert.EmailAddresses, want.Emails)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != "urn:uuid:"+testUUID {
		t.Errorf("cert.URIs = %v, want [urn:uuid:%s]", cert.URIs, testUUID)
	}
	if len(cert.DNSNames) != 0 || len(cert.IPAddresses) != 0 {
		t.Errorf("unexpected DNS names %v or IP addresses %v", cert.DNSNames, cert.IPAddresses)
	}

	got, err := SANFromCertificate(cert)
	if err != nil {
		t.Fatalf("SANFromCertificate: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("SANFromCertificate = %#v, want %#v", got, want)
	}
	fascn, err := ParseFASCN(got.FASCN)
	if err != nil {
		t.Fatalf("ParseFASCN: %v", err)
	}
	if fascn != testFASCN {
		t.Errorf("FASC-N = %v, want %v", fascn, testFASCN)
	}

	t.Run("openssl", func(t *testing.T) {
		openssl, err := exec.LookPath("openssl")
		if err != nil {
			t.Skip("openssl not on PATH")
		}
		path := filepath.Join(t.TempDir(), "cert.pem")
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(openssl, "x509", "-in", path, "-noout", "-ext", "subjectAltName").CombinedOutput()
		if err != nil {
			t.Fatalf("openssl: %v\n%s", err, out)
		}
		text := string(out)
		for _, s := range []string{
			"UPN::jane.doe@example.gov",
			"URI:urn:uuid:" + testUUID,
			"email:jane.doe@example.gov",
			"2.16.840.1.101.3.6.6",
		} {
			if !strings.Contains(text, s) {
				t.Errorf("openssl output lacks %q:\n%s", s, text)
			}
		}
	})
}

// TestMarshalSANEncoding compares MarshalSAN with DER written out by hand.
func TestMarshalSANEncoding(t *testing.T) {
	s := SAN{
		FASCN:    mustHex(t, testFASCNHex),
		UUIDs:    []string{testUUID},
		URIs:     []string{"https://x/"},
		Emails:   []string{"e@x"},
		UPNs:     []string{"a@b"},
		DNSNames: []string{"h"},
	}
	want := h("30 81 81" + // GeneralNames, 129 bytes (long-form length)
		// otherName FASC-N: [0] { OID, [0] { OCTET STRING (25) } }
		"A0 27 06 08 60 86 48 01 65 03 06 06 A0 1B 04 19" + testFASCNHex +
		// otherName UPN: [0] { OID, [0] { UTF8String "a@b" } }
		"A0 13 06 0A 2B 06 01 04 01 82 37 14 02 03 A0 05 0C 03 61 40 62" +
		"81 03 65 40 78" + // rfc822Name "e@x"
		"82 01 68" + // dNSName "h"
		"86 2D" + hex.EncodeToString([]byte("urn:uuid:"+testUUID)) + // URI, 45 bytes
		"86 0A" + hex.EncodeToString([]byte("https://x/")))
	ext, err := MarshalSAN(s)
	if err != nil {
		t.Fatalf("MarshalSAN: %v", err)
	}
	if !bytes.Equal(ext.Value, want) {
		t.Fatalf("MarshalSAN =\n%X\nwant\n%X", ext.Value, want)
	}
	got, err := ParseSAN(ext.Value)
	if err != nil {
		t.Fatalf("ParseSAN: %v", err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Fatalf("ParseSAN = %#v, want %#v", got, s)
	}
}

// TestSANLongNames exercises one- and two-octet DER lengths.
func TestSANLongNames(t *testing.T) {
	s := SAN{
		DNSNames: []string{strings.Repeat("a", 127), strings.Repeat("b", 128), strings.Repeat("c", 300)},
		UPNs:     []string{strings.Repeat("ü", 200)},
	}
	ext, err := MarshalSAN(s)
	if err != nil {
		t.Fatalf("MarshalSAN: %v", err)
	}
	var names []asn1.RawValue
	if rest, err := asn1.Unmarshal(ext.Value, &names); err != nil || len(rest) != 0 {
		t.Fatalf("encoding/asn1 rejects the encoding: %v, %d trailing bytes", err, len(rest))
	}
	got, err := ParseSAN(ext.Value)
	if err != nil {
		t.Fatalf("ParseSAN: %v", err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Fatalf("round trip mismatch")
	}
}

func TestMarshalSANErrors(t *testing.T) {
	tests := []struct {
		name string
		san  SAN
		want string
	}{
		{"empty", SAN{}, "no names to encode"},
		{"empty slices", SAN{Emails: []string{}, UPNs: []string{}}, "no names to encode"},
		{"FASC-N short", SAN{FASCN: make([]byte, 24)}, "FASC-N is 24 bytes, want 25"},
		{"FASC-N long", SAN{FASCN: make([]byte, 26)}, "FASC-N is 26 bytes, want 25"},
		{"FASC-N empty non-nil", SAN{FASCN: []byte{}}, "FASC-N is 0 bytes, want 25"},
		{"UUID upper case", SAN{UUIDs: []string{strings.ToUpper(testUUID)}}, "is not canonical RFC 4122 text"},
		{"UUID no dashes", SAN{UUIDs: []string{strings.ReplaceAll(testUUID, "-", "")}}, "is not canonical RFC 4122 text"},
		{"UUID with prefix", SAN{UUIDs: []string{"urn:uuid:" + testUUID}}, "is not canonical RFC 4122 text"},
		{"UUID braces", SAN{UUIDs: []string{"{" + testUUID + "}"}}, "is not canonical RFC 4122 text"},
		{"UUID dash misplaced", SAN{UUIDs: []string{"3f2504e04-f89-41d3-9a0c-0305e82c3301"}}, "is not canonical RFC 4122 text"},
		{"UUID non-hex", SAN{UUIDs: []string{"3f2504e0-4f89-41d3-9a0c-0305e82c330g"}}, "is not canonical RFC 4122 text"},
		{"UUID empty", SAN{UUIDs: []string{""}}, "is not canonical RFC 4122 text"},
		{"UPN invalid UTF-8", SAN{UPNs: []string{"jane\xff@example.gov"}}, "is empty or not valid UTF-8"},
		{"UPN empty", SAN{UPNs: []string{""}}, "is empty or not valid UTF-8"},
		{"email not IA5", SAN{Emails: []string{"jöe@example.gov"}}, "email 1 \"jöe@example.gov\" is empty or not IA5"},
		{"email empty", SAN{Emails: []string{"a@b", ""}}, "email 2 \"\" is empty or not IA5"},
		{"DNS name not IA5", SAN{DNSNames: []string{"bücher.example"}}, "is empty or not IA5"},
		{"DNS name empty", SAN{DNSNames: []string{""}}, "is empty or not IA5"},
		{"URI not IA5", SAN{URIs: []string{"https://bücher.example/"}}, "is empty or not IA5"},
		{"URI empty", SAN{URIs: []string{""}}, "is empty or not IA5"},
		{"URI relative", SAN{URIs: []string{"just/a/path"}}, "is not an absolute URI"},
		{"URI unparsable", SAN{URIs: []string{"https://[::1/"}}, "is not an absolute URI"},
		{"URI is a UUID URN", SAN{URIs: []string{"URN:UUID:" + testUUID}}, "put the UUID in UUIDs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ext, err := MarshalSAN(tt.san)
			if err == nil {
				t.Fatalf("MarshalSAN succeeded: %X", ext.Value)
			}
			if !errors.Is(err, ErrSAN) {
				t.Errorf("error %v does not wrap ErrSAN", err)
			}
			if !strings.HasPrefix(err.Error(), "piv: subjectAltName: ") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestParseSANErrors(t *testing.T) {
	fascn := mustHex(t, testFASCNHex)
	goodFASCN := otherName(derOIDFASCN, tlv(0x04, fascn))
	valid := generalNames(goodFASCN, tlv(0x81, []byte("e@x")))
	tests := []struct {
		name  string
		value []byte
		want  string
	}{
		{"empty input", nil, "malformed GeneralNames"},
		{"truncated", valid[:len(valid)-1], "malformed GeneralNames"},
		{"truncated header", valid[:1], "malformed GeneralNames"},
		{"trailing bytes", append(bytes.Clone(valid), 0x00), "1 bytes of trailing data after GeneralNames"},
		{"trailing element", append(bytes.Clone(valid), tlv(0x30, tlv(0x82, []byte("h")))...), "bytes of trailing data after GeneralNames"},
		{"SET instead of SEQUENCE", tlv(0x31, tlv(0x82, []byte("h"))), "GeneralNames is not a SEQUENCE"},
		{"primitive SEQUENCE tag", tlv(0x10, []byte("h")), "GeneralNames is not a SEQUENCE"},
		{"empty SEQUENCE", h("30 00"), "GeneralNames is empty"},
		{"non-minimal length", h("30 81 03 82 01 68"), "malformed GeneralNames"},
		{"indefinite length", h("30 80 82 01 68 00 00"), "malformed GeneralNames"},
		{"truncated GeneralName", h("30 03 82 05 68"), "GeneralName 1: malformed"},
		{"inner non-minimal length", h("30 04 82 81 01 68"), "GeneralName 1: malformed"},
		{"universal-class element", generalNames(tlv(0x04, []byte("x"))), "GeneralName 1: not a context-specific tag"},
		{"application-class element", generalNames(tlv(0x41, []byte("x"))), "GeneralName 1: not a context-specific tag"},
		{"unknown tag", generalNames(tlv(0x89, []byte("x"))), "GeneralName 1: unknown tag [9]"},
		{"primitive otherName", generalNames(tlv(0x80, []byte("x"))), "GeneralName 1: otherName is not constructed"},
		{"constructed rfc822Name", generalNames(tlv(0xA1, tlv(0x16, []byte("e@x")))), "rfc822Name is constructed"},
		{"constructed URI", generalNames(tlv(0xA6, tlv(0x16, []byte("https://x/")))), "uniformResourceIdentifier is constructed"},
		{"rfc822Name not IA5", generalNames(tlv(0x81, []byte("j\xc3\xb6e@x"))), "rfc822Name \"jöe@x\" is not IA5"},
		{"dNSName not IA5", generalNames(tlv(0x82, []byte{0x80})), "dNSName \"\\x80\" is not IA5"},
		{"URI not IA5", generalNames(tlv(0x86, []byte("https://\xff/"))), "uniformResourceIdentifier"},
		{"otherName without type-id", generalNames(tlv(0xA0, tlv(0xA0, tlv(0x04, fascn)))), "otherName type-id"},
		{"otherName without value", generalNames(tlv(0xA0, derOIDFASCN)), "otherName 2.16.840.1.101.3.6.6 value"},
		{"otherName value not explicit [0]", generalNames(tlv(0xA0, derOIDOther, tlv(0xA1, tlv(0x04, fascn)))), "value is not [0] EXPLICIT"},
		{"FASC-N value implicitly tagged", generalNames(tlv(0xA0, derOIDFASCN, tlv(0x80, fascn))), "value is not [0] EXPLICIT"},
		{"otherName trailing data", generalNames(tlv(0xA0, derOIDOther, tlv(0xA0, tlv(0x04, fascn)), h("05 00"))), "trailing data after value"},
		{"FASC-N short", generalNames(otherName(derOIDFASCN, tlv(0x04, fascn[:24]))), "GeneralName 1: FASC-N otherName: 24 bytes, want 25"},
		{"FASC-N long", generalNames(otherName(derOIDFASCN, tlv(0x04, append(bytes.Clone(fascn), 0)))), "FASC-N otherName: 26 bytes, want 25"},
		{"FASC-N empty", generalNames(otherName(derOIDFASCN, nil)), "FASC-N otherName: malformed value"},
		{"FASC-N as UTF8String", generalNames(otherName(derOIDFASCN, tlv(0x0C, fascn))), "FASC-N otherName: value is not an OCTET STRING"},
		{"FASC-N as BIT STRING", generalNames(otherName(derOIDFASCN, tlv(0x03, []byte{0}, fascn))), "value is not an OCTET STRING"},
		{"FASC-N constructed OCTET STRING", generalNames(otherName(derOIDFASCN, tlv(0x24, tlv(0x04, fascn)))), "value is not an OCTET STRING"},
		{"FASC-N trailing data in value", generalNames(otherName(derOIDFASCN, append(tlv(0x04, fascn), 0x05, 0x00))), "FASC-N otherName: trailing data after value"},
		{"duplicate FASC-N", generalNames(goodFASCN, tlv(0x81, []byte("e@x")), goodFASCN), "GeneralName 3: second FASC-N otherName"},
		{"UPN as PrintableString", generalNames(otherName(derOIDUPN, tlv(0x13, []byte("a@b")))), "UPN otherName: value is not a UTF8String"},
		{"UPN as IA5String", generalNames(otherName(derOIDUPN, tlv(0x16, []byte("a@b")))), "UPN otherName: value is not a UTF8String"},
		{"UPN invalid UTF-8", generalNames(otherName(derOIDUPN, tlv(0x0C, []byte("a\xff@b")))), "UPN otherName: invalid UTF-8"},
		{"UUID missing dashes", generalNames(tlv(0x86, []byte("urn:uuid:"+strings.ReplaceAll(testUUID, "-", "")))), "is not a well-formed UUID URN"},
		{"UUID short", generalNames(tlv(0x86, []byte("urn:uuid:1234"))), "is not a well-formed UUID URN"},
		{"UUID empty", generalNames(tlv(0x86, []byte("urn:uuid:"))), "is not a well-formed UUID URN"},
		{"UUID non-hex", generalNames(tlv(0x86, []byte("urn:uuid:3f2504e0-4f89-41d3-9a0c-0305e82c33zz"))), "is not a well-formed UUID URN"},
		{"UUID braces", generalNames(tlv(0x86, []byte("urn:uuid:{"+testUUID+"}"))), "is not a well-formed UUID URN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSAN(tt.value)
			if err == nil {
				t.Fatalf("ParseSAN succeeded: %#v", s)
			}
			if !errors.Is(err, ErrSAN) {
				t.Errorf("error %v does not wrap ErrSAN", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestParseSANAccepts(t *testing.T) {
	fascn := mustHex(t, testFASCNHex)
	tests := []struct {
		name  string
		value []byte
		want  SAN
	}{
		{
			"skipped kinds",
			generalNames(
				otherName(derOIDOther, tlv(0x0C, []byte("ignored"))),
				tlv(0xA3, tlv(0x30)),                                // x400Address
				tlv(0xA4, tlv(0x30, tlv(0x31, tlv(0x30)))),          // directoryName
				tlv(0xA5, tlv(0xA1, tlv(0x0C, []byte("party")))),    // ediPartyName
				tlv(0x87, []byte{192, 0, 2, 1}),                     // iPAddress
				tlv(0x88, []byte{0x2A, 0x03}),                       // registeredID
				otherName(derOIDOther, tlv(0x04, []byte("a blob"))), // unknown otherName
				tlv(0x81, []byte("e@x")),
			),
			SAN{Emails: []string{"e@x"}},
		},
		{
			"only skipped kinds",
			generalNames(tlv(0x87, []byte{192, 0, 2, 1})),
			SAN{},
		},
		{
			"unknown otherName with odd value",
			generalNames(otherName(derOIDOther, tlv(0x04, fascn[:3])), otherName(derOIDFASCN, tlv(0x04, fascn))),
			SAN{FASCN: fascn},
		},
		{
			"UUID case normalised",
			generalNames(
				tlv(0x86, []byte("urn:uuid:"+strings.ToUpper(testUUID))),
				tlv(0x86, []byte("URN:UUID:"+testUUID)),
				tlv(0x86, []byte("Urn:Uuid:3F2504E0-4f89-41D3-9a0c-0305E82C3301")),
			),
			SAN{UUIDs: []string{testUUID, testUUID, testUUID}},
		},
		{
			"order within a kind kept, kinds interleaved",
			generalNames(
				tlv(0x86, []byte("https://b/")),
				otherName(derOIDUPN, tlv(0x0C, []byte("z@x"))),
				tlv(0x82, []byte("two.example")),
				tlv(0x86, []byte("urn:uuid:"+testUUID)),
				tlv(0x81, []byte("e2@x")),
				tlv(0x86, []byte("https://a/")),
				otherName(derOIDUPN, tlv(0x0C, []byte("ä@x"))),
				tlv(0x82, []byte("one.example")),
				tlv(0x81, []byte("e1@x")),
				otherName(derOIDFASCN, tlv(0x04, fascn)),
			),
			SAN{
				FASCN:    fascn,
				UUIDs:    []string{testUUID},
				URIs:     []string{"https://b/", "https://a/"},
				Emails:   []string{"e2@x", "e1@x"},
				UPNs:     []string{"z@x", "ä@x"},
				DNSNames: []string{"two.example", "one.example"},
			},
		},
		{
			"URN that is not a UUID URN",
			generalNames(tlv(0x86, []byte("urn:uuidx:1")), tlv(0x86, []byte("urn:isbn:0451450523"))),
			SAN{URIs: []string{"urn:uuidx:1", "urn:isbn:0451450523"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSAN(tt.value)
			if err != nil {
				t.Fatalf("ParseSAN: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseSAN = %#v, want %#v", got, tt.want)
			}
		})
	}
}

// TestParseSANDoesNotAlias checks the FASC-N is copied out of the input.
func TestParseSANDoesNotAlias(t *testing.T) {
	ext, err := MarshalSAN(testSAN(t))
	if err != nil {
		t.Fatal(err)
	}
	s, err := ParseSAN(ext.Value)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ext.Value {
		ext.Value[i] = 0
	}
	if !bytes.Equal(s.FASCN, mustHex(t, testFASCNHex)) {
		t.Fatalf("FASCN aliases the input: %X", s.FASCN)
	}
}

func TestSANFromCertificateErrors(t *testing.T) {
	ext, err := MarshalSAN(testSAN(t))
	if err != nil {
		t.Fatal(err)
	}
	other := pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Value: h("30 00")}
	tests := []struct {
		name string
		cert *x509.Certificate
		want string
	}{
		{"nil", nil, "nil certificate"},
		{"no extensions", &x509.Certificate{}, "certificate has no subjectAltName extension"},
		{"no SAN", &x509.Certificate{Extensions: []pkix.Extension{other}}, "certificate has no subjectAltName extension"},
		{"two SANs", &x509.Certificate{Extensions: []pkix.Extension{ext, other, ext}}, "certificate has 2 subjectAltName extensions"},
		{"bad SAN", &x509.Certificate{Extensions: []pkix.Extension{{Id: OIDSubjectAltName, Value: h("30 00")}}}, "GeneralNames is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := SANFromCertificate(tt.cert)
			if err == nil {
				t.Fatalf("SANFromCertificate succeeded: %#v", s)
			}
			if !errors.Is(err, ErrSAN) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want ErrSAN containing %q", err, tt.want)
			}
		})
	}
	got, err := SANFromCertificate(&x509.Certificate{Extensions: []pkix.Extension{other, ext}})
	if err != nil || !reflect.DeepEqual(got, testSAN(t)) {
		t.Errorf("SANFromCertificate = %#v, %v", got, err)
	}
}
