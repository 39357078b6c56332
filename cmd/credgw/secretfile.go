package main

import (
	"fmt"
	"os"
)

// writeSecretFile writes data (a QR code that carries an activation
// secret, a password, a PIN, a session token) to path so that the file
// ends 0600 whatever was there: os.WriteFile's mode applies only to a
// file it creates, and would leave an existing 0644 file readable by all.
func writeSecretFile(path string, data []byte) error {
	f, err := createSecretFile(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// createSecretFile opens path for writing, empty and 0600, creating it
// if need be. The mode is set on the open file before the old content is
// dropped and before anything is written, so the secret is never in a
// file others may read; when the mode cannot be set (a file of another
// owner) the file is left as it was. A device or pipe (/dev/stdout) is
// written as it is.
func createSecretFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if fi.Mode().IsRegular() {
		if err := f.Chmod(0o600); err != nil {
			f.Close()
			return nil, fmt.Errorf("not written, it must be readable by its owner only (0600): %w", err)
		}
		if err := f.Truncate(0); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}
