package main

import (
	"os"
	"path/filepath"
	"testing"

	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
)

// TestSecretFileEndsPrivate: os.WriteFile(path, data, 0o600) keeps the
// mode of a file that already exists, so a QR secret, a password or a
// session token written over a 0644 file stayed readable by everyone.
func TestSecretFileEndsPrivate(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name   string
		before os.FileMode // 0 for no file yet
	}{
		{"new file", 0},
		{"existing 0644", 0o644},
		{"existing 0666", 0o666},
		{"existing 0400", 0o400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name)
			if tc.before != 0 {
				if err := os.WriteFile(path, []byte("old content, longer than the new one\n"), tc.before); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(path, tc.before); err != nil {
					t.Fatal(err)
				}
			}
			err := writeSecretFile(path, []byte("new\n"))
			if tc.before == 0o400 && os.Geteuid() != 0 {
				// Not writable by its owner: refused, as os.WriteFile
				// would, and left as it was.
				if err == nil {
					t.Fatal("a 0400 file was written")
				}
				checkMode(t, path, 0o400)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkSecretFile(t, path, "new\n")
		})
	}
}

// TestEnrollAndLoginOutputsPrivate: the paths enroll and piv login write
// (--qr-out, --password-out, --token-file) end 0600 over 0644 files.
func TestEnrollAndLoginOutputsPrivate(t *testing.T) {
	dir := t.TempDir()
	qr, pw, tok := filepath.Join(dir, "qr.png"), filepath.Join(dir, "pw.txt"), filepath.Join(dir, "tok.txt")
	for _, p := range []string{qr, pw, tok} {
		if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	resp := &credgwv1.CreateEnrollmentResponse{QrPng: []byte("\x89PNG secret"), Password: "12345678"}
	if err := writeEnrollmentFiles(enrollOptions{qrOut: qr, passwordOut: pw}, resp); err != nil {
		t.Fatal(err)
	}
	checkSecretFile(t, qr, "\x89PNG secret")
	checkSecretFile(t, pw, "12345678\n")
	if err := writeSecretFile(tok, []byte("session-token\n")); err != nil {
		t.Fatal(err)
	}
	checkSecretFile(t, tok, "session-token\n")
}

func checkSecretFile(t *testing.T, path, want string) {
	t.Helper()
	checkMode(t, path, 0o600)
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("%s: content %q, want %q", filepath.Base(path), got, want)
	}
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != want {
		t.Errorf("%s: mode %#o, want %#o", filepath.Base(path), m, want)
	}
}
