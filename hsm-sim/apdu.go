package hsmsim

import (
	"errors"
	"fmt"
)

// Command is a parsed ISO/IEC 7816-4 command APDU, short or extended.
type Command struct {
	CLA, INS, P1, P2 byte
	Data             []byte
	// Le is the expected response length (256 or 65536 for "as much as
	// there is"); HasLe says whether the command carried an Le field.
	Le       int
	HasLe    bool
	Extended bool
}

// Chained reports whether the command is a non-final part of a chain
// (CLA bit 0x10, ISO/IEC 7816-4 §5.1.1).
func (c Command) Chained() bool { return c.CLA&0x10 != 0 }

var errAPDULength = errors.New("hsmsim: APDU length fields do not match its size")

// ParseCommand decodes a command APDU in any of the four ISO/IEC 7816-3
// cases, short (Lc, Le one byte) or extended (Lc, Le on two or three bytes).
func ParseCommand(b []byte) (Command, error) {
	if len(b) < 4 {
		return Command{}, fmt.Errorf("hsmsim: APDU of %d bytes is shorter than its header", len(b))
	}
	c := Command{CLA: b[0], INS: b[1], P1: b[2], P2: b[3]}
	body := b[4:]
	switch {
	case len(body) == 0: // case 1
		return c, nil
	case len(body) == 1: // case 2S
		c.Le, c.HasLe = shortLe(body[0]), true
		return c, nil
	case body[0] != 0: // case 3S or 4S
		lc := int(body[0])
		switch len(body) {
		case 1 + lc:
		case 2 + lc:
			c.Le, c.HasLe = shortLe(body[1+lc]), true
		default:
			return Command{}, errAPDULength
		}
		c.Data = body[1 : 1+lc]
		return c, nil
	}
	// Extended: body[0] is 00.
	c.Extended = true
	if len(body) == 3 { // case 2E
		c.Le, c.HasLe = extLe(body[1], body[2]), true
		return c, nil
	}
	if len(body) < 4 {
		return Command{}, errAPDULength
	}
	lc := int(body[1])<<8 | int(body[2])
	if lc == 0 {
		return Command{}, errAPDULength
	}
	switch len(body) {
	case 3 + lc:
	case 5 + lc:
		c.Le, c.HasLe = extLe(body[3+lc], body[4+lc]), true
	default:
		return Command{}, errAPDULength
	}
	c.Data = body[3 : 3+lc]
	return c, nil
}

func shortLe(b byte) int {
	if b == 0 {
		return 256
	}
	return int(b)
}

func extLe(hi, lo byte) int {
	n := int(hi)<<8 | int(lo)
	if n == 0 {
		return 65536
	}
	return n
}

// Status words the card application answers.
const (
	swOK                  = 0x9000
	swWrongLength         = 0x6700
	swSecurityNotSatisfed = 0x6982
	swAuthBlocked         = 0x6983
	swWrongData           = 0x6A80
	swFileNotFound        = 0x6A82
	swIncorrectP1P2       = 0x6A86
	swRefNotFound         = 0x6A88
	swLastCommandExpected = 0x6883
	swINSNotSupported     = 0x6D00
	swCLANotSupported     = 0x6E00
	swNoPreciseDiagnosis  = 0x6F00
	swConditionsNotMet    = 0x6985
)

// TLV is one BER-TLV data object (tags of one to three bytes).
type TLV struct {
	Tag   uint32
	Value []byte
}

// parseTLVs decodes a sequence of BER-TLV objects.
func parseTLVs(b []byte) ([]TLV, error) {
	var out []TLV
	for len(b) > 0 {
		tag := uint32(b[0])
		i := 1
		if b[0]&0x1F == 0x1F {
			for {
				if i >= len(b) || i > 3 {
					return nil, errors.New("hsmsim: BER-TLV tag too long")
				}
				tag = tag<<8 | uint32(b[i])
				i++
				if b[i-1]&0x80 == 0 {
					break
				}
			}
		}
		if i >= len(b) {
			return nil, errors.New("hsmsim: BER-TLV without length")
		}
		n := int(b[i])
		i++
		switch {
		case n < 0x80:
		case n == 0x81 && i < len(b):
			n = int(b[i])
			i++
		case n == 0x82 && i+1 < len(b):
			n = int(b[i])<<8 | int(b[i+1])
			i += 2
		default:
			return nil, errors.New("hsmsim: BER-TLV length not supported")
		}
		if n > len(b)-i {
			return nil, errors.New("hsmsim: BER-TLV value runs past the data")
		}
		out = append(out, TLV{Tag: tag, Value: b[i : i+n]})
		b = b[i+n:]
	}
	return out, nil
}

// tlv encodes one BER-TLV object.
func tlv(tag uint32, value ...[]byte) []byte {
	var v []byte
	for _, p := range value {
		v = append(v, p...)
	}
	var out []byte
	switch {
	case tag > 0xFFFF:
		out = append(out, byte(tag>>16), byte(tag>>8), byte(tag))
	case tag > 0xFF:
		out = append(out, byte(tag>>8), byte(tag))
	default:
		out = append(out, byte(tag))
	}
	switch n := len(v); {
	case n < 0x80:
		out = append(out, byte(n))
	case n <= 0xFF:
		out = append(out, 0x81, byte(n))
	default:
		out = append(out, 0x82, byte(n>>8), byte(n))
	}
	return append(out, v...)
}
