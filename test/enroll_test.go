package test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/credgw/credgw/activation/code"
	"github.com/credgw/credgw/activation/pfx"
	"github.com/credgw/credgw/agent"
	pkcs12 "software.sslmate.com/src/go-pkcs12"
)

// TestEnrollAndRedeem is the seed's whole journey with the real binaries:
// dev init, the simulated issuer and the gateway as processes, `credgw
// enroll` with a P-256 card and with an RSA card, `credgw redeem` from the QR
// PNG; then OpenSSL uses what the agent wrote, and the database is searched
// for every secret of the run.
func TestEnrollAndRedeem(t *testing.T) {
	needTool(t, "openssl")
	work := t.TempDir()
	dir, gw, conf := startDevGateway(t, work, func(dir string) {
		run(t, nil, true, credgwBin, "hsm-sim", "card", "new", "--dir", filepath.Join(dir, "hsm"), "--name", "RSA Holder",
			"--pin-file", filepath.Join(dir, "card.pin"), "--key", "rsa2048", "--email", "rsa.holder@example.com")
	})
	cardPIN := filepath.Join(dir, "card.pin")

	var secrets [][]byte
	for _, card := range []string{"Dev Cardholder", "RSA Holder"} {
		t.Run(card, func(t *testing.T) {
			out := filepath.Join(work, strings.ReplaceAll(card, " ", "-"))
			os.MkdirAll(out, 0o700)
			qr, pw := filepath.Join(out, "qr.png"), filepath.Join(out, "password.txt")
			enrollOut := run(t, []string{conf}, true, credgwBin, "enroll", "--gateway", gw, "--ca-file", filepath.Join(dir, "tls", "ca.crt"),
				"--card", "pkcs11:token="+strings.ReplaceAll(card, " ", "%20"), "--pin-file", cardPIN, "--name", "Entrust Derived Cred",
				"--qr-out", qr, "--password-out", pw)
			password, _ := os.ReadFile(pw)
			if !strings.Contains(enrollOut, "Password: ") || !strings.Contains(enrollOut, "█") {
				t.Fatalf("enroll output:\n%s", enrollOut)
			}
			png, _ := os.ReadFile(qr)
			payloadText, err := agent.DecodeQR(png)
			if err != nil {
				t.Fatal(err)
			}
			payload, err := code.ParsePayload(payloadText)
			if err != nil {
				t.Fatal(err)
			}
			device := filepath.Join(out, "device")
			kpin := filepath.Join(out, "keystore-pin.txt")
			const keystorePIN = "tr0ub4dor&3"
			os.WriteFile(kpin, []byte(keystorePIN+"\n"), 0o600)
			redeemOut := run(t, nil, true, credgwBin, "redeem", "--trust-anchor", filepath.Join(dir, "ca", "root.crt"), "--qr", qr, "--password-file", pw, "--keystore-pin-file", kpin, "--out", device)
			if !strings.Contains(redeemOut, "Installed and confirmed") {
				t.Fatalf("redeem output:\n%s", redeemOut)
			}
			// A second redemption is refused in words, not in gRPC's.
			again := run(t, nil, false, credgwBin, "redeem", "--trust-anchor", filepath.Join(dir, "ca", "root.crt"), "--qr", qr, "--password-file", pw, "--keystore-pin-file", kpin, "--out", filepath.Join(out, "again"))
			if strings.Contains(again, "rpc error") || strings.Contains(again, "desc =") || !strings.Contains(again, "credgw: not possible now: ") {
				t.Fatalf("second redeem output:\n%s", again)
			}
			pwText := strings.TrimSpace(string(password))
			p12pw, _ := code.PKCS12Password(payload.Secret, pwText)
			secrets = append(secrets, payload.Secret, []byte(base64.RawURLEncoding.EncodeToString(payload.Secret)),
				[]byte(pwText), []byte(p12pw))

			openssl := func(args ...string) string { return run(t, nil, true, "openssl", args...) }
			chain := filepath.Join(device, "chain.pem")
			for _, name := range []string{"auth", "signature", "encryption"} {
				p12 := filepath.Join(device, name+".p12")
				openssl("pkcs12", "-in", p12, "-passin", "pass:"+keystorePIN, "-info", "-noout")
				if out := openssl("verify", "-CAfile", chain, filepath.Join(device, name+".crt")); !strings.Contains(out, ": OK") {
					t.Errorf("openssl verify %s: %s", name, out)
				}
				// Every private key the device holds, for the database search.
				b, _ := os.ReadFile(p12)
				var keys []crypto.PrivateKey
				if name == "encryption" { // the escrowed key and its history, one file
					entries, _, err := pfx.Decode(b, keystorePIN)
					if err != nil {
						t.Fatalf("%s.p12: %v", name, err)
					}
					for _, e := range entries {
						keys = append(keys, e.Key)
					}
				} else {
					key, _, _, err := pkcs12.DecodeChain(b, keystorePIN)
					if err != nil {
						t.Fatalf("%s.p12: %v", name, err)
					}
					keys = append(keys, key)
				}
				for _, key := range keys {
					der, _ := x509.MarshalPKCS8PrivateKey(key)
					secrets = append(secrets, der)
					switch k := key.(type) {
					case *rsa.PrivateKey:
						secrets = append(secrets, k.D.Bytes())
					case *ecdsa.PrivateKey:
						d, _ := k.Bytes()
						secrets = append(secrets, d)
					}
				}
				openssl("pkcs12", "-in", p12, "-passin", "pass:"+keystorePIN, "-nodes", "-out", filepath.Join(out, name+".pem"))
			}
			// S/MIME: sign and verify with the signature credential,
			// encrypt and decrypt with the encryption credential.
			msg := filepath.Join(out, "msg.txt")
			os.WriteFile(msg, []byte("credgw derived credential test message\n"), 0o644)
			openssl("cms", "-sign", "-in", msg, "-signer", filepath.Join(out, "signature.pem"), "-out", filepath.Join(out, "signed.p7"))
			openssl("cms", "-verify", "-in", filepath.Join(out, "signed.p7"), "-CAfile", chain, "-out", filepath.Join(out, "verified.txt"))
			if got, _ := os.ReadFile(filepath.Join(out, "verified.txt")); !bytes.Contains(got, []byte("credgw derived credential test message")) {
				t.Errorf("cms -verify output %q", got)
			}
			openssl("cms", "-encrypt", "-aes256", "-in", msg, "-out", filepath.Join(out, "enc.p7"), filepath.Join(device, "encryption.crt"))
			openssl("cms", "-decrypt", "-in", filepath.Join(out, "enc.p7"), "-inkey", filepath.Join(out, "encryption.pem"),
				"-recip", filepath.Join(device, "encryption.crt"), "-out", filepath.Join(out, "dec.txt"))
			if got, _ := os.ReadFile(filepath.Join(out, "dec.txt")); !bytes.Contains(got, []byte("credgw derived credential test message")) {
				t.Errorf("cms -decrypt gave %q", got)
			}
		})
	}

	// The database (and its WAL) holds none of the run's secrets.
	files, _ := filepath.Glob(filepath.Join(dir, "credgw.db*"))
	if len(files) == 0 {
		t.Fatal("no database file")
	}
	var db []byte
	for _, f := range files {
		b, _ := os.ReadFile(f)
		db = append(db, b...)
	}
	if len(secrets) < 10 {
		t.Fatalf("only %d secrets collected", len(secrets))
	}
	for i, s := range secrets {
		if len(s) >= 8 && bytes.Contains(db, s) {
			t.Errorf("the database contains secret %d (%d bytes) in the clear", i, len(s))
		}
	}
}

// startDevGateway runs `credgw dev init` in work/dev, lets setup add to it,
// and starts `credgw hsm-sim serve` and `credgw serve` as processes. It
// returns the directory, the gateway address and the SOFTHSM2_CONF setting.
func startDevGateway(t *testing.T, work string, setup func(dir string)) (string, string, string) {
	t.Helper()
	dir := filepath.Join(work, "dev")
	devInit(t, dir)
	cfgText, _ := os.ReadFile(filepath.Join(dir, "credgw.yaml"))
	gw := regexp.MustCompile(`grpc: (127\.0\.0\.1:\d+)`).FindStringSubmatch(string(cfgText))[1]
	if setup != nil {
		setup(dir)
	}
	startServe(t, filepath.Join(dir, "hsm"))
	startProcess(t, "credgw serving", credgwBin, "serve", "--config", filepath.Join(dir, "credgw.yaml"))
	return dir, gw, "SOFTHSM2_CONF=" + filepath.Join(dir, "hsm", "softhsm2.conf")
}

// enrollWithCLI runs `credgw enroll` for the dev card and returns the
// payload and password.
func enrollWithCLI(t *testing.T, dir, gw, conf, out string) (code.Payload, string) {
	t.Helper()
	qr, pw := filepath.Join(out, "qr.png"), filepath.Join(out, "password.txt")
	run(t, []string{conf}, true, credgwBin, "enroll", "--gateway", gw, "--ca-file", filepath.Join(dir, "tls", "ca.crt"),
		"--card", "pkcs11:token=Dev%20Cardholder", "--pin-file", filepath.Join(dir, "card.pin"), "--name", "Entrust Derived Cred",
		"--qr-out", qr, "--password-out", pw)
	png, _ := os.ReadFile(qr)
	text, err := agent.DecodeQR(png)
	if err != nil {
		t.Fatal(err)
	}
	p, err := code.ParsePayload(text)
	if err != nil {
		t.Fatal(err)
	}
	password, _ := os.ReadFile(pw)
	return p, strings.TrimSpace(string(password))
}
