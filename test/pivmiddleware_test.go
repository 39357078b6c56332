package test

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/credgw/credgw/pkcs11"
)

// openscModule is OpenSC's PKCS#11 module on Debian (amd64).
const openscModule = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"

// pcsc is a private pcscd with vsmartcard's vpcd reader, for one test.
type pcsc struct {
	pid int
	// env points PC/SC clients (OpenSC, credgw with opensc-pkcs11.so) at it.
	env []string
}

// startPCSC starts pcscd in its own network and mount namespaces (root):
// vpcd listens on 0.0.0.0:35963 (Debian's vpcd cannot be told an address),
// which in a network namespace of its own is that namespace's loopback
// only, and the port is private to the test; its socket and pid file are
// on a tmpfs of its own, reached from outside through /proc/PID/root, so
// it runs beside any system pcscd and other tests' ones.
func startPCSC(t *testing.T) *pcsc {
	t.Helper()
	for _, tool := range []string{"pcscd", "unshare", "nsenter", "ip", "opensc-tool", "pkcs11-tool"} {
		needTool(t, tool)
	}
	if _, err := os.Stat("/usr/lib/pcsc/drivers/serial/libifdvpcd.so"); err != nil {
		t.Fatalf("vsmartcard's vpcd is not installed: run `make deps`")
	}
	if os.Geteuid() != 0 {
		t.Fatalf("the PC/SC tests start their own pcscd in network and mount namespaces: run them as root")
	}
	conf := filepath.Join(t.TempDir(), "reader.conf")
	if err := os.WriteFile(conf, []byte(`FRIENDLYNAME "credgw hsm-sim"
DEVICENAME   /dev/null:0x8C7B
LIBPATH      /usr/lib/pcsc/drivers/serial/libifdvpcd.so
CHANNELID    0x8C7B
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("unshare", "--net", "--mount", "sh", "-c",
		`set -e; ip link set lo up; mkdir -p /run/pcscd; mount -t tmpfs -o mode=0755 tmpfs /run/pcscd; exec pcscd --foreground --config "$1"`, "sh", conf)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	p := &pcsc{pid: cmd.Process.Pid}
	sock := fmt.Sprintf("/proc/%d/root/run/pcscd/pcscd.comm", p.pid)
	p.env = []string{"PCSCLITE_CSOCK_NAME=" + sock}
	// pcscd's own socket: the process must be pcscd already (unshare
	// and sh have set up the namespaces and exec'd it), else
	// /proc/PID/root would be the host's root.
	waitFor(t, 30*time.Second, "pcscd's socket", func() (bool, string) {
		select {
		case <-exited:
			t.Fatalf("pcscd exited:\n%s", log.String())
		default:
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.pid))
		if err != nil || filepath.Base(exe) != "pcscd" {
			return false, "not pcscd yet: " + exe
		}
		_, err = os.Stat(sock)
		return err == nil, fmt.Sprint(err)
	})
	return p
}

// insertCard runs `credgw hsm-sim card insert` in pcscd's network
// namespace and returns when vpcd has read the card's ATR; stop removes it.
func (p *pcsc) insertCard(t *testing.T, dir, name string, extra ...string) (stop func()) {
	t.Helper()
	args := append([]string{fmt.Sprintf("--net=/proc/%d/ns/net", p.pid), credgwBin, "hsm-sim", "card", "insert",
		"--dir", dir, "--name", name}, extra...)
	cmd := exec.Command("nsenter", args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	inserted, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if !once && strings.Contains(sc.Text(), "card inserted") {
				once = true
				close(inserted)
			}
		}
	}()
	var stopped bool
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cmd.Process.Signal(syscall.SIGTERM)
		err := cmd.Wait()
		<-done
		if err != nil {
			t.Errorf("card insert did not stop cleanly on SIGTERM: %v\n%s", err, log.String())
		}
	}
	t.Cleanup(stop)
	select {
	case <-inserted:
	case <-done:
		cmd.Wait()
		stopped = true
		t.Fatalf("card insert exited before vpcd read the card:\n%s", log.String())
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		<-done
		stopped = true
		t.Fatalf("vpcd did not read the card within 60s:\n%s", log.String())
	}
	return stop
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	last := ""
	for {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s: %s", d, what, last)
		}
		time.Sleep(100 * time.Millisecond) // poll period
	}
}

// runQuiet runs a program with a deadline and returns its output and error.
func runQuiet(env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// waitForCard waits until PC/SC shows the card and OpenSC names its driver.
func (p *pcsc) waitForCard(t *testing.T) string {
	t.Helper()
	var name string
	waitFor(t, 30*time.Second, "OpenSC to see the card", func() (bool, string) {
		out, err := runQuiet(p.env, "opensc-tool", "--reader", "0", "--name")
		name = strings.TrimSpace(out)
		return err == nil, name
	})
	return name
}

// waitForNoCard waits until OpenSC no longer sees a card.
func (p *pcsc) waitForNoCard(t *testing.T) {
	t.Helper()
	waitFor(t, 30*time.Second, "the card to be removed", func() (bool, string) {
		out, err := runQuiet(p.env, "opensc-tool", "--reader", "0", "--name")
		return err != nil, out
	})
}

// newSimEnv makes an hsm-sim environment and returns its directory.
func newSimEnv(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "env")
	base := fmt.Sprintf("http://127.0.0.1:%d", bindSockets(t, dir, "hsm")[0])
	run(t, nil, true, credgwBin, "hsm-sim", "init", "--dir", dir, "--url", base)
	return dir
}

// newSimCard makes a card in an hsm-sim environment and returns its PIN file.
func newSimCard(t *testing.T, dir, name, key, pin string) (pinFile string) {
	t.Helper()
	pinFile = filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(pinFile, []byte(pin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, nil, true, credgwBin, "hsm-sim", "card", "new", "--dir", dir, "--name", name, "--key", key,
		"--pin-file", pinFile, "--email", "piv@example.com")
	return pinFile
}

// TestPIVCardThroughOpenSC presents hsm-sim cards (P-256, P-384, RSA-2048) to
// a private pcscd through vpcd and uses them with OpenSC's PIV driver as a
// real card: the driver recognises the card, pkcs11-tool lists the objects
// with OpenSC's labels and ids, and signs with 9A after the PIN; OpenSSL
// verifies the signature with the card's certificate.
func TestPIVCardThroughOpenSC(t *testing.T) {
	needTool(t, "openssl")
	p := startPCSC(t)
	dir := newSimEnv(t)
	for _, tc := range []struct{ key, mech, hash string }{{"p256", "ECDSA-SHA256", "-sha256"}, {"p384", "ECDSA-SHA384", "-sha384"}, {"rsa2048", "SHA256-RSA-PKCS", "-sha256"}} {
		t.Run(tc.key, func(t *testing.T) {
			const pin = "27182818"
			name := "OpenSC " + tc.key
			newSimCard(t, dir, name, tc.key, pin)
			stop := p.insertCard(t, dir, name)
			if got := p.waitForCard(t); got != "Personal Identity Verification Card" {
				t.Fatalf("opensc-tool --name: %q", got)
			}
			mod := []string{"--module", openscModule, "--token-label", name}
			objs := run(t, p.env, true, "pkcs11-tool", append(mod, "--list-objects")...)
			for id, label := range map[string]string{"01": "Certificate for PIV Authentication", "02": "Certificate for Digital Signature",
				"03": "Certificate for Key Management", "04": "Certificate for Card Authentication",
				"01 ": "PIV AUTH pubkey", "02 ": "SIGN pubkey", "03 ": "KEY MAN pubkey", "04 ": "CARD AUTH pubkey"} {
				if !regexp.MustCompile(`label:\s+` + label + `\n(?:.*\n){0,6}?\s+ID:\s+` + strings.TrimSpace(id) + `\n`).MatchString(objs) {
					t.Errorf("pkcs11-tool -O: no %q with ID %s:\n%s", label, strings.TrimSpace(id), objs)
				}
			}
			priv := run(t, p.env, true, "pkcs11-tool", append(mod, "--login", "--pin", pin, "--list-objects", "--type", "privkey")...)
			for id, label := range map[string]string{"01": "PIV AUTH key", "02": "SIGN key", "03": "KEY MAN key", "04": "CARD AUTH key"} {
				if !regexp.MustCompile(`label:\s+` + label + `\n(?:.*\n){0,3}?\s+ID:\s+` + id + `\n`).MatchString(priv) {
					t.Errorf("pkcs11-tool --login -O: no %q with ID %s:\n%s", label, id, priv)
				}
			}
			if !regexp.MustCompile(`SIGN key\n(?:.*\n)*?\s+Access:.*always authenticate`).MatchString(priv) {
				t.Errorf("OpenSC does not mark 9C always-authenticate:\n%s", priv)
			}

			work := t.TempDir()
			msg, sig := filepath.Join(work, "msg"), filepath.Join(work, "sig")
			os.WriteFile(msg, []byte("signed through OpenSC's PIV driver\n"), 0o600)
			signArgs := append(mod, "--login", "--pin", pin, "--sign", "--mechanism", tc.mech, "--input-file", msg, "--output-file", sig)
			if tc.key != "rsa2048" {
				signArgs = append(signArgs, "--signature-format", "openssl")
			}
			// 9A after the PIN; 9C (PIN Always) with OpenSC's
			// context-specific login, the VERIFY right before the signature.
			for id, slot := range map[string]string{"01": "9a", "02": "9c"} {
				args := append(append([]string{}, signArgs...), "--id", id)
				run(t, p.env, true, "pkcs11-tool", args...)
				pub := filepath.Join(work, slot+".pub")
				run(t, nil, true, "openssl", "x509", "-in", filepath.Join(dir, "cards", name, slot+".crt"), "-pubkey", "-noout", "-out", pub)
				if out := run(t, nil, true, "openssl", "dgst", tc.hash, "-verify", pub, "-signature", sig, msg); !strings.Contains(out, "Verified OK") {
					t.Fatalf("openssl dgst -verify (%s): %s", slot, out)
				}
			}

			if tc.key == "p256" {
				// ECDH with the key management key (9D): the card's
				// secret is the one OpenSSL derives on the peer's side.
				peer, peerPub, peerDER := filepath.Join(work, "peer.key"), filepath.Join(work, "peer.pub"), filepath.Join(work, "peer.der")
				pub9D, secret, want := filepath.Join(work, "9d.pub"), filepath.Join(work, "secret"), filepath.Join(work, "want")
				run(t, nil, true, "openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", peer)
				run(t, nil, true, "openssl", "pkey", "-in", peer, "-pubout", "-out", peerPub)
				run(t, nil, true, "openssl", "pkey", "-pubin", "-in", peerPub, "-outform", "DER", "-out", peerDER)
				run(t, nil, true, "openssl", "x509", "-in", filepath.Join(dir, "cards", name, "9d.crt"), "-pubkey", "-noout", "-out", pub9D)
				run(t, nil, true, "openssl", "pkeyutl", "-derive", "-inkey", peer, "-peerkey", pub9D, "-out", want)
				run(t, p.env, true, "pkcs11-tool", append(mod, "--login", "--pin", pin, "--derive", "--id", "03", "--mechanism", "ECDH1-DERIVE",
					"--input-file", peerDER, "--output-file", secret)...)
				got, _ := os.ReadFile(secret)
				exp, _ := os.ReadFile(want)
				if len(exp) != 32 || !bytes.Equal(got, exp) {
					t.Errorf("ECDH through OpenSC: %x, want %x", got, exp)
				}
			}

			// A wrong PIN is refused, and the card counts it.
			bad := run(t, p.env, false, "pkcs11-tool", append(mod, "--login", "--pin", "11112222", "--list-objects", "--type", "privkey")...)
			if !strings.Contains(bad, "CKR_PIN_INCORRECT") {
				t.Errorf("wrong PIN: %s", bad)
			}
			if b, err := os.ReadFile(filepath.Join(dir, "cards", name, "pin-tries-left")); err != nil || strings.TrimSpace(string(b)) != "2" {
				t.Errorf("tries left after one wrong PIN: %q %v", b, err)
			}
			stop()
			p.waitForNoCard(t)
		})
	}
}

// TestPIVLoginThroughOpenSC signs in to a dev gateway with `credgw piv
// login`, and enrolls with `credgw enroll` then `credgw redeem`, through OpenSC's PIV driver (opensc-pkcs11.so, pcscd, vpcd) instead
// of SoftHSM, with a P-256 and an RSA-2048 card: the TLS handshake and the
// PKI-AUTH challenge are signed by the card application. A wrong PIN says
// what the card reports of its retry counter, and the card blocks after
// the last try.
func TestPIVLoginThroughOpenSC(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	devInit(t, dir)
	hsm := filepath.Join(dir, "hsm")
	startServe(t, hsm)
	startProcess(t, "credgw serving", credgwBin, "serve", "--config", filepath.Join(dir, "credgw.yaml"))
	cfg, err := os.ReadFile(filepath.Join(dir, "credgw.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	gw := regexp.MustCompile(`grpc: (127\.0\.0\.1:\d+)`).FindStringSubmatch(string(cfg))[1]
	conf := "SOFTHSM2_CONF=" + filepath.Join(hsm, "softhsm2.conf")
	pinFile := filepath.Join(dir, "card.pin")
	run(t, []string{conf}, true, credgwBin, "hsm-sim", "card", "new", "--dir", hsm, "--name", "RSA Cardholder", "--key", "rsa2048",
		"--pin-file", pinFile, "--email", "rsa.cardholder@example.com")
	// A P-384 card signs a 48-byte input only, as strict applets do: the
	// SHA-256 challenge digest reaches it left-padded to the key's size.
	run(t, []string{conf}, true, credgwBin, "hsm-sim", "card", "new", "--dir", hsm, "--name", "P384 Cardholder", "--key", "p384",
		"--pin-file", pinFile, "--email", "p384.cardholder@example.com")
	p := startPCSC(t)
	env := append([]string{conf}, p.env...)
	login := func(card, pin string, wantOK bool) string {
		return run(t, env, wantOK, credgwBin, "piv", "login", "--gateway", gw, "--ca-file", filepath.Join(dir, "tls", "ca.crt"),
			"--card", "pkcs11:token="+strings.ReplaceAll(card, " ", "%20")+"?module-path="+openscModule, "--pin-file", pin)
	}
	for _, card := range []string{"Dev Cardholder", "RSA Cardholder", "P384 Cardholder"} {
		t.Run(card, func(t *testing.T) {
			stop := p.insertCard(t, hsm, card)
			p.waitForCard(t)
			out := login(card, pinFile, true)
			for _, want := range []string{"PKI-AUTH succeeded", "card UUID:", "person id:"} {
				if !strings.Contains(out, want) {
					t.Errorf("piv login through OpenSC lacks %q:\n%s", want, out)
				}
			}
			// card check: the certificates, identity and a signature.
			check := run(t, env, true, credgwBin, "card", "check", "--uri",
				"pkcs11:token="+strings.ReplaceAll(card, " ", "%20")+"?module-path="+openscModule+"&pin-source="+pinFile)
			if !strings.Contains(check, "verified") {
				t.Errorf("card check through OpenSC:\n%s", check)
			}
			// Enrollment reads the card's certificates and signs through
			// OpenSC too; the device redeems what it was given.
			work := t.TempDir()
			qr, pw, kpin := filepath.Join(work, "qr.png"), filepath.Join(work, "password.txt"), filepath.Join(work, "keystore-pin.txt")
			enrolled := run(t, env, true, credgwBin, "enroll", "--gateway", gw, "--ca-file", filepath.Join(dir, "tls", "ca.crt"),
				"--card", "pkcs11:token="+strings.ReplaceAll(card, " ", "%20")+"?module-path="+openscModule, "--pin-file", pinFile,
				"--name", "Phone", "--qr-out", qr, "--password-out", pw)
			if !strings.Contains(enrolled, "Password: ") {
				t.Fatalf("enroll through OpenSC:\n%s", enrolled)
			}
			os.WriteFile(kpin, []byte("keystore-pin-1\n"), 0o600)
			redeemed := run(t, nil, true, credgwBin, "redeem", "--trust-anchor", filepath.Join(dir, "ca", "root.crt"), "--qr", qr, "--password-file", pw, "--keystore-pin-file", kpin,
				"--out", filepath.Join(work, "device"))
			if !strings.Contains(redeemed, "Installed and confirmed") {
				t.Fatalf("redeem:\n%s", redeemed)
			}
			stop()
			p.waitForNoCard(t)
		})
	}

	// Wrong PINs: the card counts them, credgw says what is left, and the
	// card blocks; the PIN never shows.
	stop := p.insertCard(t, hsm, "RSA Cardholder")
	p.waitForCard(t)
	wrong := filepath.Join(t.TempDir(), "wrong.pin")
	os.WriteFile(wrong, []byte("00000000\n"), 0o600)
	// OpenSC reports the counter as PKCS#11 flags: not "count low" (its
	// PIV driver does not know the counter's reset value), but the final
	// try and the lock.
	for i, want := range []string{"PIN incorrect", "final try: one more wrong PIN locks it", "PIN locked"} {
		out := login("RSA Cardholder", wrong, false)
		if !strings.Contains(out, want) || strings.Contains(out, "00000000") || (i == 0 && strings.Contains(out, "final try")) {
			t.Errorf("wrong PIN %d: want %q:\n%s", i+1, want, out)
		}
	}
	if out := login("RSA Cardholder", pinFile, false); !strings.Contains(out, "PIN locked") {
		t.Errorf("right PIN on a blocked card:\n%s", out)
	}
	stop()
}

// TestPIVCardRemovedThroughOpenSC: credgw's pkcs11 layer, in this process,
// holds a card open through OpenSC; the card is pulled (the token is
// unavailable, in words, not a wrong-PIN or not-found error) and put back
// (the next signature reconnects, logs in again and works, with no
// restart), as with SoftHSM tokens in pkcs11's own tests.
func TestPIVCardRemovedThroughOpenSC(t *testing.T) {
	p := startPCSC(t)
	dir := newSimEnv(t)
	const pin = "13572468"
	newSimCard(t, dir, "Removable", "p256", pin)
	// OpenSC reads the socket's name when it connects to pcscd; this test
	// process is its only user of PC/SC.
	sock := strings.TrimPrefix(p.env[0], "PCSCLITE_CSOCK_NAME=")
	t.Setenv("PCSCLITE_CSOCK_NAME", sock)

	stop := p.insertCard(t, dir, "Removable")
	p.waitForCard(t)
	mod, err := pkcs11.OpenModule(openscModule)
	if err != nil {
		t.Fatal(err)
	}
	defer mod.Close()
	ctx := context.Background()
	tok, err := mod.OpenToken(ctx, pkcs11.TokenConfig{Label: "Removable", PIN: []byte(pin)})
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	signer, err := tok.Signer(ctx, pkcs11.PIVAuthentication.PrivateKey())
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("before, during and after removal"))
	sign := func() error {
		sig, err := signer.SignContext(ctx, digest[:], crypto.SHA256)
		if err == nil && !ecdsa.VerifyASN1(signer.Public().(*ecdsa.PublicKey), digest[:], sig) {
			t.Fatal("the signature does not verify")
		}
		return err
	}
	if err := sign(); err != nil {
		t.Fatalf("with the card in: %v", err)
	}

	stop()
	p.waitForNoCard(t)
	err = sign()
	if !errors.Is(err, pkcs11.ErrTokenUnavailable) {
		t.Fatalf("with the card out: %v, want ErrTokenUnavailable", err)
	}
	if strings.Contains(err.Error(), pin) {
		t.Fatal("the error shows the PIN")
	}
	t.Logf("card out: %v", err)

	p.insertCard(t, dir, "Removable")
	p.waitForCard(t)
	waitFor(t, 30*time.Second, "a signature after the card is back", func() (bool, string) {
		err := sign()
		return err == nil, fmt.Sprint(err)
	})
}
