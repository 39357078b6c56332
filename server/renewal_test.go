package server_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credgw/credgw/activation/code"
	"github.com/credgw/credgw/agent"
	hsmsim "github.com/credgw/credgw/hsm-sim"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/server"
	"google.golang.org/grpc/codes"
	pkcs12 "software.sslmate.com/src/go-pkcs12"
)

// installed enrolls a new card and redeems into a directory of its own.
func installed(t *testing.T, email string, attestWith ...agent.AttestFunc) (string, string, *card) {
	t.Helper()
	ctx := context.Background()
	conn := portalConn(t)
	c := newCard(t, hsmsim.CardSpec{Email: email})
	sess, err := login(t, conn, c)
	if err != nil {
		t.Fatal(err)
	}
	rememberSecret([]byte(sess.GetSessionToken()))
	en, err := credgwv1.NewEnrollmentClient(conn).CreateEnrollment(ctx, &credgwv1.CreateEnrollmentRequest{SessionToken: sess.GetSessionToken(), IdentityName: "Phone"})
	if err != nil {
		t.Fatal(err)
	}
	rememberSecret([]byte(en.GetPassword()))
	p, _ := code.ParsePayload(en.GetQrPayload())
	rememberSecret(p.Secret)
	dir := t.TempDir()
	o := agent.Options{Payload: p, Password: en.GetPassword(), OutDir: dir, KeystorePIN: "correct horse"}
	if len(attestWith) > 0 {
		o.Attest = attestWith[0]
	}
	if _, err := agent.Redeem(ctx, o); err != nil {
		t.Fatal(err)
	}
	return dir, en.GetCredentialSetId(), c
}

func renewOptions(t *testing.T, dir string) agent.RenewOptions {
	t.Helper()
	pem, err := os.ReadFile(dev.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	return agent.RenewOptions{Dir: dir, KeystorePIN: "correct horse", Gateway: gw.GRPCAddr(), RootCAs: roots, Now: now}
}

// TestRekey: at 79 % of the derived PIV Authentication certificate's
// lifetime renewal is refused, at 81 % it issues new certificates for new
// keys, and after Confirm the old set is revoked (superseded); a device
// whose card was terminated is refused.
func TestRekey(t *testing.T) {
	ctx := context.Background()
	dir, oldSet, _ := installed(t, "renew@example.com")
	recs, err := gwStore.CertificatesOfSet(ctx, oldSet)
	if err != nil {
		t.Fatal(err)
	}
	var nb, na time.Time
	for _, r := range recs {
		if r.Profile == "derived-piv-auth" {
			nb, na = r.NotBefore, r.NotAfter
		}
	}
	life := na.Sub(nb)
	at := func(frac float64) {
		clockOffset.Store(int64(time.Until(nb.Add(time.Duration(float64(life) * frac)))))
	}
	t.Cleanup(func() { clockOffset.Store(0) })

	at(0.79)
	_, err = agent.Renew(ctx, renewOptions(t, dir))
	wantCode(t, err, codes.FailedPrecondition)

	at(0.81)
	// A renewal the device refuses (here: a foreign trust anchor) keeps
	// the credentials in use, and says so.
	foreign := renewOptions(t, dir)
	if foreign.TrustAnchors, err = server.ReadCertificateFiles([]string{dev.CAFile}); err != nil {
		t.Fatal(err)
	}
	_, err = agent.Renew(ctx, foreign)
	if err == nil || !strings.Contains(err.Error(), "stay as they are") || !strings.Contains(err.Error(), "confirmation window") || strings.Contains(err.Error(), "enroll again") {
		t.Fatalf("a refused renewal: %v", err)
	}
	if st := setState(t, oldSet); st != "active" {
		t.Fatalf("old set is %s after a refused renewal", st)
	}
	// Until the gateway drops the refused renewal (its confirmation
	// window), the set has one in progress; the agent said to wait.
	_, err = agent.Renew(ctx, renewOptions(t, dir))
	wantCode(t, err, codes.FailedPrecondition)
	clockOffset.Add(int64(61 * time.Minute)) // past enrollment.confirm_window
	gw.Sweep(ctx)
	res, err := agent.Renew(ctx, renewOptions(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	if res.CredentialSetID == oldSet || setState(t, res.CredentialSetID) != "active" {
		t.Fatalf("new set %s is %s", res.CredentialSetID, setState(t, res.CredentialSetID))
	}
	if st := setState(t, oldSet); st != "revoked" {
		t.Fatalf("old set is %s after the renewal was confirmed", st)
	}
	for _, r := range recs {
		rec, err := gwStore.Certificate(ctx, r.Serial)
		if err != nil || !rec.Revoked() || rec.RevocationReason != 4 {
			t.Fatalf("old %s: revoked %v reason %d (%v)", r.Profile, rec.Revoked(), rec.RevocationReason, err)
		}
	}
	// The new files replaced the old ones in the directory.
	if data, err := os.ReadFile(filepath.Join(dir, "auth.p12")); err != nil {
		t.Fatal(err)
	} else if _, c, _, err := pkcs12.DecodeChain(data, "correct horse"); err != nil || c.SerialNumber.Cmp(res.Certificates[credgwv1.Profile_PROFILE_DERIVED_PIV_AUTH].SerialNumber) != 0 {
		t.Fatalf("auth.p12 after renewal: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) == 0 || strings.HasPrefix(ents[0].Name(), ".renew-") {
		t.Fatalf("staging left behind: %v", ents)
	}
	newAuth := res.Certificates[credgwv1.Profile_PROFILE_DERIVED_PIV_AUTH]
	if newAuth == nil || newAuth.NotBefore.Before(nb.Add(time.Duration(float64(life)*0.8))) {
		t.Fatalf("new certificate %v", newAuth)
	}
	// The old certificate can renew no more.
	// (auth.p12 now holds the new one; the old set is revoked.)

	// A terminated card's device is refused.
	clockOffset.Store(0)
	dir2, set2, _ := installed(t, "terminated@example.com")
	cs, err := gwStore.CredentialSet(ctx, set2)
	if err != nil {
		t.Fatal(err)
	}
	admin := credgwv1.NewAdminClient(dial(t, keyPair(t, dev.AdminCert, dev.AdminKey)))
	if _, err := admin.TerminateIdentity(ctx, &credgwv1.TerminateIdentityRequest{Identity: &credgwv1.PIVIdentitySelector{
		Selector: &credgwv1.PIVIdentitySelector_CardUuid{CardUuid: cs.CardUUID}}}); err != nil {
		t.Fatal(err)
	}
	recs2, _ := gwStore.CertificatesOfSet(ctx, set2)
	for _, r := range recs2 {
		if r.Profile == "derived-piv-auth" {
			nb, na = r.NotBefore, r.NotAfter
			life = na.Sub(nb)
		}
	}
	at(0.81)
	_, err = agent.Renew(ctx, renewOptions(t, dir2))
	wantCode(t, err, codes.PermissionDenied)
}

// TestRekeyRefusals: one renewal at a time per set, and only
// Renewal.Confirm with the old certificate confirms it.
func TestRekeyRefusals(t *testing.T) {
	ctx := context.Background()
	dir, oldSet, _ := installed(t, "rekey.raw@example.com")
	data, err := os.ReadFile(filepath.Join(dir, "auth.p12"))
	if err != nil {
		t.Fatal(err)
	}
	key, cert, _, err := pkcs12.DecodeChain(data, "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	conn := dial(t, tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert})
	rc := credgwv1.NewRenewalClient(conn)
	clockOffset.Store(int64(time.Until(cert.NotBefore.Add(cert.NotAfter.Sub(cert.NotBefore) * 81 / 100))))
	t.Cleanup(func() { clockOffset.Store(0) })

	both := []credgwv1.Profile{credgwv1.Profile_PROFILE_DERIVED_PIV_AUTH, credgwv1.Profile_PROFILE_DIGITAL_SIGNATURE}
	rekeyWith := func(secret []byte, profiles []credgwv1.Profile) (string, []byte, error) {
		var csrs []*credgwv1.CertificateRequest
		for _, p := range profiles {
			k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
			csrs = append(csrs, &credgwv1.CertificateRequest{Profile: p, CsrDer: der})
		}
		s, err := rc.Rekey(ctx, &credgwv1.RekeyRequest{Csrs: csrs, Secret: secret, Password: "12345678"})
		if err != nil {
			return "", nil, err
		}
		var rid string
		var sum []byte
		for {
			m, err := s.Recv()
			if err == io.EOF {
				return rid, sum, nil
			}
			if err != nil {
				return "", nil, err
			}
			if a := m.GetAccepted(); a != nil {
				rid = a.GetRedemptionId()
			}
			if d := m.GetDone(); d != nil {
				sum = d.GetSha256()
			}
		}
	}
	rekey := func(secret []byte) (string, []byte, error) { return rekeyWith(secret, both) }
	// A renewal refused after it was opened (a CSR missing) is abandoned:
	// the device's retry, with a new secret, is not "in progress".
	_, _, err = rekeyWith(bytes.Repeat([]byte{6}, 32), both[:1])
	wantCode(t, err, codes.InvalidArgument)
	secret := bytes.Repeat([]byte{9}, 32)
	rememberSecret(secret)
	rid, sum, err := rekey(secret)
	if err != nil || rid == "" {
		t.Fatalf("rekey: %q %v", rid, err)
	}
	// A second renewal of the same set while this one is open.
	_, _, err = rekey(bytes.Repeat([]byte{8}, 32))
	wantCode(t, err, codes.FailedPrecondition)
	// The open Redemption.Confirm does not confirm a renewal.
	_, err = credgwv1.NewRedemptionClient(dial(t)).Confirm(ctx, &credgwv1.ConfirmRequest{RedemptionId: rid, Secret: secret, Sha256: sum})
	wantCode(t, err, codes.FailedPrecondition)
	if st := setState(t, oldSet); st != "active" {
		t.Fatalf("old set is %s", st)
	}
	cr, err := rc.Confirm(ctx, &credgwv1.ConfirmRequest{RedemptionId: rid, Secret: secret, Sha256: sum})
	if err != nil {
		t.Fatal(err)
	}
	if setState(t, oldSet) != "revoked" || setState(t, cr.GetCredentialSetId()) != "active" {
		t.Fatalf("after Renewal.Confirm: old %s, new %s", setState(t, oldSet), setState(t, cr.GetCredentialSetId()))
	}
	// The old certificate renews no more.
	_, _, err = rekey(bytes.Repeat([]byte{7}, 32))
	wantCode(t, err, codes.PermissionDenied)
}

// TestSweepFinishesRevocations: a set marked revoked whose certificates were
// not revoked (the CA failed half way) is finished by the sweep.
func TestSweepFinishesRevocations(t *testing.T) {
	ctx := context.Background()
	_, set := activeSet(t, "half.revoked@example.com")
	if _, err := gwStore.RevokeCredentialSet(ctx, set, now()); err != nil {
		t.Fatal(err)
	}
	recs, _ := gwStore.CertificatesOfSet(ctx, set)
	for _, r := range recs {
		if r.Revoked() {
			t.Fatalf("%s revoked already: the test sets nothing up", r.Serial)
		}
	}
	gw.Sweep(ctx)
	recs, _ = gwStore.CertificatesOfSet(ctx, set)
	for _, r := range recs {
		if !r.Revoked() {
			t.Fatalf("%s (%s) still valid after the sweep", r.Serial, r.Profile)
		}
	}
}
