package server_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/credgw/credgw/issuance"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/server"
	"golang.org/x/crypto/ocsp"
	"google.golang.org/grpc/codes"
)

// TestCAOnTheGateway: a certificate issued by the gateway's CA (SoftHSM key
// from the config) is revoked through Admin.RevokeCertificate; the CRL and
// the OCSP responder on the plain-HTTP listener say so.
func TestCAOnTheGateway(t *testing.T) {
	ctx := context.Background()
	ca := gw.CA()
	if ca == nil {
		t.Fatal("the dev config has a CA but the gateway has none")
	}
	cert := issueForDevCard(t)
	if !strings.HasPrefix(cert.CRLDistributionPoints[0], "http://"+gw.HTTPAddr()) {
		t.Fatalf("CRL DP %v is not the gateway's listener %s", cert.CRLDistributionPoints, gw.HTTPAddr())
	}
	ocspStatus := func() int {
		req, _ := ocsp.CreateRequest(cert, ca.Chain()[0], &ocsp.RequestOptions{Hash: crypto.SHA256})
		resp, err := http.Post(cert.OCSPServer[0], "application/ocsp-request", bytes.NewReader(req))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		r, err := ocsp.ParseResponseForCert(body, cert, ca.Chain()[0])
		if err != nil {
			t.Fatal(err)
		}
		return r.Status
	}
	if ocspStatus() != ocsp.Good {
		t.Fatal("fresh certificate not good")
	}
	admin := credgwv1.NewAdminClient(dial(t, keyPair(t, dev.AdminCert, dev.AdminKey)))
	resp, err := admin.RevokeCertificate(ctx, &credgwv1.RevokeCertificateRequest{Serial: cert.SerialNumber.Text(16), Reason: credgwv1.RevocationReason_REVOCATION_REASON_KEY_COMPROMISE})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetCertificate().GetStatus() != credgwv1.CertificateStatus_CERTIFICATE_STATUS_REVOKED {
		t.Fatalf("response %+v", resp)
	}
	// What was revoked says which credential it was.
	if p := resp.GetCertificate().GetProfile(); p != credgwv1.Profile_PROFILE_DERIVED_PIV_AUTH {
		t.Fatalf("the revoked certificate's profile: %v, want PROFILE_DERIVED_PIV_AUTH", p)
	}
	if ocspStatus() != ocsp.Revoked {
		t.Fatal("OCSP does not say revoked")
	}
	r, err := http.Get(cert.CRLDistributionPoints[0])
	if err != nil {
		t.Fatal(err)
	}
	der, _ := io.ReadAll(r.Body)
	r.Body.Close()
	crl, err := x509.ParseRevocationList(der)
	if err != nil || crl.CheckSignatureFrom(ca.Chain()[0]) != nil {
		t.Fatalf("CRL: %v", err)
	}
	found := false
	for _, e := range crl.RevokedCertificateEntries {
		found = found || e.SerialNumber.Cmp(cert.SerialNumber) == 0
	}
	if !found {
		t.Fatal("CRL does not list the revoked certificate")
	}
	_, err = admin.RevokeCertificate(ctx, &credgwv1.RevokeCertificateRequest{Serial: cert.SerialNumber.Text(16)})
	wantCode(t, err, codes.FailedPrecondition)
	_, err = admin.RevokeCertificate(ctx, &credgwv1.RevokeCertificateRequest{Serial: "abcdef"})
	wantCode(t, err, codes.NotFound)
	// The CA certificate at the caIssuers URL.
	if r, err := http.Get(cert.IssuingCertificateURL[0]); err != nil || r.StatusCode != 200 || r.Header.Get("Content-Type") != "application/pkcs7-mime" {
		t.Fatalf("caIssuers: %v %v", r, err)
	}
}

// TestStartRefusesMismatchedCAKey: a CA certificate that the HSM key does
// not match stops the gateway at start-up.
func TestStartRefusesMismatchedCAKey(t *testing.T) {
	other := *cfg
	otherCert := filepath.Join(t.TempDir(), "other.crt")
	// The root certificate is not the HSM key's certificate.
	root, err := os.ReadFile(cfg.Path(cfg.CA.ChainFiles[0]))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(otherCert, root, 0o644)
	other.CA.CertificateFile = otherCert
	other.Listen.GRPC, other.Listen.HTTP = "127.0.0.1:0", "127.0.0.1:0"
	_, err = server.New(context.Background(), &other, server.WithStore(nil))
	if err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("err = %v, want a key mismatch", err)
	}
}

// TestCAInitRefusesInstalledCA: ca init run again on a gateway's config
// refuses before it touches a file or the token, also when the CA's files
// carry names of the operator's choosing (ca init's own directory check
// looks for root.crt and issuing.crt only).
func TestCAInitRefusesInstalledCA(t *testing.T) {
	dir := t.TempDir()
	placed := map[string]string{}
	for name, from := range map[string]string{"issuing-ca.pem": cfg.CA.CertificateFile, "root-ca.pem": cfg.CA.ChainFiles[0]} {
		b, err := os.ReadFile(cfg.Path(from))
		if err != nil {
			t.Fatal(err)
		}
		placed[filepath.Join(dir, name)] = string(b)
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, mode := range []server.InitCAOptions{{}, {CSRFile: filepath.Join(dir, "issuing.csr")}} {
		other := *cfg
		other.CA.CertificateFile = filepath.Join(dir, "issuing-ca.pem")
		other.CA.ChainFiles = []string{filepath.Join(dir, "root-ca.pem")}
		other.CA.RootCRLFile = filepath.Join(dir, "root-ca.crl")
		_, err := server.InitCA(context.Background(), &other, mode)
		if err == nil || !strings.Contains(err.Error(), "issuing-ca.pem exists already") {
			t.Fatalf("ca init (csr %q) over an installed CA: %v, want a refusal naming issuing-ca.pem", mode.CSRFile, err)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != len(placed) {
		t.Errorf("the refused runs left %d files, want %d", len(ents), len(placed))
	}
	for f, b := range placed {
		if now, _ := os.ReadFile(f); string(now) != b {
			t.Errorf("%s changed", filepath.Base(f))
		}
	}
}

// issueForDevCard has the gateway's CA issue a derived PIV Authentication
// certificate for the development card, outside any enrollment.
func issueForDevCard(t *testing.T) *x509.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csrDER, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	csr, _ := x509.ParseCertificateRequest(csrDER)
	c := openCard(t, dev.Card.Name, nil)
	issued, err := gw.CA().Issue(context.Background(), issuance.Request{Profile: issuance.DerivedPIVAuth, CSR: csr, Identity: issuance.Identity{
		RawSubject: c.auth.RawSubject, CardKey: c.auth.PublicKey, PersonID: "p", CardUUID: dev.Card.UUID,
	}})
	if err != nil {
		t.Fatal(err)
	}
	return issued.Certificate
}
