package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/credgw/credgw/activation/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

func TestCheckKeystorePIN(t *testing.T) {
	// A character beyond U+FFFF cannot be in a PKCS#12 password (BMPString):
	// refused before the download, not after the code is spent.
	for _, bad := range []string{"", "12345", "123456", "000000", "password", "PASSWORD", "12345678", "qwerty", "horse\U0001F511battery"} {
		if err := CheckKeystorePIN(bad); !errors.Is(err, ErrWeakPIN) {
			t.Errorf("%q accepted", bad)
		}
	}
	for _, good := range []string{"593017", "correct horse", "tr0ub4dor&3", "mot de passe été"} {
		if err := CheckKeystorePIN(good); err != nil {
			t.Errorf("%q refused: %v", good, err)
		}
	}
}

func cert(t *testing.T, tmpl, parent *x509.Certificate, key, parentKey *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

// TestPinnedTLS: the agent trusts only the anchor whose SHA-256 the QR code
// carries, and the gateway's certificate must chain to it and name the host.
func TestPinnedTLS(t *testing.T) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := cert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "gw ca"}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, nil, caKey, nil)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := cert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "gw"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ca, leafKey, caKey)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other := cert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "impostor ca"}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, nil, otherKey, nil)
	pin := sha256.Sum256(ca.Raw)
	otherPin := sha256.Sum256(other.Raw)
	tests := []struct {
		name  string
		chain []*x509.Certificate
		pin   []byte
		host  string
		want  string
	}{
		{"pinned anchor", []*x509.Certificate{leaf, ca}, pin[:], "127.0.0.1", ""},
		{"anchor not sent", []*x509.Certificate{leaf}, pin[:], "127.0.0.1", "pinned"},
		{"another anchor pinned", []*x509.Certificate{leaf, ca}, otherPin[:], "127.0.0.1", "pinned"},
		{"leaf not under the pinned anchor", []*x509.Certificate{leaf, other}, otherPin[:], "127.0.0.1", "does not chain"},
		{"other host", []*x509.Certificate{leaf, ca}, pin[:], "gateway.example", "does not chain"},
		{"no certificate", nil, pin[:], "127.0.0.1", "no certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := verifyPinned(tc.pin, tc.host)(tls.ConnectionState{PeerCertificates: tc.chain})
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestDecodeQRRejectsNonQR(t *testing.T) {
	if _, err := DecodeQR([]byte("not a png")); err == nil {
		t.Fatal("garbage decoded")
	}
}

func TestSafeNames(t *testing.T) {
	for _, ok := range []string{"auth.p12", "encryption.p12", "chain.pem", "signature.crt"} {
		if !safeName.MatchString(ok) {
			t.Errorf("%q refused", ok)
		}
	}
	for _, bad := range []string{"../auth.p12", "/etc/passwd", "a/b.p12", ".p12", "x.sh", "auth.p12/", "..", "UPPER.p12"} {
		if safeName.MatchString(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestDecodeQRRefusesHugeImages: a small PNG that declares 12000×12000
// pixels is refused by its header, saying why, before the decoder
// allocates for it.
func TestDecodeQRRefusesHugeImages(t *testing.T) {
	chunk := func(typ string, data []byte) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(len(data)))
		b = append(b, typ...)
		b = append(b, data...)
		return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(append([]byte(typ), data...)))
	}
	ihdr := binary.BigEndian.AppendUint32(nil, 12000)
	ihdr = binary.BigEndian.AppendUint32(ihdr, 12000)
	ihdr = append(ihdr, 1, 0, 0, 0, 0) // 1-bit grey
	png := append([]byte("\x89PNG\r\n\x1a\n"), chunk("IHDR", ihdr)...)
	png = append(png, chunk("IEND", nil)...)
	_, err := DecodeQR(png)
	if err == nil || !strings.Contains(err.Error(), "megapixels") {
		t.Fatalf("a 12000×12000 image: %v, want a refusal naming its size", err)
	}
}

// TestPinMismatchIsFinal: a gateway whose TLS certificate is not the one
// the QR code pins is not a gateway that is restarting: the agent says so
// at once and does not wait and ask again for up to MaxWait (before, it
// retried as for an unreachable gateway, "retrying in 1s", for 15 minutes).
func TestPinMismatchIsFinal(t *testing.T) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := cert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "impostor ca"}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, nil, caKey, nil)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := cert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "impostor"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ca, leafKey, caKey)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{{
		Certificate: [][]byte{leaf.Raw, ca.Raw}, PrivateKey: leafKey}}})))
	go srv.Serve(lis)
	defer srv.Stop()
	pinned := sha256.Sum256([]byte("the gateway's real TLS anchor"))
	secret := make([]byte, 32)
	var events []string
	_, err = Redeem(context.Background(), Options{
		Payload:  code.Payload{Gateway: lis.Addr().String(), ID: "0123456789abcdef0123", Secret: secret, Pin: pinned[:]},
		Password: "12345678", OutDir: t.TempDir(), KeystorePIN: "correct horse", MaxWait: time.Minute,
		Events: func(e Event) { events = append(events, e.Message) },
	})
	if err == nil || !strings.Contains(err.Error(), "QR code") {
		t.Fatalf("err %v, want one saying the gateway is not the one the QR code pins", err)
	}
	for _, m := range events {
		if strings.Contains(m, "retrying") {
			t.Fatalf("the agent waited to ask an impostor again: %q", m)
		}
	}
}

// TestMalformedPasswordNotSent: a password that is not the digits the
// gateway gave (a typo, letters, too short) is refused by the agent before
// it dials: sent, it would spend one of the code's attempts and tell the
// person of a wrong password.
func TestMalformedPasswordNotSent(t *testing.T) {
	for _, pw := range []string{"abcdefgh", "1234", "1234567x"} {
		_, err := Redeem(context.Background(), Options{Payload: code.Payload{ID: "act", Secret: make([]byte, 32), Gateway: "127.0.0.1:1", Pin: make([]byte, 32)},
			Password: pw, OutDir: t.TempDir(), KeystorePIN: "correct horse", MaxWait: -1, MaxResumes: 1})
		if err == nil || !strings.Contains(err.Error(), "password") || !strings.Contains(err.Error(), "nothing was sent") {
			t.Errorf("password %q: %v, want a refusal before sending", pw, err)
		}
	}
}
