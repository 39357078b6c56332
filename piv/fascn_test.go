package piv

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// testFASCNHex is the widely used test FASC-N. Decoded character by
// character (5 bits each, data LSB first, then odd parity):
//
//	11010         SS
//	10011 x4      AC  9999
//	10110         FS
//	10011 x4      SC  9999
//	10110         FS
//	10011 x6      CN  999999
//	10110         FS
//	00001         CS  0
//	10110         FS
//	10000         ICI 1
//	10110         FS
//	00001 x10     PI  0000000000
//	11001         OC  3
//	00001 x4      OI  0000
//	10000         POA 1
//	11111         ES
//	01011         LRC 0xA
const testFASCNHex = "D4E739DA739CED39CE739D836858210842108421C84210C3EB"

var testFASCN = FASCN{
	AgencyCode:                "9999",
	SystemCode:                "9999",
	CredentialNumber:          "999999",
	CredentialSeries:          "0",
	IndividualCredentialIssue: "1",
	PersonIdentifier:          "0000000000",
	OrganizationalCategory:    "3",
	OrganizationalIdentifier:  "0000",
	PersonOrgAssociation:      "1",
}

// handFASCN was encoded by hand, independently of the encoder. The 5-bit
// codes (4 data bits LSB first, then odd parity) are
//
//	0 00001  1 10000  2 01000  3 11001  4 00100
//	5 10101  6 01101  7 11100  8 00010  9 10011
//	SS 11010  FS 10110  ES 11111
//
// The LRC is the XOR of the data values of the first 39 characters:
//
//	SS B, AC 1^2^3^4 = 4, five FS D^D^D^D^D = D, SC 5^6^7^8 = C,
//	CN 0^0^0^0^0^1 = 1, CS 2, ICI 3, PI 1^2^...^9^0 = 1, OC 1,
//	OI 1^2^3^4 = 4, POA 2, ES F
//	B^4^D^C^1^2^3^1^1^4^2^F = 7, coded 11100.
//
// handFASCNBits lists the 40 characters; packed MSB first, eight characters
// make five bytes:
//
//	11010 10000 01000 11001 00100 10110 10101 01101  SS 1 2 3 4 FS 5 6
//	= 11010100 00010001 10010010 01011010 10101101   D4 11 92 5A AD
//	11100 00010 10110 00001 00001 00001 00001 00001  7 8 FS 0 0 0 0 0
//	= 11100000 10101100 00010000 10000100 00100001   E0 AC 10 84 21
//	10000 10110 01000 10110 11001 10110 10000 01000  1 FS 2 FS 3 FS 1 2
//	= 10000101 10010001 01101100 11011010 00001000   85 91 6C DA 08
//	11001 00100 10101 01101 11100 00010 10011 00001  3 4 5 6 7 8 9 0
//	= 11001001 00101010 11011110 00001010 01100001   C9 2A DE 0A 61
//	10000 10000 01000 11001 00100 01000 11111 11100  1 1 2 3 4 2 ES LRC
//	= 10000100 00010001 10010010 00100011 11111100   84 11 92 23 FC
const (
	handFASCNBits = "11010 10000 01000 11001 00100 10110 10101 01101 " +
		"11100 00010 10110 00001 00001 00001 00001 00001 " +
		"10000 10110 01000 10110 11001 10110 10000 01000 " +
		"11001 00100 10101 01101 11100 00010 10011 00001 " +
		"10000 10000 01000 11001 00100 01000 11111 11100"
	handFASCNHex = "D411925AADE0AC10842185916CDA08C92ADE0A6184119223FC"
)

var handFASCN = FASCN{
	AgencyCode:                "1234",
	SystemCode:                "5678",
	CredentialNumber:          "000001",
	CredentialSeries:          "2",
	IndividualCredentialIssue: "3",
	PersonIdentifier:          "1234567890",
	OrganizationalCategory:    "1",
	OrganizationalIdentifier:  "1234",
	PersonOrgAssociation:      "2",
}

// packBits packs a string of '0'/'1' (spaces ignored) MSB first.
func packBits(t testing.TB, s string) []byte {
	t.Helper()
	s = strings.ReplaceAll(s, " ", "")
	if len(s)%8 != 0 {
		t.Fatalf("packBits: %d bits", len(s))
	}
	out := make([]byte, len(s)/8)
	for i := range len(s) {
		switch s[i] {
		case '1':
			out[i/8] |= 0x80 >> (i % 8)
		case '0':
		default:
			t.Fatalf("packBits: bad bit %q", s[i])
		}
	}
	return out
}

// setChar overwrites the n-th (1-based) 5-bit character of b with code, a
// string of five '0'/'1' in stream order, independently of the package.
func setChar(t testing.TB, b []byte, n int, code string) {
	t.Helper()
	if len(code) != 5 {
		t.Fatalf("setChar: code %q", code)
	}
	for j := range 5 {
		pos := (n-1)*5 + j
		mask := byte(0x80 >> (pos % 8))
		b[pos/8] &^= mask
		if code[j] == '1' {
			b[pos/8] |= mask
		}
	}
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseFASCNKnownVector(t *testing.T) {
	b := mustHex(t, testFASCNHex)
	f, err := ParseFASCN(b)
	if err != nil {
		t.Fatalf("ParseFASCN: %v", err)
	}
	if f != testFASCN {
		t.Fatalf("ParseFASCN = %#v, want %#v", f, testFASCN)
	}
	if got, want := f.Identifier(), "99999999999999"; got != want {
		t.Errorf("Identifier = %q, want %q", got, want)
	}
	if got, want := f.String(), "9999-9999-999999-0-1-0000000000-3-0000-1"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
	out, err := testFASCN.Marshal()
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	if !bytes.Equal(out, b) {
		t.Fatalf("Marshal = %X, want %s", out, testFASCNHex)
	}
}

func TestFASCNHandVector(t *testing.T) {
	want := mustHex(t, handFASCNHex)
	if bits := packBits(t, handFASCNBits); !bytes.Equal(bits, want) {
		t.Fatalf("hand bit string packs to %X, hand hex is %s", bits, handFASCNHex)
	}
	out, err := handFASCN.Marshal()
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	if !bytes.Equal(out, want) {
		t.Fatalf("Marshal = %X, want %s", out, handFASCNHex)
	}
	f, err := ParseFASCN(want)
	if err != nil {
		t.Fatalf("ParseFASCN: %v", err)
	}
	if f != handFASCN {
		t.Fatalf("ParseFASCN = %#v, want %#v", f, handFASCN)
	}
	if got, want := f.Identifier(), "12345678000001"; got != want {
		t.Errorf("Identifier = %q, want %q", got, want)
	}
	if got, want := f.String(), "1234-5678-000001-2-3-1234567890-1-1234-2"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
}

// TestFASCNCharCodes checks the 5-bit code of every value the layout uses
// against the table in the specification.
func TestFASCNCharCodes(t *testing.T) {
	codes := map[byte]string{
		0: "00001", 1: "10000", 2: "01000", 3: "11001", 4: "00100",
		5: "10101", 6: "01101", 7: "11100", 8: "00010", 9: "10011",
		0xB: "11010", 0xD: "10110", 0xF: "11111",
	}
	for v, code := range codes {
		b := make([]byte, 1)
		putFASCNChar(b, 0, v)
		want := packBits(t, code+"000")
		if !bytes.Equal(b, want) {
			t.Errorf("code of 0x%X = %08b, want %s", v, b[0], code)
		}
		got, ok := fascnChar(want, 0)
		if got != v || !ok {
			t.Errorf("decode %s = 0x%X, parity ok %v; want 0x%X, true", code, got, ok, v)
		}
	}
}

func TestParseFASCNErrors(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(b []byte) []byte
		want   string
	}{
		{"empty", func([]byte) []byte { return nil }, "piv: FASC-N: length 0 bytes, want 25"},
		{"short", func(b []byte) []byte { return b[:24] }, "piv: FASC-N: length 24 bytes, want 25"},
		{"long", func(b []byte) []byte { return append(b, 0) }, "piv: FASC-N: length 26 bytes, want 25"},
		{"parity", func(b []byte) []byte {
			setChar(t, b, 7, "10010") // 9 with the parity bit cleared
			return b
		}, "piv: FASC-N: character 7: parity error"},
		{"parity in LRC", func(b []byte) []byte {
			setChar(t, b, 40, "01010")
			return b
		}, "piv: FASC-N: character 40: parity error"},
		{"start sentinel", func(b []byte) []byte {
			setChar(t, b, 1, "10110")
			return b
		}, "piv: FASC-N: character 1: want start sentinel, found field separator (0xD)"},
		{"separator missing", func(b []byte) []byte {
			setChar(t, b, 6, "10011")
			return b
		}, "piv: FASC-N: character 6: want field separator after agency code, found digit 9"},
		{"separator after credential series", func(b []byte) []byte {
			setChar(t, b, 20, "11111")
			return b
		}, "piv: FASC-N: character 20: want field separator after credential series, found end sentinel (0xF)"},
		{"separator in digits", func(b []byte) []byte {
			setChar(t, b, 12, "10110")
			return b
		}, "piv: FASC-N: character 12 (credential number): want a digit, found field separator (0xD)"},
		{"undefined code", func(b []byte) []byte {
			setChar(t, b, 2, "01011") // 0xA
			return b
		}, "piv: FASC-N: character 2 (agency code): want a digit, found undefined code 0xA"},
		{"start sentinel in person identifier", func(b []byte) []byte {
			setChar(t, b, 23, "11010")
			return b
		}, "piv: FASC-N: character 23 (person identifier): want a digit, found start sentinel (0xB)"},
		{"end sentinel", func(b []byte) []byte {
			setChar(t, b, 39, "00001")
			return b
		}, "piv: FASC-N: character 39: want end sentinel, found digit 0"},
		{"LRC", func(b []byte) []byte {
			setChar(t, b, 40, "11001") // 3
			return b
		}, "piv: FASC-N: character 40: LRC mismatch: found 0x3, computed 0xA"},
		{"digit changed", func(b []byte) []byte {
			setChar(t, b, 2, "00010") // 9 -> 8: LRC becomes A^9^8 = B
			return b
		}, "piv: FASC-N: character 40: LRC mismatch: found 0xA, computed 0xB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.mutate(mustHex(t, testFASCNHex))
			_, err := ParseFASCN(b)
			if err == nil {
				t.Fatal("ParseFASCN succeeded")
			}
			if !errors.Is(err, ErrFASCN) {
				t.Errorf("error %v does not wrap ErrFASCN", err)
			}
			if err.Error() != tt.want {
				t.Errorf("error = %q, want %q", err, tt.want)
			}
		})
	}
}

func TestParseFASCNLengths(t *testing.T) {
	valid := mustHex(t, testFASCNHex)
	for _, n := range []int{0, 1, 24, 26, 50, 99, 100, 1000, 1 << 20} {
		b := bytes.Repeat(valid, n/len(valid)+1)[:n]
		_, err := ParseFASCN(b)
		want := fmt.Sprintf("piv: FASC-N: length %d bytes, want 25", n)
		if err == nil || err.Error() != want || !errors.Is(err, ErrFASCN) {
			t.Errorf("length %d: error %v, want %q", n, err, want)
		}
	}
}

// TestParseFASCNBitFlips checks that flipping any single bit of a valid
// FASC-N is reported as a parity error in the character holding that bit.
func TestParseFASCNBitFlips(t *testing.T) {
	for bit := range fascnBytes * 8 {
		b := mustHex(t, testFASCNHex)
		b[bit/8] ^= 0x80 >> (bit % 8)
		_, err := ParseFASCN(b)
		want := fmt.Sprintf("piv: FASC-N: character %d: parity error", bit/5+1)
		if err == nil || err.Error() != want {
			t.Errorf("bit %d flipped: error %v, want %q", bit, err, want)
		}
	}
}

func TestFASCNMarshalErrors(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(f *FASCN)
		want   string
	}{
		{"agency code short", func(f *FASCN) { f.AgencyCode = "123" }, `piv: FASC-N: agency code: want 4 decimal digits, got "123"`},
		{"agency code letter", func(f *FASCN) { f.AgencyCode = "12a4" }, `piv: FASC-N: agency code: want 4 decimal digits, got "12a4"`},
		{"system code long", func(f *FASCN) { f.SystemCode = "12345" }, `piv: FASC-N: system code: want 4 decimal digits, got "12345"`},
		{"credential number", func(f *FASCN) { f.CredentialNumber = "" }, `piv: FASC-N: credential number: want 6 decimal digits, got ""`},
		{"credential series", func(f *FASCN) { f.CredentialSeries = "10" }, `piv: FASC-N: credential series: want 1 decimal digits, got "10"`},
		{"individual credential issue", func(f *FASCN) { f.IndividualCredentialIssue = "x" }, `piv: FASC-N: individual credential issue: want 1 decimal digits, got "x"`},
		{"person identifier", func(f *FASCN) { f.PersonIdentifier = "123456789" }, `piv: FASC-N: person identifier: want 10 decimal digits, got "123456789"`},
		{"person identifier unicode digit", func(f *FASCN) { f.PersonIdentifier = "12345678٠" }, `piv: FASC-N: person identifier: want 10 decimal digits, got "12345678٠"`},
		{"organizational category", func(f *FASCN) { f.OrganizationalCategory = "-" }, `piv: FASC-N: organizational category: want 1 decimal digits, got "-"`},
		{"organizational identifier", func(f *FASCN) { f.OrganizationalIdentifier = "12 4" }, `piv: FASC-N: organizational identifier: want 4 decimal digits, got "12 4"`},
		{"person/organization association", func(f *FASCN) { f.PersonOrgAssociation = "" }, `piv: FASC-N: person/organization association: want 1 decimal digits, got ""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := handFASCN
			tt.mutate(&f)
			out, err := f.Marshal()
			if err == nil {
				t.Fatalf("Marshal succeeded: %X", out)
			}
			if !errors.Is(err, ErrFASCN) {
				t.Errorf("error %v does not wrap ErrFASCN", err)
			}
			if err.Error() != tt.want {
				t.Errorf("error = %q, want %q", err, tt.want)
			}
		})
	}
	if _, err := (FASCN{}).Marshal(); !errors.Is(err, ErrFASCN) {
		t.Errorf("zero FASCN: Marshal error %v, want ErrFASCN", err)
	}
}

func TestFASCNRandomRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	digits := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte('0' + r.IntN(10))
		}
		return string(b)
	}
	for range 1000 {
		f := FASCN{
			AgencyCode:                digits(4),
			SystemCode:                digits(4),
			CredentialNumber:          digits(6),
			CredentialSeries:          digits(1),
			IndividualCredentialIssue: digits(1),
			PersonIdentifier:          digits(10),
			OrganizationalCategory:    digits(1),
			OrganizationalIdentifier:  digits(4),
			PersonOrgAssociation:      digits(1),
		}
		b, err := f.Marshal()
		if err != nil {
			t.Fatalf("Marshal(%v): %v", f, err)
		}
		got, err := ParseFASCN(b)
		if err != nil {
			t.Fatalf("ParseFASCN(Marshal(%v)): %v", f, err)
		}
		if got != f {
			t.Fatalf("round trip: %v -> %X -> %v", f, b, got)
		}
	}
}
