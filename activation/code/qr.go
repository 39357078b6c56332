package code

import (
	"bytes"
	"compress/zlib"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"

	qr "github.com/piglig/go-qr"
)

// Payload is what the QR code carries:
// credgw://activate?v=1&gw=HOST:PORT&id=ID&k=SECRET&pin=SHA256
type Payload struct {
	// Gateway is the gRPC address the device connects to.
	Gateway string
	// ID is the activation id.
	ID string
	// Secret is the 256-bit activation secret.
	Secret []byte
	// Pin is the SHA-256 of the gateway's TLS trust anchor certificate:
	// the device trusts the gateway through it on first contact.
	Pin []byte
}

// ReasonKeyCertifiedBefore is the google.rpc.ErrorInfo reason (domain
// "credgw") of an InvalidArgument for a CSR whose key the gateway has
// certified before: the device makes a new key and asks again.
const ReasonKeyCertifiedBefore = "KEY_CERTIFIED_BEFORE"

// PayloadVersion is the only version this build reads and writes.
const PayloadVersion = 1

var idRe = regexp.MustCompile(`^[A-Za-z0-9_-]{16,64}$`)

// String encodes the payload.
func (p Payload) String() string {
	// Fixed order: the payload is short and stable.
	return "credgw://activate?v=" + strconv.Itoa(PayloadVersion) + "&gw=" + url.QueryEscape(p.Gateway) + "&id=" + p.ID +
		"&k=" + base64.RawURLEncoding.EncodeToString(p.Secret) + "&pin=" + base64.RawURLEncoding.EncodeToString(p.Pin)
}

// ErrPayload means a QR payload is not a credgw activation.
var ErrPayload = errors.New("activation: not a credgw activation code")

// ParsePayload reads a QR payload strictly: scheme, host, version, each
// parameter exactly once, nothing else, and every value well formed.
func ParsePayload(s string) (Payload, error) {
	bad := func(format string, a ...any) (Payload, error) {
		return Payload{}, fmt.Errorf("%w: %s", ErrPayload, fmt.Sprintf(format, a...))
	}
	if len(s) > 512 {
		return bad("%d characters is too long", len(s))
	}
	const prefix = "credgw://activate?"
	if !strings.HasPrefix(s, prefix) {
		return bad("it must start with %s", prefix)
	}
	// A refusal names a parameter only by a name it knows: a payload
	// damaged on the way (escaped once more, a separator lost) would
	// otherwise put the secret in what the agent prints.
	seen := map[string]string{}
	for i, kv := range strings.Split(s[len(prefix):], "&") {
		k, v, ok := strings.Cut(kv, "=")
		switch k {
		case "v", "gw", "id", "k", "pin":
		default:
			return bad("parameter %d is not one of v, gw, id, k, pin (was the code escaped or cut on the way?)", i+1)
		}
		if !ok {
			return bad("parameter %q has no value", k)
		}
		if _, dup := seen[k]; dup {
			return bad("parameter %q twice", k)
		}
		uv, err := url.QueryUnescape(v)
		if err != nil {
			return bad("parameter %q is not percent-encoded correctly", k)
		}
		seen[k] = uv
	}
	for _, k := range []string{"v", "gw", "id", "k", "pin"} {
		if _, ok := seen[k]; !ok {
			return bad("parameter %q is missing", k)
		}
	}
	if seen["v"] != strconv.Itoa(PayloadVersion) {
		return bad("version %q: this agent reads version %d (update the agent)", seen["v"], PayloadVersion)
	}
	host, port, err := net.SplitHostPort(seen["gw"])
	if err != nil || host == "" || strings.ContainsAny(host, "/@?#") {
		return bad("gateway %q is not host:port", seen["gw"])
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return bad("gateway port %q", port)
	}
	if !idRe.MatchString(seen["id"]) {
		return bad("activation id is malformed")
	}
	secret, err := base64.RawURLEncoding.DecodeString(seen["k"])
	if err != nil || len(secret) < 16 || len(secret) > 64 {
		return bad("secret is not 128 to 512 bits of base64url")
	}
	pin, err := base64.RawURLEncoding.DecodeString(seen["pin"])
	if err != nil || len(pin) != 32 {
		return bad("pin is not a base64url SHA-256")
	}
	return Payload{Gateway: seen["gw"], ID: seen["id"], Secret: secret, Pin: pin}, nil
}

// MaxQRVersion: the payload must fit a QR code of version ≤ 10 at error
// correction M (readable from a screen by any phone camera).
const MaxQRVersion = 10

// QR renders the payload: a PNG and a terminal rendering, both from one
// encoding. The encoder picks the version, the mask of lowest penalty
// (ISO/IEC 18004 §7.8.3) and the highest error correction level, from M
// up, that fits the same version. A positive size is the largest image
// width in pixels; a negative one, pixels per module. Scaling is always by
// an integer, which every reader decodes.
func QR(payload string, size int) (pngData []byte, text string, err error) {
	q, err := encodeQR(payload, MaxQRVersion)
	if errors.Is(err, qr.ErrDataTooLong) {
		needs := "more than QR version 40"
		if v, err := QRVersion(payload); err == nil {
			needs = fmt.Sprintf("QR version %d", v)
		}
		return nil, "", fmt.Errorf("activation: the payload needs %s, more than %d: shorten enrollment.gateway_address", needs, MaxQRVersion)
	}
	if err != nil {
		return nil, "", fmt.Errorf("activation: QR code: %w", err)
	}
	bits := withQuietZone(q)
	scale := -size
	if size > 0 {
		scale = size / len(bits)
	}
	scale = max(scale, 1)
	pngData, err = monoPNG(bits, scale)
	if err != nil {
		return nil, "", err
	}
	return pngData, qrText(bits), nil
}

// monoPNG writes the symbol as a PNG of 1-bit greyscale (PNG §11.2.2:
// colour type 0, bit depth 1; 0 is black), scale pixels a module: the
// modules are packed eight pixels a byte once per module row, and that
// row is written scale times. image/png packs a two-colour image pixel by
// pixel through an interface call, which was half of QR's time (about
// 0.6 ms per enrollment). Tests decode the result with image/png and a
// QR reader.
func monoPNG(bits [][]bool, scale int) ([]byte, error) {
	n := len(bits) * scale
	stride := 1 + (n+7)/8 // the filter byte (0: none), then the pixels
	var buf bytes.Buffer
	buf.Grow(512 + n*stride/16)
	buf.WriteString("\x89PNG\r\n\x1a\n")
	var ihdr [13]byte
	binary.BigEndian.PutUint32(ihdr[0:], uint32(n))
	binary.BigEndian.PutUint32(ihdr[4:], uint32(n))
	ihdr[8] = 1 // bit depth; colour type, compression, filter and interlace 0
	pngChunk(&buf, "IHDR", ihdr[:])
	z, _ := zlibPool.Get().(*zlib.Writer)
	var idat bytes.Buffer
	if z == nil {
		var err error
		if z, err = zlib.NewWriterLevel(&idat, zlib.BestSpeed); err != nil {
			return nil, err
		}
	} else {
		z.Reset(&idat)
	}
	defer func() {
		z.Reset(io.Discard) // the pool holds no image
		zlibPool.Put(z)
	}()
	row := make([]byte, stride)
	for _, modules := range bits {
		clear(row)
		for x := range n {
			if !modules[x/scale] {
				row[1+x/8] |= 0x80 >> (x % 8) // light: white
			}
		}
		if rem := n % 8; rem != 0 {
			row[stride-1] |= 0xff >> rem // padding bits: white
		}
		for range scale {
			if _, err := z.Write(row); err != nil {
				return nil, err
			}
		}
	}
	if err := z.Close(); err != nil {
		return nil, err
	}
	pngChunk(&buf, "IDAT", idat.Bytes())
	pngChunk(&buf, "IEND", nil)
	return buf.Bytes(), nil
}

var zlibPool sync.Pool

// pngChunk appends a PNG chunk: length, type, data, CRC-32 of type and data.
func pngChunk(buf *bytes.Buffer, typ string, data []byte) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(data)))
	buf.Write(n[:])
	crc := crc32.NewIEEE()
	crc.Write([]byte(typ))
	crc.Write(data)
	buf.WriteString(typ)
	buf.Write(data)
	binary.BigEndian.PutUint32(n[:], crc.Sum32())
	buf.Write(n[:])
}

// qrText renders two module rows per text line with half blocks: dark
// modules are blanks (the terminal's dark background), light ones blocks,
// so a camera reads it off a terminal.
func qrText(bits [][]bool) string {
	var b strings.Builder
	for y := 0; y < len(bits); y += 2 {
		for x := range bits[y] {
			top, bottom := bits[y][x], true // below the symbol: terminal background
			if y+1 < len(bits) {
				bottom = bits[y+1][x]
			}
			switch {
			case top && bottom:
				b.WriteString(" ")
			case top:
				b.WriteString("▄")
			case bottom:
				b.WriteString("▀")
			default:
				b.WriteString("█")
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// quietZone is the light border around the symbol, in modules
// (ISO/IEC 18004 §6.3.8).
const quietZone = 4

// encodeQR encodes payload at error correction level M or higher, in the
// smallest version that holds it, up to maxVersion.
func encodeQR(payload string, maxVersion int) (*qr.QrCode, error) {
	segs, err := qr.MakeSegments(payload)
	if err != nil {
		return nil, err
	}
	return qr.EncodeSegments(segs, qr.Medium, qr.MinVersion, maxVersion, -1, true)
}

// withQuietZone returns the symbol's modules, dark as true, with the quiet
// zone around them.
func withQuietZone(q *qr.QrCode) [][]bool {
	n := q.Size() + 2*quietZone
	cells := make([]bool, n*n)
	bits := make([][]bool, n)
	for y := range bits {
		bits[y] = cells[y*n : (y+1)*n]
		if y < quietZone || y >= n-quietZone {
			continue
		}
		for x := quietZone; x < n-quietZone; x++ {
			bits[y][x] = q.Module(x-quietZone, y-quietZone)
		}
	}
	return bits
}

// QRVersion reports the QR version a payload needs at level M.
func QRVersion(payload string) (int, error) {
	q, err := encodeQR(payload, qr.MaxVersion)
	if err != nil {
		return 0, err
	}
	return (q.Size() - 17) / 4, nil // a version-v symbol is 17+4v modules wide
}
