package test

import (
	"bytes"
	"crypto"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/credgw/credgw/agent"
	pkcs12 "software.sslmate.com/src/go-pkcs12"
)

// readOneKey is the Python program TestKeyHistoryReaders runs with
// Debian's python3-cryptography: it loads a PKCS#12 (the PIN from a file)
// and prints the friendly name of the key it kept, whether that key is
// the certificate's, and how many other certificates it saw.
const readOneKey = `
import sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
pin = open(sys.argv[2], "rb").read().strip()
p = pkcs12.load_pkcs12(open(sys.argv[1], "rb").read(), pin)
fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
match = p.key.public_key().public_bytes(*fmt) == p.cert.certificate.public_key().public_bytes(*fmt)
print("name=%s match=%s others=%d" % (p.cert.friendly_name.decode(), match, len(p.additional_certs)))
`

// TestKeyHistoryReaders (issue 18, points 2 and 3): a person enrolls three
// times with `credgw enroll` and redeems each with `credgw redeem`; every
// PKCS#12 the agent wrote the third time is read by OpenSSL 3, NSS
// pk12util, Java keytool, Python cryptography and go-pkcs12 under the
// keystore PIN. encryption.p12 holds the three keys (OpenSSL, NSS and
// keytool see all three; Python keeps only the first, the current one;
// go-pkcs12 refuses it); each one-key file holds its key, named, for every
// reader. The files use 600,000 PBKDF2 and 1,200,000 MAC iterations. A
// message encrypted to the first enrollment's certificate is decrypted
// with the key of the matching one-key file, and not with the current key.
func TestKeyHistoryReaders(t *testing.T) {
	for _, tool := range []string{"openssl", "pk12util", "keytool", "/usr/bin/python3"} {
		needTool(t, tool)
	}
	if err := exec.Command("/usr/bin/python3", "-c", "import cryptography.hazmat.primitives.serialization.pkcs12").Run(); err != nil {
		t.Fatal("Debian's python3-cryptography is not installed: run `make deps`")
	}
	work := t.TempDir()
	dir, gw, conf := startDevGateway(t, work, nil)
	const keystorePIN = "tr0ub4dor&3"
	pinFile := filepath.Join(work, "keystore-pin.txt")
	os.WriteFile(pinFile, []byte(keystorePIN+"\n"), 0o600)
	openssl := func(args ...string) string { return run(t, nil, true, "openssl", args...) }

	msg := filepath.Join(work, "msg.txt")
	os.WriteFile(msg, []byte("mail sent to the first encryption certificate\n"), 0o644)
	var device string
	for round := 1; round <= 3; round++ {
		out := filepath.Join(work, "round"+string(rune('0'+round)))
		os.MkdirAll(out, 0o700)
		enrollWithCLI(t, dir, gw, conf, out)
		device = filepath.Join(out, "device")
		redeemOut := run(t, nil, true, credgwBin, "redeem", "--trust-anchor", filepath.Join(dir, "ca", "root.crt"), "--qr", filepath.Join(out, "qr.png"), "--password-file", filepath.Join(out, "password.txt"),
			"--keystore-pin-file", pinFile, "--out", device)
		if !strings.Contains(redeemOut, "Installed and confirmed") {
			t.Fatalf("round %d: redeem output:\n%s", round, redeemOut)
		}
		if round == 1 {
			openssl("cms", "-encrypt", "-aes256", "-in", msg, "-out", filepath.Join(work, "old-mail.p7"), filepath.Join(device, "encryption.crt"))
			os.Rename(filepath.Join(device, "encryption.crt"), filepath.Join(work, "first-encryption.crt"))
		}
	}
	first := readCert(t, filepath.Join(work, "first-encryption.crt"))

	// The one-key files, in name order: current first, then newest first.
	oneKey, _ := filepath.Glob(filepath.Join(device, "encryption-*.p12"))
	if len(oneKey) != 3 || filepath.Base(oneKey[0]) != "encryption-00-current.p12" ||
		!regexp.MustCompile(`^encryption-0[12]-until-\d{4}-\d\d-\d\d\.p12$`).MatchString(filepath.Base(oneKey[2])) {
		t.Fatalf("one-key files %v", oneKey)
	}
	oldest := oneKey[2]
	if want := agent.KeyFileName(2, first); filepath.Base(oldest) != want {
		t.Fatalf("the first enrollment's key is in %s, want %s", oldest, want)
	}

	type file struct {
		path string
		keys int
	}
	files := []file{{filepath.Join(device, "encryption.p12"), 3}, {filepath.Join(device, "auth.p12"), 1}, {filepath.Join(device, "signature.p12"), 1}}
	for _, p := range oneKey {
		files = append(files, file{p, 1})
	}
	pkFriendly := regexp.MustCompile(`(?m)^\s*Friendly Name: (.+)$`)
	for _, f := range files {
		name := filepath.Base(f.path)
		t.Run(name, func(t *testing.T) {
			// OpenSSL 3: every key, each with its friendly name, and
			// the iteration counts of the keystore profile.
			info := openssl("pkcs12", "-in", f.path, "-passin", "file:"+pinFile, "-info", "-nodes")
			if n := strings.Count(info, "-----BEGIN PRIVATE KEY-----"); n != f.keys {
				t.Errorf("openssl: %d keys, want %d", n, f.keys) // not the output: it has the keys
			}
			if !strings.Contains(info, "MAC: sha256, Iteration 1200000") ||
				strings.Count(info, "PBKDF2, AES-256-CBC, Iteration 600000, PRF hmacWithSHA256") != f.keys+1 {
				t.Errorf("openssl: not the keystore iteration counts:\n%s", firstLines(info, 4))
			}
			if n := strings.Count(info, "friendlyName: "); n < 2*f.keys {
				t.Errorf("openssl: %d friendly names for %d keys and their certificates", n, f.keys)
			}
			if n := strings.Count(info, "localKeyID: "); n < 2*f.keys {
				t.Errorf("openssl: %d localKeyIDs for %d keys and their certificates", n, f.keys)
			}

			// NSS pk12util: every key, named.
			nss := run(t, nil, true, "pk12util", "-l", f.path, "-w", pinFile)
			if n := strings.Count(nss, "Certificate(has private key):"); n != f.keys {
				t.Errorf("pk12util: %d keys, want %d\n%s", n, f.keys, firstLines(nss, 20))
			}
			if n := len(pkFriendly.FindAllString(nss, -1)); n < f.keys {
				t.Errorf("pk12util: %d friendly names for %d keys", n, f.keys)
			}

			// Java keytool: every key an alias of its own.
			kt := run(t, nil, true, "keytool", "-list", "-storetype", "PKCS12", "-keystore", f.path, "-storepass:file", pinFile)
			if n := strings.Count(kt, "PrivateKeyEntry"); n != f.keys {
				t.Errorf("keytool: %d keys, want %d\n%s", n, f.keys, kt)
			}

			// Python cryptography keeps the first key: the current one.
			py := run(t, nil, true, "/usr/bin/python3", "-c", readOneKey, f.path, pinFile)
			if !strings.Contains(py, "match=True") || !strings.Contains(py, ", serial ") ||
				(strings.HasPrefix(name, "encryption-") && strings.Contains(name, "current") != strings.Contains(py, "(current)")) ||
				(name == "encryption.p12" && !strings.Contains(py, "(current)")) {
				t.Errorf("python3 cryptography: %s", py)
			}

			// go-pkcs12 reads one-key files, and refuses the history.
			b, _ := os.ReadFile(f.path)
			key, cert, _, err := pkcs12.DecodeChain(b, keystorePIN)
			if f.keys > 1 {
				if err == nil {
					t.Error("go-pkcs12 read the three-key file")
				}
				return
			}
			if err != nil || !key.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(cert.PublicKey) {
				t.Errorf("go-pkcs12: %v", err)
			}
		})
	}

	// Old mail: the first enrollment's key, from its own file, decrypts
	// it; the current key does not.
	keyPEM := func(p12 string) string {
		out := filepath.Join(work, filepath.Base(p12)+".pem")
		openssl("pkcs12", "-in", p12, "-passin", "file:"+pinFile, "-nodes", "-nocerts", "-out", out)
		return out
	}
	plain := filepath.Join(work, "old-mail.txt")
	openssl("cms", "-decrypt", "-in", filepath.Join(work, "old-mail.p7"), "-inkey", keyPEM(oldest),
		"-recip", filepath.Join(work, "first-encryption.crt"), "-out", plain)
	if got, _ := os.ReadFile(plain); !bytes.Contains(got, []byte("mail sent to the first encryption certificate")) {
		t.Fatalf("cms -decrypt with %s gave %q", filepath.Base(oldest), got)
	}
	run(t, nil, false, "openssl", "cms", "-decrypt", "-in", filepath.Join(work, "old-mail.p7"), "-inkey", keyPEM(oneKey[0]),
		"-recip", filepath.Join(work, "first-encryption.crt"), "-out", filepath.Join(work, "wrong.txt"))
}

// firstLines is the start of a long output, for an error message.
func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}
