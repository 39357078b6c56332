package main

import (
	"bytes"
	"errors"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/credgw/credgw/activation/code"
)

// TestNewcomerMistakesNameTheFlag: the mistakes a newcomer made in a
// trial each got a message that did not say which flag to fix, or showed
// a library's internals.
func TestNewcomerMistakesNameTheFlag(t *testing.T) {
	dir := t.TempDir()
	blank := filepath.Join(dir, "blank.png")
	var img bytes.Buffer
	white := image.NewGray(image.Rect(0, 0, 64, 64))
	for i := range white.Pix {
		white.Pix[i] = 0xff
	}
	if err := png.Encode(&img, white); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(blank, img.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	payload := filepath.Join(dir, "payload")
	p := code.Payload{Gateway: "127.0.0.1:1", ID: strings.Repeat("A", 26), Secret: make([]byte, 32), Pin: make([]byte, 32)}
	if err := os.WriteFile(payload, []byte(p.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want []string
		not  []string
	}{
		{"a QR file that is not there", []string{"redeem", "--qr", filepath.Join(dir, "nope.png"), "--out", filepath.Join(dir, "o"), "--trust-gateway-ca"},
			[]string{"--qr", "nope.png"}, nil},
		{"a PNG without a QR code", []string{"redeem", "--qr", blank, "--out", filepath.Join(dir, "o"), "--trust-gateway-ca"},
			[]string{"no QR code found"}, []string{"Exception", "startSize"}},
		{"a misspelt flag", []string{"serve", "--conf", "x.yaml"},
			[]string{"unknown flag: --conf", "--config", "credgw serve --help"}, nil},
		// A typo in a script must fail it, not print help and exit 0.
		{"a misspelt subcommand", []string{"audit", "verfy"}, []string{`unknown command "verfy" for "credgw audit"`, "verify"}, nil},
		{"a misspelt subcommand with a flag", []string{"config", "chek", "--config", "x.yaml"}, []string{`unknown command "chek" for "credgw config"`, "check"}, []string{"unknown flag"}},
		{"a password file that is not there", []string{"redeem", "--qr-payload-file", payload, "--out", filepath.Join(dir, "o"), "--trust-gateway-ca",
			"--password-file", filepath.Join(dir, "absent")}, []string{"--password-file"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			root := newRootCmd()
			root.SetArgs(tc.args)
			root.SetOut(&out)
			root.SetErr(&out)
			err := root.Execute()
			if err == nil {
				t.Fatal("succeeded")
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("%q does not say %q", msg, w)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(msg, n) {
					t.Errorf("%q shows %q", msg, n)
				}
			}
		})
	}
}

// TestNoTerminalNamesTheFlag: redeem without a terminal says which flag
// gives the password.
func TestNoTerminalNamesTheFlag(t *testing.T) {
	_, err := secretInput("--password-file", "", "Password shown under the QR code: ")
	if err == nil || !strings.Contains(err.Error(), "--password-file") {
		t.Fatalf("%v", err)
	}
}

// TestWrongCAFileNamed: a gateway certificate that --ca-file does not
// trust read as "gateway unavailable: ... unknown authority".
func TestWrongCAFileNamed(t *testing.T) {
	err := caFileError("tls/other-ca.crt", errors.New(`gateway unavailable: connection error: desc = "transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority"`))
	if err == nil || !strings.Contains(err.Error(), "--ca-file tls/other-ca.crt does not trust") {
		t.Fatalf("%v", err)
	}
	other := errors.New("gateway unavailable: connection refused")
	if caFileError("x", other) != other {
		t.Fatal("an unreachable gateway blamed on --ca-file")
	}
}
