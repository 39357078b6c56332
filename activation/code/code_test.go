package code

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"image/color"
	"image/png"
	"net/url"
	"strings"
	"testing"
)

func TestPasswordUniformAndShaped(t *testing.T) {
	counts := make([]int, 10)
	for i := 0; i < 500; i++ {
		p, err := NewPassword(8)
		if err != nil || len(p) != 8 {
			t.Fatalf("%q %v", p, err)
		}
		for _, c := range p {
			counts[c-'0']++
		}
	}
	for d, n := range counts {
		if n == 0 {
			t.Errorf("digit %d never drawn in 4000", d)
		}
	}
	for _, n := range []int{5, 13} {
		if _, err := NewPassword(n); err == nil {
			t.Errorf("%d digits accepted", n)
		}
	}
}

func TestNormalizePassword(t *testing.T) {
	for in, want := range map[string]string{"1234 5678": "12345678", "1234-5678": "12345678", " 12345678 ": "12345678"} {
		if got, err := NormalizePassword(in); err != nil || got != want {
			t.Errorf("%q → %q, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "12345", "1234567a", "1234567890123", "１２３４５６７８"} {
		if _, err := NormalizePassword(bad); !errors.Is(err, ErrPasswordFormat) {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestVerifierNeedsTheSecret(t *testing.T) {
	s1, _ := NewSecret()
	s2, _ := NewSecret()
	v := Verifier(s1, "12345678")
	if !CheckPassword(s1, "12345678", v) {
		t.Fatal("right password refused")
	}
	if CheckPassword(s1, "12345679", v) || CheckPassword(s2, "12345678", v) {
		t.Fatal("wrong password or wrong secret accepted")
	}
	if bytes.Contains(v, []byte("12345678")) || strings.Contains(LookupHash(s1), string(s1)) {
		t.Fatal("verifier or lookup hash contains a secret")
	}
	a, _ := PKCS12Password(s1, "12345678")
	b, _ := PKCS12Password(s1, "12345679")
	if a == b || len(a) != 64 {
		t.Fatal("PKCS#12 password does not depend on both secrets")
	}
}

func TestPayloadRoundTripAndQR(t *testing.T) {
	s, _ := NewSecret()
	p := Payload{Gateway: "gateway.agency.example:8443", ID: "Ab3_xY-0123456789abcdEF", Secret: s, Pin: bytes.Repeat([]byte{7}, 32)}
	got, err := ParsePayload(p.String())
	if err != nil {
		t.Fatal(err)
	}
	if got.Gateway != p.Gateway || got.ID != p.ID || !bytes.Equal(got.Secret, s) || !bytes.Equal(got.Pin, p.Pin) {
		t.Fatalf("%+v", got)
	}
	v, err := QRVersion(p.String())
	if err != nil || v > MaxQRVersion {
		t.Fatalf("QR version %d, %v", v, err)
	}
	png, text, err := QR(p.String(), 256)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) || !strings.Contains(text, "█") {
		t.Fatalf("QR: %v", err)
	}
}

func TestParsePayloadRejects(t *testing.T) {
	s, _ := NewSecret()
	good := Payload{Gateway: "127.0.0.1:8443", ID: "0123456789abcdef0123", Secret: s, Pin: make([]byte, 32)}.String()
	tests := map[string]string{
		"other scheme":  strings.Replace(good, "credgw://", "https://", 1),
		"other host":    strings.Replace(good, "activate", "activat3", 1),
		"version 2":     strings.Replace(good, "v=1", "v=2", 1),
		"unknown param": good + "&x=1",
		"duplicate":     good + "&v=1",
		"no id":         strings.Replace(good, "&id=0123456789abcdef0123", "", 1),
		"short id":      strings.Replace(good, "id=0123456789abcdef0123", "id=abc", 1),
		"bad gateway":   strings.Replace(good, "gw=127.0.0.1%3A8443", "gw=nohost", 1),
		"bad port":      strings.Replace(good, "gw=127.0.0.1%3A8443", "gw=127.0.0.1%3A99999", 1),
		"short secret":  strings.Replace(good, "k=", "k=AAAA&", 1),
		"short pin":     strings.Replace(good, "pin=", "pin=AAAA&z=", 1),
		"empty":         "",
		"too long":      good + strings.Repeat("A", 600),
		"bad escape":    strings.Replace(good, "gw=127.0.0.1%3A8443", "gw=%zz", 1),
	}
	// Damaged on the way (escaped once more, pasted from a link, a
	// separator lost): the refusal, which an agent prints, shows no part
	// of the secret.
	k := base64.RawURLEncoding.EncodeToString(s)
	tests["escaped again"] = "credgw://activate?" + url.QueryEscape(strings.TrimPrefix(good, "credgw://activate?"))
	tests["no equals sign"] = strings.Replace(good, "k=", "k", 1)
	tests["separator lost"] = strings.Replace(good, "&k=", "k=", 1)
	tests["key garbled"] = strings.Replace(good, "&k=", "&"+k+"=", 1)
	for name, in := range tests {
		_, err := ParsePayload(in)
		if !errors.Is(err, ErrPayload) {
			t.Errorf("%s: %q accepted (%v)", name, in, err)
			continue
		}
		if strings.Contains(err.Error(), k[:8]) {
			t.Errorf("%s: the refusal shows the secret: %v", name, err)
		}
	}
}

func FuzzParsePayload(f *testing.F) {
	s := bytes.Repeat([]byte{1}, 32)
	f.Add(Payload{Gateway: "127.0.0.1:8443", ID: "0123456789abcdef0123", Secret: s, Pin: s}.String())
	f.Add("credgw://activate?v=1")
	f.Add("credgw://activate?v=1&gw=a:1&id=0123456789abcdef&k=AAAAAAAAAAAAAAAAAAAAAA&pin=" + strings.Repeat("A", 43))
	f.Fuzz(func(t *testing.T, in string) {
		p, err := ParsePayload(in)
		if err != nil {
			return
		}
		again, err := ParsePayload(p.String())
		if err != nil {
			t.Fatalf("re-encoded payload %q does not parse: %v", p.String(), err)
		}
		if again.Gateway != p.Gateway || again.ID != p.ID || !bytes.Equal(again.Secret, p.Secret) || !bytes.Equal(again.Pin, p.Pin) {
			t.Fatalf("round trip changed %+v into %+v", p, again)
		}
	})
}

// TestQRTooLongNamesTheFix: a payload beyond version MaxQRVersion is refused
// with the version it would need and what to shorten.
func TestQRTooLongNamesTheFix(t *testing.T) {
	s, _ := NewSecret()
	p := Payload{Gateway: strings.Repeat("g", 200) + ".agency.example:8443", ID: "Ab3_xY-0123456789abcdEF", Secret: s, Pin: make([]byte, 32)}
	v, err := QRVersion(p.String())
	if err != nil || v <= MaxQRVersion {
		t.Fatalf("QRVersion = %d, %v; want more than %d", v, err, MaxQRVersion)
	}
	_, _, err = QR(p.String(), -6)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("needs QR version %d", v)) || !strings.Contains(err.Error(), "shorten enrollment.gateway_address") {
		t.Fatalf("QR error = %v", err)
	}
}

// TestQRVersionBoundary: byte-mode payloads at level M, where version 10
// ends (213 bytes) and version 11 begins (ISO/IEC 18004 Table 7).
func TestQRVersionBoundary(t *testing.T) {
	for n, want := range map[int]int{1: 1, 14: 1, 15: 2, 213: 10, 214: 11} {
		if v, err := QRVersion(strings.Repeat("a", n)); err != nil || v != want {
			t.Errorf("%d bytes: version %d, %v; want %d", n, v, err, want)
		}
	}
	if _, _, err := QR(strings.Repeat("a", 213), -6); err != nil {
		t.Errorf("213 bytes (version 10): %v", err)
	}
	if _, _, err := QR(strings.Repeat("a", 214), -6); err == nil || !strings.Contains(err.Error(), "needs QR version 11") {
		t.Errorf("214 bytes (version 11): %v", err)
	}
	if _, _, err := QR(strings.Repeat("a", 3000), -6); err == nil || !strings.Contains(err.Error(), "more than QR version 40") {
		t.Errorf("3000 bytes (no version holds them): %v", err)
	}
}

// TestMonoPNGPixels: the hand-packed PNG decodes with image/png to exactly
// the modules, scale pixels each, dark black and light white, at widths
// that are and are not multiples of 8 (a row's last byte partly pixels).
func TestMonoPNGPixels(t *testing.T) {
	bits := make([][]bool, 13)
	for y := range bits {
		bits[y] = make([]bool, 13)
		for x := range bits[y] {
			bits[y][x] = (x*7+y*3)%5 < 2
		}
	}
	for _, scale := range []int{1, 3, 6, 8} {
		data, err := monoPNG(bits, scale)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("scale %d: %v", scale, err)
		}
		n := 13 * scale
		if b := img.Bounds(); b.Dx() != n || b.Dy() != n {
			t.Fatalf("scale %d: %v, want %dx%d", scale, b, n, n)
		}
		for y := range n {
			for x := range n {
				g := color.GrayModel.Convert(img.At(x, y)).(color.Gray).Y
				if dark := bits[y/scale][x/scale]; dark != (g == 0) || (!dark && g != 0xff) {
					t.Fatalf("scale %d: pixel (%d,%d) is %d, module dark %v", scale, x, y, g, dark)
				}
			}
		}
	}
}
