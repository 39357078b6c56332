package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeFailsInJSON: serve's logs are JSON lines (docs/deploy.md), but
// the error that stopped it at start was printed as plain text ("credgw:
// store: ..."), which a log pipeline parsing JSON drops: the one line that
// says why the gateway is down. It is now a JSON line at level ERROR, and
// nothing else is printed.
func TestServeFailsInJSON(t *testing.T) {
	var stderr bytes.Buffer
	root := newRootCmd()
	root.SetArgs([]string{"serve", "--config", filepath.Join(t.TempDir(), "missing.yaml")})
	root.SetErr(&stderr)
	root.SetOut(&stderr)
	err := root.Execute()
	if err == nil {
		t.Fatal("serve with no config started")
	}
	var logged loggedError
	if !errors.As(err, &logged) {
		t.Fatalf("the error %v would be printed again as plain text", err)
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	for _, line := range lines {
		var rec struct{ Level, Msg, Err string }
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("a line that is not JSON: %q", line)
		}
		if rec.Level != "ERROR" || !strings.Contains(rec.Err, "missing.yaml") {
			t.Fatalf("the line %q: want level ERROR and the error naming the file", line)
		}
	}
}
