package hsmsim

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/pkcs11"
	"golang.org/x/crypto/ocsp"
)

const testPIN = "12345678"

var cardSeq int

func newCard(t *testing.T, spec CardSpec) *CardInfo {
	t.Helper()
	cardSeq++
	if spec.Name == "" {
		spec.Name = fmt.Sprintf("card-%d-%s", cardSeq, spec.Variant)
	}
	if spec.PIN == nil {
		spec.PIN = []byte(testPIN)
	}
	info, err := testEnv.NewCard(context.Background(), testModule, spec)
	if err != nil {
		t.Fatalf("NewCard(%s): %v", spec.Name, err)
	}
	return info
}

func openCard(t *testing.T, name string, pin []byte) *pkcs11.Token {
	t.Helper()
	tok, err := testModule.OpenToken(context.Background(), pkcs11.TokenConfig{Label: name, PIN: pin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tok.Close() })
	return tok
}

// cardChecks runs the PKI-AUTH checks on a card one by one, each in
// isolation, and returns the names of those that fail.
func cardChecks(t *testing.T, info *CardInfo) []string {
	t.Helper()
	ctx := context.Background()
	tok := openCard(t, info.Name, []byte(testPIN))
	cert, err := tok.Certificate(ctx, pkcs11.PIVAuthentication.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	var failed []string
	// Path: validated at a time inside the validity period, so that the
	// validity check below is separate.
	inters := x509.NewCertPool()
	inters.AddCert(testEnv.IssuingCA())
	inters.AddCert(testEnv.untrusted.ca)
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots: testEnv.TrustPool(), Intermediates: inters,
		CurrentTime: cert.NotBefore.Add(cert.NotAfter.Sub(cert.NotBefore) / 2),
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, // the EKU is the usage check's
	}); err != nil {
		failed = append(failed, "path")
	}
	// Usage: digitalSignature and neither keyCertSign nor cRLSign; the EKU
	// allows client authentication (clientAuth, smartcardLogon or PKINIT).
	clientEKU := slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) ||
		slices.ContainsFunc(cert.UnknownExtKeyUsage, func(o asn1.ObjectIdentifier) bool {
			return o.Equal(piv.EKUSmartCardLogon) || o.Equal(piv.EKUPKINITClientAuth)
		})
	if cert.KeyUsage&x509.KeyUsageDigitalSignature == 0 || cert.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 || !clientEKU {
		failed = append(failed, "usage")
	}
	if now := time.Now(); now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		failed = append(failed, "validity")
	}
	if !slices.ContainsFunc(cert.Policies, func(o x509.OID) bool { return o.EqualASN1OID(piv.PolicyCommonAuthentication) }) {
		failed = append(failed, "policy")
	}
	issuer := testEnv.IssuingCA()
	if info.Issuer == untrustedIssuer {
		issuer = testEnv.untrusted.ca
	}
	if st := ocspStatus(t, cert, issuer); st != ocsp.Good {
		failed = append(failed, "revocation")
	}
	card := &piv.Card{}
	_ = card
	s, err := tok.Signer(ctx, pkcs11.PIVAuthentication.PrivateKey())
	if err != nil {
		t.Fatal(err)
	}
	digest := piv.ChallengeDigest("gw", "session", []byte("challenge"))
	sig, err := s.Sign(rand.Reader, digest, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if piv.VerifyChallengeSignature(cert.PublicKey, piv.SigAuto, digest, sig) != nil {
		failed = append(failed, "key")
	}
	return failed
}

// ocspStatus asks the responder at the certificate's AIA URL, verifying the
// response's signature against issuer.
func ocspStatus(t *testing.T, cert, issuer *x509.Certificate) int {
	t.Helper()
	if len(cert.OCSPServer) != 1 || !strings.HasPrefix(cert.OCSPServer[0], "http://") {
		t.Fatalf("OCSP URLs %v", cert.OCSPServer)
	}
	req, err := ocsp.CreateRequest(cert, issuer, &ocsp.RequestOptions{Hash: crypto.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(cert.OCSPServer[0], "application/ocsp-request", bytes.NewReader(req))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	r, err := ocsp.ParseResponseForCert(body, cert, issuer)
	if err != nil {
		t.Fatalf("OCSP response: %v", err)
	}
	if time.Until(r.NextUpdate) <= 0 || time.Since(r.ThisUpdate) < 0 {
		t.Fatalf("OCSP response times %v..%v", r.ThisUpdate, r.NextUpdate)
	}
	return r.Status
}

// TestVariantsHaveExactlyTheirDefect: each card variant fails exactly the
// check its name says, and the good card fails none.
func TestVariantsHaveExactlyTheirDefect(t *testing.T) {
	want := map[Variant][]string{
		Good:        nil,
		Revoked:     {"revocation"},
		Expired:     {"validity"},
		NotYetValid: {"validity"},
		WrongPolicy: {"policy"},
		Untrusted:   {"path"},
		WrongKey:    {"key"},

		EKUServerAuth:  {"usage"},
		EKUCodeSigning: {"usage"},
		EKUCardAuth:    {"usage"},
		KUCertSign:     {"usage"},
		KUCRLSign:      {"usage"},
	}
	for _, v := range Variants() {
		t.Run(string(v), func(t *testing.T) {
			info := newCard(t, CardSpec{Variant: v, Email: "holder@example.com"})
			if got := cardChecks(t, info); !slices.Equal(got, want[v]) {
				t.Fatalf("failed checks = %v, want %v", got, want[v])
			}
		})
	}
}

func TestRSACard(t *testing.T) {
	info := newCard(t, CardSpec{Key: pkcs11.RSA2048, Email: "rsa@example.com"})
	if got := cardChecks(t, info); len(got) != 0 {
		t.Fatalf("RSA card fails %v", got)
	}
	km, err := testEnv.CardCertificate(info.Name, "9d")
	if err != nil {
		t.Fatal(err)
	}
	if km.KeyUsage != x509.KeyUsageKeyEncipherment {
		t.Errorf("RSA key management KU = %v, want keyEncipherment", km.KeyUsage)
	}
	if _, ok := km.PublicKey.(*rsa.PublicKey); !ok {
		t.Errorf("key management key is %T", km.PublicKey)
	}
}

// TestCardObjects: the token carries OpenSC's CKA_IDs and labels, keys made
// on the token, 9C needing a login per signature, 9E usable without a PIN.
func TestCardObjects(t *testing.T) {
	ctx := context.Background()
	info := newCard(t, CardSpec{Email: "objects@example.com", UPN: "objects@agency.example"})
	tok := openCard(t, info.Name, []byte(testPIN))
	for _, slot := range []pkcs11.PIVSlot{pkcs11.PIVAuthentication, pkcs11.PIVSignature, pkcs11.PIVKeyManagement, pkcs11.PIVCardAuthentication} {
		for _, q := range []pkcs11.Query{
			{Class: pkcs11.ClassCertificate, ID: slot.ID, Label: slot.CertLabel},
			{Class: pkcs11.ClassPublicKey, ID: slot.ID, Label: slot.PublicLabel},
			{Class: pkcs11.ClassPrivateKey, ID: slot.ID, Label: slot.PrivateLabel},
		} {
			objs, err := tok.FindObjects(ctx, q)
			if err != nil || len(objs) != 1 {
				t.Errorf("%s: %d objects, %v", q, len(objs), err)
			}
		}
		cert, err := tok.Certificate(ctx, slot.ID, slot.CertLabel)
		if err != nil {
			t.Fatal(err)
		}
		s, err := tok.Signer(ctx, slot.PrivateKey())
		if err != nil {
			t.Fatal(err)
		}
		if !s.Public().(*ecdsa.PublicKey).Equal(cert.PublicKey) {
			t.Errorf("slot %s: certificate does not certify the token key", slot.Name)
		}
		if s.AlwaysAuthenticate() != slot.AlwaysAuthenticate {
			t.Errorf("slot %s: CKA_ALWAYS_AUTHENTICATE = %v", slot.Name, s.AlwaysAuthenticate())
		}
	}
}

// TestCardAuthWithoutPIN: 9E works without a PIN, 9A is invisible without
// one. (Login state is per process: no PIN session may be open on the card.)
func TestCardAuthWithoutPIN(t *testing.T) {
	ctx := context.Background()
	info := newCard(t, CardSpec{})
	nopin, err := testModule.OpenToken(ctx, pkcs11.TokenConfig{Label: info.Name})
	if err != nil {
		t.Fatal(err)
	}
	defer nopin.Close()
	d := sha256.Sum256([]byte("contactless"))
	cardAuth, err := nopin.Signer(ctx, pkcs11.PIVCardAuthentication.PrivateKey())
	if err != nil {
		t.Fatalf("9E without PIN: %v", err)
	}
	if _, err := cardAuth.Sign(rand.Reader, d[:], crypto.SHA256); err != nil {
		t.Fatalf("9E sign without PIN: %v", err)
	}
	_, err = nopin.Signer(ctx, pkcs11.PIVAuthentication.PrivateKey())
	if !errors.Is(err, pkcs11.ErrObjectNotFound) {
		t.Fatalf("9A visible without PIN: %v", err)
	}
	// The error says what is missing: the PIN, not the key.
	if !errors.Is(err, pkcs11.ErrPINRequired) || !strings.Contains(err.Error(), "no PIN given") {
		t.Fatalf("9A without PIN: %v", err)
	}
}

func TestWrongCardPIN(t *testing.T) {
	info := newCard(t, CardSpec{})
	_, err := testModule.OpenToken(context.Background(), pkcs11.TokenConfig{Label: info.Name, PIN: []byte("87654321")})
	if !errors.Is(err, pkcs11.ErrPINIncorrect) {
		t.Fatalf("err = %v, want ErrPINIncorrect", err)
	}
}

// TestCardProfiles checks the certificate fields of STANDARDS §3.3.
func TestCardProfiles(t *testing.T) {
	info := newCard(t, CardSpec{Email: "profile@example.com", UPN: "profile@agency.example"})
	get := func(slot string) *x509.Certificate {
		c, err := testEnv.CardCertificate(info.Name, slot)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	hasPolicy := func(c *x509.Certificate, want asn1.ObjectIdentifier) bool {
		return len(c.Policies) == 1 && c.Policies[0].EqualASN1OID(want)
	}
	ext := func(c *x509.Certificate, id asn1.ObjectIdentifier) (bool, bool) {
		for _, e := range c.Extensions {
			if e.Id.Equal(id) {
				return true, e.Critical
			}
		}
		return false, false
	}
	oidKU, oidEKU := asn1.ObjectIdentifier{2, 5, 29, 15}, asn1.ObjectIdentifier{2, 5, 29, 37}
	common := func(t *testing.T, c *x509.Certificate, criticalEKU bool) {
		if present, crit := ext(c, oidKU); !present || !crit {
			t.Error("keyUsage missing or not critical")
		}
		if present, crit := ext(c, oidEKU); !present {
			t.Error("extKeyUsage missing")
		} else if crit != criticalEKU {
			t.Errorf("extKeyUsage critical = %v", crit)
		}
		if len(c.OCSPServer) != 1 || !strings.HasPrefix(c.OCSPServer[0], "http://") ||
			len(c.IssuingCertificateURL) != 1 || !strings.HasSuffix(c.IssuingCertificateURL[0], ".p7c") ||
			len(c.CRLDistributionPoints) != 1 || !strings.HasPrefix(c.CRLDistributionPoints[0], "http://") {
			t.Errorf("AIA/CRL DP: %v %v %v", c.OCSPServer, c.IssuingCertificateURL, c.CRLDistributionPoints)
		}
		if len(c.SubjectKeyId) == 0 || len(c.AuthorityKeyId) == 0 {
			t.Error("SKID/AKID missing")
		}
		if c.IsCA || c.SerialNumber.Sign() <= 0 || len(c.SerialNumber.Bytes()) > 20 || c.SerialNumber.BitLen() < 64 {
			t.Errorf("CA=%v serial=%x", c.IsCA, c.SerialNumber)
		}
		if c.NotAfter.Sub(c.NotBefore) > 1096*24*time.Hour {
			t.Error("validity over 1096 days")
		}
	}
	t.Run("piv auth", func(t *testing.T) {
		c := get("9a")
		common(t, c, false)
		if !hasPolicy(c, piv.PolicyCommonAuthentication) || c.KeyUsage != x509.KeyUsageDigitalSignature {
			t.Errorf("policies %v KU %v", c.Policies, c.KeyUsage)
		}
		if !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageClientAuth) || slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageEmailProtection) {
			t.Errorf("EKU %v", c.ExtKeyUsage)
		}
		id, err := piv.IdentityFromCertificate(c)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprintf("%x", id.FASCNRaw) != info.FASCN || id.CardUUID != info.UUID || id.UPN != "profile@agency.example" || id.Email != "profile@example.com" {
			t.Errorf("identity %+v vs card %+v", id, info)
		}
		if id.FASCN.AgencyCode != "9999" || len(id.FASCN.Identifier()) != 14 {
			t.Errorf("FASC-N %+v", id.FASCN)
		}
	})
	t.Run("signature", func(t *testing.T) {
		c := get("9c")
		common(t, c, false)
		if !hasPolicy(c, piv.PolicyCommonHardware) || c.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment ||
			!slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}) || !slices.Equal(c.EmailAddresses, []string{"profile@example.com"}) {
			t.Errorf("policies %v KU %v EKU %v email %v", c.Policies, c.KeyUsage, c.ExtKeyUsage, c.EmailAddresses)
		}
	})
	t.Run("key management", func(t *testing.T) {
		c := get("9d")
		common(t, c, false)
		if !hasPolicy(c, piv.PolicyCommonPolicy) || c.KeyUsage != x509.KeyUsageKeyAgreement ||
			!slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}) || len(c.EmailAddresses) != 1 {
			t.Errorf("policies %v KU %v EKU %v", c.Policies, c.KeyUsage, c.ExtKeyUsage)
		}
	})
	t.Run("card auth", func(t *testing.T) {
		c := get("9e")
		common(t, c, true)
		if !hasPolicy(c, piv.PolicyCommonCardAuth) || c.KeyUsage != x509.KeyUsageDigitalSignature ||
			len(c.UnknownExtKeyUsage) != 1 || !c.UnknownExtKeyUsage[0].Equal(piv.EKUPIVCardAuth) || len(c.ExtKeyUsage) != 0 {
			t.Errorf("policies %v KU %v EKU %v %v", c.Policies, c.KeyUsage, c.ExtKeyUsage, c.UnknownExtKeyUsage)
		}
		san, err := piv.SANFromCertificate(c)
		if err != nil || len(san.Emails)+len(san.UPNs)+len(san.DNSNames)+len(san.URIs) != 0 || san.FASCN == nil || len(san.UUIDs) != 1 {
			t.Errorf("card auth SAN %+v, %v", san, err)
		}
		if c.Subject.SerialNumber != info.UUID {
			t.Errorf("card auth subject %v", c.Subject)
		}
	})
}

func TestCardWithoutEmail(t *testing.T) {
	info := newCard(t, CardSpec{})
	if _, ok := info.Serials["9c"]; ok {
		t.Error("a card without email has a Digital Signature certificate")
	}
	if _, ok := info.Serials["9a"]; !ok {
		t.Error("no PIV Authentication certificate")
	}
	if _, ok := info.Serials["9e"]; !ok {
		t.Error("no Card Authentication certificate")
	}
}

// TestRevocationWhileServing: a revocation shows in OCSP and the CRL at once.
func TestRevocationWhileServing(t *testing.T) {
	info := newCard(t, CardSpec{})
	cert, err := testEnv.CardCertificate(info.Name, "9a")
	if err != nil {
		t.Fatal(err)
	}
	if st := ocspStatus(t, cert, testEnv.IssuingCA()); st != ocsp.Good {
		t.Fatalf("status %d before revocation", st)
	}
	crlHas := func() bool {
		resp, err := http.Get(cert.CRLDistributionPoints[0])
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		der, _ := io.ReadAll(resp.Body)
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		if err := crl.CheckSignatureFrom(testEnv.IssuingCA()); err != nil {
			t.Fatalf("CRL signature: %v", err)
		}
		for _, e := range crl.RevokedCertificateEntries {
			if e.SerialNumber.Cmp(cert.SerialNumber) == 0 {
				return true
			}
		}
		return false
	}
	if crlHas() {
		t.Fatal("CRL lists a good card")
	}
	if err := testEnv.RevokeCard(info.Name, ocsp.KeyCompromise); err != nil {
		t.Fatal(err)
	}
	if st := ocspStatus(t, cert, testEnv.IssuingCA()); st != ocsp.Revoked {
		t.Fatalf("status %d after revocation", st)
	}
	if !crlHas() {
		t.Fatal("CRL does not list the revoked card")
	}
	if err := testEnv.RevokeCard("no-such-card", 0); err == nil {
		t.Fatal("revoked a card that does not exist")
	}
}

func TestResponderEdges(t *testing.T) {
	base := testEnv.BaseURL
	get := func(path string) (int, []byte) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	// Malformed OCSP request: an OCSP error response, not a crash.
	resp, err := http.Post(base+"/ocsp", "application/ocsp-request", strings.NewReader("garbage"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(b, ocsp.MalformedRequestErrorResponse) {
		t.Errorf("malformed request answered %x", b)
	}
	// GET form (RFC 6960 A.1) with a request for a serial nobody issued.
	info := newCard(t, CardSpec{})
	cert, _ := testEnv.CardCertificate(info.Name, "9a")
	req, _ := ocsp.CreateRequest(cert, testEnv.IssuingCA(), nil)
	code, body := get("/ocsp/" + base64URLPath(req))
	if code != 200 {
		t.Fatalf("GET OCSP: %d", code)
	}
	r, err := ocsp.ParseResponseForCert(body, cert, testEnv.IssuingCA())
	if err != nil || r.Status != ocsp.Good {
		t.Fatalf("GET OCSP: %v %v", r, err)
	}
	// caIssuers p7c and the CA certificates.
	if code, body := get("/certs/piv-ca.p7c"); code != 200 || !bytes.Contains(body, testEnv.IssuingCA().Raw) {
		t.Errorf("p7c: %d", code)
	}
	if code, body := get("/certs/piv-ca-root.crt"); code != 200 || !bytes.Equal(body, testEnv.Root().Raw) {
		t.Errorf("root: %d", code)
	}
	if code, _ := get("/nothing"); code != 404 {
		t.Errorf("unknown path: %d", code)
	}
}

func TestInitAndLoad(t *testing.T) {
	dir := t.TempDir()
	bad := []string{"https://127.0.0.1:1", "http://127.0.0.1", "http://127.0.0.1:1/path", "127.0.0.1:1", ""}
	for _, u := range bad {
		if _, err := Init(filepath.Join(dir, "x"), u); err == nil {
			t.Errorf("Init accepted URL %q", u)
		}
	}
	e, err := Init(filepath.Join(dir, "env"), "http://127.0.0.1:8089")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Init(filepath.Join(dir, "env"), "http://127.0.0.1:8089"); err == nil {
		t.Error("Init over an existing environment")
	}
	for _, f := range []string{"issuer/piv-ca/root.key", "issuer/piv-ca/ca.key", "issuer/untrusted-ca/ca.key", "state.json", "softhsm2.conf"} {
		st, err := os.Stat(filepath.Join(e.Dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, st.Mode().Perm())
		}
	}
	l, err := Load(e.Dir)
	if err != nil || l.BaseURL != "http://127.0.0.1:8089" || !l.Root().Equal(e.Root()) {
		t.Fatalf("Load: %v", err)
	}
	if _, err := Load(t.TempDir()); !errors.Is(err, ErrNotInitialized) {
		t.Fatalf("Load of an empty dir: %v", err)
	}
	conf, _ := os.ReadFile(e.SoftHSMConfig())
	if !strings.Contains(string(conf), filepath.Join(e.Dir, "tokens")) {
		t.Errorf("softhsm2.conf does not keep tokens in the environment: %s", conf)
	}
}

func TestCardSpecRejects(t *testing.T) {
	tests := []struct {
		name string
		spec CardSpec
	}{
		{"empty name", CardSpec{PIN: []byte(testPIN)}},
		{"long name", CardSpec{Name: strings.Repeat("n", 33), PIN: []byte(testPIN)}},
		{"slash", CardSpec{Name: "a/b", PIN: []byte(testPIN)}},
		{"short pin", CardSpec{Name: "ok", PIN: []byte("12345")}},
		{"long pin", CardSpec{Name: "ok", PIN: []byte("123456789")}},
		{"letters in pin", CardSpec{Name: "ok", PIN: []byte("12ab5678")}},
		{"variant", CardSpec{Name: "ok", PIN: []byte(testPIN), Variant: "broken"}},
		{"email", CardSpec{Name: "ok", PIN: []byte(testPIN), Email: "not an address"}},
		{"fascn id", CardSpec{Name: "ok", PIN: []byte(testPIN), FASCNIdentifier: "123"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := testEnv.NewCard(context.Background(), testModule, tc.spec)
			if err == nil {
				t.Fatal("accepted")
			}
			if strings.Contains(err.Error(), testPIN) {
				t.Fatalf("error %q contains the PIN", err)
			}
		})
	}
	newCard(t, CardSpec{Name: "dup"})
	if _, err := testEnv.NewCard(context.Background(), testModule, CardSpec{Name: "dup", PIN: []byte(testPIN)}); err == nil {
		t.Fatal("second card with the same name")
	}
}

func TestFASCNIdentifierKept(t *testing.T) {
	a := newCard(t, CardSpec{FASCNIdentifier: "12345678901234"})
	f, err := a.FASCNDecoded()
	if err != nil {
		t.Fatal(err)
	}
	if f.Identifier() != "12345678901234" {
		t.Fatalf("identifier %s", f.Identifier())
	}
}

func TestP7C(t *testing.T) {
	b, err := certsOnlyP7C(testEnv.IssuingCA())
	if err != nil {
		t.Fatal(err)
	}
	var ci struct {
		ContentType asn1.ObjectIdentifier
		Content     asn1.RawValue `asn1:"explicit,tag:0"`
	}
	if rest, err := asn1.Unmarshal(b, &ci); err != nil || len(rest) != 0 || !ci.ContentType.Equal(asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}) {
		t.Fatalf("p7c ContentInfo: %v", err)
	}
}
