package test

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/credgw/credgw/pkcs11"
)

// TestRedeemIntoPKCS11Keystore: `credgw redeem --keystore 'pkcs11:…'` puts
// the device keys and the escrowed encryption key on a PKCS#11 token (a
// phone's secure element), non-extractable, with their certificates, and
// writes no PKCS#12. OpenSC's pkcs11-tool sees the objects, and the token
// decrypts with the escrowed key what OpenSSL encrypted to the encryption
// certificate.
func TestRedeemIntoPKCS11Keystore(t *testing.T) {
	for _, tool := range []string{"softhsm2-util", "pkcs11-tool", "openssl"} {
		needTool(t, tool)
	}
	work := t.TempDir()
	dir, gw, conf := startDevGateway(t, work, nil)
	module, err := pkcs11.SoftHSMModule()
	if err != nil {
		t.Fatal(err)
	}
	const userPIN = "87654321"
	run(t, []string{conf}, true, "softhsm2-util", "--init-token", "--free", "--label", "Device", "--so-pin", "12345678", "--pin", userPIN)
	out := filepath.Join(work, "keystore")
	os.MkdirAll(out, 0o700)
	enrollWithCLI(t, dir, gw, conf, out)
	pinFile, kpin := filepath.Join(out, "device.pin"), filepath.Join(out, "keystore-pin.txt")
	os.WriteFile(pinFile, []byte(userPIN+"\n"), 0o600)
	os.WriteFile(kpin, []byte("tr0ub4dor&3\n"), 0o600)
	device := filepath.Join(out, "device")
	redeemOut := run(t, []string{conf}, true, credgwBin, "redeem", "--trust-anchor", filepath.Join(dir, "ca", "root.crt"), "--qr", filepath.Join(out, "qr.png"), "--password-file", filepath.Join(out, "password.txt"),
		"--keystore-pin-file", kpin, "--keystore", "pkcs11:token=Device?pin-source="+pinFile, "--out", device)
	if !strings.Contains(redeemOut, "Installed and confirmed") {
		t.Fatalf("redeem output:\n%s", redeemOut)
	}
	if p12s, _ := filepath.Glob(filepath.Join(device, "*.p12")); len(p12s) > 0 {
		t.Fatalf("PKCS#12 files written beside a keystore token: %v", p12s)
	}

	tool := func(args ...string) string {
		return run(t, []string{conf}, true, "pkcs11-tool", append([]string{"--module", module, "--token-label", "Device", "--login", "--pin", userPIN}, args...)...)
	}
	objects := tool("--list-objects")
	if n := strings.Count(objects, "Private Key Object"); n != 3 {
		t.Fatalf("%d private keys on the token, want 3:\n%s", n, objects)
	}
	if n := strings.Count(objects, "Certificate Object"); n != 3 {
		t.Fatalf("%d certificates on the token, want 3:\n%s", n, objects)
	}
	for _, label := range []string{"credgw encryption key (current)", "credgw encryption certificate (current)"} {
		if !strings.Contains(objects, label) {
			t.Errorf("no object labelled %q:\n%s", label, objects)
		}
	}

	// The escrowed key decrypts on the token (RSA, the dev escrow type).
	crtPEM, err := os.ReadFile(filepath.Join(device, "encryption.crt"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(crtPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	spki, _ := x509.MarshalPKIXPublicKey(cert.PublicKey)
	sum := sha256.Sum256(spki)
	secret := []byte("a content-encryption key for S/MIME")
	plain, enc, dec := filepath.Join(out, "cek.bin"), filepath.Join(out, "cek.enc"), filepath.Join(out, "cek.dec")
	os.WriteFile(plain, secret, 0o600)
	run(t, nil, true, "openssl", "pkeyutl", "-encrypt", "-certin", "-inkey", filepath.Join(device, "encryption.crt"),
		"-pkeyopt", "rsa_padding_mode:pkcs1", "-in", plain, "-out", enc)
	tool("--decrypt", "--mechanism", "RSA-PKCS", "--id", hex.EncodeToString(sum[:16]), "--input-file", enc, "--output-file", dec)
	if got, _ := os.ReadFile(dec); !bytes.Equal(got, secret) {
		t.Fatalf("the token decrypted %q", got)
	}
	// As OpenSC reads the attributes: sensitive, not extractable, decrypt
	// and unwrap only, with the allowed mechanisms set.
	var blocks []string
	for _, line := range strings.Split(objects, "\n") {
		if strings.Contains(line, " Object") && !strings.HasPrefix(line, " ") {
			blocks = append(blocks, "")
		}
		if len(blocks) > 0 {
			blocks[len(blocks)-1] += line + "\n"
		}
	}
	found := false
	for _, b := range blocks {
		if !strings.HasPrefix(b, "Private Key Object") || !strings.Contains(b, "credgw encryption key (current)") {
			continue
		}
		found = true
		attr := func(name string) []string {
			for _, line := range strings.Split(b, "\n") {
				if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && k == name {
					return strings.Split(strings.TrimSpace(v), ", ")
				}
			}
			return nil
		}
		access, usage := attr("Access"), attr("Usage")
		if !slices.Contains(access, "sensitive") || slices.Contains(access, "extractable") {
			t.Errorf("escrowed key access %v, want sensitive and not extractable:\n%s", access, b)
		}
		if !slices.Equal(usage, []string{"decrypt", "unwrap"}) {
			t.Errorf("escrowed key usage %v, want decrypt, unwrap:\n%s", usage, b)
		}
		if !strings.Contains(b, "Allowed mechanisms: RSA-PKCS,RSA-PKCS-OAEP") {
			t.Errorf("escrowed key without its allowed mechanisms:\n%s", b)
		}
	}
	if !found {
		t.Fatalf("no current escrowed key in:\n%s", objects)
	}
}
