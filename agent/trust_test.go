package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/credgw/credgw/activation/pfx"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
)

// TestInstallRefusesWhatItCannotTrust: the device installs and confirms
// only credentials that chain to the trust anchor it was given (not to
// whatever CA the package itself carries), that are of their profile
// exactly, that belong to one person, and an escrowed key history of at
// most 21 keys. Each refusal leaves the output directory empty and
// confirms nothing.
func TestInstallRefusesWhatItCannotTrust(t *testing.T) {
	ctx := context.Background()
	selfSigned := func(name string) *x509.Certificate {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c
	}
	agencyRoot := selfSigned("the agency's root")
	history := func(g *testGateway, n int) {
		for range n {
			k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			c := g.issue(credgwv1.Profile_PROFILE_KEY_MANAGEMENT, k.Public(), x509.KeyUsageKeyAgreement, x509.ExtKeyUsageEmailProtection)
			g.history = append(g.history, pfx.Entry{Key: k, Certificate: c})
		}
	}
	tests := []struct {
		name   string
		setup  func(g *testGateway, o *Options)
		refuse string // "" for an install that succeeds
	}{
		{"the gateway's CA, given as the trust anchor", func(g *testGateway, o *Options) { o.TrustAnchors = []*x509.Certificate{g.ca} }, ""},
		{"a CA the package carries but the device does not trust", func(g *testGateway, o *Options) {
			o.TrustAnchors = []*x509.Certificate{agencyRoot}
		}, "does not chain"},
		{"an encryption certificate that also signs", func(g *testGateway, o *Options) {
			g.mutate = func(p credgwv1.Profile, c *x509.Certificate) {
				if p == credgwv1.Profile_PROFILE_KEY_MANAGEMENT {
					c.KeyUsage |= x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment
				}
			}
		}, "not of that profile"},
		{"a signature certificate without digitalSignature", func(g *testGateway, o *Options) {
			g.mutate = func(p credgwv1.Profile, c *x509.Certificate) {
				if p == credgwv1.Profile_PROFILE_DIGITAL_SIGNATURE {
					c.KeyUsage = x509.KeyUsageContentCommitment
				}
			}
		}, "not of that profile"},
		{"a signature certificate that can sign certificates", func(g *testGateway, o *Options) {
			g.mutate = func(p credgwv1.Profile, c *x509.Certificate) {
				if p == credgwv1.Profile_PROFILE_DIGITAL_SIGNATURE {
					c.KeyUsage |= x509.KeyUsageCertSign
				}
			}
		}, "not of that profile"},
		{"a derived PIV Authentication certificate that is a CA", func(g *testGateway, o *Options) {
			g.mutate = func(p credgwv1.Profile, c *x509.Certificate) {
				if p == credgwv1.Profile_PROFILE_DERIVED_PIV_AUTH {
					c.IsCA, c.BasicConstraintsValid = true, true
				}
			}
		}, "is a CA"},
		{"another person's encryption key", func(g *testGateway, o *Options) {
			g.mutate = func(p credgwv1.Profile, c *x509.Certificate) {
				if p == credgwv1.Profile_PROFILE_KEY_MANAGEMENT {
					c.Subject = pkix.Name{CommonName: "someone else"}
				}
			}
		}, "another person"},
		{"a signature certificate for another email", func(g *testGateway, o *Options) {
			g.mutate = func(p credgwv1.Profile, c *x509.Certificate) {
				if p == credgwv1.Profile_PROFILE_DIGITAL_SIGNATURE {
					c.EmailAddresses = []string{"someone.else@example.com"}
				}
			}
		}, "another person"},
		{"a key history of 20 earlier keys", func(g *testGateway, o *Options) { history(g, 20) }, ""},
		{"a key history of 21 earlier keys", func(g *testGateway, o *Options) { history(g, 21) }, "at most 21"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newTestGateway(t)
			o := g.options()
			tc.setup(g, &o)
			dir := t.TempDir()
			_, err := installStaged(ctx, dir, ".redeem-", o, g.open, g.confirm)
			if tc.refuse == "" {
				if err != nil || g.confirmed != 1 {
					t.Fatalf("err %v, confirmed %d", err, g.confirmed)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.refuse) {
				t.Fatalf("err %v, want one saying %q", err, tc.refuse)
			}
			if des, _ := os.ReadDir(dir); len(des) != 0 || g.confirmed != 0 {
				t.Fatalf("a refused install left %d entries and confirmed %d times", len(des), g.confirmed)
			}
		})
	}
}

// TestInstallRefusesADirectoryOthersCanWrite: the output directory must be
// the device user's own and writable by no one else, or another user
// could swap the staging directory for a link to theirs and read the key
// files. Refused before anything is downloaded.
func TestInstallRefusesADirectoryOthersCanWrite(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		prep  func(dir string) error
		want  string
		check bool
	}{
		{"world-writable", func(dir string) error { return os.Chmod(dir, 0o777) }, "writable by other users", true},
		{"group-writable", func(dir string) error { return os.Chmod(dir, 0o770) }, "writable by other users", true},
		{"sticky and world-writable, as /tmp", func(dir string) error { return os.Chmod(dir, 0o1777|os.ModeSticky) }, "writable by other users", true},
		{"another user's", func(dir string) error { return os.Chown(dir, 65534, 65534) }, "another user", os.Geteuid() == 0},
		{"readable by others, writable by its owner only", func(dir string) error { return os.Chmod(dir, 0o755) }, "", true},
	} {
		if !tc.check {
			continue // chown needs root (make test runs as root)
		}
		t.Run(tc.name, func(t *testing.T) {
			g := newTestGateway(t)
			dir := t.TempDir()
			if err := tc.prep(dir); err != nil {
				t.Fatal(err)
			}
			_, err := installStaged(ctx, dir, ".redeem-", g.options(), g.open, g.confirm)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || g.confirmed != 0 {
				t.Fatalf("err %v (confirmed %d), want one saying %q", err, g.confirmed, tc.want)
			}
			if des, _ := os.ReadDir(dir); len(des) != 0 {
				t.Fatalf("the refused directory holds %d entries", len(des))
			}
		})
	}
}
