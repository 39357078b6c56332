package hsmsim

//lint:file-ignore SA1019 the test encrypts to a card's RSA key management key (9D) with PKCS#1 v1.5, as PIV does

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/credgw/credgw/pkcs11"
)

func openPIVCard(t *testing.T, kt pkcs11.KeyType, tries int) (*PIVCard, *CardInfo) {
	t.Helper()
	info := newCard(t, CardSpec{Key: kt, Email: "piv@example.com", Name: "piv-" + kt.String() + "-" + strings.ReplaceAll(time.Now().Format("150405.000000"), ".", "")})
	c, err := testEnv.OpenPIVCard(context.Background(), testModule, info.Name, PIVCardOptions{PINTries: tries})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, info
}

func h(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// tx sends an APDU and splits the response into data and status word.
func tx(t *testing.T, c *PIVCard, apdu []byte) ([]byte, int) {
	t.Helper()
	r := c.Transmit(context.Background(), apdu)
	if len(r) < 2 {
		t.Fatalf("response %x has no status word", r)
	}
	return r[:len(r)-2], int(r[len(r)-2])<<8 | int(r[len(r)-1])
}

// txAll sends an APDU and collects the whole response through GET RESPONSE.
func txAll(t *testing.T, c *PIVCard, apdu []byte) ([]byte, int) {
	t.Helper()
	data, s := tx(t, c, apdu)
	for s&0xFF00 == 0x6100 {
		var more []byte
		more, s = tx(t, c, []byte{0x00, 0xC0, 0x00, 0x00, byte(s)})
		data = append(data, more...)
	}
	return data, s
}

var pinAPDU = h("00 20 00 80 08 3132333435363738")

func getDataAPDU(tag []byte) []byte {
	body := tlv(0x5C, tag)
	return append(append([]byte{0x00, 0xCB, 0x3F, 0xFF, byte(len(body))}, body...), 0x00)
}

func TestPIVCardSelectAndGetData(t *testing.T) {
	c, info := openPIVCard(t, pkcs11.ECP256, 0)
	cert9A, err := testEnv.CardCertificate(info.Name, "9a")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		apdu   []byte
		sw     int
		prefix []byte // the response starts with
		check  func(t *testing.T, data []byte)
	}{
		{"select PIV (partial AID)", h("00 A4 04 00 09 A000000308000010 00 00"), 0x9000, h("61"), func(t *testing.T, d []byte) {
			if !bytes.Contains(d, h("4F 06 000010000100")) || !bytes.Contains(d, h("79 07 4F 05 A000000308")) {
				t.Errorf("APT %x lacks the PIX or the authority", d)
			}
		}},
		{"select PIV (full AID)", append(append([]byte{0, 0xA4, 4, 0, 11}, PIVAID...), 0), 0x9000, h("61"), nil},
		{"select another application", h("00 A4 04 00 07 A0000000790100 00"), 0x6A82, nil, nil},
		{"discovery object", getDataAPDU([]byte{0x7E}), 0x9000, h("7E 12 4F 0B A0000003080000100001 00 5F2F 02 4000"), nil},
		{"CHUID", getDataAPDU(h("5FC102")), 0x9000, h("53"), func(t *testing.T, d []byte) {
			fascn, _ := hex.DecodeString(info.FASCN)
			guid, _ := hex.DecodeString(strings.ReplaceAll(info.UUID, "-", ""))
			if !bytes.Contains(d, append([]byte{0x30, 25}, fascn...)) || !bytes.Contains(d, append([]byte{0x34, 16}, guid...)) {
				t.Errorf("CHUID %x lacks the FASC-N or the GUID", d)
			}
		}},
		{"CCC", getDataAPDU(h("5FC107")), 0x9000, h("53"), nil},
		{"printed information is absent", getDataAPDU(h("5FC109")), 0x6A82, nil, nil},
		{"key history is absent", getDataAPDU(h("5FC10C")), 0x6A82, nil, nil},
		{"GET DATA with wrong P1P2", h("00 CB 3F 00 05 5C 03 5FC105 00"), 0x6A86, nil, nil},
		{"GET DATA without a tag list", h("00 CB 3F FF 02 5C 00 00"), 0x6A80, nil, nil},
		{"unknown instruction", h("00 44 00 00"), 0x6D00, nil, nil},
		{"unknown class", h("80 CB 3F FF 05 5C 03 5FC105 00"), 0x6E00, nil, nil},
		{"malformed APDU", h("00 CB 3F FF 09 5C"), 0x6700, nil, nil},
		{"GET RESPONSE with nothing pending", h("00 C0 00 00 00"), 0x6985, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data, s := txAll(t, c, tc.apdu)
			if s != tc.sw {
				t.Fatalf("SW %04X, want %04X (data %x)", s, tc.sw, data)
			}
			if !bytes.HasPrefix(data, tc.prefix) {
				t.Fatalf("response %x does not start with %x", data, tc.prefix)
			}
			if tc.check != nil {
				tc.check(t, data)
			}
		})
	}

	// The PIV Authentication certificate container: 53 { 70 cert, 71 00, FE }.
	data, s := txAll(t, c, getDataAPDU(h("5FC105")))
	if s != 0x9000 {
		t.Fatalf("GET DATA 5FC105: SW %04X", s)
	}
	outer, err := parseTLVs(data)
	if err != nil || len(outer) != 1 || outer[0].Tag != 0x53 {
		t.Fatalf("certificate container %x: %v", data, err)
	}
	inner, err := parseTLVs(outer[0].Value)
	if err != nil || len(inner) != 3 || inner[0].Tag != 0x70 || inner[1].Tag != 0x71 || !bytes.Equal(inner[1].Value, []byte{0}) || inner[2].Tag != 0xFE {
		t.Fatalf("certificate container content: %v %v", inner, err)
	}
	if !bytes.Equal(inner[0].Value, cert9A.Raw) {
		t.Fatal("the container's certificate is not the card's 9A certificate")
	}
}

// TestPIVCardGetResponse reads a certificate with short APDUs: 256 bytes
// at a time, 61xx saying how much is left.
func TestPIVCardGetResponse(t *testing.T) {
	c, _ := openPIVCard(t, pkcs11.RSA2048, 0)
	first, s := tx(t, c, getDataAPDU(h("5FC105")))
	if s&0xFF00 != 0x6100 || len(first) != 256 {
		t.Fatalf("first part: %d bytes, SW %04X; want 256 and 61xx", len(first), s)
	}
	// Any other command drops what is pending.
	all, s := txAll(t, c, getDataAPDU(h("5FC105")))
	if s != 0x9000 || !bytes.Equal(all[:256], first) {
		t.Fatalf("whole object: SW %04X", s)
	}
	if _, err := x509.ParseCertificate(mustInner(t, all)[0].Value); err != nil {
		t.Fatal(err)
	}
	// An extended APDU gets it in one response.
	ext, s := tx(t, c, append(h("00 CB 3F FF 00 0005 5C 03 5FC105"), 0x00, 0x00))
	if s != 0x9000 || !bytes.Equal(ext, all) {
		t.Fatalf("extended GET DATA: SW %04X, %d bytes", s, len(ext))
	}
	// Le shorter than the object: the rest through GET RESPONSE with Le.
	part, s := tx(t, c, append(h("00 CB 3F FF 05 5C 03 5FC105"), 0x10))
	if s != 0x6100 || len(part) != 16 {
		t.Fatalf("Le 16: %d bytes, SW %04X", len(part), s)
	}
	next, s := tx(t, c, h("00 C0 00 00 20"))
	if s&0xFF00 != 0x6100 || !bytes.Equal(next, all[16:48]) {
		t.Fatalf("GET RESPONSE 32: SW %04X", s)
	}
}

func mustInner(t *testing.T, data []byte) []TLV {
	t.Helper()
	outer, err := parseTLVs(data)
	if err != nil || len(outer) != 1 {
		t.Fatalf("%x: %v", data, err)
	}
	inner, err := parseTLVs(outer[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	return inner
}

func TestPIVCardVerify(t *testing.T) {
	c, info := openPIVCard(t, pkcs11.ECP256, 3)
	steps := []struct {
		name string
		apdu []byte
		sw   int
	}{
		{"status before any PIN", h("00 20 00 80"), 0x63C3},
		{"wrong PIN", h("00 20 00 80 08 3131313131313131"), 0x63C2},
		{"right PIN resets the counter", pinAPDU, 0x9000},
		{"status after the PIN", h("00 20 00 80"), 0x9000},
		{"reset the security status", h("00 20 FF 80"), 0x9000},
		{"status after the reset", h("00 20 00 80"), 0x63C3},
		{"PIN too short", h("00 20 00 80 08 313233FFFFFFFFFF"), 0x63C2},
		{"PIN not padded to 8", h("00 20 00 80 06 313233343536"), 0x6A80},
		{"PUK reference is not supported", h("00 20 00 81 08 3132333435363738"), 0x6A88},
		{"wrong PIN", h("00 20 00 80 08 3837363534333231"), 0x63C1},
		{"wrong PIN blocks", h("00 20 00 80 08 3837363534333231"), 0x6983},
		{"blocked: the right PIN too", pinAPDU, 0x6983},
		{"blocked: status", h("00 20 00 80"), 0x6983},
	}
	for _, st := range steps {
		if _, s := tx(t, c, st.apdu); s != st.sw {
			t.Fatalf("%s: SW %04X, want %04X", st.name, s, st.sw)
		}
	}
	// The counter survives removal: a new card application over the same
	// card is still blocked.
	c.Close()
	again, err := testEnv.OpenPIVCard(context.Background(), testModule, info.Name, PIVCardOptions{PINTries: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if _, s := tx(t, again, pinAPDU); s != 0x6983 {
		t.Fatalf("re-inserted blocked card: SW %04X, want 6983", s)
	}
}

// gaAPDU is GENERAL AUTHENTICATE with a 7C template, chained into 255-byte
// short APDUs when long, as middleware sends it.
func gaAPDUs(alg, key byte, inner []byte) [][]byte {
	data := tlv(0x7C, inner)
	var out [][]byte
	for len(data) > 255 {
		out = append(out, append([]byte{0x10, 0x87, alg, key, 255}, data[:255]...))
		data = data[255:]
	}
	return append(out, append(append([]byte{0x00, 0x87, alg, key, byte(len(data))}, data...), 0x00))
}

func generalAuthenticate(t *testing.T, c *PIVCard, alg, key byte, inner []byte) ([]byte, int) {
	t.Helper()
	apdus := gaAPDUs(alg, key, inner)
	for _, a := range apdus[:len(apdus)-1] {
		if _, s := tx(t, c, a); s != 0x9000 {
			t.Fatalf("chained part: SW %04X", s)
		}
	}
	data, s := txAll(t, c, apdus[len(apdus)-1])
	if s != 0x9000 {
		return nil, s
	}
	tlvs := mustInner(t, data)
	if len(tlvs) != 1 || tlvs[0].Tag != 0x82 {
		t.Fatalf("response template %x", data)
	}
	return tlvs[0].Value, s
}

func TestPIVCardGeneralAuthenticateEC(t *testing.T) {
	c, info := openPIVCard(t, pkcs11.ECP256, 0)
	digest := sha256.Sum256([]byte("PIV challenge"))
	challenge := append(h("82 00 81 20"), digest[:]...)

	if _, s := generalAuthenticate(t, c, algECP256, 0x9A, challenge); s != 0x6982 {
		t.Fatalf("9A without the PIN: SW %04X, want 6982", s)
	}
	// 9E needs no PIN.
	sig, s := generalAuthenticate(t, c, algECP256, 0x9E, challenge)
	if s != 0x9000 {
		t.Fatalf("9E: SW %04X", s)
	}
	verifyWith(t, info.Name, "9e", digest[:], sig)

	if _, s := tx(t, c, pinAPDU); s != 0x9000 {
		t.Fatalf("VERIFY: %04X", s)
	}
	for _, tc := range []struct {
		key  byte
		slot string
	}{{0x9A, "9a"}, {0x9C, "9c"}} {
		if tc.key == 0x9C {
			tx(t, c, pinAPDU) // PIN Always: right before
		}
		sig, s := generalAuthenticate(t, c, algECP256, tc.key, challenge)
		if s != 0x9000 {
			t.Fatalf("%s: SW %04X", tc.slot, s)
		}
		verifyWith(t, info.Name, tc.slot, digest[:], sig)
	}
	// 9C again without a VERIFY right before: PIN Always says no.
	if _, s := generalAuthenticate(t, c, algECP256, 0x9C, challenge); s != 0x6982 {
		t.Fatalf("9C without a fresh VERIFY: SW %04X, want 6982", s)
	}
	for _, bad := range []struct {
		name      string
		alg, key  byte
		inner     []byte
		sw        int
		unchained bool
	}{
		{"wrong algorithm", algRSA2048, 0x9A, challenge, 0x6A86, false},
		{"unknown key", algECP256, 0x9B, challenge, 0x6A88, false},
		{"no response tag", algECP256, 0x9A, append(h("81 20"), digest[:]...), 0x6A80, false},
		{"hash longer than the key", algECP256, 0x9A, append(h("82 00 81 21 00"), digest[:]...), 0x6A80, false},
	} {
		if _, s := generalAuthenticate(t, c, bad.alg, bad.key, bad.inner); s != bad.sw {
			t.Errorf("%s: SW %04X, want %04X", bad.name, s, bad.sw)
		}
	}

	// ECDH with 9D: the card's secret equals the peer's.
	peer, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	secret, s := generalAuthenticate(t, c, algECP256, 0x9D, append(h("82 00 85 41"), peer.PublicKey().Bytes()...))
	if s != 0x9000 {
		t.Fatalf("ECDH: SW %04X", s)
	}
	cert, _ := testEnv.CardCertificate(info.Name, "9d")
	cardPub, _ := cert.PublicKey.(*ecdsa.PublicKey).ECDH()
	want, _ := peer.ECDH(cardPub)
	if !bytes.Equal(secret, want) {
		t.Fatal("ECDH secret differs from the peer's")
	}

	// A reset loses the PIN.
	c.Reset()
	if _, s := generalAuthenticate(t, c, algECP256, 0x9A, challenge); s != 0x6982 {
		t.Fatalf("9A after reset: SW %04X, want 6982", s)
	}
}

func verifyWith(t *testing.T, card, slot string, digest, sig []byte) {
	t.Helper()
	cert, err := testEnv.CardCertificate(card, slot)
	if err != nil {
		t.Fatal(err)
	}
	switch k := cert.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, digest, sig) {
			t.Fatalf("%s: ECDSA signature does not verify with the certificate", slot)
		}
	case *rsa.PublicKey:
		if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, digest, sig); err != nil {
			t.Fatalf("%s: RSA signature does not verify with the certificate: %v", slot, err)
		}
	}
}

// TestPIVCardGeneralAuthenticateRSA signs a padded block as middleware
// sends it for RSA: 256 bytes, so chained, the signature back through
// GET RESPONSE.
func TestPIVCardGeneralAuthenticateRSA(t *testing.T) {
	c, info := openPIVCard(t, pkcs11.RSA2048, 0)
	digest := sha256.Sum256([]byte("PIV challenge"))
	di := append(h("3031300d060960864801650304020105000420"), digest[:]...)
	block := make([]byte, 256)
	block[1] = 1
	for i := 2; i < 256-len(di)-1; i++ {
		block[i] = 0xFF
	}
	copy(block[256-len(di):], di)
	inner := append(h("82 00 81 82 0100"), block...)
	if _, s := tx(t, c, pinAPDU); s != 0x9000 {
		t.Fatal(s)
	}
	sig, s := generalAuthenticate(t, c, algRSA2048, 0x9A, inner)
	if s != 0x9000 || len(sig) != 256 {
		t.Fatalf("9A: SW %04X, %d bytes", s, len(sig))
	}
	verifyWith(t, info.Name, "9a", digest[:], sig)

	// 9D decrypts: the block is a PKCS#1 v1.5 ciphertext.
	cert, _ := testEnv.CardCertificate(info.Name, "9d")
	ct, err := rsa.EncryptPKCS1v15(rand.Reader, cert.PublicKey.(*rsa.PublicKey), []byte("session key"))
	if err != nil {
		t.Fatal(err)
	}
	pt, s := generalAuthenticate(t, c, algRSA2048, 0x9D, append(h("82 00 81 82 0100"), ct...))
	if s != 0x9000 || !bytes.HasSuffix(pt, []byte("\x00session key")) || pt[1] != 2 {
		t.Fatalf("9D: SW %04X, %x", s, pt)
	}

	// A chain broken by another command is refused.
	apdus := gaAPDUs(algRSA2048, 0x9A, inner)
	tx(t, c, apdus[0])
	if _, s := tx(t, c, getDataAPDU([]byte{0x7E})); s != 0x6883 {
		t.Fatalf("command inside a chain: SW %04X, want 6883", s)
	}
}

// TestInsertVPCD speaks vpcd's side of the socket protocol to the card.
func TestInsertVPCD(t *testing.T) {
	c, _ := openPIVCard(t, pkcs11.ECP256, 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- InsertVPCD(ctx, ln.Addr().String(), c, nil, nil) }()
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	send := func(b []byte) {
		if _, err := conn.Write(append([]byte{byte(len(b) >> 8), byte(len(b))}, b...)); err != nil {
			t.Fatal(err)
		}
	}
	recv := func() []byte {
		var hdr [2]byte
		if _, err := conn.Read(hdr[:]); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, int(hdr[0])<<8|int(hdr[1]))
		for n := 0; n < len(b); {
			m, err := conn.Read(b[n:])
			if err != nil {
				t.Fatal(err)
			}
			n += m
		}
		return b
	}
	send([]byte{vpcdPowerOn})
	send([]byte{vpcdGetATR})
	if atr := recv(); !bytes.Equal(atr, c.ATR()) {
		t.Fatalf("ATR %x", atr)
	}
	send(h("00 A4 04 00 09 A000000308000010 00 00"))
	if r := recv(); !bytes.HasSuffix(r, []byte{0x90, 0x00}) {
		t.Fatalf("SELECT over vpcd: %x", r)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Removal closes the connection.
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("the connection is still open after removal")
	}
}

func TestParseCommand(t *testing.T) {
	tests := []struct {
		apdu       string
		data       string
		le         int
		hasLe, bad bool
		extended   bool
	}{
		{apdu: "00A40400"},
		{apdu: "00C0000000", le: 256, hasLe: true},
		{apdu: "00C0000010", le: 16, hasLe: true},
		{apdu: "00200080083132333435363738", data: "3132333435363738"},
		{apdu: "00CB3FFF055C035FC10500", data: "5C035FC105", le: 256, hasLe: true},
		{apdu: "00CB3FFF00", le: 256, hasLe: true},
		{apdu: "00CB3FFF000000", le: 65536, hasLe: true, extended: true},
		{apdu: "00CB3FFF0000055C035FC1050000", data: "5C035FC105", le: 65536, hasLe: true, extended: true},
		{apdu: "00CB3FFF0000055C035FC105", data: "5C035FC105", extended: true},
		{apdu: "00CB3F", bad: true},
		{apdu: "00CB3FFF055C03", bad: true},
		{apdu: "00CB3FFF0000", bad: true},
		{apdu: "00CB3FFF000000AA", bad: true},
	}
	for _, tc := range tests {
		c, err := ParseCommand(h(tc.apdu))
		if tc.bad {
			if err == nil {
				t.Errorf("%s: parsed, want an error", tc.apdu)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.apdu, err)
			continue
		}
		if !bytes.Equal(c.Data, h(tc.data)) || c.Le != tc.le || c.HasLe != tc.hasLe || c.Extended != tc.extended {
			t.Errorf("%s: got %+v", tc.apdu, c)
		}
	}
}
