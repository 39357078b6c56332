package pkcs11

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// FuzzParseURI checks that ParseURI
//
//   - never panics;
//   - on success, returns a URI whose String() parses again to an equal URI
//     (the pin-value aside, which String omits) and is a fixed point, and
//     whose String/GoString/fmt output is the same with or without the
//     pin-value;
//   - on failure, returns a *URIError whose message does not depend on the
//     content of the pin-value: the input with every ASCII letter and digit
//     of each pin-value changed (raw or percent-encoded, keeping the
//     percent-encoding, UTF-8 and NUL structure intact) must fail with the
//     very same message. A message that echoed any part of the PIN would
//     differ. (Checking strings.Contains(msg, pin) directly would flag
//     coincidences such as a pin-value of "URI" or "token".) See
//     uriFuzzMaskPINValues for what else it changes.
func FuzzParseURI(f *testing.F) {
	for _, seed := range []string{
		"pkcs11:",
		"pkcs11:?",
		"PKCS11:token=a",
		"pkcs11:token=Alice%20Card;id=%01;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/tmp/pin",
		"pkcs11:type=cert;id=%de%AD%be%EF;object=my%20key;slot-id=007;serial=0123abc;token=T%3Bx%3F%26%3D%25?pin-source=file:///etc/pin&module-path=/opt/lib%20x/p11.so",
		"pkcs11:token=a?pin-value=987654",
		"pkcs11:token=a?pin-value=12%zz34",
		"pkcs11:?pin-value=987&654",
		"pkcs11:?pin-value=987&x654=1",
		"pkcs11:?pin-value=98%0076",
		"pkcs11:?pin-value=%FE%FF",
		"pkcs11:?pin-value=987654&pin-value=987654",
		"pkcs11:?pin-source=/p&pin-value=987654",
		"pkcs11:pin-value=987654",
		"pkcs11:?pin-source=file://localhost/etc/pin",
		"pkcs11:?pin-source=|/bin/cmd",
		"pkcs11:?pin-source=http://example.com/pin",
		"pkcs11:?pin-source=C:/pin",
		"pkcs11:?module-path=/a?b",
		"pkcs11:id=%00%FF%C3",
		"pkcs11:id=ab",
		"pkcs11:token=Bücher",
		"pkcs11:object=a=b/c",
		"pkcs11:slot-id=18446744073709551615",
		"pkcs11:slot-id=99999999999999999999999",
		"pkcs11:slot-id=-1",
		"pkcs11:type=secret-key",
		"pkcs11:type=Private",
		"pkcs11:token=a;token=b",
		"pkcs11:manufacturer=SoftHSM",
		"pkcs11:x-vendor=1",
		"pkcs11:?module-name=p11",
		"pkcs11:?token=a",
		"pkcs11:module-path=/x",
		"pkcs11:=a",
		"pkcs11:token=a;",
		"pkcs11:token",
		"pkcs11:token=",
		"pkcs11:token=a%00b",
		"pkcs11:token=%FF",
		"pkcs11:token=a b",
		"pkcs11:token=a#b",
		"pkcs11:token=a&object=b",
		"pkcs11:?module-path=/a;pin-source=/b",
		"token=a",
		"",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURI(s)

		// The error must not depend on the pin-value's content.
		if masked, changed := uriFuzzMaskPINValues(s); changed {
			u2, err2 := ParseURI(masked)
			switch {
			case (err == nil) != (err2 == nil):
				t.Fatalf("changing the pin-value changed the outcome:\n%q: %v\n%q: %v", s, err, masked, err2)
			case err != nil && err.Error() != err2.Error():
				t.Fatalf("error depends on the pin-value:\n%q: %v\n%q: %v", s, err, masked, err2)
			case err == nil && (!uriTestEqual(u, u2) || u.String() != u2.String()):
				t.Fatalf("changing the pin-value changed other fields: %s vs %s", uriTestDump(u), uriTestDump(u2))
			}
		}

		if err != nil {
			if u != nil {
				t.Fatalf("ParseURI(%q) returned both a URI and %v", s, err)
			}
			var ue *URIError
			if !errors.As(err, &ue) {
				t.Fatalf("ParseURI(%q) error %T is not *URIError", s, err)
			}
			if !strings.HasPrefix(err.Error(), "pkcs11: invalid URI: ") || ue.Reason == "" {
				t.Fatalf("ParseURI(%q) error %q is malformed", s, err)
			}
			return
		}
		if u == nil {
			t.Fatalf("ParseURI(%q) returned nil, nil", s)
		}

		str := u.String()
		// String encodes '=' inside values, so "pin-value=" could only be
		// the attribute itself.
		if !strings.HasPrefix(str, "pkcs11:") || strings.Contains(str, "pin-value=") {
			t.Fatalf("String() = %q", str)
		}
		if bare := u.WithPINValue(nil).String(); bare != str {
			t.Fatalf("String() depends on the pin-value: %q vs %q", str, bare)
		}
		for _, out := range []string{u.GoString(), fmt.Sprintf("%v", u), fmt.Sprintf("%+v", *u), fmt.Sprintf("%#v", *u), fmt.Sprintf("%#v", u)} {
			if out != str {
				t.Fatalf("fmt output %q differs from String() %q", out, str)
			}
		}
		if u.PINSource != "" && u.HasPINValue() {
			t.Fatalf("ParseURI(%q) accepted both pin-source and pin-value", s)
		}

		u2, err := ParseURI(str)
		if err != nil {
			t.Fatalf("ParseURI(%q) ok, but its String() %q fails: %v", s, str, err)
		}
		if !uriTestEqual(u, u2) {
			t.Fatalf("round trip of %q via %q:\n got %s\nwant %s", s, str, uriTestDump(u2), uriTestDump(u))
		}
		if u2.HasPINValue() {
			t.Fatalf("String() %q carried a pin-value", str)
		}
		if str2 := u2.String(); str2 != str {
			t.Fatalf("String() is not canonical: %q then %q", str, str2)
		}
	})
}

// uriFuzzMaskPINValues returns s with every ASCII letter and digit in the
// values of query attributes named pin-value replaced by another of the same
// kind, both raw and percent-encoded ones; bytes that follow a '%' are
// never touched raw, so valid and invalid percent-encoding stays as it was.
// It mirrors ParseURI's split: the query follows the first '?' and its
// attributes are separated by '&'.
//
// When there is a pin-value, it also shifts the digits of query attributes
// whose names ParseURI does not know: with an unencoded '&' in a PIN
// ("pin-value=987&654"), such an attribute may be a piece of the PIN. No
// known name has a digit, so the names stay unknown.
func uriFuzzMaskPINValues(s string) (string, bool) {
	path, query, ok := strings.Cut(s, "?")
	if !ok {
		return s, false
	}
	segs := strings.Split(query, "&")
	hasPIN := false
	for _, seg := range segs {
		if name, _, _ := strings.Cut(seg, "="); name == "pin-value" {
			hasPIN = true
		}
	}
	if !hasPIN {
		return s, false
	}
	changed := false
	for i, seg := range segs {
		name, val, ok := strings.Cut(seg, "=")
		var masked string
		switch _, known := uriSupported[name]; {
		case ok && name == "pin-value":
			masked = name + "=" + uriFuzzShiftString(val, false)
		case known:
			continue
		default:
			if _, rfc := uriUnsupported[name]; rfc {
				continue
			}
			masked = uriFuzzShiftString(seg, true)
		}
		if masked != seg {
			changed = true
			segs[i] = masked
		}
	}
	return path + "?" + strings.Join(segs, "&"), changed
}

// uriFuzzShiftString applies uriFuzzShift (or, if digitsOnly, shifts only
// digits) to the raw and percent-encoded bytes of v.
func uriFuzzShiftString(v string, digitsOnly bool) string {
	shift := func(c byte) byte {
		if digitsOnly && (c < '0' || c > '9') {
			return c
		}
		return uriFuzzShift(c)
	}
	b := []byte(v)
	for j := 0; j < len(b); j++ {
		if b[j] != '%' {
			b[j] = shift(b[j])
			continue
		}
		if j+2 < len(b) {
			hi, ok1 := uriUnhex(b[j+1])
			lo, ok2 := uriUnhex(b[j+2])
			if c := hi<<4 | lo; ok1 && ok2 && shift(c) != c {
				c = shift(c)
				b[j+1], b[j+2] = uriHexDigits[c>>4], uriHexDigits[c&0xf]
			}
		}
		j += 2
	}
	return string(b)
}

// uriFuzzShift maps an ASCII letter or digit to the next one of its kind.
func uriFuzzShift(c byte) byte {
	switch {
	case c == '9':
		return '0'
	case c == 'z':
		return 'a'
	case c == 'Z':
		return 'A'
	case '0' <= c && c < '9', 'a' <= c && c < 'z', 'A' <= c && c < 'Z':
		return c + 1
	}
	return c
}
