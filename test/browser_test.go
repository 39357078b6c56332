package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/credgw/credgw/agent"
	"github.com/credgw/credgw/pkcs11"
	"golang.org/x/crypto/ocsp"
)

// TestPortalInBrowser drives Chromium (headless, through the DevTools
// protocol) against the self-service portal of `credgw dev init` as a
// cardholder would: sign in with the dev card (SoftHSM, through NSS, TLS
// client authentication with the card's PIV Authentication key), enroll,
// read the QR code and password off the page, redeem them with the
// reference agent, see the credential active, revoke it, see it revoked, and
// ask the gateway's OCSP responder about the derived PIV Authentication
// certificate. Every page is saved as a PNG.
//
// Headless Chromium cannot ask for the card PIN: its PIN dialog never shows,
// and the sign-in hangs. So the card is given to NSS through a small PKCS#11
// module built here (cardReaderC): it passes every call to SoftHSM, offers
// only the card's slot, and logs in with the PIN from DIR/card.pin when NSS
// opens a session, as a reader with a PIN pad would. The key stays on the
// card and NSS signs with it there.
func TestPortalInBrowser(t *testing.T) { portalInBrowser(t, false) }

// TestPortalInBrowserThroughOpenSC: the same journey with the card behind
// real PIV middleware: Chromium's NSS reaches it through OpenSC's PIV
// driver (opensc-pkcs11.so), pcscd and vpcd, where hsm-sim presents the
// dev card as a PIV card (docs/piv-middleware.md). The reader module in
// front logs in with the PIN, as a PIN pad would.
func TestPortalInBrowserThroughOpenSC(t *testing.T) { portalInBrowser(t, true) }

func portalInBrowser(t *testing.T, throughOpenSC bool) {
	chromium := needBrowser(t)
	for _, tool := range []string{"certutil", "modutil", "cc", "go"} {
		needTool(t, tool)
	}
	// AutoSelectCertificateForUrls is only read from managed policy.
	const policyDir = "/etc/chromium/policies/managed"
	if err := os.MkdirAll(policyDir, 0o755); err != nil || !writable(policyDir) {
		skipOrFail(t, fmt.Sprintf("cannot write Chromium policy in %s (run as root): the test needs the AutoSelectCertificateForUrls policy", policyDir))
	}
	module, err := pkcs11.SoftHSMModule()
	if err != nil {
		t.Fatal(err)
	}

	work := t.TempDir()
	dir, _, conf := startDevGateway(t, work, nil)
	var pcscEnv []string
	if throughOpenSC {
		p := startPCSC(t)
		p.insertCard(t, filepath.Join(dir, "hsm"), "Dev Cardholder")
		p.waitForCard(t)
		module, pcscEnv = openscModule, p.env
	}
	cfgText, err := os.ReadFile(filepath.Join(dir, "credgw.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^portal:\n(?:[ \t]+(?:#.*)?\n)*?[ \t]+listen: (127\.0\.0\.1:\d+)\s*$`).FindSubmatch(cfgText)
	if m == nil {
		t.Fatalf("no portal listen address in credgw.yaml:\n%s", cfgText)
	}
	base := "https://" + string(m[1])

	// A browser profile of its own: NSS reads $HOME/.pki/nssdb.
	home := filepath.Join(work, "home")
	nssdb := "sql:" + filepath.Join(home, ".pki", "nssdb")
	if err := os.MkdirAll(filepath.Join(home, ".pki", "nssdb"), 0o700); err != nil {
		t.Fatal(err)
	}
	reader := buildCardReader(t, work)
	env := []string{conf, "HOME=" + home, "CREDGW_CARD_MODULE=" + module, "CREDGW_CARD_TOKEN=Dev Cardholder",
		"CREDGW_CARD_PIN_FILE=" + filepath.Join(dir, "card.pin")}
	env = append(env, pcscEnv...)
	run(t, env, true, "certutil", "-N", "--empty-password", "-d", nssdb)
	run(t, env, true, "modutil", "-dbdir", nssdb, "-add", "credgw-card", "-libfile", reader, "-force")
	run(t, env, true, "certutil", "-A", "-d", nssdb, "-n", "credgw-dev-tls", "-t", "C,,", "-i", filepath.Join(dir, "tls", "ca.crt"))
	if out := run(t, env, true, "certutil", "-L", "-d", nssdb, "-h", "Dev Cardholder"); !strings.Contains(out, "Certificate for PIV Authentication") {
		t.Fatalf("NSS does not see the card's certificates:\n%s", out)
	}

	// The portal asks for a certificate; the policy picks the card's.
	var suffix [6]byte
	rand.Read(suffix[:])
	policyFile := filepath.Join(policyDir, "credgw-test-"+hex.EncodeToString(suffix[:])+".json")
	policy := fmt.Sprintf(`{"AutoSelectCertificateForUrls": [%q]}`,
		fmt.Sprintf(`{"pattern":%q,"filter":{"SUBJECT":{"CN":"Dev Cardholder"}}}`, base))
	if err := os.WriteFile(policyFile, []byte(policy+"\n"), 0o644); err != nil {
		skipOrFail(t, fmt.Sprintf("cannot write Chromium policy %s: %v", policyFile, err))
	}
	t.Cleanup(func() { os.Remove(policyFile) })

	shots := artifactsDir(t)
	if throughOpenSC {
		// The README's screenshots are the SoftHSM journey's.
		shots = filepath.Join(shots, "opensc")
		if err := os.MkdirAll(shots, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// One generous deadline for the whole journey: on a loaded machine
	// Chromium alone may take a minute to start. Every step waits for
	// what it needs (a response, an element shown), never for a time.
	ctx, cancel := context.WithTimeout(context.Background(), browserDeadline)
	defer cancel()
	// startBrowser starts a Chromium of its own profile; stopBrowser ends it.
	var (
		bctx      context.Context
		chromeOut *tailBuffer
		stops     []func()
	)
	startBrowser := func(attempt int) {
		chromeOut = &tailBuffer{max: 256 << 10}
		opts := append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(chromium),
			chromedp.UserDataDir(filepath.Join(work, fmt.Sprintf("profile-%d", attempt))),
			chromedp.NoSandbox, // the test runs as root
			chromedp.WindowSize(1000, 760),
			chromedp.Env(env...),
			chromedp.CombinedOutput(chromeOut),
		)
		allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
		var cancelBrowser context.CancelFunc
		bctx, cancelBrowser = chromedp.NewContext(allocCtx)
		stops = append(stops, cancelBrowser, cancelAlloc)
	}
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	// keepLog saves all that Chromium printed in the artifacts directory.
	keepLog := func(name string) string {
		path := filepath.Join(shots, name)
		if err := os.WriteFile(path, []byte(chromeOut.lastLines(1<<20)), 0o644); err != nil {
			return fmt.Sprintf("(not saved: %v)", err)
		}
		return path
	}

	// fail reports what a person would look at: the page's text, if the
	// page still answers, and Chromium's last lines (all of them are kept
	// in the artifacts directory).
	fail := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		pctx, pcancel := context.WithTimeout(bctx, 10*time.Second)
		if text, err := chromedp.Run(pctx, chromedp.Text(chromedp.CSS("body"))); err == nil {
			msg += "\npage text:\n" + text
		}
		pcancel()
		t.Fatalf("%s\nChromium's last lines (all of them: %s):\n%s", msg, keepLog("chromium.log"), chromeOut.lastLines(20))
	}
	// open loads a page (by navigating or clicking) and waits until it is
	// there: status 200 and the element that page is known by, visible.
	shown := func(what string, resp *network.Response, err error, want chromedp.CSS) {
		t.Helper()
		if err != nil {
			fail("%s: %v", what, err)
		}
		if resp.Status != http.StatusOK {
			fail("%s: %s answered %d", what, resp.URL, resp.Status)
		}
		if err := chromedp.Do(bctx, chromedp.WaitVisible(want)); err != nil {
			fail("%s: %s not shown: %v", what, want, err)
		}
	}
	open := func(what string, load chromedp.Action[chromedp.Void], want chromedp.CSS) {
		t.Helper()
		resp, err := chromedp.RunResponse(bctx, load)
		shown(what, resp, err, want)
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		path := filepath.Join(shots, name+".png")
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", path)
	}
	text := func(sel chromedp.CSS) string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Text(sel))
		if err != nil {
			fail("%s: %v", sel, err)
		}
		return strings.TrimSpace(s)
	}

	// The start page is the browser's first TLS handshake with the portal,
	// where it reaches the card through NSS. A Chromium that crashes
	// before that page is shown (it has, rarely, under load: a CHECK of
	// its own, "signal: trace/breakpoint trap", with no message) has
	// touched nothing of credgw's: its output is kept and one new browser,
	// of a new profile, starts the journey again. A second crash fails.
	for attempt := 1; ; attempt++ {
		startBrowser(attempt)
		resp, err := chromedp.RunResponse(bctx, chromedp.Navigate(base+"/"))
		if attempt == 1 && crashed(err) {
			t.Logf("Chromium crashed loading the start page (%v); its output is in %s; starting a new one",
				err, keepLog("chromium-crash.log"))
			continue
		}
		shown("start page", resp, err, "#signin")
		break
	}
	shot("01-signin")
	open("sign-in with the card", chromedp.Click(chromedp.ID("signin")), "#enroll-action")
	if who := text("header span"); !strings.Contains(who, "CN=Dev Cardholder") {
		fail("signed in as %q", who)
	}
	shot("02-actions")
	open("enroll: install the app", chromedp.Click(chromedp.ID("enroll-action")), "#installed")
	shot("03-app")
	open("enroll: form", chromedp.Click(chromedp.ID("installed")), "#create")
	ctype, err := chromedp.Run(bctx, chromedp.Value(chromedp.ID("type")))
	if err != nil || ctype == "" {
		fail("no credential type selected: %v", err)
	}
	if err := chromedp.Do(bctx, chromedp.SetValue(chromedp.ID("name"), "Browser Test Phone")); err != nil {
		fail("name: %v", err)
	}
	shot("04-enroll")
	open("enroll: create", chromedp.Click(chromedp.ID("create")), "#qr")
	password := text("#password")
	if !regexp.MustCompile(`^\d{6,}$`).MatchString(password) {
		fail("password %q", password)
	}
	src, err := chromedp.Run(bctx, chromedp.AttributeValue(chromedp.ID("qr"), "src"))
	if err != nil || !strings.HasPrefix(src.Value, "data:image/png;base64,") {
		fail("QR image: %v %.40q", err, src.Value)
	}
	png, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(src.Value, "data:image/png;base64,"))
	if err != nil {
		fail("QR image: %v", err)
	}
	if payload, err := agent.DecodeQR(png); err != nil || !strings.HasPrefix(payload, "credgw://activate?") {
		fail("QR code: %v %.30q", err, payload)
	}
	shot("05-qr")

	// The device: the reference agent redeems what the page shows.
	out := filepath.Join(work, "phone")
	os.MkdirAll(out, 0o700)
	qrFile, pwFile, kpin := filepath.Join(out, "qr.png"), filepath.Join(out, "password.txt"), filepath.Join(out, "keystore-pin.txt")
	os.WriteFile(qrFile, png, 0o600)
	os.WriteFile(pwFile, []byte(password+"\n"), 0o600)
	os.WriteFile(kpin, []byte("correct horse\n"), 0o600)
	device := filepath.Join(out, "device")
	if r := run(t, nil, true, credgwBin, "redeem", "--trust-anchor", filepath.Join(dir, "ca", "root.crt"), "--qr", qrFile, "--password-file", pwFile, "--keystore-pin-file", kpin,
		"--out", device, "--timeout", "3m"); !strings.Contains(r, "Installed and confirmed") {
		t.Fatalf("redeem output:\n%s", r)
	}
	authCert, issuer := readDerivedAuth(t, device)
	if st := gatewayOCSP(t, ctx, authCert, issuer); st != ocsp.Good {
		t.Fatalf("gateway OCSP for the derived PIV Authentication certificate before revocation: status %d, want good", st)
	}

	open("my credentials", chromedp.Navigate(base+"/credentials"), "#credentials")
	row := text("#credentials tbody tr")
	if !strings.Contains(row, "Browser Test Phone") || !strings.Contains(row, "credgw reference agent") {
		fail("credential row %q lacks the name or the device model", row)
	}
	if st := text("#credentials tbody tr td.state"); st != "active" {
		fail("state %q after redeeming, want active", st)
	}
	shot("06-credentials")

	open("revoke", chromedp.Click(chromedp.CSS("#credentials tbody tr button.revoke")), "#credentials")
	if st := text("#credentials tbody tr td.state"); st != "revoked" {
		fail("state %q after revoking, want revoked", st)
	}
	if err := chromedp.Do(bctx, chromedp.WaitNotPresent(chromedp.CSS("#credentials button.revoke"))); err != nil {
		fail("a revoke button is left: %v", err)
	}
	shot("07-revoked")

	if st := gatewayOCSP(t, ctx, authCert, issuer); st != ocsp.Revoked {
		t.Fatalf("gateway OCSP for the derived PIV Authentication certificate after revocation: status %d, want revoked", st)
	}
}

// crashed reports whether err is that of a call whose browser process died
// of a signal it did not ask for (a crash, not a stop).
func crashed(err error) bool {
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		return false
	}
	ws, ok := exit.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled()
}

// needBrowser returns Chromium's path. Without Chromium the test is skipped,
// except under CI, where it fails.
func needBrowser(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("chromium")
	if err != nil {
		skipOrFail(t, "chromium is not installed: run `make deps` (Debian package chromium)")
	}
	return p
}

func skipOrFail(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatal(why)
	}
	t.Skip(why)
}

func writable(dir string) bool {
	f, err := os.CreateTemp(dir, ".credgw-test-*")
	if err != nil {
		return false
	}
	f.Close()
	os.Remove(f.Name())
	return true
}

// artifactsDir is $CREDGW_TEST_ARTIFACTS, else test/artifacts.
func artifactsDir(t *testing.T) string {
	t.Helper()
	d := os.Getenv("CREDGW_TEST_ARTIFACTS")
	if d == "" {
		d = "artifacts"
	}
	d, err := filepath.Abs(d)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// readDerivedAuth returns the derived PIV Authentication certificate that
// the agent installed and the certificate of its issuer.
func readDerivedAuth(t *testing.T, device string) (*x509.Certificate, *x509.Certificate) {
	t.Helper()
	var certs []*x509.Certificate
	for _, f := range []string{"auth.crt", "chain.pem"} {
		b, err := os.ReadFile(filepath.Join(device, f))
		if err != nil {
			t.Fatal(err)
		}
		for blk, rest := pem.Decode(b); blk != nil; blk, rest = pem.Decode(rest) {
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			certs = append(certs, c)
		}
	}
	if len(certs) < 2 {
		t.Fatalf("auth.crt and chain.pem hold %d certificates", len(certs))
	}
	for _, c := range certs[1:] {
		if certs[0].CheckSignatureFrom(c) == nil {
			return certs[0], c
		}
	}
	t.Fatal("chain.pem does not hold the issuer of auth.crt")
	return nil, nil
}

// gatewayOCSP asks the OCSP responder the certificate names and returns the
// status of a response signed for its issuer.
func gatewayOCSP(t *testing.T, ctx context.Context, cert, issuer *x509.Certificate) int {
	t.Helper()
	if len(cert.OCSPServer) == 0 {
		t.Fatal("the derived certificate names no OCSP responder")
	}
	req, err := ocsp.CreateRequest(cert, issuer, nil)
	if err != nil {
		t.Fatal(err)
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, cert.OCSPServer[0], bytes.NewReader(req))
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Content-Type", "application/ocsp-request")
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	der, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("OCSP %s: %d %v", cert.OCSPServer[0], resp.StatusCode, err)
	}
	r, err := ocsp.ParseResponseForCert(der, cert, issuer)
	if err != nil {
		t.Fatalf("OCSP response from %s: %v", cert.OCSPServer[0], err)
	}
	return r.Status
}

// buildCardReader compiles cardReaderC against the PKCS#11 headers that
// github.com/miekg/pkcs11 carries and returns the module's path.
func buildCardReader(t *testing.T, work string) string {
	t.Helper()
	inc, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/miekg/pkcs11").Output()
	if err != nil {
		t.Fatalf("go list -m github.com/miekg/pkcs11: %v", err)
	}
	src, lib := filepath.Join(work, "cardreader.c"), filepath.Join(work, "libcredgw-cardreader.so")
	if err := os.WriteFile(src, []byte(cardReaderC), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, nil, true, "cc", "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-I", strings.TrimSpace(string(inc)), "-o", lib, src, "-ldl")
	return lib
}

// cardReaderC is a PKCS#11 module in front of SoftHSM
// ($CREDGW_CARD_MODULE): it shows only the token labelled
// $CREDGW_CARD_TOKEN, and every session it opens on it is logged in with the
// PIN in $CREDGW_CARD_PIN_FILE. Everything else is SoftHSM's own function.
const cardReaderC = `#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define CK_PTR *
#define CK_DECLARE_FUNCTION(returnType, name) returnType name
#define CK_DECLARE_FUNCTION_POINTER(returnType, name) returnType (* name)
#define CK_CALLBACK_FUNCTION(returnType, name) returnType (* name)
#ifndef NULL_PTR
#define NULL_PTR 0
#endif
#include "pkcs11.h"

static CK_FUNCTION_LIST_PTR real;
static CK_FUNCTION_LIST reader;

static int isCard(CK_SLOT_ID slot) {
	const char *label = getenv("CREDGW_CARD_TOKEN");
	CK_TOKEN_INFO ti;
	size_t n;
	if (!label || real->C_GetTokenInfo(slot, &ti) != CKR_OK) return 0;
	n = strlen(label);
	if (n > sizeof ti.label || memcmp(ti.label, label, n) != 0) return 0;
	for (; n < sizeof ti.label; n++) if (ti.label[n] != ' ') return 0;
	return 1;
}

static CK_RV GetSlotList(CK_BBOOL present, CK_SLOT_ID_PTR list, CK_ULONG_PTR count) {
	CK_SLOT_ID all[64];
	CK_ULONG n = 64, i, k = 0;
	CK_RV rv = real->C_GetSlotList(CK_TRUE, all, &n);
	if (rv != CKR_OK) return rv;
	for (i = 0; i < n; i++) if (isCard(all[i])) all[k++] = all[i];
	if (list) {
		if (*count < k) { *count = k; return CKR_BUFFER_TOO_SMALL; }
		memcpy(list, all, k * sizeof all[0]);
	}
	*count = k;
	return CKR_OK;
}

static void login(CK_SLOT_ID slot, CK_SESSION_HANDLE session) {
	const char *pinFile = getenv("CREDGW_CARD_PIN_FILE");
	char pin[64];
	size_t n;
	FILE *f;
	if (!pinFile || !isCard(slot) || !(f = fopen(pinFile, "r"))) return;
	n = fread(pin, 1, sizeof pin - 1, f);
	fclose(f);
	while (n > 0 && (pin[n-1] == '\n' || pin[n-1] == '\r' || pin[n-1] == ' ')) n--;
	/* CKR_USER_ALREADY_LOGGED_IN after the first session: fine. */
	real->C_Login(session, CKU_USER, (CK_UTF8CHAR_PTR)pin, n);
	memset(pin, 0, sizeof pin);
}

static CK_RV OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app, CK_NOTIFY notify, CK_SESSION_HANDLE_PTR session) {
	CK_RV rv = real->C_OpenSession(slot, flags, app, notify, session);
	if (rv == CKR_OK) login(slot, *session);
	return rv;
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list) {
	if (!real) {
		const char *path = getenv("CREDGW_CARD_MODULE");
		void *h = path ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
		CK_C_GetFunctionList get = h ? (CK_C_GetFunctionList)dlsym(h, "C_GetFunctionList") : NULL;
		if (!get || get(&real) != CKR_OK) return CKR_GENERAL_ERROR;
		reader = *real;
		reader.C_GetSlotList = GetSlotList;
		reader.C_OpenSession = OpenSession;
	}
	*list = &reader;
	return CKR_OK;
}
`

// browserDeadline bounds the whole browser journey (a busy machine is
// slow, not stuck).
const browserDeadline = 6 * time.Minute

// tailBuffer keeps the last max bytes Chromium wrote; Chromium writes it
// from its own goroutine while the test reads it on failure.
type tailBuffer struct {
	mu  sync.Mutex
	b   []byte
	max int
}

func (w *tailBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b = append(w.b, p...)
	if len(w.b) > w.max {
		w.b = append([]byte(nil), w.b[len(w.b)-w.max:]...)
	}
	return len(p), nil
}

// lastLines returns the last n lines written.
func (w *tailBuffer) lastLines(n int) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	lines := strings.Split(strings.TrimRight(string(w.b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func TestCrashed(t *testing.T) {
	for _, c := range []struct {
		name string
		err  func() error
		want bool
	}{
		{"killed by a trap", func() error { return exec.Command("sh", "-c", "kill -TRAP $$").Run() }, true},
		{"exit status 1", func() error { return exec.Command("sh", "-c", "exit 1").Run() }, false},
		{"wrapped crash", func() error {
			return fmt.Errorf("start page: %w", exec.Command("sh", "-c", "kill -SEGV $$").Run())
		}, true},
		{"context canceled", func() error { return context.Canceled }, false},
		{"no error", func() error { return nil }, false},
	} {
		if got := crashed(c.err()); got != c.want {
			t.Errorf("%s: crashed = %v, want %v", c.name, got, c.want)
		}
	}
}
