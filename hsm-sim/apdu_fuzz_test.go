package hsmsim

import (
	"bytes"
	"testing"
)

// FuzzParseCommand: the APDU parser never panics, and what it accepts
// re-encodes to the bytes it was given.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{
		"00A40400", "00C0000000", "00200080083132333435363738", "00CB3FFF055C035FC10500",
		"00CB3FFF000000", "00CB3FFF0000055C035FC1050000", "1087119A057C03820000",
	} {
		f.Add(h(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCommand(b)
		if err != nil {
			return
		}
		if got := encodeCommand(c); !bytes.Equal(got, b) {
			t.Fatalf("ParseCommand(%x) = %+v, re-encoded %x", b, c, got)
		}
		_, _ = parseTLVs(c.Data)
	})
}

// FuzzPIVTLV: the BER-TLV parser never panics and never returns a value
// that is not inside its input.
func FuzzPIVTLV(f *testing.F) {
	f.Add(h("7C 06 82 00 81 02 AAAA"))
	f.Add(h("53 82 0004 70 02 3000"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tlvs, err := parseTLVs(b)
		if err != nil {
			return
		}
		n := 0
		for _, x := range tlvs {
			n += len(x.Value)
		}
		if n > len(b) {
			t.Fatalf("values of %d bytes from %d bytes of input", n, len(b))
		}
	})
}

func encodeCommand(c Command) []byte {
	out := []byte{c.CLA, c.INS, c.P1, c.P2}
	if !c.Extended {
		if len(c.Data) > 0 {
			out = append(out, byte(len(c.Data)))
			out = append(out, c.Data...)
		}
		if c.HasLe {
			out = append(out, byte(c.Le))
		}
		return out
	}
	out = append(out, 0)
	if len(c.Data) > 0 {
		out = append(out, byte(len(c.Data)>>8), byte(len(c.Data)))
		out = append(out, c.Data...)
	}
	if c.HasLe {
		out = append(out, byte(c.Le>>8), byte(c.Le))
	}
	return out
}
