package server_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/credgw/credgw/activation/attest"
	"github.com/credgw/credgw/activation/code"
	"github.com/credgw/credgw/agent"
	hsmsim "github.com/credgw/credgw/hsm-sim"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"google.golang.org/grpc/codes"
)

var (
	oidDerivedSoftware = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 2, 1, 3, 40}
	oidDerivedHardware = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 2, 1, 3, 41}
)

func hasPolicy(c *x509.Certificate, oid asn1.ObjectIdentifier) bool {
	return slices.ContainsFunc(c.PolicyIdentifiers, oid.Equal)
}

// TestKeyAttestationPolicy: a device whose keystore attests its derived PIV
// Authentication key in hardware (the simulated vendor, TEE and StrongBox)
// gets …3.41; one that attests nothing, or says hardware_backed without
// proof, gets …3.40; the verdict is in the admin list. A refused
// attestation is its gRPC code, and the device can redeem again.
func TestKeyAttestationPolicy(t *testing.T) {
	vendor, err := hsmsim.OpenVendor(filepath.Join(dev.Dir, "hsm", "attest-vendor"))
	if err != nil {
		t.Fatal(err)
	}
	sim := func(level attest.SecurityLevel) agent.AttestFunc {
		return func(_ context.Context, _ credgwv1.Profile, pub crypto.PublicKey, challenge []byte) (*credgwv1.KeyAttestation, error) {
			chain, err := vendor.Attest(pub, challenge, hsmsim.AttestOptions{Level: level})
			return &credgwv1.KeyAttestation{Format: attest.FormatAndroidKey, CertificateChain: chain}, err
		}
	}
	admin := credgwv1.NewAdminClient(dial(t, keyPair(t, dev.AdminCert, dev.AdminKey)))
	for _, tc := range []struct {
		name     string
		attest   agent.AttestFunc
		claim    bool
		hardware bool
		level    string
	}{
		{"TEE", sim(attest.TrustedEnvironment), false, true, "TrustedEnvironment"},
		{"StrongBox", sim(attest.StrongBox), false, true, "StrongBox"},
		{"unattested", nil, false, false, ""},
		{"hardware_backed claimed, not attested", nil, true, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := enrollCard(t)
			res, err := agent.Redeem(context.Background(), agent.Options{Payload: e.payload, Password: e.resp.GetPassword(),
				OutDir: t.TempDir(), KeystorePIN: "correct horse", Attest: tc.attest,
				Device: &credgwv1.DeviceInfo{Model: "test phone", HardwareBacked: tc.claim}})
			if err != nil {
				t.Fatal(err)
			}
			auth := res.Certificates[credgwv1.Profile_PROFILE_DERIVED_PIV_AUTH]
			if hasPolicy(auth, oidDerivedHardware) != tc.hardware || hasPolicy(auth, oidDerivedSoftware) == tc.hardware {
				t.Fatalf("policies %v, want hardware-backed %v", auth.PolicyIdentifiers, tc.hardware)
			}
			if sig := res.Certificates[credgwv1.Profile_PROFILE_DIGITAL_SIGNATURE]; hasPolicy(sig, oidDerivedHardware) {
				t.Errorf("the signature certificate asserts …3.41")
			}
			cs, err := gwStore.CredentialSet(context.Background(), res.CredentialSetID)
			if err != nil {
				t.Fatal(err)
			}
			list, err := admin.ListCredentials(context.Background(), &credgwv1.AdminListCredentialsRequest{
				Identity: &credgwv1.PIVIdentitySelector{Selector: &credgwv1.PIVIdentitySelector_CardUuid{CardUuid: cs.CardUUID}}})
			if err != nil {
				t.Fatal(err)
			}
			var verdicts []*credgwv1.AttestationVerdict
			for _, cs := range list.GetCredentialSets() {
				if cs.GetId() == res.CredentialSetID {
					verdicts = cs.GetAttestations()
				}
			}
			if tc.level == "" {
				if len(verdicts) != 0 {
					t.Errorf("verdicts for an unattested device: %v", verdicts)
				}
				return
			}
			if len(verdicts) != 2 || verdicts[0].GetProfile() != credgwv1.Profile_PROFILE_DERIVED_PIV_AUTH ||
				verdicts[0].GetSecurityLevel() != tc.level || verdicts[0].GetVerifiedBootState() != "Verified" || !verdicts[0].GetDeviceLocked() {
				t.Errorf("admin list verdicts %v", verdicts)
			}
		})
	}

	t.Run("refusals keep the activation", func(t *testing.T) {
		e := enrollCard(t)
		client := credgwv1.NewRedemptionClient(dial(t))
		attested := func(challenge []byte, keyOf int) *credgwv1.RedeemRequest {
			req := redeemRequest(t, e, e.resp.GetPassword())
			csr, err := x509.ParseCertificateRequest(req.Csrs[keyOf].GetCsrDer())
			if err != nil {
				t.Fatal(err)
			}
			chain, err := vendor.Attest(csr.PublicKey, challenge, hsmsim.AttestOptions{Level: attest.TrustedEnvironment})
			if err != nil {
				t.Fatal(err)
			}
			req.Csrs[0].Attestation = &credgwv1.KeyAttestation{Format: attest.FormatAndroidKey, CertificateChain: chain}
			return req
		}
		challenge := code.AttestationChallenge(e.payload.Secret, e.payload.ID)
		_, err := readStream(context.Background(), client, attested(code.AttestationChallenge(e.payload.Secret, "other"), 0), 0)
		wantCode(t, err, codes.PermissionDenied)
		_, err = readStream(context.Background(), client, attested(challenge, 1), 0)
		wantCode(t, err, codes.InvalidArgument)
		d, err := readStream(context.Background(), client, attested(challenge, 0), 0)
		if err != nil || len(d.sum) != 32 {
			t.Fatalf("the same activation with a good attestation: %v", err)
		}
	})
}

// TestRekeyAttested: a renewal attests its new keys with the challenge over
// the current certificate's serial: …3.41 when it verifies and the
// certificate renewed is …3.41 too; an attestation
// made for another challenge is PermissionDenied and renews nothing.
func TestRekeyAttested(t *testing.T) {
	vendor, err := hsmsim.OpenVendor(filepath.Join(dev.Dir, "hsm", "attest-vendor"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	withChallenge := func(fixed []byte) agent.AttestFunc {
		return func(_ context.Context, _ credgwv1.Profile, pub crypto.PublicKey, challenge []byte) (*credgwv1.KeyAttestation, error) {
			if fixed != nil {
				challenge = fixed
			}
			chain, err := vendor.Attest(pub, challenge, hsmsim.AttestOptions{Level: attest.TrustedEnvironment})
			return &credgwv1.KeyAttestation{Format: attest.FormatAndroidKey, CertificateChain: chain}, err
		}
	}
	// Installed …3.41 (a TEE attestation): a renewal can keep that, and
	// only that (activation's TestRekeyKeepsTheAssuranceItRenews).
	dir, oldSet, _ := installed(t, "attested-renewal@example.com", withChallenge(nil))
	recs, err := gwStore.CertificatesOfSet(ctx, oldSet)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Profile == "derived-piv-auth" {
			if c, err := x509.ParseCertificate(r.DER); err != nil || !hasPolicy(c, oidDerivedHardware) {
				t.Fatalf("installed with a TEE attestation: not …3.41 (%v)", err)
			}
			clockOffset.Store(int64(time.Until(r.NotBefore.Add(r.NotAfter.Sub(r.NotBefore) * 81 / 100))))
		}
	}
	t.Cleanup(func() { clockOffset.Store(0) })
	o := renewOptions(t, dir)
	o.Attest = withChallenge([]byte("made for another renewal"))
	_, err = agent.Renew(ctx, o)
	wantCode(t, err, codes.PermissionDenied)
	if st := setState(t, oldSet); st != "active" {
		t.Fatalf("the old set is %s after a refused renewal", st)
	}
	o.Attest = withChallenge(nil)
	res, err := agent.Renew(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if auth := res.Certificates[credgwv1.Profile_PROFILE_DERIVED_PIV_AUTH]; !hasPolicy(auth, oidDerivedHardware) {
		t.Fatalf("renewed with a TEE attestation: policies %v", auth.PolicyIdentifiers)
	}
}
