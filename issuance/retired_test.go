package issuance

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// rekeyedCA is testCA's successor after a re-key: a new issuing key,
// certified by the same root under the same subject, named name, with
// testCA's key kept as a retired, status-only CA.
func rekeyedCA(t *testing.T, name string) *CA {
	t.Helper()
	rootKey, err := ReadKeyFile(testInit.RootKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: testInit.Issuing.SerialNumber, Subject: testInit.Issuing.Subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: testInit.Issuing.NotAfter, IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: testInit.Issuing.KeyUsage, Policies: testInit.Issuing.Policies,
		IssuingCertificateURL: testInit.Issuing.IssuingCertificateURL, CRLDistributionPoints: testInit.Issuing.CRLDistributionPoints}
	tmpl.SerialNumber, _ = newSerial()
	if tmpl.SubjectKeyId, err = subjectKeyID(key.Public()); err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, testInit.Root, key.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	old := testCA.cfg
	old.StatusOnly = true
	retired, err := NewCA(old)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := NewCA(Config{Name: name, Chain: []*x509.Certificate{cert, testInit.Root}, Signer: key, Store: testStore, BaseURL: baseURL,
		Retired: []*CA{retired}})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// TestRetiredKeyKeepsAnswering: after a re-key, the certificates of the old
// key (valid for years yet) got no status anyone could use: OCSP knew the
// new key's hashes only ("unauthorized"), and their revocations went on a
// CRL signed by a key that is not their issuer's. A retired CA (the old
// certificate and key, status only, under its own name) now keeps
// answering for them at the URLs they carry, signed with the old key, and
// a revocation through the current CA reaches it.
func TestRetiredKeyKeepsAnswering(t *testing.T) {
	ctx := context.Background()
	old := issue(t, DerivedPIVAuth, p256(t), identity(t)).Certificate
	ca := rekeyedCA(t, "issuing-ca-2")
	h := ca.Handler()
	get := func(path string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		return w
	}
	ocspOf := func(c *x509.Certificate, issuer *x509.Certificate) *ocsp.Response {
		t.Helper()
		req, err := ocsp.CreateRequest(c, issuer, &ocsp.RequestOptions{Hash: crypto.SHA256})
		if err != nil {
			t.Fatal(err)
		}
		if c.OCSPServer[0] != baseURL+"/ocsp/issuing-ca" {
			t.Fatalf("OCSP URL %s", c.OCSPServer[0])
		}
		w := get(getPath(req))
		r, err := ocsp.ParseResponse(w.Body.Bytes(), issuer)
		if err != nil {
			t.Fatalf("OCSP at %s: HTTP %d: %v", c.OCSPServer[0], w.Code, err)
		}
		return r
	}
	if r := ocspOf(old, testInit.Issuing); r.Status != ocsp.Good {
		t.Fatalf("the old key's certificate before its revocation: status %d", r.Status)
	}
	if err := ca.Revoke(ctx, old.SerialNumber.Text(16), ReasonKeyCompromise); err != nil {
		t.Fatalf("revoking the old key's certificate through the current CA: %v", err)
	}
	if r := ocspOf(old, testInit.Issuing); r.Status != ocsp.Revoked {
		t.Errorf("the old key's certificate after its revocation: status %d", r.Status)
	}
	w := get(old.CRLDistributionPoints[0][len(baseURL):])
	crl, err := x509.ParseRevocationList(w.Body.Bytes())
	if err != nil {
		t.Fatalf("the old key's CRL: HTTP %d: %v", w.Code, err)
	}
	if err := crl.CheckSignatureFrom(testInit.Issuing); err != nil || !crlHas(crl, old.SerialNumber.Text(16)) {
		t.Errorf("the old key's CRL: signature %v, lists the revocation %v", err, crlHas(crl, old.SerialNumber.Text(16)))
	}
	// The new key's own CRL is its own.
	w = get("/crl/issuing-ca-2.crl")
	if crl, err := x509.ParseRevocationList(w.Body.Bytes()); err != nil || crl.CheckSignatureFrom(ca.Chain()[0]) != nil || crlHas(crl, old.SerialNumber.Text(16)) {
		t.Errorf("the new key's CRL: %v", err)
	}
	// A retired CA issues nothing.
	if _, err := ca.cfg.Retired[0].Issue(ctx, Request{Profile: DerivedPIVAuth, CSR: newCSR(t, p256(t)), Identity: identity(t)}); !errors.Is(err, ErrRefused) {
		t.Errorf("a retired CA issued: %v", err)
	}
	if w := get("/crl/nonesuch.crl"); w.Code != http.StatusNotFound {
		t.Errorf("another name: HTTP %d", w.Code)
	}
}

// TestRetiredCRLsKeptFresh: the sweep and an administrator's force-crl
// called CA.CRL, which builds the current key's CRL alone: a retired
// key's CRL was made only when someone fetched it, so it was not issued on
// schedule (Common Policy §4.9.7) and a retired key gone from the HSM went
// unnoticed. They call CA.RetiredCRLs too (lifecycle's Sweep, ForceCRL).
func TestRetiredCRLsKeptFresh(t *testing.T) {
	ctx := context.Background()
	old := issue(t, DerivedPIVAuth, p256(t), identity(t)).Certificate
	ca := rekeyedCA(t, "issuing-ca-3")
	if err := ca.Revoke(ctx, old.SerialNumber.Text(16), ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	if err := ca.RetiredCRLs(ctx, false); err != nil {
		t.Fatal(err)
	}
	cur, err := testStore.CRL(ctx, "issuing-ca")
	if err != nil || cur.Stale {
		t.Fatalf("the retired key's stored CRL after CA.CRL: stale %v (%v)", cur.Stale, err)
	}
	crl, err := x509.ParseRevocationList(cur.DER)
	if err != nil || !crlHas(crl, old.SerialNumber.Text(16)) {
		t.Fatalf("the retired key's CRL lacks the revocation (%v)", err)
	}
}

// TestForeignStoredCRLRebuilt: a re-key that kept ca.name had the new key
// sign the name's CRL; putting the config right (a new name, the old key
// retired) left that CRL in the store, and the old key's URL served it,
// signed by the wrong key, until it went stale (18 hours, or the next
// revocation): every old certificate failed its CRL check. A stored CRL
// not signed by the CA's own key is rebuilt before it is served.
func TestForeignStoredCRLRebuilt(t *testing.T) {
	ctx := context.Background()
	wrong := rekeyedCA(t, "foreign-crl-ca") // another key under the name
	if _, err := wrong.CRL(ctx, true); err != nil {
		t.Fatal(err)
	}
	cfg := testCA.cfg
	cfg.Name = "foreign-crl-ca"
	ca, err := NewCA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	ca.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/crl/foreign-crl-ca.crl", nil))
	crl, err := x509.ParseRevocationList(w.Body.Bytes())
	if err != nil {
		t.Fatalf("HTTP %d: %v", w.Code, err)
	}
	if err := crl.CheckSignatureFrom(testInit.Issuing); err != nil {
		t.Fatalf("the CRL served is not signed by the CA's key: %v", err)
	}
}

// TestCheckIssuers: a re-key that kept ca.name, or forgot ca.retired,
// passed every check and silently left the earlier key's certificates
// without status. The CA compares the store's unexpired certificates with
// the keys configured and reports each name whose certificates another
// key signed, or no key answers for (serve logs them as errors: refusing
// to start would stop a gateway re-keyed as the earlier docs said until
// its old certificates expired).
func TestCheckIssuers(t *testing.T) {
	ctx := context.Background()
	old := issue(t, DerivedPIVAuth, p256(t), identity(t)).Certificate // under "issuing-ca", by testCA's key
	// A new name, the old key retired: fine.
	if problems, err := rekeyedCA(t, "issuing-ca-7").CheckIssuers(ctx); err != nil || slices.ContainsFunc(problems, func(s string) bool { return strings.Contains(s, `"issuing-ca"`) }) {
		t.Fatalf("the old key retired: %v %v", problems, err)
	}
	// A new name and no retired key: reported.
	cfg := rekeyedCA(t, "issuing-ca-8").cfg
	cfg.Retired = nil
	forgot, err := NewCA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	problems, err := forgot.CheckIssuers(ctx)
	if err != nil || !slices.ContainsFunc(problems, func(s string) bool { return strings.Contains(s, `"issuing-ca"`) && strings.Contains(s, "ca.retired") }) {
		t.Fatalf("ca.retired forgotten: %v %v", problems, err)
	}
	// Revoking one of them says what is missing (it said "no such
	// certificate ... is from issuer").
	if err := forgot.Revoke(ctx, old.SerialNumber.Text(16), ReasonKeyCompromise); !errors.Is(err, ErrOtherIssuer) || !strings.Contains(err.Error(), "ca.retired") {
		t.Fatalf("revoking a certificate of the forgotten key: %v", err)
	}

	// Under a name of their own: the old key issued under "kept-ca".
	keptOld := testCA.cfg
	keptOld.Name = "kept-ca"
	oldCA, err := NewCA(keptOld)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oldCA.Issue(ctx, Request{Profile: DerivedPIVAuth, CSR: newCSR(t, p256(t)), Identity: identity(t)}); err != nil {
		t.Fatal(err)
	}
	// A re-key that kept the name: reported.
	sameCfg := rekeyedCA(t, "kept-ca").cfg
	sameCfg.Retired = nil
	sameName, err := NewCA(sameCfg)
	if err != nil {
		t.Fatal(err)
	}
	kept := func(problems []string) bool {
		return slices.ContainsFunc(problems, func(s string) bool {
			return strings.Contains(s, `"kept-ca"`) && strings.Contains(s, "another key") && strings.Contains(s, "ca.retired")
		})
	}
	if problems, err := sameName.CheckIssuers(ctx); err != nil || !kept(problems) {
		t.Fatalf("a re-key that kept the name: %v %v", problems, err)
	}
	// ...which then issued under the old name, and the config put right
	// afterwards (the old key retired under it): the newest certificates
	// of the name are the new key's, the oldest the retired key's.
	if _, err := sameName.Issue(ctx, Request{Profile: DerivedPIVAuth, CSR: newCSR(t, p256(t)), Identity: identity(t)}); err != nil {
		t.Fatal(err)
	}
	keptOld.StatusOnly = true
	retired, err := NewCA(keptOld)
	if err != nil {
		t.Fatal(err)
	}
	fixedCfg := sameName.cfg
	fixedCfg.Name, fixedCfg.Retired = "kept-ca-2", []*CA{retired}
	fixed, err := NewCA(fixedCfg)
	if err != nil {
		t.Fatal(err)
	}
	if problems, err := fixed.CheckIssuers(ctx); err != nil || !kept(problems) {
		t.Fatalf("the new key's certificates under the retired key's name: %v %v", problems, err)
	}
}
