package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRedeemPayloadFromFile: the QR text (it holds the activation secret)
// can come from a file or standard input instead of the command line, and
// exactly one source is taken.
func TestRedeemPayloadFromFile(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "payload.txt")
	os.WriteFile(f, []byte("not-a-payload\nsecond line\n"), 0o600)
	for _, tc := range []struct {
		name  string
		args  []string
		stdin string
		want  string
	}{
		{"from a file", []string{"--qr-payload-file", f}, "", "not a credgw activation code"},
		{"from standard input", []string{"--qr-payload-file", "-"}, "not-a-payload\n", "not a credgw activation code"},
		{"two sources", []string{"--qr-payload-file", f, "--qr-payload", "x"}, "", "exactly one of"},
		{"a missing file", []string{"--qr-payload-file", filepath.Join(dir, "none")}, "", "--qr-payload-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := newRedeemCmd()
			cmd.SetArgs(append(tc.args, "--out", filepath.Join(dir, "out"), "--trust-gateway-ca"))
			cmd.SetIn(strings.NewReader(tc.stdin))
			cmd.SetOut(new(bytes.Buffer))
			cmd.SetErr(new(bytes.Buffer))
			err := cmd.Execute()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one saying %q", err, tc.want)
			}
		})
	}
	if got, err := readPayloadFile(strings.NewReader("credgw://activate?x=1\r\n"), "-"); err != nil || got != "credgw://activate?x=1" {
		t.Fatalf("readPayloadFile = %q, %v", got, err)
	}
}

// TestRedeemNeedsATrustAnchor: the reference agent installs nothing it
// cannot chain to a root it was given out of band; without --trust-anchor
// it refuses before anything is asked or downloaded, and says what to
// give. --trust-gateway-ca is the explicit way to try credgw out.
func TestRedeemNeedsATrustAnchor(t *testing.T) {
	dir := t.TempDir()
	payload := filepath.Join(dir, "payload.txt")
	os.WriteFile(payload, []byte("not-a-payload\n"), 0o600)
	notPEM := filepath.Join(dir, "root.der")
	os.WriteFile(notPEM, []byte{0x30, 0x03, 0x02, 0x01, 0x01}, 0o644)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no anchor", nil, "--trust-anchor is required"},
		{"an anchor and the gateway's CA", []string{"--trust-anchor", notPEM, "--trust-gateway-ca"}, "not both"},
		{"an anchor file without a PEM certificate", []string{"--trust-anchor", notPEM}, "holds no PEM certificate"},
		{"a missing anchor file", []string{"--trust-anchor", filepath.Join(dir, "none.pem")}, "--trust-anchor"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := newRedeemCmd()
			cmd.SetArgs(append(tc.args, "--qr-payload-file", payload, "--out", filepath.Join(dir, "out")))
			cmd.SetOut(new(bytes.Buffer))
			cmd.SetErr(new(bytes.Buffer))
			err := cmd.Execute()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one saying %q", err, tc.want)
			}
		})
	}
}
