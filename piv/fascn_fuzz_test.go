package piv

import (
	"bytes"
	"encoding/hex"
	"testing"
)

// FuzzParseFASCN checks that ParseFASCN never panics and that whatever it
// accepts re-encodes to exactly the same bytes.
func FuzzParseFASCN(f *testing.F) {
	for _, s := range []string{testFASCNHex, handFASCNHex} {
		b, err := hex.DecodeString(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:24])
		flipped := bytes.Clone(b)
		flipped[10] ^= 0x04
		f.Add(flipped)
	}
	f.Add([]byte{})
	f.Add(make([]byte, 25))
	f.Add(bytes.Repeat([]byte{0xFF}, 25))

	f.Fuzz(func(t *testing.T, b []byte) {
		// Anything but 25 bytes fails ParseFASCN's first check (see
		// TestParseFASCNLengths). Long inputs are skipped because the length
		// in the error text makes each new digit count "new coverage", and
		// minimising such an input costs the fuzzer whole seconds.
		if len(b) > 2*fascnBytes {
			return
		}
		fascn, err := ParseFASCN(b)
		if err != nil {
			return
		}
		out, err := fascn.Marshal()
		if err != nil {
			t.Fatalf("ParseFASCN(%X) = %v, but Marshal fails: %v", b, fascn, err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("ParseFASCN(%X) = %v, Marshal = %X", b, fascn, out)
		}
		if len(fascn.Identifier()) != 14 {
			t.Fatalf("Identifier %q is not 14 digits", fascn.Identifier())
		}
	})
}
