package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/credgw/credgw/pkcs11"
)

// TestWrongPINTriedOncePerToken: ca.key_uri and escrow.kek_uri on the
// same token with a wrong PIN spent two login attempts per config check
// (and per start), on HSMs that lock the PIN after a few.
func TestWrongPINTriedOncePerToken(t *testing.T) {
	cfg := &Config{dir: t.TempDir()}
	for _, f := range []string{"pin", "other-pin"} {
		if err := os.WriteFile(filepath.Join(cfg.dir, f), []byte("1234"+f+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg.CA.KeyURI = "pkcs11:token=credgw-ca;id=%01?module-path=/m.so&pin-source=pin"
	cfg.Escrow.KEKURI = "pkcs11:token=credgw-ca;id=%02?module-path=/m.so&pin-source=pin"
	h := newHSM(cfg)
	logins := 0
	h.open = func(context.Context, *pkcs11.URI, string) (*pkcs11.Token, error) {
		logins++
		return nil, fmt.Errorf("%w (C_Login refused by the token: check the PIN source)", pkcs11.ErrPINIncorrect)
	}
	_, _, _, caErr := h.caKey(context.Background())
	_, _, kekErr := h.kek(context.Background())
	if logins != 1 {
		t.Errorf("%d logins with the same wrong PIN, want 1", logins)
	}
	for field, err := range map[string]error{"ca.key_uri": caErr, "escrow.kek_uri": kekErr} {
		if err == nil || !strings.Contains(err.Error(), field) || !strings.Contains(err.Error(), "PIN incorrect") {
			t.Errorf("%s: %v", field, err)
		}
	}
	// Another PIN on the same token is tried.
	cfg.Escrow.KEKURI = "pkcs11:token=credgw-ca;id=%02?module-path=/m.so&pin-source=other-pin"
	if _, _, err := h.kek(context.Background()); err == nil || logins != 2 {
		t.Errorf("another PIN source: %d logins (%v), want 2", logins, err)
	}
	cfg.CA.KeyURI = "pkcs11:token=credgw-ca;id=%01?module-path=/m.so&pin-value=1111"
	cfg.Escrow.KEKURI = "pkcs11:token=credgw-ca;id=%02?module-path=/m.so&pin-value=2222"
	h.caKey(context.Background())
	h.kek(context.Background())
	if logins != 4 {
		t.Errorf("two pin-values: %d logins in all, want 4 (each PIN tried once)", logins)
	}
}
