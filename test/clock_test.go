package test

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/credgw/credgw/activation/code"
	"github.com/credgw/credgw/activation/pfx"
	"github.com/credgw/credgw/agent"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"golang.org/x/crypto/ocsp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestClockAgainstTheBinary: `credgw serve` restarted with its clock an hour
// on (--test-clock-offset, as after a long outage): an activation older than
// its 10-minute lifetime is refused with FailedPrecondition, and a package
// redeemed but never confirmed within the 1-hour window has all its
// certificates revoked before the gateway serves again: its OCSP responder
// says so, and the late Confirm is refused.
func TestClockAgainstTheBinary(t *testing.T) {
	ctx := context.Background()
	work := t.TempDir()
	dir := filepath.Join(work, "dev")
	devInit(t, dir)
	cfgText, _ := os.ReadFile(filepath.Join(dir, "credgw.yaml"))
	gw := regexp.MustCompile(`grpc: (127\.0\.0\.1:\d+)`).FindStringSubmatch(string(cfgText))[1]
	conf := "SOFTHSM2_CONF=" + filepath.Join(dir, "hsm", "softhsm2.conf")
	cfgPath := filepath.Join(dir, "credgw.yaml")
	startServe(t, filepath.Join(dir, "hsm"))
	stop := startProcess(t, "credgw serving", credgwBin, "serve", "--config", cfgPath)

	outA, outB := filepath.Join(work, "a"), filepath.Join(work, "b")
	os.MkdirAll(outA, 0o700)
	os.MkdirAll(outB, 0o700)
	pa, pwA := enrollWithCLI(t, dir, gw, conf, outA) // never redeemed
	pb, pwB := enrollWithCLI(t, dir, gw, conf, outB) // redeemed, never confirmed
	conn, err := agent.Dial(pb)
	if err != nil {
		t.Fatal(err)
	}
	pkg, sum, rid, err := fetch(credgwv1.NewRedemptionClient(conn), redeemReq(pb, pwB))
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	certs, issuer := packageCertificates(t, pkg, pb, pwB)
	if len(certs) != 3 {
		t.Fatalf("%d certificates in the package, want 3", len(certs))
	}
	for _, c := range certs {
		if st := gatewayOCSP(t, ctx, c, issuer); st != ocsp.Good {
			t.Fatalf("before the window ends: OCSP status %d for %s", st, c.SerialNumber.Text(16))
		}
	}

	stop()
	startProcess(t, "credgw serving", credgwBin, "serve", "--config", cfgPath, "--test-clock-offset", "61m")

	for _, c := range certs {
		if st := gatewayOCSP(t, ctx, c, issuer); st != ocsp.Revoked {
			t.Errorf("unconfirmed past the window: OCSP status %d for %s, want revoked", st, c.SerialNumber.Text(16))
		}
	}
	conn, err = agent.Dial(pb)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := credgwv1.NewRedemptionClient(conn)
	_, err = client.Confirm(ctx, &credgwv1.ConfirmRequest{RedemptionId: rid, Secret: pb.Secret, Sha256: sum})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("late Confirm: %v, want FailedPrecondition", err)
	}
	if _, _, _, err := fetch(client, redeemReq(pa, pwA)); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("expired activation: %v, want FailedPrecondition", err)
	}
}

// packageCertificates returns the certificates a package carries (the
// device-keyed ones and the current key-management one, from its PKCS#12
// under the transport password) and the issuing CA.
func packageCertificates(t *testing.T, raw []byte, p code.Payload, password string) ([]*x509.Certificate, *x509.Certificate) {
	t.Helper()
	var pkg credgwv1.CredentialPackage
	if err := protoUnmarshal(raw, &pkg); err != nil {
		t.Fatal(err)
	}
	p12pw, err := code.PKCS12Password(p.Secret, password)
	if err != nil {
		t.Fatal(err)
	}
	var certs []*x509.Certificate
	var issuer *x509.Certificate
	for _, it := range pkg.GetItems() {
		switch {
		case len(it.GetChain()) > 0:
			if issuer, err = x509.ParseCertificate(it.GetChain()[0]); err != nil {
				t.Fatal(err)
			}
		case it.GetName() == "encryption.p12":
			entries, _, err := pfx.Decode(it.GetData(), p12pw)
			if err != nil {
				t.Fatalf("encryption.p12: %v", err)
			}
			certs = append(certs, entries[0].Certificate) // the current key's
		case filepath.Ext(it.GetName()) == ".crt" || filepath.Ext(it.GetName()) == ".der":
			c, err := x509.ParseCertificate(it.GetData())
			if err != nil {
				t.Fatalf("%s: %v", it.GetName(), err)
			}
			certs = append(certs, c)
		}
	}
	if issuer == nil {
		t.Fatal("the package has no chain")
	}
	return certs, issuer
}
