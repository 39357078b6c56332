package test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestHSMSimWithOpenSCAndOpenSSL drives `credgw hsm-sim` as a user does and
// checks what it makes with OpenSC's pkcs11-tool and with OpenSSL.
func TestHSMSimWithOpenSCAndOpenSSL(t *testing.T) {
	for _, tool := range []string{"pkcs11-tool", "openssl", "softhsm2-util"} {
		needTool(t, tool)
	}
	work := t.TempDir()
	dir := filepath.Join(work, "env")
	base := fmt.Sprintf("http://127.0.0.1:%d", bindSockets(t, dir, "hsm")[0])
	run(t, nil, true, credgwBin, "hsm-sim", "init", "--dir", dir, "--url", base)
	pinFile := filepath.Join(work, "pin")
	const pin = "31415926"
	if err := os.WriteFile(pinFile, []byte(pin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := run(t, nil, true, credgwBin, "hsm-sim", "card", "new", "--dir", dir, "--name", "Alice Cardholder",
		"--pin-file", pinFile, "--email", "alice@example.com", "--upn", "alice@agency.example")
	if strings.Contains(out, pin) {
		t.Fatalf("card new printed the PIN:\n%s", out)
	}
	uuid := regexp.MustCompile(`card UUID:\s+([0-9a-f-]{36})`).FindStringSubmatch(out)
	fascn := regexp.MustCompile(`FASC-N:\s+(\d{4}-\d{4}-\d{6}-\d-\d-\d{10}-\d-\d{4}-\d)`).FindStringSubmatch(out)
	uri := regexp.MustCompile(`PKCS#11 URI: (pkcs11:\S+)`).FindStringSubmatch(out)
	if uuid == nil || fascn == nil || uri == nil {
		t.Fatalf("card new does not print UUID, FASC-N and URI:\n%s", out)
	}
	if strings.Contains(uri[1], "pin-value") {
		t.Fatalf("URI carries the PIN: %s", uri[1])
	}
	conf := "SOFTHSM2_CONF=" + filepath.Join(dir, "softhsm2.conf")

	module := regexp.MustCompile(`module-path=([^&]+)`).FindStringSubmatch(uri[1])[1]
	objs := run(t, []string{conf}, true, "pkcs11-tool", "--module", module, "--token-label", "Alice Cardholder", "-O")
	for _, want := range []string{
		"Certificate for PIV Authentication", "Certificate for Digital Signature",
		"Certificate for Key Management", "Certificate for Card Authentication",
		"SIGN pubkey", "KEY MAN pubkey", "CARD AUTH pubkey",
	} {
		if !strings.Contains(objs, want) {
			t.Errorf("pkcs11-tool -O does not list %q:\n%s", want, objs)
		}
	}
	for id, label := range map[string]string{"01": "Certificate for PIV Authentication", "02": "Certificate for Digital Signature", "03": "Certificate for Key Management", "04": "Certificate for Card Authentication"} {
		if !regexp.MustCompile(`label:\s+` + label + `\n(?:.*\n){0,3}?\s+ID:\s+` + id + `\n`).MatchString(objs) {
			t.Errorf("%s does not have ID %s:\n%s", label, id, objs)
		}
	}
	// With the PIN, the private keys appear with OpenSC's labels and IDs.
	priv := run(t, []string{conf}, true, "pkcs11-tool", "--module", module, "--token-label", "Alice Cardholder",
		"--login", "--pin", pin, "-O", "--type", "privkey")
	for _, want := range []string{"PIV AUTH key", "SIGN key", "KEY MAN key", "CARD AUTH key"} {
		if !strings.Contains(priv, want) {
			t.Errorf("pkcs11-tool --login -O does not list %q:\n%s", want, priv)
		}
	}
	if !regexp.MustCompile(`SIGN key\n(?:.*\n)*?\s+Access:.*always authenticate`).MatchString(priv) {
		t.Errorf("SIGN key is not always-authenticate:\n%s", priv)
	}

	authCert := filepath.Join(dir, "cards", "Alice Cardholder", "9a.crt")
	text := run(t, nil, true, "openssl", "x509", "-noout", "-text", "-in", authCert)
	for _, want := range []string{
		"Policy: 2.16.840.1.101.3.2.1.3.13",
		"othername: 2.16.840.1.101.3.6.6::",
		"URI:urn:uuid:" + uuid[1],
		"UPN::alice@agency.example",
		"OCSP - URI:" + base + "/ocsp",
		"CA Issuers - URI:" + base + "/certs/piv-ca.p7c",
		"URI:" + base + "/crl/piv-ca.crl",
		"X509v3 Key Usage: critical",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("openssl x509 -text lacks %q:\n%s", want, text)
		}
	}

	// The card proves itself through credgw's PKCS#11 layer.
	check := run(t, []string{conf}, true, credgwBin, "card", "check", "--uri", uri[1])
	if !strings.Contains(check, "verified") || !strings.Contains(check, uuid[1]) || !strings.Contains(check, fascn[1]) {
		t.Fatalf("card check:\n%s", check)
	}
	// A wrong PIN fails, and says so without the PIN.
	wrongPIN := filepath.Join(work, "wrong")
	os.WriteFile(wrongPIN, []byte("11223344\n"), 0o600)
	bad := run(t, []string{conf}, false, credgwBin, "card", "check", "--uri", strings.Replace(uri[1], pinFile, wrongPIN, 1))
	if !strings.Contains(bad, "PIN incorrect") || strings.Contains(bad, "11223344") || strings.Contains(bad, pin) {
		t.Fatalf("wrong PIN output:\n%s", bad)
	}
	// No PIN says so.
	if out := run(t, []string{conf}, false, credgwBin, "card", "check", "--uri", regexp.MustCompile(`&pin-source=[^&]*`).ReplaceAllString(uri[1], "")); !strings.Contains(out, "no PIN given") {
		t.Fatalf("no PIN output:\n%s", out)
	}
	// A bad URI is refused clearly.
	if out := run(t, []string{conf}, false, credgwBin, "card", "check", "--uri", "pkcs11:tokn=x"); !strings.Contains(out, "tokn") {
		t.Fatalf("bad URI output:\n%s", out)
	}

	// OpenSSL asks the simulated issuer's OCSP responder: good, then revoked.
	startServe(t, dir)
	ocspArgs := []string{"ocsp", "-issuer", filepath.Join(dir, "issuer", "piv-ca", "ca.crt"), "-cert", authCert,
		"-url", base + "/ocsp", "-CAfile", filepath.Join(dir, "issuer", "piv-ca", "root.crt")}
	if out := run(t, nil, true, "openssl", ocspArgs...); !strings.Contains(out, authCert+": good") || !strings.Contains(out, "Response verify OK") {
		t.Fatalf("openssl ocsp before revocation:\n%s", out)
	}
	run(t, nil, true, credgwBin, "hsm-sim", "card", "revoke", "--dir", dir, "--name", "Alice Cardholder")
	if out := run(t, nil, true, "openssl", ocspArgs...); !strings.Contains(out, authCert+": revoked") {
		t.Fatalf("openssl ocsp after revocation:\n%s", out)
	}
	// OpenSSL reads the CRL the responder serves, checks its signature and
	// finds the card in it.
	resp, err := http.Get(base + "/crl/piv-ca.crl")
	if err != nil {
		t.Fatal(err)
	}
	der, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	crlFile := filepath.Join(work, "piv-ca.crl")
	if err := os.WriteFile(crlFile, der, 0o644); err != nil {
		t.Fatal(err)
	}
	serial := strings.ToUpper(regexp.MustCompile(`(?m)^\s+Serial Number:\s*\n\s+([0-9a-f:]+)`).FindStringSubmatch(text)[1])
	crlText := run(t, nil, true, "openssl", "crl", "-inform", "DER", "-in", crlFile, "-noout", "-text",
		"-CAfile", filepath.Join(dir, "issuer", "piv-ca", "ca.crt"))
	if !strings.Contains(crlText, strings.ReplaceAll(serial, ":", "")) {
		t.Errorf("CRL does not list serial %s:\n%s", serial, crlText)
	}

	list := run(t, nil, true, credgwBin, "hsm-sim", "card", "list", "--dir", dir)
	if !strings.Contains(list, "Alice Cardholder") {
		t.Fatalf("card list:\n%s", list)
	}
}

// TestDemo runs `credgw demo` as `make demo` does.
func TestDemo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	out := run(t, nil, true, credgwBin, "demo", "--dir", dir)
	for _, want := range []string{"challenge signed by the card", "verified", "FASC-N:", "card UUID:",
		"PKI-AUTH succeeded", "email:       dev.cardholder@example.com (from the piv-auth certificate)", "Gateway and issuer stopped",
		"The self-service portal is https://127.0.0.1:", "modutil -dbdir",
		// The printed commands run as typed: SOFTHSM2_CONF first, this
		// binary, Chromium in a throwaway profile.
		"export SOFTHSM2_CONF=" + filepath.Join(dir, "hsm", "softhsm2.conf") + "\n", credgwBin + " piv login --gateway 127.0.0.1:",
		credgwBin + " serve --config", "export HOME=$(mktemp -d)", "certutil -N --empty-password",
		// The demo device attests its keys: hardware-backed (…3.41).
		"keystore attests", "policy 2.16.840.1.101.3.2.1.3.41, serial"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	st, err := os.Stat(filepath.Join(dir, "card.pin"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("card.pin: %v %v", st, err)
	}
	// Running it again on the same directory is refused, not half-done.
	if out := run(t, nil, false, credgwBin, "demo", "--dir", dir); !strings.Contains(out, "not empty") {
		t.Errorf("second demo:\n%s", out)
	}
}
