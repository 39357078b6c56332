package pkcs11

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
)

// testModulePath is SoftHSM, configured by TestMain to keep its tokens in a
// directory of this test binary's own.
var testModulePath string

const (
	testPIN   = "246813"
	testSOPIN = "97531864"
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "credgw-pkcs11-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	conf, err := WriteSoftHSMConfig(dir)
	if err == nil {
		os.Setenv("SOFTHSM2_CONF", conf)
		testModulePath, err = SoftHSMModule()
	}
	if err != nil {
		// Fail, never skip: these tests are the PKCS#11 layer's proof.
		fmt.Fprintf(os.Stderr, "pkcs11 tests need SoftHSM: %v\n", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var labelSeq atomic.Int64

// uniqueLabel makes a token label (≤ 32 bytes) unique within the test binary.
func uniqueLabel(t testing.TB) string {
	name := strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
	if len(name) > 24 {
		name = name[len(name)-24:]
	}
	return fmt.Sprintf("%s-%d", name, labelSeq.Add(1))
}

// openModule opens SoftHSM for the test and closes it at cleanup.
func openModule(t testing.TB) *Module {
	t.Helper()
	m, err := OpenModule(testModulePath)
	if err != nil {
		t.Fatalf("OpenModule: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// newToken initialises a fresh token and opens it logged in.
func newToken(t testing.TB, cfg TokenConfig) *Token {
	t.Helper()
	m := openModule(t)
	if cfg.Label == "" {
		cfg.Label = uniqueLabel(t)
	}
	if _, err := m.InitToken(cfg.Label, []byte(testSOPIN), []byte(testPIN)); err != nil {
		t.Fatalf("InitToken(%q): %v", cfg.Label, err)
	}
	if cfg.PIN == nil {
		cfg.PIN = []byte(testPIN)
	}
	tok, err := m.OpenToken(context.Background(), cfg)
	if err != nil {
		t.Fatalf("OpenToken(%q): %v", cfg.Label, err)
	}
	t.Cleanup(func() { tok.Close() })
	return tok
}

func mustGenerate(t testing.TB, tok *Token, spec KeySpec) *Signer {
	t.Helper()
	s, err := tok.GenerateKeyPair(context.Background(), spec)
	if err != nil {
		t.Fatalf("GenerateKeyPair(%v): %v", spec.Type, err)
	}
	return s
}
