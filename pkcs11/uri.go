package pkcs11

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ObjectType is the RFC 7512 "type" attribute.
type ObjectType string

// The object types RFC 7512 §2.3 defines. TypeAny (the attribute is absent)
// matches every object class.
const (
	TypeAny       ObjectType = ""
	TypeCert      ObjectType = "cert"
	TypePrivate   ObjectType = "private"
	TypePublic    ObjectType = "public"
	TypeSecretKey ObjectType = "secret-key"
	TypeData      ObjectType = "data"
)

// URI is a parsed RFC 7512 "pkcs11:" URI, restricted to the attributes
// credgw acts on. ParseURI rejects every other attribute instead of
// ignoring it, so nobody believes an attribute filters when it does not.
//
// A URI never prints its pin-value: String, GoString and every fmt verb
// (including %+v and %#v) print the canonical form without it.
type URI struct {
	Token  string     // path attribute "token" (token label)
	Serial string     // path attribute "serial" (token serial number)
	SlotID *uint      // path attribute "slot-id" (decimal, RFC 7512 §2.3); nil if absent
	Object string     // path attribute "object" (CKA_LABEL)
	ID     []byte     // path attribute "id" (CKA_ID, any bytes); nil if absent
	Type   ObjectType // path attribute "type"

	ModulePath string // query attribute "module-path"
	// PINSource is the query attribute "pin-source". Only a file is
	// supported: a plain path, or a "file:" URI whose "file:" (and empty or
	// "localhost" authority) ParseURI strips, so PINSource is always a path.
	PINSource string

	// pinValue is the query attribute "pin-value" (meant for tests). It is
	// unexported so it cannot be printed or marshalled by accident.
	pinValue []byte
}

// URIError is returned by ParseURI. Its message never contains a PIN.
type URIError struct {
	Attr   string // the attribute at fault; empty if the problem is not tied to one
	Reason string // what is wrong and how to fix it
}

func (e *URIError) Error() string {
	if e.Attr == "" {
		return "pkcs11: invalid URI: " + e.Reason
	}
	return "pkcs11: invalid URI: " + e.Attr + ": " + e.Reason
}

const uriScheme = "pkcs11:"

// uriMaxPINFile bounds how much of a pin-source file PIN reads, so a
// mistaken path such as /dev/zero fails instead of exhausting memory.
const uriMaxPINFile = 4096

type uriAttrKind int

const (
	uriPathAttr uriAttrKind = iota + 1
	uriQueryAttr
)

// uriSupported lists the attributes credgw understands and where they go.
var uriSupported = map[string]uriAttrKind{
	"token":       uriPathAttr,
	"serial":      uriPathAttr,
	"slot-id":     uriPathAttr,
	"object":      uriPathAttr,
	"id":          uriPathAttr,
	"type":        uriPathAttr,
	"module-path": uriQueryAttr,
	"pin-source":  uriQueryAttr,
	"pin-value":   uriQueryAttr,
}

// uriUnsupported lists RFC 7512 attributes that credgw deliberately
// rejects, with a hint on what to use instead.
var uriUnsupported = map[string]string{
	"manufacturer":         "select the token with token=, serial= or slot-id=",
	"model":                "select the token with token=, serial= or slot-id=",
	"library-manufacturer": "name the module with module-path=",
	"library-description":  "name the module with module-path=",
	"library-version":      "name the module with module-path=",
	"slot-description":     "select the slot with slot-id= or the token with token= or serial=",
	"slot-manufacturer":    "select the slot with slot-id= or the token with token= or serial=",
	"module-name":          "name the module by its full path with module-path=",
}

const uriSupportedList = "supported path attributes (before '?', separated by ';'): " +
	"token, serial, slot-id, object, id, type; " +
	"supported query attributes (after '?', separated by '&'): module-path, pin-source, pin-value"

// ParseURI parses an RFC 7512 PKCS #11 URI such as
//
//	pkcs11:token=My%20Token;id=%01;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/etc/credgw/pin
//
// The scheme is case-insensitive; attribute names and type values are not.
// ParseURI is strict: unknown, unsupported, vendor-specific ("x-") and
// duplicate attributes, path attributes in the query (and vice versa),
// empty values, malformed percent-encoding, NUL bytes and invalid UTF-8 in
// textual values, raw spaces and control characters, and a pin-source that
// is not a file are all errors of type *URIError. Errors never contain the
// pin-value.
func ParseURI(s string) (*URI, error) {
	if len(s) < len(uriScheme) || !strings.EqualFold(s[:len(uriScheme)], uriScheme) {
		return nil, &URIError{Reason: `missing "pkcs11:" scheme; a PKCS #11 URI looks like ` +
			`pkcs11:token=My%20Token;object=my-key?module-path=/usr/lib/softhsm/libsofthsm2.so`}
	}
	path, query, _ := strings.Cut(s[len(uriScheme):], "?")
	u := &URI{}
	seen := make(map[string]bool)
	if path != "" {
		for seg := range strings.SplitSeq(path, ";") {
			if err := u.parseAttr(seg, uriPathAttr, seen, true); err != nil {
				return nil, err
			}
		}
	}
	if query != "" {
		// With a pin-value present, a malformed query attribute might be
		// a piece of the PIN (say, an unencoded '&' in it), so unknown
		// query attribute names are only echoed when there is no pin-value.
		echo := !uriQueryHasPINValue(query)
		for seg := range strings.SplitSeq(query, "&") {
			if err := u.parseAttr(seg, uriQueryAttr, seen, echo); err != nil {
				return nil, err
			}
		}
	}
	if u.PINSource != "" && u.pinValue != nil {
		return nil, &URIError{Attr: "pin-value", Reason: "pin-source and pin-value are mutually exclusive; keep only one (pin-source is preferred outside tests)"}
	}
	return u, nil
}

// uriQueryHasPINValue reports whether any query attribute is named pin-value.
func uriQueryHasPINValue(query string) bool {
	for seg := range strings.SplitSeq(query, "&") {
		if name, _, _ := strings.Cut(seg, "="); name == "pin-value" {
			return true
		}
	}
	return false
}

// uriDisplayName returns an attribute name from the input in a form that is
// safe to put in an error message.
func uriDisplayName(name string) string {
	const maxLen = 40
	plain := len(name) <= maxLen
	for i := 0; plain && i < len(name); i++ {
		c := name[i]
		plain = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.'
	}
	if plain {
		return name
	}
	return uriQuote(name)
}

// uriQuote quotes s, cut to 40 bytes, for an error message.
func uriQuote(s string) string {
	const maxLen = 40
	if len(s) > maxLen {
		s = s[:maxLen] + "..."
	}
	return strconv.Quote(s)
}

// parseAttr parses one "name=value" segment found in the path or the query
// and stores it in u. echo says whether an unrecognised name may appear in
// the error.
func (u *URI) parseAttr(seg string, where uriAttrKind, seen map[string]bool, echo bool) error {
	sep, other := ";", "&"
	if where == uriQueryAttr {
		sep, other = "&", ";"
	}
	if seg == "" {
		return &URIError{Reason: "empty attribute; remove the extra '" + sep + "'"}
	}
	name, raw, hasEq := strings.Cut(seg, "=")
	if name == "" {
		return &URIError{Reason: "empty attribute name before '='"}
	}
	kind, ok := uriSupported[name]
	if !ok {
		attr := ""
		if echo {
			attr = uriDisplayName(name)
		}
		if hint, rfc := uriUnsupported[name]; rfc {
			return &URIError{Attr: attr, Reason: "RFC 7512 attribute not supported by credgw (it would not filter anything); remove it and " + hint}
		}
		if strings.HasPrefix(name, "x-") {
			return &URIError{Attr: attr, Reason: "vendor-specific (x-) attributes are not supported by credgw; " + uriSupportedList}
		}
		reason := "unknown attribute (names are case-sensitive); " + uriSupportedList
		if !echo {
			reason = "unknown query attribute (its name is not shown because the URI has a pin-value); " + uriSupportedList
		}
		return &URIError{Attr: attr, Reason: reason}
	}
	if kind != where {
		if kind == uriPathAttr {
			return &URIError{Attr: name, Reason: "path attribute found in the query; move it before '?' and separate path attributes with ';'"}
		}
		return &URIError{Attr: name, Reason: "query attribute found in the path; move it after '?' and separate query attributes with '&'"}
	}
	if seen[name] {
		return &URIError{Attr: name, Reason: "attribute appears more than once; keep only one"}
	}
	seen[name] = true
	if !hasEq {
		return &URIError{Attr: name, Reason: "missing '='; write " + name + "=<value>"}
	}
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; {
		case c <= ' ' || c == 0x7f:
			return &URIError{Attr: name, Reason: "value contains a raw space or control character; percent-encode it (a space is %20)"}
		case c == '#':
			return &URIError{Attr: name, Reason: "value contains '#'; percent-encode it as %23"}
		case c == other[0]:
			enc := "%3B"
			if other == "&" {
				enc = "%26"
			}
			return &URIError{Attr: name, Reason: "value contains '" + other + "', which does not separate attributes here; separate attributes with '" + sep + "', or percent-encode a literal '" + other + "' as " + enc}
		}
	}
	val, ok := uriUnescape(raw)
	if !ok {
		return &URIError{Attr: name, Reason: "invalid percent-encoding: each '%' must be followed by two hexadecimal digits (write a literal '%' as %25)"}
	}
	if len(val) == 0 {
		return &URIError{Attr: name, Reason: "empty value; give a value or leave the attribute out"}
	}
	if name != "id" {
		if bytes.IndexByte(val, 0) >= 0 {
			return &URIError{Attr: name, Reason: "value contains a NUL byte (%00), which is not allowed in textual attributes"}
		}
		if !utf8.Valid(val) {
			return &URIError{Attr: name, Reason: "value is not valid UTF-8 after percent-decoding; only id may hold arbitrary bytes"}
		}
	}
	switch name {
	case "token":
		u.Token = string(val)
	case "serial":
		u.Serial = string(val)
	case "object":
		u.Object = string(val)
	case "id":
		u.ID = val
	case "slot-id":
		s := string(val)
		for i := 0; i < len(s); i++ {
			if s[i] < '0' || s[i] > '9' {
				return &URIError{Attr: name, Reason: "must be a decimal unsigned integer such as slot-id=0 (RFC 7512 §2.3)"}
			}
		}
		n, err := strconv.ParseUint(s, 10, strconv.IntSize)
		if err != nil {
			return &URIError{Attr: name, Reason: "decimal value out of range for a slot ID"}
		}
		id := uint(n)
		u.SlotID = &id
	case "type":
		switch t := ObjectType(val); t {
		case TypeCert, TypePrivate, TypePublic, TypeSecretKey, TypeData:
			u.Type = t
		default:
			return &URIError{Attr: name, Reason: "unknown object type " + uriQuote(string(val)) + "; use one of cert, private, public, secret-key, data"}
		}
	case "module-path":
		u.ModulePath = string(val)
	case "pin-source":
		p, reason := uriPINSourcePath(string(val))
		if reason != "" {
			return &URIError{Attr: name, Reason: reason}
		}
		u.PINSource = p
	case "pin-value":
		u.pinValue = val
	}
	return nil
}

// uriPINSourcePath turns a pin-source value into a file path, or returns
// why it is not one.
func uriPINSourcePath(v string) (path, reason string) {
	const fileScheme = "file:"
	if len(v) >= len(fileScheme) && strings.EqualFold(v[:len(fileScheme)], fileScheme) {
		p := v[len(fileScheme):]
		if rest, ok := strings.CutPrefix(p, "//"); ok {
			host, tail, found := strings.Cut(rest, "/")
			if host != "" && !strings.EqualFold(host, "localhost") {
				return "", "file: URIs naming a remote host are not supported; use file:/absolute/path or a plain path"
			}
			p = ""
			if found {
				p = "/" + tail
			}
		}
		if !strings.HasPrefix(p, "/") {
			return "", "a file: pin-source must name an absolute path, such as file:/etc/credgw/pin"
		}
		return p, ""
	}
	if strings.HasPrefix(v, "|") {
		return "", "commands (|program) are not supported; put the PIN in a file and give its path, such as pin-source=/etc/credgw/pin"
	}
	if uriHasScheme(v) {
		return "", "only a file path or a file: URI is supported; put the PIN in a file and give its path, such as pin-source=/etc/credgw/pin"
	}
	return v, ""
}

// uriHasScheme reports whether s starts with a URI scheme of two or more
// characters followed by ':' (a single letter is taken as a drive letter).
func uriHasScheme(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		case c == ':':
			return i >= 2
		default:
			return false
		}
	}
	return false
}

func uriUnhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// uriUnescape percent-decodes s; ok is false if a '%' is not followed by two
// hex digits.
func uriUnescape(s string) (b []byte, ok bool) {
	b = make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b = append(b, s[i])
			continue
		}
		if i+2 >= len(s) {
			return nil, false
		}
		hi, ok1 := uriUnhex(s[i+1])
		lo, ok2 := uriUnhex(s[i+2])
		if !ok1 || !ok2 {
			return nil, false
		}
		b = append(b, hi<<4|lo)
		i += 2
	}
	return b, true
}

const uriHexDigits = "0123456789ABCDEF"

// uriEscape appends s to b, percent-encoding every byte outside RFC 7512's
// unreserved set and ':', '@', ',' (and '/' in the query).
func uriEscape(b *strings.Builder, s string, query bool) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '-', c == '.', c == '_', c == '~', c == ':', c == '@', c == ',',
			c == '/' && query:
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(uriHexDigits[c>>4])
			b.WriteByte(uriHexDigits[c&0xf])
		}
	}
}

// String returns the canonical form of u: "pkcs11:", the path attributes
// in the order token, serial, slot-id, object, id, type, then "?" and
// module-path and pin-source. It never includes the pin-value.
func (u *URI) String() string {
	if u == nil {
		return "<nil>"
	}
	var b strings.Builder
	b.WriteString(uriScheme)
	sep := ""
	attr := func(name string) {
		b.WriteString(sep)
		b.WriteString(name)
		b.WriteByte('=')
		sep = ";"
	}
	if u.Token != "" {
		attr("token")
		uriEscape(&b, u.Token, false)
	}
	if u.Serial != "" {
		attr("serial")
		uriEscape(&b, u.Serial, false)
	}
	if u.SlotID != nil {
		attr("slot-id")
		b.WriteString(strconv.FormatUint(uint64(*u.SlotID), 10))
	}
	if u.Object != "" {
		attr("object")
		uriEscape(&b, u.Object, false)
	}
	if len(u.ID) > 0 {
		attr("id")
		for _, c := range u.ID {
			b.WriteByte('%')
			b.WriteByte(uriHexDigits[c>>4])
			b.WriteByte(uriHexDigits[c&0xf])
		}
	}
	if u.Type != TypeAny {
		attr("type")
		uriEscape(&b, string(u.Type), false)
	}
	sep = "?"
	if u.ModulePath != "" {
		b.WriteString(sep)
		b.WriteString("module-path=")
		uriEscape(&b, u.ModulePath, true)
		sep = "&"
	}
	if u.PINSource != "" {
		b.WriteString(sep)
		b.WriteString("pin-source=")
		uriEscape(&b, u.PINSource, true)
	}
	return b.String()
}

// GoString returns the same as String, so %#v never shows the pin-value.
func (u *URI) GoString() string { return u.String() }

// Format writes String() for every verb, so that no fmt verb (%+v and %#v
// included) prints the unexported pin-value.
func (u URI) Format(f fmt.State, verb rune) {
	_, _ = io.WriteString(f, u.String())
}

// HasPINValue reports whether u carries a pin-value.
func (u *URI) HasPINValue() bool { return u != nil && len(u.pinValue) > 0 }

// WithPINValue returns a copy of u carrying pin as its pin-value (tests;
// piv.OpenCard, which reads a pin-source once). The copy owns its own copies of pin and of u's ID; a nil or empty
// pin gives a copy without a pin-value. PIN prefers the pin-value over
// PINSource.
func (u *URI) WithPINValue(pin []byte) *URI {
	c := &URI{}
	if u != nil {
		*c = *u
	}
	if c.ID != nil {
		c.ID = bytes.Clone(c.ID)
	}
	if c.SlotID != nil {
		id := *c.SlotID
		c.SlotID = &id
	}
	c.pinValue = nil
	if len(pin) > 0 {
		c.pinValue = bytes.Clone(pin)
	}
	return c
}

// PIN returns the PIN: the pin-value if u has one, else the contents of the
// pin-source file with one trailing "\n" or "\r\n" removed. It is an error
// if u has neither, or if the file is unreadable, empty or larger than
// 4096 bytes. Errors name the file but never contain the PIN.
func (u *URI) PIN() ([]byte, error) {
	if u == nil {
		return nil, errors.New("pkcs11: nil URI has no PIN")
	}
	if len(u.pinValue) > 0 {
		return bytes.Clone(u.pinValue), nil
	}
	if u.PINSource == "" {
		return nil, errors.New("pkcs11: URI has neither pin-source nor pin-value; add ?pin-source=/path/to/pin-file")
	}
	name := u.PINSource
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: pin-source file %q: cannot open: %w", name, uriUnwrapPath(err))
	}
	defer f.Close()
	// Like ssh with its keys: a PIN other users may read (or the group
	// change) is refused, before it is read.
	if st, err := f.Stat(); err != nil {
		return nil, fmt.Errorf("pkcs11: pin-source file %q: %w", name, uriUnwrapPath(err))
	} else if perm := st.Mode().Perm(); perm&0o027 != 0 {
		return nil, fmt.Errorf("pkcs11: pin-source file %s has mode %v: other users may read or change the PIN in it; "+
			"make it 0600 (chmod 600) for the gateway's user, or 0640 with the gateway's own group", name, perm)
	}
	data, err := io.ReadAll(io.LimitReader(f, uriMaxPINFile+1))
	if err != nil {
		clear(data)
		return nil, fmt.Errorf("pkcs11: pin-source file %q: cannot read: %w", name, uriUnwrapPath(err))
	}
	if len(data) > uriMaxPINFile {
		clear(data)
		return nil, fmt.Errorf("pkcs11: pin-source file %q is larger than %d bytes; it must contain only the PIN", name, uriMaxPINFile)
	}
	if n := len(data); n > 0 && data[n-1] == '\n' {
		n--
		if n > 0 && data[n-1] == '\r' {
			n--
		}
		clear(data[n:])
		data = data[:n]
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("pkcs11: pin-source file %q is empty; it must contain the PIN", name)
	}
	return data, nil
}

// uriUnwrapPath drops the *fs.PathError layer (whose message repeats the
// file name) and keeps its cause, so errors.Is(err, fs.ErrNotExist) works.
func uriUnwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
