package piv

import (
	"errors"
	"fmt"
	"math/bits"
	"strings"
)

// ErrFASCN is wrapped by every error ParseFASCN and FASCN.Marshal return.
var ErrFASCN = errors.New("piv: invalid FASC-N")

// fascnError is a FASC-N error: its text names the offending character or
// field and it matches ErrFASCN under errors.Is.
type fascnError string

func (e fascnError) Error() string { return "piv: FASC-N: " + string(e) }
func (e fascnError) Unwrap() error { return ErrFASCN }

func fascnErrorf(format string, args ...any) error {
	return fascnError(fmt.Sprintf(format, args...))
}

// FASCN is a decoded Federal Agency Smart Credential Number (FIPS 201, TIG
// SCEPACS), the 25-byte identifier in the CHUID and in the PIV
// Authentication certificate's subjectAltName. Every field is a string of
// decimal digits of the fixed length noted.
type FASCN struct {
	AgencyCode                string // AC, 4 digits
	SystemCode                string // SC, 4 digits
	CredentialNumber          string // CN, 6 digits
	CredentialSeries          string // CS, 1 digit
	IndividualCredentialIssue string // ICI, 1 digit
	PersonIdentifier          string // PI, 10 digits
	OrganizationalCategory    string // OC, 1 digit
	OrganizationalIdentifier  string // OI, 4 digits
	PersonOrgAssociation      string // POA, 1 digit
}

// The FASC-N is 40 characters of 5 bits (25 bytes). A character is 4 data
// bits, least significant first, then an odd-parity bit; the characters are
// packed most significant bit first.
const (
	fascnBytes = 25
	fascnChars = 40

	fascnSS = 0xB // start sentinel
	fascnFS = 0xD // field separator
	fascnES = 0xF // end sentinel
)

// fascnField is one digit field of the layout
//
//	SS AC(4) FS SC(4) FS CN(6) FS CS(1) FS ICI(1) FS PI(10) OC(1) OI(4) POA(1) ES LRC
//
// start is the 0-based character index of its first digit.
type fascnField struct {
	name  string
	start int
	n     int
}

var fascnFields = [9]fascnField{
	{"agency code", 1, 4},
	{"system code", 6, 4},
	{"credential number", 11, 6},
	{"credential series", 18, 1},
	{"individual credential issue", 20, 1},
	{"person identifier", 22, 10},
	{"organizational category", 32, 1},
	{"organizational identifier", 33, 4},
	{"person/organization association", 37, 1},
}

// fascnSeparators maps the 0-based index of each field separator to the
// field it follows.
var fascnSeparators = map[int]string{
	5:  "agency code",
	10: "system code",
	17: "credential number",
	19: "credential series",
	21: "individual credential issue",
}

const (
	fascnSSIndex  = 0
	fascnESIndex  = 38
	fascnLRCIndex = 39
)

// fields returns pointers to f's fields in layout order, matching
// fascnFields.
func (f *FASCN) fields() [9]*string {
	return [9]*string{
		&f.AgencyCode,
		&f.SystemCode,
		&f.CredentialNumber,
		&f.CredentialSeries,
		&f.IndividualCredentialIssue,
		&f.PersonIdentifier,
		&f.OrganizationalCategory,
		&f.OrganizationalIdentifier,
		&f.PersonOrgAssociation,
	}
}

// fascnChar reads the i-th (0-based) 5-bit character of b and returns its
// data value and whether its parity is odd as required.
func fascnChar(b []byte, i int) (value byte, parityOK bool) {
	var ones int
	for j := range 5 {
		pos := i*5 + j
		bit := (b[pos/8] >> (7 - pos%8)) & 1
		ones += int(bit)
		if j < 4 {
			value |= bit << j
		}
	}
	return value, ones%2 == 1
}

// putFASCNChar writes the data value v (0-15) as the i-th (0-based) 5-bit
// character of b, with its odd-parity bit.
func putFASCNChar(b []byte, i int, v byte) {
	var parity byte
	if bits.OnesCount8(v)%2 == 0 {
		parity = 1
	}
	code := [5]byte{v & 1, v >> 1 & 1, v >> 2 & 1, v >> 3 & 1, parity}
	for j, bit := range code {
		pos := i*5 + j
		b[pos/8] |= bit << (7 - pos%8)
	}
}

// describeFASCNChar names a decoded character value for error messages.
func describeFASCNChar(v byte) string {
	switch {
	case v <= 9:
		return fmt.Sprintf("digit %d", v)
	case v == fascnSS:
		return "start sentinel (0xB)"
	case v == fascnFS:
		return "field separator (0xD)"
	case v == fascnES:
		return "end sentinel (0xF)"
	default:
		return fmt.Sprintf("undefined code 0x%X", v)
	}
}

// ParseFASCN decodes a 25-byte FASC-N. It is strict: every character must
// have odd parity, the sentinels and field separators must be where the
// layout puts them, every other character but the LRC must be a digit, and
// the LRC must be the XOR of the 39 characters before it. Errors wrap
// ErrFASCN and number characters from 1 (the start sentinel) to 40 (the
// LRC).
func ParseFASCN(b []byte) (FASCN, error) {
	if len(b) != fascnBytes {
		return FASCN{}, fascnErrorf("length %d bytes, want %d", len(b), fascnBytes)
	}
	var chars [fascnChars]byte
	for i := range chars {
		v, ok := fascnChar(b, i)
		if !ok {
			return FASCN{}, fascnErrorf("character %d: parity error", i+1)
		}
		chars[i] = v
	}

	if v := chars[fascnSSIndex]; v != fascnSS {
		return FASCN{}, fascnErrorf("character %d: want start sentinel, found %s", fascnSSIndex+1, describeFASCNChar(v))
	}
	var f FASCN
	ptrs := f.fields()
	for k, fd := range fascnFields {
		digits := make([]byte, fd.n)
		for j := range fd.n {
			i := fd.start + j
			v := chars[i]
			if v > 9 {
				return FASCN{}, fascnErrorf("character %d (%s): want a digit, found %s", i+1, fd.name, describeFASCNChar(v))
			}
			digits[j] = '0' + v
		}
		*ptrs[k] = string(digits)
		// A separator, if any, follows the field.
		sep := fd.start + fd.n
		if after, ok := fascnSeparators[sep]; ok && chars[sep] != fascnFS {
			return FASCN{}, fascnErrorf("character %d: want field separator after %s, found %s", sep+1, after, describeFASCNChar(chars[sep]))
		}
	}
	if v := chars[fascnESIndex]; v != fascnES {
		return FASCN{}, fascnErrorf("character %d: want end sentinel, found %s", fascnESIndex+1, describeFASCNChar(v))
	}
	var lrc byte
	for _, v := range chars[:fascnLRCIndex] {
		lrc ^= v
	}
	if got := chars[fascnLRCIndex]; got != lrc {
		return FASCN{}, fascnErrorf("character %d: LRC mismatch: found 0x%X, computed 0x%X", fascnLRCIndex+1, got, lrc)
	}
	return f, nil
}

// Marshal encodes f as the 25-byte FASC-N, computing the parity bits and
// the LRC. Every field must be exactly its fixed number of decimal digits;
// errors wrap ErrFASCN and name the field.
func (f FASCN) Marshal() ([]byte, error) {
	var chars [fascnChars]byte
	chars[fascnSSIndex] = fascnSS
	for i := range fascnSeparators {
		chars[i] = fascnFS
	}
	chars[fascnESIndex] = fascnES
	for k, p := range f.fields() {
		fd := fascnFields[k]
		s := *p
		if len(s) != fd.n || !allDigits(s) {
			return nil, fascnErrorf("%s: want %d decimal digits, got %q", fd.name, fd.n, s)
		}
		for j := range fd.n {
			chars[fd.start+j] = s[j] - '0'
		}
	}
	for _, v := range chars[:fascnLRCIndex] {
		chars[fascnLRCIndex] ^= v
	}
	out := make([]byte, fascnBytes)
	for i, v := range chars {
		putFASCNChar(out, i, v)
	}
	return out, nil
}

func allDigits(s string) bool {
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Identifier returns the 14-digit FASC-N identifier of SP 800-73-4 part 1
// §3.1.2: the agency code, system code and credential number concatenated.
func (f FASCN) Identifier() string {
	return f.AgencyCode + f.SystemCode + f.CredentialNumber
}

// String returns the fields in layout order joined with '-', for example
// "9999-9999-999999-0-1-0000000000-3-0000-1".
func (f FASCN) String() string {
	ptrs := f.fields()
	parts := make([]string, len(ptrs))
	for i, p := range ptrs {
		parts[i] = *p
	}
	return strings.Join(parts, "-")
}
