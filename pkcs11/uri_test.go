package pkcs11

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// uriTestPIN is a distinctive PIN; no test error message or output may
// contain it.
const uriTestPIN = "987654"

func uriTestSlot(n uint) *uint { return &n }

// uriTestEqual compares every field but the pin-value.
func uriTestEqual(a, b *URI) bool {
	if (a.SlotID == nil) != (b.SlotID == nil) || a.SlotID != nil && *a.SlotID != *b.SlotID {
		return false
	}
	return a.Token == b.Token && a.Serial == b.Serial && a.Object == b.Object &&
		bytes.Equal(a.ID, b.ID) && (a.ID == nil) == (b.ID == nil) && a.Type == b.Type &&
		a.ModulePath == b.ModulePath && a.PINSource == b.PINSource
}

// uriTestDump prints every field, pin-value included (tests only).
func uriTestDump(u *URI) string {
	slot := "nil"
	if u.SlotID != nil {
		slot = fmt.Sprint(*u.SlotID)
	}
	return fmt.Sprintf("{Token:%q Serial:%q SlotID:%s Object:%q ID:%x(nil=%t) Type:%q ModulePath:%q PINSource:%q pinValue:%q}",
		u.Token, u.Serial, slot, u.Object, u.ID, u.ID == nil, string(u.Type), u.ModulePath, u.PINSource, u.pinValue)
}

func TestParseURIValid(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		want      URI
		canonical string
	}{
		{
			name:      "empty",
			in:        "pkcs11:",
			canonical: "pkcs11:",
		},
		{
			name:      "empty query",
			in:        "pkcs11:?",
			canonical: "pkcs11:",
		},
		{
			name: "softhsm example",
			in:   "pkcs11:token=Alice%20Card;id=%01;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/tmp/pin",
			want: URI{Token: "Alice Card", ID: []byte{1}, Type: TypePrivate,
				ModulePath: "/usr/lib/softhsm/libsofthsm2.so", PINSource: "/tmp/pin"},
			canonical: "pkcs11:token=Alice%20Card;id=%01;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/tmp/pin",
		},
		{
			name: "every attribute, out of order, lower-case hex",
			in: "pkcs11:type=cert;id=%de%AD%be%EF;object=my%20key;slot-id=007;serial=0123abc;" +
				"token=T%3Bx%3F%26%3D%25%23?pin-source=file:///etc/credgw/pin&module-path=/opt/lib%20x/p11.so",
			want: URI{Token: "T;x?&=%#", Serial: "0123abc", SlotID: uriTestSlot(7), Object: "my key",
				ID: []byte{0xde, 0xad, 0xbe, 0xef}, Type: TypeCert,
				ModulePath: "/opt/lib x/p11.so", PINSource: "/etc/credgw/pin"},
			canonical: "pkcs11:token=T%3Bx%3F%26%3D%25%23;serial=0123abc;slot-id=7;object=my%20key;id=%DE%AD%BE%EF;type=cert" +
				"?module-path=/opt/lib%20x/p11.so&pin-source=/etc/credgw/pin",
		},
		{
			name:      "upper-case scheme",
			in:        "PKCS11:token=a",
			want:      URI{Token: "a"},
			canonical: "pkcs11:token=a",
		},
		{
			name:      "mixed-case scheme",
			in:        "Pkcs11:object=k",
			want:      URI{Object: "k"},
			canonical: "pkcs11:object=k",
		},
		{
			name:      "slot-id zero",
			in:        "pkcs11:slot-id=0",
			want:      URI{SlotID: uriTestSlot(0)},
			canonical: "pkcs11:slot-id=0",
		},
		{
			name:      "all types: public",
			in:        "pkcs11:type=public",
			want:      URI{Type: TypePublic},
			canonical: "pkcs11:type=public",
		},
		{
			name:      "all types: secret-key",
			in:        "pkcs11:type=secret-key",
			want:      URI{Type: TypeSecretKey},
			canonical: "pkcs11:type=secret-key",
		},
		{
			name:      "all types: data",
			in:        "pkcs11:type=data",
			want:      URI{Type: TypeData},
			canonical: "pkcs11:type=data",
		},
		{
			name:      "id may hold any bytes, NUL and non-UTF-8 included",
			in:        "pkcs11:id=%00%FF%C3",
			want:      URI{ID: []byte{0, 0xff, 0xc3}},
			canonical: "pkcs11:id=%00%FF%C3",
		},
		{
			name:      "raw id characters are always re-encoded",
			in:        "pkcs11:id=ab",
			want:      URI{ID: []byte("ab")},
			canonical: "pkcs11:id=%61%62",
		},
		{
			name:      "raw UTF-8 label",
			in:        "pkcs11:token=Bücher",
			want:      URI{Token: "Bücher"},
			canonical: "pkcs11:token=B%C3%BCcher",
		},
		{
			name:      "'=' and '/' inside path values",
			in:        "pkcs11:object=a=b/c",
			want:      URI{Object: "a=b/c"},
			canonical: "pkcs11:object=a%3Db%2Fc",
		},
		{
			name:      "'?' inside a query value",
			in:        "pkcs11:?module-path=/a?b",
			want:      URI{ModulePath: "/a?b"},
			canonical: "pkcs11:?module-path=/a%3Fb",
		},
		{
			name:      "query only",
			in:        "pkcs11:?module-path=/usr/lib/p11.so",
			want:      URI{ModulePath: "/usr/lib/p11.so"},
			canonical: "pkcs11:?module-path=/usr/lib/p11.so",
		},
		{
			name:      "pin-source file: URI",
			in:        "pkcs11:token=a?pin-source=file:/etc/pin",
			want:      URI{Token: "a", PINSource: "/etc/pin"},
			canonical: "pkcs11:token=a?pin-source=/etc/pin",
		},
		{
			name:      "pin-source file://localhost",
			in:        "pkcs11:?pin-source=FILE://localhost/etc/pin",
			want:      URI{PINSource: "/etc/pin"},
			canonical: "pkcs11:?pin-source=/etc/pin",
		},
		{
			name:      "pin-source relative path",
			in:        "pkcs11:?pin-source=secrets/pin.txt",
			want:      URI{PINSource: "secrets/pin.txt"},
			canonical: "pkcs11:?pin-source=secrets/pin.txt",
		},
		{
			name:      "pin-value is parsed but never printed",
			in:        "pkcs11:token=a?pin-value=" + uriTestPIN,
			want:      URI{Token: "a", pinValue: []byte(uriTestPIN)},
			canonical: "pkcs11:token=a",
		},
		{
			name:      "percent-encoded digits in slot-id and type",
			in:        "pkcs11:slot-id=%31%32;type=%70rivate",
			want:      URI{SlotID: uriTestSlot(12), Type: TypePrivate},
			canonical: "pkcs11:slot-id=12;type=private",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := ParseURI(tt.in)
			if err != nil {
				t.Fatalf("ParseURI(%q): %v", tt.in, err)
			}
			if !uriTestEqual(u, &tt.want) || !bytes.Equal(u.pinValue, tt.want.pinValue) {
				t.Errorf("ParseURI(%q)\n got %s\nwant %s", tt.in, uriTestDump(u), uriTestDump(&tt.want))
			}
			if got := u.String(); got != tt.canonical {
				t.Errorf("String() = %q, want %q", got, tt.canonical)
			}
			// Round trip: the canonical form parses to the same URI
			// (minus the pin-value) and is a fixed point.
			u2, err := ParseURI(u.String())
			if err != nil {
				t.Fatalf("ParseURI(String()) = %v", err)
			}
			if !uriTestEqual(u, u2) || u2.HasPINValue() {
				t.Errorf("round trip\n got %s\nwant %s", uriTestDump(u2), uriTestDump(u))
			}
			if u2.String() != u.String() {
				t.Errorf("String() not canonical: %q then %q", u.String(), u2.String())
			}
		})
	}
}

func TestURIStringEscapesEverything(t *testing.T) {
	u := &URI{
		Token:      "a b;c?d&e=f%g#h/i+j\x00k",
		Serial:     "S/N 1",
		SlotID:     uriTestSlot(4294967295),
		Object:     "ключ", // non-ASCII
		ID:         []byte{0x00, 0x7f, 0xff, 'A'},
		Type:       TypeSecretKey,
		ModulePath: "/opt/my lib/p11.so",
		PINSource:  "/run/pin?x&y=z|w",
	}
	want := "pkcs11:token=a%20b%3Bc%3Fd%26e%3Df%25g%23h%2Fi%2Bj%00k;serial=S%2FN%201;slot-id=4294967295;" +
		"object=%D0%BA%D0%BB%D1%8E%D1%87;id=%00%7F%FF%41;type=secret-key" +
		"?module-path=/opt/my%20lib/p11.so&pin-source=/run/pin%3Fx%26y%3Dz%7Cw"
	if got := u.String(); got != want {
		t.Fatalf("String()\n got %s\nwant %s", got, want)
	}
	if got := u.GoString(); got != want {
		t.Errorf("GoString() = %q, want String()", got)
	}
	// The NUL in Token makes the canonical form unparsable, which is
	// correct: ParseURI never produces such a token. Without it, the
	// round trip must hold.
	u.Token = "a b;c?d&e=f%g#h/i+jk"
	u2, err := ParseURI(u.String())
	if err != nil {
		t.Fatalf("ParseURI(%q): %v", u.String(), err)
	}
	if !uriTestEqual(u, u2) {
		t.Errorf("round trip\n got %s\nwant %s", uriTestDump(u2), uriTestDump(u))
	}
	var nilURI *URI
	if got := nilURI.String(); got != "<nil>" {
		t.Errorf("nil String() = %q", got)
	}
}

func TestParseURIRejects(t *testing.T) {
	tests := []struct {
		in     string
		attr   string // want URIError.Attr
		reason string // want in URIError.Reason
	}{
		// scheme
		{"", "", `missing "pkcs11:" scheme`},
		{"pkcs11", "", `missing "pkcs11:" scheme`},
		{"token=a", "", `missing "pkcs11:" scheme`},
		{"http://example.com/", "", `missing "pkcs11:" scheme`},
		{" pkcs11:token=a", "", `missing "pkcs11:" scheme`},
		{"pkcs11/token=a", "", `missing "pkcs11:" scheme`},

		// duplicates
		{"pkcs11:token=a;token=b", "token", "more than once"},
		{"pkcs11:id=%01;object=o;id=%01", "id", "more than once"},
		{"pkcs11:?module-path=/a&module-path=/b", "module-path", "more than once"},
		{"pkcs11:?pin-source=/a&pin-source=/a", "pin-source", "more than once"},

		// unknown, vendor and unsupported attributes
		{"pkcs11:tokn=a", "tokn", "unknown attribute"},
		{"pkcs11:Token=a", "Token", "case-sensitive"},
		{"pkcs11:tokn=a", "tokn", "token, serial, slot-id, object, id, type"},
		{"pkcs11:?modul-path=/x", "modul-path", "module-path, pin-source, pin-value"},
		{"pkcs11:x-vendor=1", "x-vendor", "vendor-specific"},
		{"pkcs11:?x-vendor=1", "x-vendor", "not supported by credgw"},
		{"pkcs11:a b=1", `"a b"`, "unknown attribute"},
		{"pkcs11:manufacturer=SoftHSM", "manufacturer", "not supported by credgw"},
		{"pkcs11:model=SoftHSM%20v2", "model", "not supported by credgw"},
		{"pkcs11:library-manufacturer=x", "library-manufacturer", "not supported by credgw"},
		{"pkcs11:library-description=x", "library-description", "not supported by credgw"},
		{"pkcs11:library-version=2.6", "library-version", "not supported by credgw"},
		{"pkcs11:slot-description=x", "slot-description", "not supported by credgw"},
		{"pkcs11:slot-manufacturer=x", "slot-manufacturer", "not supported by credgw"},
		{"pkcs11:?module-name=softhsm2", "module-name", "not supported by credgw"},

		// wrong component
		{"pkcs11:?token=a", "token", "move it before '?'"},
		{"pkcs11:?slot-id=1", "slot-id", "path attribute found in the query"},
		{"pkcs11:module-path=/x.so", "module-path", "move it after '?'"},
		{"pkcs11:token=a;pin-source=/p", "pin-source", "query attribute found in the path"},
		{"pkcs11:pin-value=" + uriTestPIN, "pin-value", "query attribute found in the path"},

		// structure
		{"pkcs11:=a", "", "empty attribute name"},
		{"pkcs11:?=a", "", "empty attribute name"},
		{"pkcs11:token=a;", "", "empty attribute; remove the extra ';'"},
		{"pkcs11:;token=a", "", "empty attribute; remove the extra ';'"},
		{"pkcs11:token=a;;object=b", "", "empty attribute"},
		{"pkcs11:?module-path=/a&", "", "empty attribute; remove the extra '&'"},
		{"pkcs11:token", "token", "missing '='"},
		{"pkcs11:?pin-source", "pin-source", "missing '='"},
		{"pkcs11:token=a&object=b", "token", "contains '&'"},
		{"pkcs11:?module-path=/a;pin-source=/b", "module-path", "contains ';'"},
		{"pkcs11:token=a#frag", "token", "%23"},

		// percent-encoding
		{"pkcs11:token=a%zzb", "token", "invalid percent-encoding"},
		{"pkcs11:token=a%4", "token", "invalid percent-encoding"},
		{"pkcs11:token=a%", "token", "invalid percent-encoding"},
		{"pkcs11:id=%g0", "id", "invalid percent-encoding"},
		{"pkcs11:?module-path=/a%2", "module-path", "invalid percent-encoding"},

		// raw whitespace and control characters
		{"pkcs11:token=a b", "token", "raw space"},
		{"pkcs11:token=a\n", "token", "control character"},
		{"pkcs11:object=\tb", "object", "control character"},
		{"pkcs11:object=a\x7f", "object", "control character"},

		// slot-id
		{"pkcs11:slot-id=-1", "slot-id", "decimal unsigned integer"},
		{"pkcs11:slot-id=+1", "slot-id", "decimal unsigned integer"},
		{"pkcs11:slot-id=1.5", "slot-id", "decimal unsigned integer"},
		{"pkcs11:slot-id=0x10", "slot-id", "decimal unsigned integer"},
		{"pkcs11:slot-id=1e3", "slot-id", "decimal unsigned integer"},
		{"pkcs11:slot-id=1_000", "slot-id", "decimal unsigned integer"},
		{"pkcs11:slot-id=%201", "slot-id", "decimal unsigned integer"},
		{"pkcs11:slot-id=99999999999999999999999", "slot-id", "out of range"},
		{"pkcs11:slot-id=", "slot-id", "empty value"},

		// type
		{"pkcs11:type=privat", "type", "cert, private, public, secret-key, data"},
		{"pkcs11:type=Private", "type", `unknown object type "Private"`},
		{"pkcs11:type=secret", "type", "unknown object type"},
		{"pkcs11:type=", "type", "empty value"},

		// pin-source / pin-value
		{"pkcs11:?pin-source=/p&pin-value=" + uriTestPIN, "pin-value", "mutually exclusive"},
		{"pkcs11:?pin-value=" + uriTestPIN + "&pin-source=/p", "pin-value", "mutually exclusive"},
		{"pkcs11:?pin-source=|/bin/cmd", "pin-source", "commands"},
		{"pkcs11:?pin-source=%7C/bin/cmd", "pin-source", "commands"},
		{"pkcs11:?pin-source=http://example.com/pin", "pin-source", "only a file path"},
		{"pkcs11:?pin-source=https://example.com/pin", "pin-source", "only a file path"},
		{"pkcs11:?pin-source=env:PIN", "pin-source", "only a file path"},
		{"pkcs11:?pin-source=file://host/etc/pin", "pin-source", "remote host"},
		{"pkcs11:?pin-source=file:etc/pin", "pin-source", "absolute path"},
		{"pkcs11:?pin-source=file:", "pin-source", "absolute path"},
		{"pkcs11:?pin-source=file://localhost", "pin-source", "absolute path"},
		{"pkcs11:?pin-source=file:file:/p", "pin-source", "absolute path"},
		{"pkcs11:?pin-source=file:|/bin/cmd", "pin-source", "absolute path"},

		// NUL bytes
		{"pkcs11:token=a%00b", "token", "NUL"},
		{"pkcs11:token=a\x00b", "token", "control character"},
		{"pkcs11:serial=%00", "serial", "NUL"},
		{"pkcs11:object=x%00", "object", "NUL"},
		{"pkcs11:?module-path=/lib%00.so", "module-path", "NUL"},
		{"pkcs11:?pin-source=/p%00", "pin-source", "NUL"},
		{"pkcs11:?pin-value=98%0076", "pin-value", "NUL"},

		// non-UTF-8
		{"pkcs11:token=%FF", "token", "UTF-8"},
		{"pkcs11:object=%C3", "object", "UTF-8"},
		{"pkcs11:serial=\xff", "serial", "UTF-8"},
		{"pkcs11:?module-path=/%80.so", "module-path", "UTF-8"},
		{"pkcs11:?pin-source=/p%C0%AF", "pin-source", "UTF-8"},
		{"pkcs11:?pin-value=%FE%FF", "pin-value", "UTF-8"},

		// empty values
		{"pkcs11:token=", "token", "empty value"},
		{"pkcs11:serial=", "serial", "empty value"},
		{"pkcs11:object=", "object", "empty value"},
		{"pkcs11:id=", "id", "empty value"},
		{"pkcs11:?module-path=", "module-path", "empty value"},
		{"pkcs11:?pin-source=", "pin-source", "empty value"},
		{"pkcs11:?pin-value=", "pin-value", "empty value"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			u, err := ParseURI(tt.in)
			if err == nil {
				t.Fatalf("ParseURI(%q) = %s, want error", tt.in, uriTestDump(u))
			}
			if u != nil {
				t.Errorf("ParseURI(%q) returned a URI with its error", tt.in)
			}
			var ue *URIError
			if !errors.As(err, &ue) {
				t.Fatalf("ParseURI(%q) error %T is not *URIError", tt.in, err)
			}
			if ue.Attr != tt.attr {
				t.Errorf("ParseURI(%q): Attr = %q, want %q (error: %v)", tt.in, ue.Attr, tt.attr, err)
			}
			if !strings.Contains(ue.Reason, tt.reason) {
				t.Errorf("ParseURI(%q): Reason = %q, want it to contain %q", tt.in, ue.Reason, tt.reason)
			}
			want := "pkcs11: invalid URI: " + ue.Reason
			if tt.attr != "" {
				want = "pkcs11: invalid URI: " + tt.attr + ": " + ue.Reason
			}
			if err.Error() != want {
				t.Errorf("Error() = %q, want %q", err.Error(), want)
			}
			if strings.Contains(err.Error(), uriTestPIN) {
				t.Errorf("error %q contains the pin-value", err)
			}
		})
	}
}

func TestURIErrorMessage(t *testing.T) {
	if got, want := (&URIError{Attr: "token", Reason: "empty value"}).Error(), "pkcs11: invalid URI: token: empty value"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if got, want := (&URIError{Reason: "bad"}).Error(), "pkcs11: invalid URI: bad"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// TestParseURIErrorsNeverContainPIN feeds URIs that carry a pin-value and
// are broken in various ways, and checks that no piece of the PIN shows up
// in the error.
func TestParseURIErrorsNeverContainPIN(t *testing.T) {
	tests := []struct {
		in     string
		pieces []string
	}{
		{"pkcs11:token=a?pin-value=12%zz34", []string{"12", "34", "%zz"}},
		{"pkcs11:token=a?pin-value=987%zz654", []string{"987", "654"}},
		{"pkcs11:token=a?pin-value=987654%", []string{uriTestPIN}},
		{"pkcs11:?pin-value=987654&pin-value=987654", []string{uriTestPIN}},
		{"pkcs11:?pin-value=987654&pin-source=/p", []string{uriTestPIN}},
		{"pkcs11:?pin-source=/p&pin-value=987654", []string{uriTestPIN}},
		{"pkcs11:?pin-value=987&654", []string{"987", "654"}},    // unencoded '&' in the PIN
		{"pkcs11:?pin-value=987&x654=1", []string{"987", "654"}}, // ... which looks like an attribute
		{"pkcs11:?pin-value=987&x-654=1", []string{"987", "654"}},
		{"pkcs11:?x-654=1&pin-value=987", []string{"987", "654"}},
		{"pkcs11:?pin-value=987;654", []string{"987", "654"}},
		{"pkcs11:?pin-value=987 654", []string{"987", "654"}},
		{"pkcs11:?pin-value=987654\n", []string{uriTestPIN}},
		{"pkcs11:?pin-value=987#654", []string{"987", "654"}},
		{"pkcs11:?pin-value=987%00654", []string{"987", "654"}},
		{"pkcs11:?pin-value=987%FF654", []string{"987", "654"}},
		{"pkcs11:pin-value=987654", []string{uriTestPIN}},
		{"pkcs11:token=a;pin-value=987654?module-path=/x", []string{uriTestPIN}},
		{"pkcs11:?token=987654&pin-value=987654", []string{uriTestPIN}},
		{"pkcs11:?pin-value=987654&token=a", []string{uriTestPIN}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParseURI(tt.in)
			if err == nil {
				t.Fatalf("ParseURI(%q) succeeded, want error", tt.in)
			}
			for _, p := range tt.pieces {
				if strings.Contains(err.Error(), p) {
					t.Errorf("error %q contains PIN piece %q", err, p)
				}
			}
		})
	}
}

// TestURIPINValueNeverPrinted checks every way a URI might be printed.
func TestURIPINValueNeverPrinted(t *testing.T) {
	parsed, err := ParseURI("pkcs11:token=Alice%20Card;id=%01?module-path=/lib/p11.so&pin-value=" + uriTestPIN)
	if err != nil {
		t.Fatal(err)
	}
	built := (&URI{Token: "t", Object: "o"}).WithPINValue([]byte(uriTestPIN))
	for _, u := range []*URI{parsed, built} {
		if !u.HasPINValue() {
			t.Fatalf("%s: HasPINValue() = false", u)
		}
		type wrapper struct {
			Name string
			URI  URI
			Ptr  *URI
		}
		outputs := map[string]string{
			"String()":   u.String(),
			"GoString()": u.GoString(),
		}
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T %v", "%10.3v"} {
			outputs["ptr "+verb] = fmt.Sprintf(verb, u)
			if verb != "%T %v" {
				outputs["val "+verb] = fmt.Sprintf(verb, *u)
			}
			outputs["slice "+verb] = fmt.Sprintf(verb, []*URI{u})
			outputs["valslice "+verb] = fmt.Sprintf(verb, []URI{*u})
			outputs["map "+verb] = fmt.Sprintf(verb, map[string]URI{"k": *u})
			outputs["struct "+verb] = fmt.Sprintf(verb, wrapper{Name: "w", URI: *u, Ptr: u})
		}
		outputs["Sprint"] = fmt.Sprint(u, *u)
		outputs["Sprintln"] = fmt.Sprintln(u, *u)
		outputs["Errorf"] = fmt.Errorf("opening %v: %w", u, errors.New("x")).Error()
		for what, out := range outputs {
			if strings.Contains(out, uriTestPIN) || strings.Contains(out, "pin-value") {
				t.Errorf("%s = %q leaks the pin-value", what, out)
			}
		}
		if got := fmt.Sprintf("%+v", *u); got != u.String() {
			t.Errorf("%%+v = %q, want String() %q", got, u.String())
		}
		if got := fmt.Sprintf("%#v", u); got != u.String() {
			t.Errorf("%%#v = %q, want String() %q", got, u.String())
		}
		pin, err := u.PIN()
		if err != nil || string(pin) != uriTestPIN {
			t.Errorf("PIN() = %q, %v; want the pin-value", pin, err)
		}
	}
}

func TestURIWithPINValue(t *testing.T) {
	orig := &URI{Token: "t", ID: []byte{1, 2}, SlotID: uriTestSlot(3), PINSource: "/p"}
	pin := []byte(uriTestPIN)
	c := orig.WithPINValue(pin)
	if orig.HasPINValue() {
		t.Error("WithPINValue modified the original")
	}
	if !c.HasPINValue() || !uriTestEqual(orig, c) {
		t.Fatalf("copy = %s, want %s plus pin", uriTestDump(c), uriTestDump(orig))
	}
	pin[0] = 'X'
	c.ID[0] = 9
	*c.SlotID = 9
	if got, _ := c.PIN(); string(got) != uriTestPIN {
		t.Errorf("copy shares the caller's pin slice: PIN() = %q", got)
	}
	if orig.ID[0] != 1 || *orig.SlotID != 3 {
		t.Error("copy shares ID or SlotID with the original")
	}
	got, _ := c.PIN()
	got[0] = 'Y'
	if again, _ := c.PIN(); string(again) != uriTestPIN {
		t.Error("PIN() returns the URI's own slice")
	}
	if c.WithPINValue(nil).HasPINValue() || c.WithPINValue([]byte{}).HasPINValue() {
		t.Error("WithPINValue(nil/empty) kept a pin-value")
	}
	var nilURI *URI
	if u := nilURI.WithPINValue(pin); !u.HasPINValue() || u.String() != "pkcs11:" {
		t.Errorf("nil.WithPINValue = %s", uriTestDump(u))
	}
}

func TestURIPIN(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		content string
		want    string
	}{
		{"newline", uriTestPIN + "\n", uriTestPIN},
		{"crlf", uriTestPIN + "\r\n", uriTestPIN},
		{"no newline", uriTestPIN, uriTestPIN},
		{"only one newline removed", uriTestPIN + "\n\n", uriTestPIN + "\n"},
		{"lone cr kept", uriTestPIN + "\r", uriTestPIN + "\r"},
		{"spaces kept", " " + uriTestPIN + " \n", " " + uriTestPIN + " "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := write(strings.ReplaceAll(tt.name, " ", "_"), tt.content)
			u, err := ParseURI("pkcs11:token=a?pin-source=" + p)
			if err != nil {
				t.Fatal(err)
			}
			got, err := u.PIN()
			if err != nil {
				t.Fatalf("PIN(): %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("PIN() = %q, want %q", got, tt.want)
			}
			// Also through a file: URI.
			u, err = ParseURI("pkcs11:token=a?pin-source=file://" + p)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := u.PIN(); err != nil || string(got) != tt.want {
				t.Errorf("file:// PIN() = %q, %v; want %q", got, err, tt.want)
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		p := filepath.Join(dir, "does-not-exist")
		u := &URI{PINSource: p}
		_, err := u.PIN()
		if err == nil {
			t.Fatal("PIN() succeeded for a missing file")
		}
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not name the file", err)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("error %q is not fs.ErrNotExist", err)
		}
	})
	t.Run("empty file", func(t *testing.T) {
		for _, content := range []string{"", "\n", "\r\n"} {
			p := write("empty", content)
			_, err := (&URI{PINSource: p}).PIN()
			if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "empty") {
				t.Errorf("content %q: PIN() error = %v, want an 'empty' error naming %s", content, err, p)
			}
		}
	})
	t.Run("directory", func(t *testing.T) {
		_, err := (&URI{PINSource: dir}).PIN()
		if err == nil || !strings.Contains(err.Error(), dir) {
			t.Errorf("PIN() error = %v, want an error naming %s", err, dir)
		}
	})
	t.Run("too large", func(t *testing.T) {
		p := write("large", strings.Repeat(uriTestPIN, 1000))
		_, err := (&URI{PINSource: p}).PIN()
		if err == nil || !strings.Contains(err.Error(), p) || strings.Contains(err.Error(), uriTestPIN) {
			t.Errorf("PIN() error = %v, want a size error naming %s without the content", err, p)
		}
	})
	t.Run("neither", func(t *testing.T) {
		if _, err := (&URI{Token: "a"}).PIN(); err == nil || !strings.Contains(err.Error(), "pin-source") {
			t.Errorf("PIN() error = %v, want one mentioning pin-source", err)
		}
		var nilURI *URI
		if _, err := nilURI.PIN(); err == nil {
			t.Error("nil PIN() succeeded")
		}
	})
	t.Run("pin-value preferred", func(t *testing.T) {
		u := (&URI{PINSource: filepath.Join(dir, "does-not-exist")}).WithPINValue([]byte(uriTestPIN))
		if got, err := u.PIN(); err != nil || string(got) != uriTestPIN {
			t.Errorf("PIN() = %q, %v; want the pin-value", got, err)
		}
	})
}

// TestPINSourceFileMode: a pin-source file other users may read, or its
// group change, is refused before it is read; the error names the file and
// its mode, never the PIN.
func TestPINSourceFileMode(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o600, true}, {0o400, true}, {0o640, true}, {0o440, true},
		{0o644, false}, {0o604, false}, {0o660, false}, {0o666, false}, {0o602, false},
	} {
		name := filepath.Join(dir, fmt.Sprintf("pin-%o", tc.mode))
		if err := os.WriteFile(name, []byte(uriTestPIN+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(name, tc.mode); err != nil {
			t.Fatal(err)
		}
		pin, err := (&URI{PINSource: name}).PIN()
		switch {
		case tc.ok && (err != nil || string(pin) != uriTestPIN):
			t.Errorf("mode %o: PIN() = %q, %v; want the PIN", tc.mode, pin, err)
		case !tc.ok && (err == nil || !strings.Contains(err.Error(), "chmod 600") || strings.Contains(err.Error(), uriTestPIN)):
			t.Errorf("mode %o: PIN() = %q, %v; want a refusal saying chmod 600, without the PIN", tc.mode, pin, err)
		}
	}
}
