package issuance

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credgw/credgw/pkcs11"
	"github.com/credgw/credgw/store"
)

// The test binary's CA: an issuing key generated in a SoftHSM token by
// InitCA, the real smallstep authority, SQLite, and the CA's HTTP endpoints
// served on 127.0.0.1.
var (
	testDir   string
	testTok   *pkcs11.Token
	testStore *store.SQLite
	testCA    *CA
	testInit  *InitResult
	baseURL   string
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, err); return 1 }
	var err error
	if testDir, err = os.MkdirTemp("", "credgw-issuance-test-"); err != nil {
		return fail(err)
	}
	defer os.RemoveAll(testDir)
	conf, err := pkcs11.WriteSoftHSMConfig(filepath.Join(testDir, "hsm"))
	if err != nil {
		return fail(err)
	}
	os.Setenv("SOFTHSM2_CONF", conf)
	modPath, err := pkcs11.SoftHSMModule()
	if err != nil {
		return fail(fmt.Errorf("issuance tests need SoftHSM (make deps): %w", err))
	}
	mod, err := pkcs11.OpenModule(modPath)
	if err != nil {
		return fail(err)
	}
	defer mod.Close()
	ctx := context.Background()
	if _, err := mod.InitToken("credgw-ca", []byte("87654321"), []byte("12345678")); err != nil {
		return fail(err)
	}
	if testTok, err = mod.OpenToken(ctx, pkcs11.TokenConfig{Label: "credgw-ca", PIN: []byte("12345678")}); err != nil {
		return fail(err)
	}
	defer testTok.Close()
	if testStore, err = store.OpenSQLite(ctx, filepath.Join(testDir, "credgw.db")); err != nil {
		return fail(err)
	}
	defer testStore.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	baseURL = "http://" + ln.Addr().String()
	if testInit, err = InitCA(ctx, InitOptions{Dir: filepath.Join(testDir, "ca"), Token: testTok, Organization: "credgw test", BaseURL: baseURL,
		// Given names: the goldens show the issuer (default names have a key suffix).
		RootName: "credgw test Derived Credential Root CA", IssuingName: "credgw test Derived PIV Issuing CA"}); err != nil {
		return fail(err)
	}
	signer, err := testTok.Signer(ctx, pkcs11.KeyRef{ID: testInit.IssuingKeyID})
	if err != nil {
		return fail(err)
	}
	if testCA, err = NewCA(Config{Name: "issuing-ca", Chain: []*x509.Certificate{testInit.Issuing, testInit.Root},
		Signer: signer, Store: testStore, BaseURL: baseURL, afterCRL: crlLints.check}); err != nil {
		return fail(err)
	}
	srv := &http.Server{Handler: testCA.Handler()}
	go srv.Serve(ln)
	defer srv.Close()
	code := m.Run()
	// Every CRL a test made, whichever CA (replica) signed it.
	if n, findings := crlLints.report(); len(findings) > 0 {
		return fail(fmt.Errorf("zlint on the %d CRLs the tests made:\n%s", n, strings.Join(findings, "\n")))
	}
	return code
}

// cardSubject is the PIV Authentication certificate subject the derived
// certificates copy.
var cardSubject = func() []byte {
	b, err := asn1MarshalName(pkix.Name{Country: []string{"US"}, Organization: []string{"U.S. Government"},
		OrganizationalUnit: []string{"Department of Examples"}, CommonName: "Alice Q. Cardholder"})
	if err != nil {
		panic(err)
	}
	return b
}()

func asn1MarshalName(n pkix.Name) ([]byte, error) {
	return asn1.Marshal(n.ToRDNSequence())
}

// identity is a verified PIV identity with a fresh card key.
func identity(t testing.TB) Identity {
	t.Helper()
	card, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return Identity{
		RawSubject: cardSubject, Email: "alice@example.gov", UPN: "alice@agency.example",
		PIVCertSHA256: "00aa", FASCN: []byte{0xd4, 0xe7}, CardUUID: "f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
		PersonID: "99999999123456", CardKey: card.Public(),
	}
}

// newCSR makes a CSR for key. Its names are deliberately wrong: a CSR
// contributes only its public key.
func newCSR(t testing.TB, key crypto.Signer) *x509.CertificateRequest {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: "attacker chosen name"},
		DNSNames:       []string{"evil.example.com"},
		EmailAddresses: []string{"mallory@example.com"},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func p256(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var _ = time.Now
