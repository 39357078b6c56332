package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/credgw/credgw/server"
)

// TestPINValueRefusedOnCommandLine: the help says PINs never come from
// flags, and a pkcs11: URI with pin-value= on the command line is seen by
// every local user in ps and kept in the shell history; every command
// that takes a URI refuses it before doing anything, without echoing it.
func TestPINValueRefusedOnCommandLine(t *testing.T) {
	dir := t.TempDir()
	const pin = "735914"
	uri := "pkcs11:token=Jane%20Doe?pin-value=" + pin
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"card check --uri", []string{"card", "check", "--uri", uri}, []string{"--uri", "pin-source=FILE"}},
		{"piv login --card", []string{"piv", "login", "--gateway", "127.0.0.1:1", "--ca-file", filepath.Join(dir, "none.pem"), "--card", uri},
			[]string{"--card", "pin-source=FILE", "--pin-file"}},
		{"enroll --card", []string{"enroll", "--gateway", "127.0.0.1:1", "--ca-file", filepath.Join(dir, "none.pem"), "--card", uri,
			"--name", "x", "--qr-out", filepath.Join(dir, "qr.png")}, []string{"--card", "pin-source=FILE", "--pin-file"}},
		{"redeem --keystore", []string{"redeem", "--qr-payload", "x", "--out", filepath.Join(dir, "out"), "--keystore", uri},
			[]string{"--keystore", "pin-source=FILE"}},
		{"--flag=value form", []string{"card", "check", "--uri=" + uri}, []string{"--uri", "pin-source=FILE"}},
		{"malformed URI", []string{"card", "check", "--uri", "pkcs11:token=x?pin-value=73&5914"}, []string{"--uri", "pin-source=FILE"}},
		{"pin-value in the path", []string{"card", "check", "--uri", "pkcs11:token=x;pin-value=" + pin}, []string{"--uri", "pin-source=FILE"}},
		{"scheme in capitals", []string{"card", "check", "--uri", "PKCS11:token=x?module-path=/m.so&pin-value=" + pin}, []string{"--uri", "pin-source=FILE"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			root := newRootCmd()
			root.SetArgs(tc.args)
			root.SetOut(&out)
			root.SetErr(&errOut)
			root.SetIn(strings.NewReader(""))
			err := root.Execute() // main exits 1 on any error
			if err == nil {
				t.Fatal("a PIN on the command line was accepted")
			}
			msg := err.Error()
			for _, w := range append(tc.want, "command line") {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
			for _, s := range []string{msg, out.String(), errOut.String()} {
				if strings.Contains(s, pin) || strings.Contains(s, "73&5914") {
					t.Errorf("the PIN is printed: %q", s)
				}
			}
		})
	}
}

// TestURIsWithoutPINValuePass: a URI whose PIN comes from a file, or
// whose other attributes merely contain the letters, is not refused.
func TestURIsWithoutPINValuePass(t *testing.T) {
	for _, v := range []string{
		"pkcs11:token=Jane%20Doe?pin-source=/run/pin",
		"pkcs11:token=pin-value?module-path=/m.so",
		"pkcs11:object=my-pin-value-key",
		"pin-value=123456", // not a URI: a flag that takes none
	} {
		if uriHasPINValue(v) {
			t.Errorf("%q refused", v)
		}
	}
}

// TestKeyPlaceHidesThePIN: ca init prints where the issuing key is; a
// ca.key_uri may carry pin-value= (the config allows it), and ca init's
// output ends up in ceremony transcripts and CI logs.
func TestKeyPlaceHidesThePIN(t *testing.T) {
	cfg := &server.Config{}
	cfg.CA.KeyURI = "pkcs11:token=ca;id=%01?pin-value=87654321"
	got := keyPlace(cfg)
	if strings.Contains(got, "87654321") || !strings.Contains(got, "token=ca") {
		t.Fatalf("keyPlace = %q: want the token named and no PIN", got)
	}
}
