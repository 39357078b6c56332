package piv

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// FuzzParseSAN checks that ParseSAN never panics and that whatever it
// accepts and MarshalSAN can re-encode decodes back to the same SAN.
func FuzzParseSAN(f *testing.F) {
	fascn := mustHex(f, testFASCNHex)
	for _, s := range []SAN{
		testSAN(f),
		{DNSNames: []string{"a.example", strings.Repeat("b", 200)}, URIs: []string{"https://x/"}},
		{UPNs: []string{"ü@x"}, UUIDs: []string{testUUID, "00000000-0000-0000-0000-000000000000"}},
	} {
		ext, err := MarshalSAN(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(ext.Value)
		f.Add(ext.Value[:len(ext.Value)-1])
	}
	f.Add(generalNames(
		otherName(derOIDOther, tlv(0x04, []byte("x"))),
		tlv(0xA4, tlv(0x30)),
		tlv(0x87, []byte{127, 0, 0, 1}),
		tlv(0x86, []byte("URN:UUID:"+strings.ToUpper(testUUID))),
		otherName(derOIDFASCN, tlv(0x04, fascn)),
	))
	f.Add(generalNames(otherName(derOIDFASCN, tlv(0x04, fascn)), otherName(derOIDFASCN, tlv(0x04, fascn))))
	f.Add(generalNames(otherName(derOIDUPN, tlv(0x13, []byte("a@b")))))
	f.Add([]byte{})
	f.Add([]byte{0x30, 0x00})

	f.Fuzz(func(t *testing.T, value []byte) {
		s, err := ParseSAN(value)
		if err != nil {
			return
		}
		ext, err := MarshalSAN(s)
		if err != nil {
			return // empty, or names MarshalSAN refuses to write (e.g. a relative URI)
		}
		again, err := ParseSAN(ext.Value)
		if err != nil {
			t.Fatalf("ParseSAN(%X) = %#v; ParseSAN(MarshalSAN) = %v", value, s, err)
		}
		if !reflect.DeepEqual(again, s) {
			t.Fatalf("ParseSAN(%X) = %#v; after MarshalSAN round trip %#v", value, s, again)
		}
		ext2, err := MarshalSAN(again)
		if err != nil || !bytes.Equal(ext2.Value, ext.Value) {
			t.Fatalf("MarshalSAN not stable: %X vs %X (%v)", ext.Value, ext2.Value, err)
		}
	})
}
