package test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDevInitServeLogin: `credgw dev init`, then `credgw hsm-sim serve` and
// `credgw serve` as separate processes, and `credgw piv login` with the card:
// what a developer does by hand. Both servers stop cleanly on SIGTERM. A
// second `credgw serve`, or `credgw migrate`, on the same SQLite database is
// refused and pointed to PostgreSQL.
func TestDevInitServeLogin(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	out := devInit(t, dir)
	if !strings.Contains(out, "credgw serve --config") {
		t.Fatalf("dev init output:\n%s", out)
	}
	cfg, err := os.ReadFile(filepath.Join(dir, "credgw.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	gw := regexp.MustCompile(`grpc: (127\.0\.0\.1:\d+)`).FindStringSubmatch(string(cfg))
	if gw == nil {
		t.Fatalf("credgw.yaml has no grpc address:\n%s", cfg)
	}
	for _, f := range []string{"tls/ca.key", "tls/server.key", "tls/portal.key", "tls/admin.key", "card.pin", "credgw.yaml"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v (want 0600)", f, st, err)
		}
	}
	startServe(t, filepath.Join(dir, "hsm"))
	startProcess(t, "credgw serving", credgwBin, "serve", "--config", filepath.Join(dir, "credgw.yaml"))
	// config check reads the store read-only: it runs beside the gateway.
	if out := run(t, nil, true, credgwBin, "config", "check", "--config", filepath.Join(dir, "credgw.yaml")); !strings.Contains(out, ": ok") {
		t.Errorf("config check beside a running gateway:\n%s", out)
	}
	for _, cmd := range []string{"serve", "migrate"} {
		out := run(t, nil, false, credgwBin, cmd, "--config", filepath.Join(dir, "credgw.yaml"))
		for _, want := range []string{"is in use by another credgw", "store.driver: postgres"} {
			if !strings.Contains(out, want) {
				t.Errorf("credgw %s beside a running gateway does not say %q:\n%s", cmd, want, out)
			}
		}
	}

	conf := "SOFTHSM2_CONF=" + filepath.Join(dir, "hsm", "softhsm2.conf")
	tokenFile := filepath.Join(t.TempDir(), "token")
	login := run(t, []string{conf}, true, credgwBin, "piv", "login", "--gateway", gw[1], "--ca-file", filepath.Join(dir, "tls", "ca.crt"),
		"--card", "pkcs11:token=Dev%20Cardholder", "--pin-file", filepath.Join(dir, "card.pin"), "--token-file", tokenFile)
	for _, want := range []string{"PKI-AUTH succeeded", "card UUID:", "person id:", "session token expires"} {
		if !strings.Contains(login, want) {
			t.Errorf("piv login output lacks %q:\n%s", want, login)
		}
	}
	token, err := os.ReadFile(tokenFile)
	if err != nil || len(strings.TrimSpace(string(token))) != 43 {
		t.Fatalf("token file: %q %v", token, err)
	}
	if strings.Contains(login, strings.TrimSpace(string(token))) {
		t.Fatal("piv login printed the session token")
	}
	pin, _ := os.ReadFile(filepath.Join(dir, "card.pin"))
	if strings.Contains(login, strings.TrimSpace(string(pin))) {
		t.Fatal("piv login printed the PIN")
	}

	// A wrong PIN never reaches the gateway.
	wrong := filepath.Join(t.TempDir(), "wrong.pin")
	os.WriteFile(wrong, []byte("00000000\n"), 0o600)
	bad := run(t, []string{conf}, false, credgwBin, "piv", "login", "--gateway", gw[1], "--ca-file", filepath.Join(dir, "tls", "ca.crt"),
		"--card", "pkcs11:token=Dev%20Cardholder", "--pin-file", wrong)
	if !strings.Contains(bad, "PIN incorrect") {
		t.Fatalf("wrong PIN:\n%s", bad)
	}
	// A card whose key is not its certificate's would fail the TLS
	// handshake: the command says so before it connects.
	run(t, []string{conf}, true, credgwBin, "hsm-sim", "card", "new", "--dir", filepath.Join(dir, "hsm"), "--name", "Wrong Key",
		"--pin-file", filepath.Join(dir, "card.pin"), "--variant", "wrong-key")
	wk := run(t, []string{conf}, false, credgwBin, "piv", "login", "--gateway", gw[1], "--ca-file", filepath.Join(dir, "tls", "ca.crt"),
		"--card", "pkcs11:token=Wrong%20Key", "--pin-file", filepath.Join(dir, "card.pin"))
	if !strings.Contains(wk, "the card's key is not the one its PIV Authentication certificate certifies") || strings.Contains(wk, "rpc error") {
		t.Fatalf("wrong-key card:\n%s", wk)
	}
	// No PIN at all says so, not that the card has no key.
	none := run(t, []string{conf}, false, credgwBin, "piv", "login", "--gateway", gw[1], "--ca-file", filepath.Join(dir, "tls", "ca.crt"),
		"--card", "pkcs11:token=Dev%20Cardholder")
	if !strings.Contains(none, "no PIN given") || strings.Contains(none, "not found") {
		t.Fatalf("no PIN:\n%s", none)
	}
}
