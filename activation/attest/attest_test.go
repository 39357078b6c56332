package attest_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credgw/credgw/activation/attest"
	hsmsim "github.com/credgw/credgw/hsm-sim"
)

func readChain(t *testing.T, name string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out
		}
		out = append(out, blk.Bytes)
	}
}

func googleRoots(t *testing.T) []*x509.Certificate {
	t.Helper()
	roots, err := attest.ParseRoots(attest.GoogleRootsPEM())
	if err != nil || len(roots) != 2 {
		t.Fatalf("Google roots: %d, %v", len(roots), err)
	}
	return roots
}

// TestRealDeviceChains: chains attested by real devices (android/
// keyattestation's test data: a Pixel's TEE and StrongBox, remotely
// provisioned) verify to Google's roots as of the day they were made, with
// the challenge they carry ("challenge"); their boot state (an unlocked
// development device) is refused where the policy asks for a locked one.
func TestRealDeviceChains(t *testing.T) {
	made := time.Date(2024, 10, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		file  string
		level string
	}{
		{"akita-sdk34-TEE_EC_NONE.pem", "TrustedEnvironment"},
		{"akita-sdk34-SB_RSA_NONE.pem", "StrongBox"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			chain := readChain(t, tc.file)
			leaf, err := x509.ParseCertificate(chain[0])
			if err != nil {
				t.Fatal(err)
			}
			p := &attest.Policy{Roots: googleRoots(t), Now: func() time.Time { return made }}
			res, err := p.Verify(attest.FormatAndroidKey, chain, leaf.PublicKey, []byte("challenge"))
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			if res.SecurityLevel != tc.level || !res.Hardware || res.DeviceLocked || res.VerifiedBootState != "Unverified" {
				t.Errorf("result %+v", res)
			}
			p.RequireDeviceLocked = true
			if _, err := p.Verify(attest.FormatAndroidKey, chain, leaf.PublicKey, []byte("challenge")); reason(err) != attest.ReasonDeviceLocked {
				t.Errorf("an unlocked device with RequireDeviceLocked: %v", err)
			}
			// Without the root in the chain, too.
			p.RequireDeviceLocked = false
			if _, err := p.Verify(attest.FormatAndroidKey, chain[:len(chain)-1], leaf.PublicKey, []byte("challenge")); err != nil {
				t.Errorf("chain without its root: %v", err)
			}
		})
	}
}

func reason(err error) attest.Reason {
	var e *attest.Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

// TestVerifyRefusals: every refusal, with its reason and a message that
// says what to fix, on chains from the simulated vendor.
func TestVerifyRefusals(t *testing.T) {
	vendor, err := hsmsim.InitVendor(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	other, err := hsmsim.InitVendor(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	challenge := bytes.Repeat([]byte{7}, 32)
	tee := hsmsim.AttestOptions{Level: attest.TrustedEnvironment}
	mk := func(v *hsmsim.Vendor, pub crypto.PublicKey, ch []byte, o hsmsim.AttestOptions) [][]byte {
		t.Helper()
		c, err := v.Attest(pub, ch, o)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	good := mk(vendor, key.Public(), challenge, tee)
	leafSerial := func(chain [][]byte) string {
		c, _ := x509.ParseCertificate(chain[0])
		return c.SerialNumber.Text(16)
	}
	policy := func() *attest.Policy {
		return &attest.Policy{Roots: []*x509.Certificate{vendor.Root}, RequireVerifiedBoot: true, RequireDeviceLocked: true}
	}

	for _, tc := range []struct {
		name   string
		chain  [][]byte
		format string
		pub    crypto.PublicKey
		policy func(*attest.Policy)
		want   attest.Reason
		msg    string
	}{
		{"TEE", good, "", nil, nil, "", ""},
		{"StrongBox", mk(vendor, key.Public(), challenge, hsmsim.AttestOptions{Level: attest.StrongBox}), "", nil, nil, "", ""},
		{"StrongBox only, TEE given", good, "", nil, func(p *attest.Policy) { p.SecurityLevels = []attest.SecurityLevel{attest.StrongBox} },
			attest.ReasonSecurityLevel, "TrustedEnvironment"},
		{"software keystore", mk(vendor, key.Public(), challenge, hsmsim.AttestOptions{Level: attest.Software}), "", nil, nil,
			attest.ReasonSecurityLevel, "Software"},
		{"wrong challenge", mk(vendor, key.Public(), []byte("another activation"), tee), "", nil, nil, attest.ReasonChallenge, "challenge"},
		{"key mismatch", good, "", otherKey.Public(), nil, attest.ReasonKeyMismatch, "certificate request"},
		{"untrusted root", mk(other, key.Public(), challenge, tee), "", nil, nil, attest.ReasonUntrusted, "attestation root"},
		{"revoked attestation certificate", good, "", nil, func(p *attest.Policy) { p.Revoked = map[string]bool{leafSerial(good): true} },
			attest.ReasonRevoked, "revoked"},
		{"revoked intermediate", good, "", nil, func(p *attest.Policy) {
			p.Revoked = map[string]bool{strings.ToLower(vendor.Intermediate.SerialNumber.Text(16)): true}
		}, attest.ReasonRevoked, "revoked"},
		{"imported key", mk(vendor, key.Public(), challenge, hsmsim.AttestOptions{Level: attest.TrustedEnvironment, Imported: true}), "", nil, nil,
			attest.ReasonOrigin, "generated"},
		{"no sign purpose", mk(vendor, key.Public(), challenge, hsmsim.AttestOptions{Level: attest.TrustedEnvironment, NoSign: true}), "", nil, nil,
			attest.ReasonPurpose, "sign"},
		{"unverified boot", mk(vendor, key.Public(), challenge, hsmsim.AttestOptions{Level: attest.TrustedEnvironment, BootState: attest.Unverified}), "", nil, nil,
			attest.ReasonBootState, "Unverified"},
		{"unverified boot allowed", mk(vendor, key.Public(), challenge, hsmsim.AttestOptions{Level: attest.TrustedEnvironment, BootState: attest.Unverified}), "", nil,
			func(p *attest.Policy) { p.RequireVerifiedBoot = false }, "", ""},
		{"unlocked", mk(vendor, key.Public(), challenge, hsmsim.AttestOptions{Level: attest.TrustedEnvironment, Unlocked: true}), "", nil, nil,
			attest.ReasonDeviceLocked, "unlocked"},
		{"malformed extension", mk(vendor, key.Public(), challenge, hsmsim.AttestOptions{Level: attest.TrustedEnvironment, Extension: []byte{0x30, 0x03, 0x02, 0x01, 0x01}}), "", nil, nil,
			attest.ReasonMalformed, "KeyDescription"},
		{"no extension", [][]byte{vendor.Intermediate.Raw, vendor.Root.Raw}, "", vendor.Intermediate.PublicKey, nil, attest.ReasonMalformed, "no KeyDescription"},
		{"chain extended past the key", append([][]byte{good[0]}, good...), "", nil, nil, attest.ReasonUntrusted, ""},
		{"garbage certificate", [][]byte{[]byte("not DER")}, "", nil, nil, attest.ReasonMalformed, "does not parse"},
		{"empty chain", nil, "", nil, nil, attest.ReasonMalformed, "certificates"},
		{"unknown format", good, "apple-mda", nil, nil, attest.ReasonFormat, "android-key"},
		{"revoked by the status source", good, "", nil, func(p *attest.Policy) {
			p.Status = func() (map[string]bool, error) { return map[string]bool{leafSerial(good): true}, nil }
		}, attest.ReasonRevoked, "revoked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := policy()
			if tc.policy != nil {
				tc.policy(p)
			}
			format := tc.format
			if format == "" {
				format = attest.FormatAndroidKey
			}
			pub := tc.pub
			if pub == nil {
				pub = key.Public()
			}
			res, err := p.Verify(format, tc.chain, pub, challenge)
			if got := reason(err); got != tc.want || (tc.want == "" && err != nil) {
				t.Fatalf("reason %q (%v), want %q", got, err, tc.want)
			}
			if err != nil {
				if !strings.Contains(err.Error(), tc.msg) {
					t.Errorf("message %q does not mention %q", err, tc.msg)
				}
				return
			}
			if !res.Hardware || res.RootSHA256 == "" {
				t.Errorf("result %+v", res)
			}
		})
	}
}

// TestStatusUnavailableFailsClosed: without a current status list no
// attestation verifies.
func TestStatusUnavailableFailsClosed(t *testing.T) {
	vendor, err := hsmsim.InitVendor(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	chain, err := vendor.Attest(key.Public(), []byte("c"), hsmsim.AttestOptions{Level: attest.TrustedEnvironment})
	if err != nil {
		t.Fatal(err)
	}
	p := &attest.Policy{Roots: []*x509.Certificate{vendor.Root},
		Status: func() (map[string]bool, error) { return nil, attest.ErrStatusUnavailable }}
	if _, err := p.Verify(attest.FormatAndroidKey, chain, key.Public(), []byte("c")); !errors.Is(err, attest.ErrStatusUnavailable) {
		t.Fatalf("got %v, want ErrStatusUnavailable", err)
	}
}

// TestKeyDescriptionRoundTrip: what Marshal writes, ParseKeyDescription
// reads back.
func TestKeyDescriptionRoundTrip(t *testing.T) {
	origin, size := attest.OriginGenerated, 256
	in := &attest.KeyDescription{AttestationVersion: 300, AttestationSecurityLevel: attest.StrongBox, KeyMintVersion: 300,
		KeyMintSecurityLevel: attest.StrongBox, Challenge: []byte("c"), UniqueID: []byte{},
		HardwareEnforced: attest.AuthorizationList{Purposes: []int{3, 2}, Origin: &origin, KeySize: &size,
			RootOfTrust: &attest.RootOfTrust{VerifiedBootKey: []byte{1}, DeviceLocked: true, VerifiedBootState: attest.Verified}}}
	der, err := in.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	out, err := attest.ParseKeyDescription(der)
	if err != nil {
		t.Fatal(err)
	}
	if out.AttestationSecurityLevel != attest.StrongBox || string(out.Challenge) != "c" || *out.HardwareEnforced.Origin != 0 ||
		*out.HardwareEnforced.KeySize != 256 || len(out.HardwareEnforced.Purposes) != 2 || !out.HardwareEnforced.RootOfTrust.DeviceLocked {
		t.Fatalf("round trip: %+v", out)
	}
}

func TestParseStatusList(t *testing.T) {
	revoked, err := attest.ParseStatusList([]byte(`{"entries": {"0c2b": {"status": "REVOKED", "reason": "KEY_COMPROMISE"},
		"ABC": {"status": "SUSPENDED"}, "def": {"status": "REVOKED"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if !revoked["c2b"] || !revoked["def"] || revoked["abc"] || len(revoked) != 2 {
		t.Fatalf("revoked = %v", revoked)
	}
	for _, bad := range []string{"", "{}", `{"entries": 5}`, "not json"} {
		if _, err := attest.ParseStatusList([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// FuzzKeyDescription: the parser never panics, and what it accepts it can
// write back in a form it reads the same.
func FuzzKeyDescription(f *testing.F) {
	for _, name := range []string{"akita-sdk34-TEE_EC_NONE.pem", "akita-sdk34-SB_RSA_NONE.pem"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			f.Fatal(err)
		}
		for _, e := range c.Extensions {
			if e.Id.Equal(attest.OIDKeyDescription) {
				f.Add(e.Value)
			}
		}
	}
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		kd, err := attest.ParseKeyDescription(der)
		if err != nil {
			return
		}
		again, err := kd.Marshal()
		if err != nil {
			t.Fatalf("marshal of a parsed description: %v", err)
		}
		kd2, err := attest.ParseKeyDescription(again)
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if kd2.AttestationSecurityLevel != kd.AttestationSecurityLevel || !bytes.Equal(kd2.Challenge, kd.Challenge) {
			t.Fatalf("round trip changed the description")
		}
	})
}
