package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestDeviceAnchorKeysBounded: the trust anchors a device sends with
// Redeem are checked against the gateway's chain (signature checks) by
// anyone holding a photo of the QR code; a 16384-bit RSA root made each
// check cost milliseconds. Anchors with keys no PKI root has are refused.
func TestDeviceAnchorKeysBounded(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	b := make([]byte, 1024)
	rand.Read(b)
	b[0] |= 0x80
	b[len(b)-1] |= 1
	huge := &rsa.PublicKey{N: new(big.Int).SetBytes(b), E: 65537}
	certWith := func(pub any) []byte {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "a root"}, IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, k)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	if _, err := deviceAnchors([][]byte{certWith(huge)}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("an RSA-8192 anchor: %v, want InvalidArgument", err)
	}
	if got, err := deviceAnchors([][]byte{certWith(k.Public())}); err != nil || len(got) != 1 {
		t.Fatalf("a P-256 anchor: %v", err)
	}
}
