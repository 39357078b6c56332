package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credgw/credgw/activation/pfx"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	pkcs12 "software.sslmate.com/src/go-pkcs12"
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
	// oldKey is an earlier escrowed key whose certificate was issued two
	// years ago, by the issuing CA's key (signer) under the CA's name,
	// before the CA certificate in use now was issued (a CA certificate
	// renewed for the same key, docs/key-ceremony.md).
	oldKey := func(g *testGateway, signer *ecdsa.PrivateKey) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "holder"},
			NotBefore: time.Now().AddDate(-2, 0, 0), NotAfter: time.Now().AddDate(-1, 0, 0), KeyUsage: x509.KeyUsageKeyAgreement,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}, EmailAddresses: []string{"h@example.com"}}
		asIssued(tmpl, credgwv1.Profile_PROFILE_KEY_MANAGEMENT)
		parent := *g.ca // the CA's name, the signer's key
		parent.PublicKey = signer.Public()
		der, err := x509.CreateCertificate(rand.Reader, tmpl, &parent, k.Public(), signer)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		g.history = append(g.history, pfx.Entry{Key: k, Certificate: c})
	}
	// rekeyed puts the gateway's issuing CA under a root (the chain the
	// package carries), and gives it an earlier certificate under the same
	// name for another key, from before the CA was re-keyed, valid from
	// three years ago for life (expired a year ago, or not). It returns
	// that certificate and its key.
	rekeyed := func(g *testGateway, life time.Duration) (*x509.Certificate, *ecdsa.PrivateKey) {
		rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		root := cert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "agency root"}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, nil, rootKey, nil)
		// The root, valid from before the old CA.
		rootTmpl := *root
		rootTmpl.NotBefore = time.Now().AddDate(-5, 0, 0)
		der, err := x509.CreateCertificate(rand.Reader, &rootTmpl, &rootTmpl, rootKey.Public(), rootKey)
		if err != nil {
			t.Fatal(err)
		}
		root, _ = x509.ParseCertificate(der)
		g.ca = cert(t, &x509.Certificate{Subject: g.ca.Subject, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, root, g.caKey, rootKey)
		g.extraChain = []*x509.Certificate{root}
		oldCAKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(99), Subject: g.ca.Subject, IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().AddDate(-3, 0, 0)}
		tmpl.NotAfter = tmpl.NotBefore.Add(life)
		der, err = x509.CreateCertificate(rand.Reader, tmpl, root, oldCAKey.Public(), rootKey)
		if err != nil {
			t.Fatal(err)
		}
		oldCA, _ := x509.ParseCertificate(der)
		return oldCA, oldCAKey
	}
	// earlier is one earlier escrowed key whose certificate the CA issued
	// changed by change (an older gateway's rules, or a wrong one).
	earlier := func(g *testGateway, change func(c *x509.Certificate)) {
		history(g, 1)
		h := g.history[0].Certificate
		tmpl := *h
		change(&tmpl)
		der, err := x509.CreateCertificate(rand.Reader, &tmpl, g.ca, h.PublicKey, g.caKey)
		if err != nil {
			t.Fatal(err)
		}
		g.history[0].Certificate, _ = x509.ParseCertificate(der)
	}
	tests := []struct {
		name   string
		setup  func(g *testGateway, o *Options)
		refuse string // "" for an install that succeeds
	}{
		{"an earlier key certified before the CA certificate was renewed", func(g *testGateway, o *Options) { oldKey(g, g.caKey) }, ""},
		{"an earlier key certified by another key under the CA's name", func(g *testGateway, o *Options) {
			other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			oldKey(g, other)
		}, "does not chain"},
		// An issuing CA re-keyed (key-ceremony.md): an earlier key was
		// certified by the CA's old key. The package sends the old CA
		// certificate; it must chain to the same root.
		{"an earlier key certified before the CA was re-keyed", func(g *testGateway, o *Options) {
			oldCA, oldCAKey := rekeyed(g, 2*365*24*time.Hour)
			oldKey(g, oldCAKey)
			g.previous = []*x509.Certificate{oldCA}
		}, ""},
		{"an earlier key certified before the re-key, the old CA still valid", func(g *testGateway, o *Options) {
			oldCA, oldCAKey := rekeyed(g, 4*365*24*time.Hour)
			oldKey(g, oldCAKey)
			g.previous = []*x509.Certificate{oldCA}
			o.TrustAnchors = []*x509.Certificate{g.extraChain[0]}
		}, ""},
		{"an earlier key certified before the re-key, without the old CA certificate", func(g *testGateway, o *Options) {
			_, oldCAKey := rekeyed(g, 2*365*24*time.Hour)
			oldKey(g, oldCAKey)
		}, "does not chain"},
		{"an old CA certificate under another root", func(g *testGateway, o *Options) {
			_, oldCAKey := rekeyed(g, 2*365*24*time.Hour)
			oldKey(g, oldCAKey)
			g.previous = []*x509.Certificate{selfSigned(g.ca.Subject.CommonName)}
		}, "does not chain"},
		{"the current key certified by the old CA", func(g *testGateway, o *Options) {
			oldCA, oldCAKey := rekeyed(g, 4*365*24*time.Hour)
			g.previous = []*x509.Certificate{oldCA}
			g.kmCA, g.kmCAKey = oldCA, oldCAKey
		}, "key 1 of encryption.p12 does not chain"},
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
		{"an EC encryption certificate for key encipherment", func(g *testGateway, o *Options) {
			g.mutate = func(p credgwv1.Profile, c *x509.Certificate) {
				if p == credgwv1.Profile_PROFILE_KEY_MANAGEMENT {
					c.KeyUsage = x509.KeyUsageKeyEncipherment
				}
			}
		}, "not of that profile"},
		// A gateway that issues outside the profile (STANDARDS.md §3.3):
		// the PIV card's own policy, anyExtendedKeyUsage, no card UUID.
		{"a derived PIV Authentication certificate with the card's policy", func(g *testGateway, o *Options) {
			g.mutate = func(p credgwv1.Profile, c *x509.Certificate) {
				if p == credgwv1.Profile_PROFILE_DERIVED_PIV_AUTH {
					c.Policies = append(c.Policies, x509.OID{})
					c.Policies[len(c.Policies)-1], _ = x509.OIDFromInts([]uint64{2, 16, 840, 1, 101, 3, 2, 1, 3, 13})
				}
			}
		}, "not of that profile"},
		{"a signature certificate for any purpose", func(g *testGateway, o *Options) {
			g.mutate = func(p credgwv1.Profile, c *x509.Certificate) {
				if p == credgwv1.Profile_PROFILE_DIGITAL_SIGNATURE {
					c.ExtKeyUsage = append(c.ExtKeyUsage, x509.ExtKeyUsageAny)
				}
			}
		}, "not of that profile"},
		{"a derived PIV Authentication certificate that is also a server's", func(g *testGateway, o *Options) {
			g.mutate = func(p credgwv1.Profile, c *x509.Certificate) {
				if p == credgwv1.Profile_PROFILE_DERIVED_PIV_AUTH {
					c.ExtKeyUsage = append(c.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
				}
			}
		}, "not of that profile"},
		{"an encryption certificate without a UUID", func(g *testGateway, o *Options) {
			g.mutate = func(p credgwv1.Profile, c *x509.Certificate) {
				if p == credgwv1.Profile_PROFILE_KEY_MANAGEMENT {
					c.URIs = nil
				}
			}
		}, "not of that profile"},
		// What the gateway's profile allows is installed: an encryption
		// certificate may carry OCSP signing or time stamping.
		{"an encryption certificate that may sign OCSP answers", func(g *testGateway, o *Options) {
			g.mutate = func(p credgwv1.Profile, c *x509.Certificate) {
				if p == credgwv1.Profile_PROFILE_KEY_MANAGEMENT {
					c.ExtKeyUsage = append(c.ExtKeyUsage, x509.ExtKeyUsageOCSPSigning, x509.ExtKeyUsageTimeStamping)
				}
			}
		}, ""},
		// An earlier escrowed key's certificate was made under the rules
		// of its day (an extra policy an older gateway allowed): the key
		// is delivered, not the whole install refused for good.
		{"an earlier key whose certificate has an extra policy", func(g *testGateway, o *Options) {
			earlier(g, func(c *x509.Certificate) {
				extra, _ := x509.OIDFromInts([]uint64{2, 16, 840, 1, 101, 3, 2, 1, 3, 13})
				c.Policies = append(c.Policies, extra)
			})
		}, ""},
		// ...but never for a purpose no release allowed.
		{"an earlier key whose certificate is for any purpose", func(g *testGateway, o *Options) {
			earlier(g, func(c *x509.Certificate) {
				c.ExtKeyUsage = append(c.ExtKeyUsage, x509.ExtKeyUsageAny, x509.ExtKeyUsageServerAuth)
			})
		}, "an earlier escrowed key"},
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
	// An earlier key certified under the CA's old key: its file of its
	// own carried the current CA's chain and the old CA certificate the
	// package sent was dropped, so no reader could build its path. Its
	// file carries its own CA, and encryption.p12 every CA of its keys.
	t.Run("an earlier key's files carry its own CA", func(t *testing.T) {
		g := newTestGateway(t)
		o := g.options()
		oldCA, oldCAKey := rekeyed(g, 4*365*24*time.Hour)
		oldKey(g, oldCAKey)
		g.previous = []*x509.Certificate{oldCA}
		dir := t.TempDir()
		if _, err := installStaged(ctx, dir, ".redeem-", o, g.open, g.confirm); err != nil {
			t.Fatal(err)
		}
		has := func(file string) bool {
			t.Helper()
			b, err := os.ReadFile(filepath.Join(dir, file))
			if err != nil {
				t.Fatal(err)
			}
			_, chain, err := pfx.Decode(b, o.KeystorePIN)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range chain {
				if c.Equal(oldCA) {
					return true
				}
			}
			return false
		}
		if !has(KeyFileName(1, g.history[0].Certificate)) {
			t.Error("the earlier key's own file lacks the CA that certified it")
		}
		if !has("encryption.p12") {
			t.Error("encryption.p12 lacks the CA of an earlier key")
		}
		if has(KeyFileName(0, g.lastKM.Certificate)) {
			t.Error("the current key's own file carries the old CA")
		}
	})
}

// TestInstallRefusesADirectoryOthersCanWrite: the output directory must be
// the device user's own and writable by no one else, every directory above
// it must be safe from other users (theirs only if root's; writable by
// others only with the sticky bit, as /tmp), and no link on the way may be
// another user's, or another user could swap the staging directory, or the
// output directory, for one of theirs and read the key files. Refused
// before anything is downloaded.
func TestInstallRefusesADirectoryOthersCanWrite(t *testing.T) {
	ctx := context.Background()
	root := os.Geteuid() == 0 // chown needs root (make test runs as root)
	for _, tc := range []struct {
		name   string
		prep   func(t *testing.T, base string) string // the --out to give
		want   string
		asRoot bool
	}{
		{"world-writable", func(t *testing.T, base string) string { return chmod(t, base, 0o777) }, "writable by other users", false},
		{"group-writable", func(t *testing.T, base string) string { return chmod(t, base, 0o770) }, "writable by other users", false},
		{"sticky and world-writable, as /tmp", func(t *testing.T, base string) string {
			return chmod(t, base, 0o777|os.ModeSticky)
		}, "writable by other users", false},
		{"another user's", func(t *testing.T, base string) string {
			if err := os.Chown(base, 65534, 65534); err != nil {
				t.Fatal(err)
			}
			return base
		}, "another user", true},
		{"under a directory anyone can write", func(t *testing.T, base string) string {
			chmod(t, base, 0o777)
			return mkdir(t, filepath.Join(base, "device"))
		}, "without the sticky bit", false},
		{"under another user's directory", func(t *testing.T, base string) string {
			out := mkdir(t, filepath.Join(base, "device"))
			if err := os.Chown(base, 65534, 65534); err != nil {
				t.Fatal(err)
			}
			return out
		}, "belongs to another user", true},
		{"through another user's link in a sticky directory", func(t *testing.T, base string) string {
			chmod(t, base, 0o777|os.ModeSticky)
			out := mkdir(t, filepath.Join(base, "device"))
			link := filepath.Join(base, "link")
			if err := os.Symlink(out, link); err != nil {
				t.Fatal(err)
			}
			if err := os.Lchown(link, 65534, 65534); err != nil {
				t.Fatal(err)
			}
			return link
		}, "a link of another user's", true},
		{"readable by others, writable by its owner only", func(t *testing.T, base string) string { return chmod(t, base, 0o755) }, "", false},
		{"in a sticky directory anyone can write, as /tmp", func(t *testing.T, base string) string {
			chmod(t, base, 0o777|os.ModeSticky)
			return mkdir(t, filepath.Join(base, "device"))
		}, "", false},
		{"through a link of one's own", func(t *testing.T, base string) string {
			out := mkdir(t, filepath.Join(base, "device"))
			link := filepath.Join(base, "link")
			if err := os.Symlink(out, link); err != nil {
				t.Fatal(err)
			}
			return link
		}, "", false},
	} {
		if tc.asRoot && !root {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			g := newTestGateway(t)
			base := t.TempDir()
			out := tc.prep(t, base)
			_, err := installStaged(ctx, out, ".redeem-", g.options(), g.open, g.confirm)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || g.confirmed != 0 {
				t.Fatalf("err %v (confirmed %d), want one saying %q", err, g.confirmed, tc.want)
			}
			if des, _ := os.ReadDir(out); len(des) != 0 {
				t.Fatalf("the refused directory holds %d entries", len(des))
			}
		})
	}
}

func chmod(t *testing.T, dir string, mode os.FileMode) string {
	t.Helper()
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	return dir
}

func mkdir(t *testing.T, dir string) string {
	t.Helper()
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestInstalledChainIsTheVerifiedPath: what the device keeps beside its
// credentials (chain.pem, the chain in auth.p12, where a renewal takes its
// anchor) is the path verified to its trust anchor, not the chain the
// gateway sent: a root of the gateway's own appended to that chain must
// not become the anchor of every later renewal.
func TestInstalledChainIsTheVerifiedPath(t *testing.T) {
	g := newTestGateway(t)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(66), Subject: pkix.Name{CommonName: "the gateway's own root"}, IsCA: true,
		BasicConstraintsValid: true, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	evil, _ := x509.ParseCertificate(der)
	g.extraChain = []*x509.Certificate{evil}
	o := g.options()
	o.TrustAnchors = []*x509.Certificate{g.ca}
	dir := t.TempDir()
	if _, err := installStaged(context.Background(), dir, ".redeem-", o, g.open, g.confirm); err != nil {
		t.Fatal(err)
	}
	pemData, err := os.ReadFile(filepath.Join(dir, "chain.pem"))
	if err != nil {
		t.Fatal(err)
	}
	var kept []*x509.Certificate
	for rest := pemData; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, _ := x509.ParseCertificate(b.Bytes)
		kept = append(kept, c)
	}
	if len(kept) != 1 || !kept[0].Equal(g.ca) {
		t.Fatalf("chain.pem holds %d certificates, want the verified path (the anchor only)", len(kept))
	}
	p12, _ := os.ReadFile(filepath.Join(dir, "auth.p12"))
	_, _, chain, err := pkcs12.DecodeChain(p12, "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 1 || !chain[len(chain)-1].Equal(g.ca) {
		t.Fatalf("auth.p12's chain ends at %q, want the trust anchor", chain[len(chain)-1].Subject)
	}
}

// TestEveryForbiddenEKURefused: each extended key usage a profile forbids
// (the gateway's rules, issuance/profile.go) refuses the install of a
// certificate of that profile.
func TestEveryForbiddenEKURefused(t *testing.T) {
	ctx := context.Background()
	for p, rule := range profileEKUs {
		var cases []func(c *x509.Certificate)
		for _, e := range rule.forbidden {
			cases = append(cases, func(c *x509.Certificate) { c.ExtKeyUsage = append(c.ExtKeyUsage, e) })
		}
		for _, o := range rule.unknown {
			cases = append(cases, func(c *x509.Certificate) { c.UnknownExtKeyUsage = append(c.UnknownExtKeyUsage, o) })
		}
		for i, mutate := range cases {
			t.Run(fmt.Sprintf("%v/%d", p, i), func(t *testing.T) {
				g := newTestGateway(t)
				g.mutate = func(q credgwv1.Profile, c *x509.Certificate) {
					if q == p {
						mutate(c)
					}
				}
				_, err := installStaged(ctx, t.TempDir(), ".redeem-", g.options(), g.open, g.confirm)
				if err == nil || !strings.Contains(err.Error(), "forbids extended key usage") || g.confirmed != 0 {
					t.Fatalf("err %v, confirmed %d", err, g.confirmed)
				}
			})
		}
	}
}
