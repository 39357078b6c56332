package test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestVersionFlag: --version names the release, the module and the Go
// release, as the version subcommand does.
func TestVersionFlag(t *testing.T) {
	flag := run(t, nil, true, credgwBin, "--version")
	sub := run(t, nil, true, credgwBin, "version")
	if !regexp.MustCompile(`^credgw \S+ \(module github\.com/credgw/credgw .*go1\.\d+`).MatchString(flag) {
		t.Errorf("credgw --version = %q", flag)
	}
	if flag != sub {
		t.Errorf("--version %q and version %q differ", flag, sub)
	}
}

// TestConfigCheck: `credgw config check` passes a good config and lists
// every problem of a broken one (bad field, unreadable and mismatched
// files, a CA key that is not the CA certificate's, a store that cannot
// be reached), with a non-zero exit.
func TestConfigCheck(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	devInit(t, dir)
	cfgPath := filepath.Join(dir, "credgw.yaml")
	if out := run(t, nil, true, credgwBin, "config", "check", "--config", cfgPath); !strings.Contains(out, ": ok") {
		t.Fatalf("config check of dev init's config:\n%s", out)
	}
	good, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	broken := strings.NewReplacer(
		"gateway_id: credgw-dev", "gateway_id: 'not a valid id'",
		"key_file: tls/server.key", "key_file: tls/portal.key", // another certificate's key
		"trust_anchor_files: [hsm/issuer/piv-ca/root.crt]", "trust_anchor_files: [hsm/issuer/piv-ca/missing.crt]",
		"certificate_file: ca/issuing.crt", "certificate_file: ca/root.crt", // not the HSM key's certificate
		"dsn: credgw.db", "dsn: no-such-folder/credgw.db",
	).Replace(string(good))
	out := run(t, nil, false, credgwBin, "config", "check", "--config", write("broken.yaml", broken))
	for _, want := range []string{
		"gateway_id", "tls.cert_file and tls.key_file", "piv.trust_anchor_files", "missing.crt",
		"the CA key does not match ca.certificate_file", "store.dsn", "5 problems in",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("config check of a broken config does not say %q:\n%s", want, out)
		}
	}

	// A server certificate without the anchor the QR code pins: every
	// device would refuse the gateway, so the check refuses it first.
	serverPEM, err := os.ReadFile(filepath.Join(dir, "tls", "server.crt"))
	if err != nil {
		t.Fatal(err)
	}
	leafOnly, _ := pem.Decode(serverPEM)
	write("tls/leaf-only.crt", string(pem.EncodeToMemory(leafOnly)))
	out = run(t, nil, false, credgwBin, "config", "check", "--config",
		write("leaf-only.yaml", strings.Replace(string(good), "cert_file: tls/server.crt", "cert_file: tls/leaf-only.crt", 1)))
	if !strings.Contains(out, "enrollment.tls_anchor_file") || !strings.Contains(out, "1 problem in") {
		t.Errorf("config check of a server certificate without the pinned anchor says:\n%s", out)
	}

	// Secrets other users may read: the TLS key and the CA token's PIN.
	for _, f := range []string{"tls/server.key", "ca/token.pin"} {
		if err := os.Chmod(filepath.Join(dir, f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out = run(t, nil, false, credgwBin, "config", "check", "--config", cfgPath)
	for _, want := range []string{"tls.key_file", "server.key has mode -rw-r--r--", "token.pin has mode -rw-r--r--", "chmod 600"} {
		if !strings.Contains(out, want) {
			t.Errorf("config check with secrets other users may read does not say %q:\n%s", want, out)
		}
	}
	for _, f := range []string{"tls/server.key", "ca/token.pin"} {
		if err := os.Chmod(filepath.Join(dir, f), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// A SoftHSM configuration that is not there (a copy of the config in
	// another folder): SoftHSM itself says only CKR_GENERAL_ERROR.
	out = run(t, nil, false, credgwBin, "config", "check", "--config",
		write("no-softhsm-conf.yaml", strings.Replace(string(good), "softhsm2_conf: hsm/softhsm2.conf", "softhsm2_conf: hsm/missing.conf", 1)))
	if !strings.Contains(out, "hsm.softhsm2_conf") || !strings.Contains(out, "missing.conf: no such file") || strings.Contains(out, "CKR_GENERAL_ERROR") {
		t.Errorf("config check with a missing SoftHSM configuration says:\n%s", out)
	}

	for _, tc := range []struct{ name, text, want string }{
		{"empty", "", "the file is empty"},
		{"wrong kind", "limits: 5\n", "line 1: limits: want a section"},
		{"unknown field", string(good) + "ca_typo: 1\n", `unknown field "ca_typo"`},
	} {
		out := run(t, nil, false, credgwBin, "config", "check", "--config", write(tc.name+".yaml", tc.text))
		if !strings.Contains(out, tc.want) || strings.Contains(out, "server.") || strings.Contains(out, "EOF") {
			t.Errorf("%s: config check says:\n%s\nwant %q and no Go names", tc.name, out, tc.want)
		}
	}
}

// TestManPages: make man writes one page per command, in man(7) format.
func TestManPages(t *testing.T) {
	dir := t.TempDir()
	run(t, nil, true, credgwBin, "man", "--dir", dir)
	for _, page := range []string{"credgw.1", "credgw-serve.1", "credgw-config-check.1", "credgw-admin-revoke.1"} {
		b, err := os.ReadFile(filepath.Join(dir, page))
		if err != nil || !strings.HasPrefix(string(b), ".nh\n.TH \"CREDGW\" \"1\"") {
			t.Errorf("%s: %v\n%.200s", page, err, b)
		}
	}
}

// TestSIGHUPReload: `systemctl reload` (SIGHUP) makes a running gateway
// serve its rotated TLS certificate without a restart.
func TestSIGHUPReload(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	devInit(t, dir)
	cfgText, err := os.ReadFile(filepath.Join(dir, "credgw.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	gw := regexp.MustCompile(`grpc: (127\.0\.0\.1:\d+)`).FindStringSubmatch(string(cfgText))[1]
	startServe(t, filepath.Join(dir, "hsm"))
	_, cmd := startCmd(t, "credgw serving", credgwBin, "serve", "--config", filepath.Join(dir, "credgw.yaml"))

	ca, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls", "ca.crt"), filepath.Join(dir, "tls", "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Leaf)
	served := func() *big.Int {
		c, err := tls.Dial("tcp", gw, &tls.Config{RootCAs: roots, NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber
	}
	before := served()

	// The rotated certificate: a new key and serial from the same CA.
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial := big.NewInt(0).Add(before, big.NewInt(1))
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "credgw"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca.Leaf, k.Public(), ca.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Leaf.Raw})...)
	if err := os.WriteFile(filepath.Join(dir, "tls", "server.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls", "server.crt"), chain, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := served(); got.Cmp(before) != 0 {
		t.Fatalf("the gateway serves serial %s before SIGHUP", got)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// The reload runs beside serving: wait for the new certificate (a
	// busy machine may take a while), not for a duration.
	deadline := time.Now().Add(time.Minute)
	for served().Cmp(serial) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("a minute after SIGHUP the gateway still serves serial %s, want %s", served(), serial)
		}
		runtime.Gosched()
	}
	if cmd.ProcessState != nil {
		t.Fatal("the gateway exited on SIGHUP")
	}
}

// TestConfigCheckFindsUnansweredIssuers: serve logs, at start, an issuer
// name in the store that no configured key answers for (a re-key that took
// a new ca.name and left the old key out of ca.retired: its certificates
// get no OCSP or CRL and cannot be revoked). config check, which an
// operator runs before that restart, did not look: it now says so.
func TestConfigCheckFindsUnansweredIssuers(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	devInit(t, dir)
	hsm := filepath.Join(dir, "hsm")
	startServe(t, hsm)
	cfgPath := filepath.Join(dir, "credgw.yaml")
	stop := startProcess(t, "credgw serving", credgwBin, "serve", "--config", cfgPath)
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	gw := regexp.MustCompile(`grpc: (127\.0\.0\.1:\d+)`).FindStringSubmatch(string(cfg))[1]
	conf := "SOFTHSM2_CONF=" + filepath.Join(hsm, "softhsm2.conf")
	work := t.TempDir()
	qr, pw := filepath.Join(work, "qr.png"), filepath.Join(work, "password.txt")
	run(t, []string{conf}, true, credgwBin, "enroll", "--gateway", gw, "--ca-file", filepath.Join(dir, "tls", "ca.crt"),
		"--card", "pkcs11:token=Dev%20Cardholder", "--pin-file", filepath.Join(dir, "card.pin"),
		"--name", "Phone", "--qr-out", qr, "--password-out", pw)
	kpin := filepath.Join(work, "keystore-pin.txt")
	os.WriteFile(kpin, []byte("keystore-pin-1\n"), 0o600)
	if out := run(t, nil, true, credgwBin, "redeem", "--trust-anchor", filepath.Join(dir, "ca", "root.crt"), "--qr", qr, "--password-file", pw,
		"--keystore-pin-file", kpin, "--out", filepath.Join(work, "device")); !strings.Contains(out, "Installed and confirmed") {
		t.Fatalf("redeem:\n%s", out)
	}
	stop()
	if out := run(t, nil, true, credgwBin, "config", "check", "--config", cfgPath); !strings.Contains(out, ": ok") {
		t.Fatalf("config check of the gateway as it was:\n%s", out)
	}
	// The CA renamed, and no ca.retired entry for the name its
	// certificates carry.
	renamed := bytes.Replace(cfg, []byte("  name: issuing-ca\n"), []byte("  name: issuing-ca-2\n"), 1)
	if bytes.Equal(renamed, cfg) {
		t.Fatal("the development config has no ca.name to change")
	}
	if err := os.WriteFile(cfgPath, renamed, 0o600); err != nil {
		t.Fatal(err)
	}
	out := run(t, nil, false, credgwBin, "config", "check", "--config", cfgPath)
	for _, want := range []string{`"issuing-ca"`, "ca.retired"} {
		if !strings.Contains(out, want) {
			t.Errorf("config check of a CA renamed without ca.retired does not say %q:\n%s", want, out)
		}
	}
}
