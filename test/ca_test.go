package test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/credgw/credgw/issuance"
)

// Certificate policies (STANDARDS.md §3.1).
const (
	oidCommonPolicy   = "2.16.840.1.101.3.2.1.3.6"
	oidDerivedPIVAuth = "2.16.840.1.101.3.2.1.3.40"
)

// TestAgencyRootChain is a real deployment's hierarchy: an "agency root"
// made here (its key never in the gateway's directory) signs the CSR of
// `credgw ca init --csr-out`; `credgw ca import` refuses a certificate for
// another key and installs the good one; after an enrollment and a
// redemption, every leaf passes `openssl verify -crl_check_all -x509_strict
// -policy_check -explicit_policy` with the root's CRL (from `credgw ca
// root-crl`) and the issuing CA's CRL fetched from the leaf's CRL DP, and
// the revoked leaf fails once the CRL is fetched again.
func TestAgencyRootChain(t *testing.T) {
	needTool(t, "openssl")
	work := t.TempDir()
	dir := filepath.Join(work, "dev")
	devInit(t, dir)
	conf := filepath.Join(dir, "credgw.yaml")

	// Replace the development hierarchy with an issuing key for the agency:
	// a new HSM key id, no self-made root, no root CRL of the gateway's.
	cfgText, _ := os.ReadFile(conf)
	cfg := regexp.MustCompile(`(?m)^(  key_uri: "pkcs11:token=[^;]*;id=)%01`).ReplaceAllString(string(cfgText), "${1}%10")
	cfg = regexp.MustCompile(`(?m)^  root_crl_file: .*\n`).ReplaceAllString(cfg, "")
	if cfg == string(cfgText) || !strings.Contains(cfg, "id=%10") {
		t.Fatalf("could not point ca.key_uri at a new key:\n%s", cfgText)
	}
	os.WriteFile(conf, []byte(cfg), 0o600)
	for _, f := range []string{"issuing.crt", "root.crt", "root.key", "root.crl"} {
		os.Remove(filepath.Join(dir, "ca", f))
	}

	csrFile := filepath.Join(work, "issuing.csr")
	out := run(t, nil, true, credgwBin, "ca", "init", "--config", conf, "--csr-out", csrFile,
		"--organization", "Example Agency", "--issuing-name", "Example Agency Derived PIV CA")
	if !strings.Contains(out, "credgw ca import") {
		t.Fatalf("ca init --csr-out:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "ca", "root.key")); err == nil {
		t.Fatal("ca init --csr-out made a root key on the gateway")
	}

	// The agency root, in its own directory.
	agency := filepath.Join(work, "agency")
	os.MkdirAll(agency, 0o700)
	root := newTestRoot(t, agency)
	csr := readCSR(t, csrFile)
	if csr.Subject.CommonName != "Example Agency Derived PIV CA" {
		t.Fatalf("CSR subject %s", csr.Subject)
	}
	issuingFile, chainFile := filepath.Join(agency, "issuing.crt"), filepath.Join(agency, "chain.pem")
	issuing := root.signCA(t, csr.Subject, csr.PublicKey)
	writePEM(t, issuingFile, "CERTIFICATE", issuing.Raw)
	writePEM(t, chainFile, "CERTIFICATE", root.cert.Raw)

	// A certificate for another key is refused, with what to ask for.
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	wrongFile := filepath.Join(agency, "wrong.crt")
	writePEM(t, wrongFile, "CERTIFICATE", root.signCA(t, csr.Subject, otherKey.Public()).Raw)
	if out := run(t, nil, false, credgwBin, "ca", "import", "--config", conf, "--certificate", wrongFile, "--chain", chainFile); !strings.Contains(out, "ask the root operator") {
		t.Fatalf("import of a certificate for another key:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "ca", "issuing.crt")); err == nil {
		t.Fatal("a refused import wrote the certificate")
	}
	out = run(t, nil, true, credgwBin, "ca", "import", "--config", conf, "--certificate", issuingFile, "--chain", chainFile)
	if strings.Contains(out, "warning:") {
		t.Errorf("ca import:\n%s", out)
	}
	for f, mode := range map[string]os.FileMode{"issuing.crt": 0o644, "root.crt": 0o644} {
		st, err := os.Stat(filepath.Join(dir, "ca", f))
		if err != nil || st.Mode().Perm() != mode {
			t.Fatalf("ca/%s: %v %v", f, err, st)
		}
	}
	if errs, warns, err := issuance.LintCACertificate(issuing.Raw); err != nil || len(errs)+len(warns) > 0 {
		t.Fatalf("zlint on the issuing CA: %v %v %v", err, errs, warns)
	}

	// The root's CRL, signed at the "ceremony" with the root key file.
	rootCRL := filepath.Join(agency, "root.crl")
	run(t, nil, true, credgwBin, "ca", "root-crl", "--root-key", root.keyFile, "--root-cert", root.certFile, "--out", rootCRL, "--next-update", "30d")

	gwText, _ := os.ReadFile(conf)
	gw := regexp.MustCompile(`grpc: (127\.0\.0\.1:\d+)`).FindStringSubmatch(string(gwText))[1]
	startServe(t, filepath.Join(dir, "hsm"))
	startProcess(t, "credgw serving", credgwBin, "serve", "--config", conf)

	enrollWithCLI(t, dir, gw, "SOFTHSM2_CONF="+filepath.Join(dir, "hsm", "softhsm2.conf"), work)
	device := filepath.Join(work, "device")
	kpin := filepath.Join(work, "keystore-pin.txt")
	os.WriteFile(kpin, []byte("tr0ub4dor&3\n"), 0o600)
	run(t, nil, true, credgwBin, "redeem", "--trust-anchor", chainFile, "--qr", filepath.Join(work, "qr.png"), "--password-file", filepath.Join(work, "password.txt"),
		"--keystore-pin-file", kpin, "--out", device)

	rootPEM, issuingPEM := root.certFile, issuingFile
	rootCRLPEM := derToPEMFile(t, rootCRL, "X509 CRL")
	verify := func(leafFile, policy string, wantOK bool) string {
		leaf := readCert(t, leafFile)
		if len(leaf.CRLDistributionPoints) == 0 {
			t.Fatalf("%s has no CRL DP", leafFile)
		}
		crlFile := filepath.Join(work, "issuing-crl.pem")
		writePEM(t, crlFile, "X509 CRL", httpGet(t, leaf.CRLDistributionPoints[0]))
		return run(t, nil, wantOK, "openssl", "verify", "-crl_check_all", "-x509_strict", "-policy_check", "-explicit_policy",
			"-policy", policy, "-CAfile", rootPEM, "-untrusted", issuingPEM, "-CRLfile", rootCRLPEM, "-CRLfile", crlFile, leafFile)
	}
	for name, policy := range map[string]string{"auth": oidDerivedPIVAuth, "signature": oidCommonPolicy, "encryption": oidCommonPolicy} {
		leafFile := filepath.Join(device, name+".crt")
		if out := verify(leafFile, policy, true); !strings.Contains(out, ": OK") {
			t.Errorf("openssl verify %s: %s", name, out)
		}
	}

	// Without the root's CRL the path is not fully checked (the audit's
	// "unable to get certificate CRL" at depth 1): the check above used it.
	if out := run(t, nil, false, "openssl", "verify", "-crl_check_all", "-CAfile", rootPEM, "-untrusted", issuingPEM,
		"-CRLfile", filepath.Join(work, "issuing-crl.pem"), filepath.Join(device, "auth.crt")); !strings.Contains(out, "unable to get certificate CRL") {
		t.Errorf("openssl verify without the root CRL: %s", out)
	}

	// openssl reads the gateway's OCSP answers (credgw encodes them) and
	// verifies them against the issuing CA.
	ocspStatus := func(leafFile string) string {
		leaf := readCert(t, leafFile)
		if len(leaf.OCSPServer) == 0 {
			t.Fatalf("%s has no OCSP URL", leafFile)
		}
		out := run(t, nil, true, "openssl", "ocsp", "-issuer", issuingPEM, "-cert", leafFile, "-url", leaf.OCSPServer[0],
			"-CAfile", rootPEM, "-no_nonce", "-resp_text")
		if !strings.Contains(out, "Response verify OK") {
			t.Errorf("openssl ocsp %s: %s", leafFile, out)
		}
		return out
	}
	if out := ocspStatus(filepath.Join(device, "auth.crt")); !strings.Contains(out, "auth.crt: good") {
		t.Errorf("openssl ocsp before the revocation: %s", out)
	}

	// Revoke the PIV Authentication leaf; the CRL fetched again says so.
	auth := readCert(t, filepath.Join(device, "auth.crt"))
	run(t, nil, true, credgwBin, "admin", "revoke", "--serial", auth.SerialNumber.Text(16), "--reason", "keyCompromise",
		"--gateway", gw, "--ca-file", filepath.Join(dir, "tls", "ca.crt"),
		"--cert", filepath.Join(dir, "tls", "admin.crt"), "--key", filepath.Join(dir, "tls", "admin.key"))
	if out := verify(filepath.Join(device, "auth.crt"), oidDerivedPIVAuth, false); !strings.Contains(out, "certificate revoked") {
		t.Errorf("openssl verify of the revoked leaf: %s", out)
	}
	// The operator signs the CRL on demand.
	if out := run(t, nil, true, credgwBin, "admin", "force-crl", "--gateway", gw, "--ca-file", filepath.Join(dir, "tls", "ca.crt"),
		"--cert", filepath.Join(dir, "tls", "admin.crt"), "--key", filepath.Join(dir, "tls", "admin.key")); !strings.Contains(out, "CRL number") {
		t.Errorf("admin force-crl: %s", out)
	}
	if out := verify(filepath.Join(device, "signature.crt"), oidCommonPolicy, true); !strings.Contains(out, ": OK") {
		t.Errorf("openssl verify of a good leaf after the revocation: %s", out)
	}
	if out := ocspStatus(filepath.Join(device, "auth.crt")); !strings.Contains(out, "auth.crt: revoked") || !strings.Contains(out, "Reason: keyCompromise") {
		t.Errorf("openssl ocsp after the revocation: %s", out)
	}
}

// TestDevRootCRL: the development hierarchy's issuing CA has a CRL DP and
// AIA caIssuers the gateway serves (the root's CRL and certificate), a
// name unique to the environment, and lints clean; a root CRL signed again
// with `credgw ca root-crl` (revoking the issuing CA) is served without a
// restart and openssl then refuses the issuing CA.
func TestDevRootCRL(t *testing.T) {
	needTool(t, "openssl")
	work := t.TempDir()
	dir, _, _ := startDevGateway(t, work, nil)
	ca := filepath.Join(dir, "ca")
	issuing := readCert(t, filepath.Join(ca, "issuing.crt"))
	// Every CA dev init makes has a name unique to the environment.
	for _, f := range []string{filepath.Join(ca, "issuing.crt"), filepath.Join(ca, "root.crt"), filepath.Join(dir, "tls", "ca.crt"),
		filepath.Join(dir, "hsm", "issuer", "piv-ca", "ca.crt")} {
		if cn := readCert(t, f).Subject.CommonName; !regexp.MustCompile(` [0-9a-f]{4}$`).MatchString(cn) {
			t.Errorf("%s: CA name %q has no key-derived suffix", f, cn)
		}
	}
	if len(issuing.CRLDistributionPoints) != 1 || len(issuing.IssuingCertificateURL) != 1 {
		t.Fatalf("issuing CA: CRL DP %v, AIA %v", issuing.CRLDistributionPoints, issuing.IssuingCertificateURL)
	}
	if errs, warns, err := issuance.LintCACertificate(issuing.Raw); err != nil || len(errs)+len(warns) > 0 {
		t.Fatalf("zlint on the issuing CA: %v %v %v", err, errs, warns)
	}
	rootFile := filepath.Join(ca, "root.crt")
	if got := httpGet(t, issuing.IssuingCertificateURL[0]); string(got) != string(readCert(t, rootFile).Raw) {
		t.Fatal("the AIA caIssuers URL does not serve the root certificate")
	}
	verify := func(wantOK bool) string {
		crl := filepath.Join(work, "root-crl.pem")
		writePEM(t, crl, "X509 CRL", httpGet(t, issuing.CRLDistributionPoints[0]))
		return run(t, nil, wantOK, "openssl", "verify", "-crl_check", "-x509_strict", "-CAfile", rootFile, "-CRLfile", crl, filepath.Join(ca, "issuing.crt"))
	}
	if out := verify(true); !strings.Contains(out, ": OK") {
		t.Fatalf("openssl verify of the issuing CA: %s", out)
	}
	crlFile := filepath.Join(ca, "root.crl")
	out := run(t, nil, true, credgwBin, "ca", "root-crl", "--root-key", filepath.Join(ca, "root.key"), "--root-cert", rootFile,
		"--out", crlFile, "--previous", crlFile, "--revoke", issuing.SerialNumber.Text(16)+":5", "--next-update", "48h")
	if !strings.Contains(out, "1 revoked") {
		t.Fatalf("ca root-crl:\n%s", out)
	}
	if out := verify(false); !strings.Contains(out, "certificate revoked") {
		t.Fatalf("openssl verify of the revoked issuing CA: %s", out)
	}
}

// testRoot is the agency's root: key and certificate in its own directory.
type testRoot struct {
	cert              *x509.Certificate
	key               *ecdsa.PrivateKey
	keyFile, certFile string
}

func newTestRoot(t *testing.T, dir string) testRoot {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now().Add(-time.Hour).Truncate(time.Second)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{Country: []string{"US"}, Organization: []string{"Example Agency"}, CommonName: "Example Agency Root CA"},
		NotBefore: now, NotAfter: now.AddDate(20, 0, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	r := testRoot{key: key, keyFile: filepath.Join(dir, "root.key"), certFile: filepath.Join(dir, "root.crt")}
	r.cert, _ = x509.ParseCertificate(der)
	k8, _ := x509.MarshalPKCS8PrivateKey(key)
	writePEM(t, r.keyFile, "PRIVATE KEY", k8)
	writePEM(t, r.certFile, "CERTIFICATE", der)
	return r
}

// signCA is what the root operator signs for credgw's CSR.
func (r testRoot) signCA(t *testing.T, subject pkix.Name, pub any) *x509.Certificate {
	t.Helper()
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	now := time.Now().Add(-time.Hour).Truncate(time.Second)
	var policies []x509.OID
	for _, s := range []string{oidCommonPolicy, oidDerivedPIVAuth, "2.16.840.1.101.3.2.1.3.41"} {
		o, _ := x509.ParseOID(s)
		policies = append(policies, o)
	}
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: subject, NotBefore: now, NotAfter: now.AddDate(5, 0, 0),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		Policies: policies, IssuingCertificateURL: []string{"http://pki.agency.example/root.crt"},
		CRLDistributionPoints: []string{"http://pki.agency.example/root.crl"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, r.cert, pub, r.key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func readCSR(t *testing.T, path string) *x509.CertificateRequest {
	t.Helper()
	b, _ := os.ReadFile(path)
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", path)
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil || csr.CheckSignature() != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return csr
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if blk, _ := pem.Decode(b); blk != nil {
		b = blk.Bytes
	}
	c, err := x509.ParseCertificate(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func derToPEMFile(t *testing.T, path, typ string) string {
	t.Helper()
	der, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := path + ".pem"
	writePEM(t, out, typ, der)
	return out
}

func httpGet(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", url, resp.Status, b)
	}
	return b
}
