package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/credgw/credgw/activation/code"
	"github.com/credgw/credgw/activation/pfx"
	"github.com/credgw/credgw/pkcs11"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// testGateway certifies the CSRs a device sends, as the gateway does, and
// serves the package; without the key-management item, the default
// install fails late: after it wrote the two device credentials.
type testGateway struct {
	t          *testing.T
	ca         *x509.Certificate
	caKey      *ecdsa.PrivateKey
	secret     []byte
	password   string
	noKM       bool
	confirmErr error
	confirmed  int
	// history is delivered after the new escrowed key, as earlier keys
	// of the person; lastKM is the escrowed key of the last package.
	history []pfx.Entry
	lastKM  pfx.Entry
	// mutate, if set, changes each certificate's template before signing
	// (a gateway that issues what it should not).
	mutate func(credgwv1.Profile, *x509.Certificate)
	// extraChain is appended to the chain the package carries.
	extraChain []*x509.Certificate
	// previous is what the package sends beside encryption.p12: the
	// issuing CA's certificates from before a re-key.
	previous []*x509.Certificate
	// kmCA, if set, issues the new escrowed key's certificate instead of
	// the CA the package names.
	kmCA    *x509.Certificate
	kmCAKey *ecdsa.PrivateKey
}

func newTestGateway(t *testing.T) *testGateway {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := cert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "issuing CA"}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, nil, k, nil)
	secret := make([]byte, 32)
	rand.Read(secret)
	return &testGateway{t: t, ca: ca, caKey: k, secret: secret, password: "24681357"}
}

func (g *testGateway) issue(p credgwv1.Profile, pub any, ku x509.KeyUsage, eku x509.ExtKeyUsage) *x509.Certificate {
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "holder"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), KeyUsage: ku, ExtKeyUsage: []x509.ExtKeyUsage{eku}, EmailAddresses: []string{"h@example.com"}}
	asIssued(tmpl, p)
	if g.mutate != nil {
		g.mutate(p, tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, g.ca, pub, g.caKey)
	if err != nil {
		g.t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

// asIssued gives a test certificate what the gateway's profile has
// beyond key usage: the profile's policy and a fresh card-holder UUID.
func asIssued(tmpl *x509.Certificate, p credgwv1.Profile) {
	policy, _ := x509.OIDFromInts([]uint64{2, 16, 840, 1, 101, 3, 2, 1, 3, 6})
	if p == credgwv1.Profile_PROFILE_DERIVED_PIV_AUTH {
		policy, _ = x509.OIDFromInts([]uint64{2, 16, 840, 1, 101, 3, 2, 1, 3, 40})
	}
	tmpl.Policies = []x509.OID{policy}
	var id [16]byte
	rand.Read(id[:])
	u, _ := url.Parse(fmt.Sprintf("urn:uuid:%x-%x-%x-%x-%x", id[0:4], id[4:6], id[6:8], id[8:10], id[10:]))
	tmpl.URIs = []*url.URL{u}
}

func (g *testGateway) open(_ context.Context, csrs []*credgwv1.CertificateRequest, _ int64, _ string) (grpc.ServerStreamingClient[credgwv1.RedeemResponse], error) {
	b := code.NewPackage("set")
	for _, r := range csrs {
		csr, err := x509.ParseCertificateRequest(r.GetCsrDer())
		if err != nil {
			g.t.Fatal(err)
		}
		ku, eku := x509.KeyUsageDigitalSignature, x509.ExtKeyUsageClientAuth
		if r.GetProfile() == credgwv1.Profile_PROFILE_DIGITAL_SIGNATURE {
			ku, eku = x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment, x509.ExtKeyUsageEmailProtection
		}
		c := g.issue(r.GetProfile(), csr.PublicKey, ku, eku)
		b.Add(fileNames[r.GetProfile()]+".crt", credgwv1.ItemKind_ITEM_KIND_CERTIFICATE, r.GetProfile(), c.SerialNumber.Text(16), c.Raw, nil, 0)
	}
	if !g.noKM {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		ca, caKey := g.ca, g.caKey
		if g.kmCA != nil {
			g.ca, g.caKey = g.kmCA, g.kmCAKey
		}
		c := g.issue(credgwv1.Profile_PROFILE_KEY_MANAGEMENT, k.Public(), x509.KeyUsageKeyAgreement, x509.ExtKeyUsageEmailProtection)
		g.ca, g.caKey = ca, caKey
		pw, err := code.PKCS12Password(g.secret, g.password)
		if err != nil {
			g.t.Fatal(err)
		}
		g.lastKM = pfx.Entry{Key: k, Certificate: c}
		entries := append([]pfx.Entry{g.lastKM}, g.history...)
		p12, err := pfx.Encode(entries, []*x509.Certificate{g.ca}, pw, 1)
		if err != nil {
			g.t.Fatal(err)
		}
		var previous [][]byte
		for _, c := range g.previous {
			previous = append(previous, c.Raw)
		}
		b.Add("encryption.p12", credgwv1.ItemKind_ITEM_KIND_PKCS12, credgwv1.Profile_PROFILE_KEY_MANAGEMENT, c.SerialNumber.Text(16), p12, previous, int32(len(entries)))
	}
	chain := [][]byte{g.ca.Raw}
	for _, c := range g.extraChain {
		chain = append(chain, c.Raw)
	}
	b.Add("chain.der", credgwv1.ItemKind_ITEM_KIND_CHAIN, credgwv1.Profile_PROFILE_UNSPECIFIED, "", nil, chain, 0)
	raw, _, err := b.Marshal()
	if err != nil {
		g.t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	return &fakeStream{msgs: []*credgwv1.RedeemResponse{
		{Event: &credgwv1.RedeemResponse_Accepted{Accepted: &credgwv1.Accepted{RedemptionId: "r1", TotalBytes: int64(len(raw))}}},
		{Event: &credgwv1.RedeemResponse_Chunk{Chunk: &credgwv1.Chunk{Offset: 0, Data: raw}}},
		{Event: &credgwv1.RedeemResponse_Done{Done: &credgwv1.Done{Sha256: sum[:]}}},
	}}, nil
}

func (g *testGateway) confirm(context.Context, string, []byte) (string, error) {
	g.confirmed++
	return "set", g.confirmErr
}

func (g *testGateway) options() Options {
	return Options{Payload: code.Payload{Secret: g.secret}, Password: g.password, KeystorePIN: "correct horse", Events: func(Event) {}, MaxResumes: 1}
}

// entries lists a directory: name and mode of each entry.
func entries(t *testing.T, dir string) map[string]os.FileMode {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]os.FileMode{}
	for _, de := range des {
		fi, err := de.Info()
		if err != nil {
			t.Fatal(err)
		}
		m[de.Name()] = fi.Mode()
	}
	return m
}

// TestInstallIsWhole: the credentials are written in a staging directory
// beside the output directory and moved into it only when all verified and
// the gateway confirmed. A verification failing after files were written,
// an Options.Install hook failing after writing, and a refused confirmation
// each leave the output directory as it was, with no staging directory; a
// success leaves the full set, keys 0600.
func TestInstallIsWhole(t *testing.T) {
	ctx := context.Background()
	const before = "already-here.txt"
	newDir := func(t *testing.T) string {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, before), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	untouched := func(t *testing.T, dir string) {
		t.Helper()
		if got := entries(t, dir); len(got) != 1 || got[before] == 0 {
			t.Fatalf("the output directory holds %v after a failure, want only %s", got, before)
		}
	}

	t.Run("verification fails late", func(t *testing.T) {
		g := newTestGateway(t)
		g.noKM = true
		dir := newDir(t)
		_, err := installStaged(ctx, dir, ".redeem-", g.options(), g.open, g.confirm)
		if err == nil || !strings.Contains(err.Error(), "has no PROFILE_KEY_MANAGEMENT certificate") {
			t.Fatalf("err %v", err)
		}
		untouched(t, dir)
		if g.confirmed != 0 {
			t.Fatalf("confirmed %d times", g.confirmed)
		}
	})

	t.Run("the install hook fails after writing", func(t *testing.T) {
		g := newTestGateway(t)
		dir := newDir(t)
		o := g.options()
		var staging string
		o.Install = func(_ context.Context, p *Package) error {
			staging = p.Dir
			if filepath.Dir(p.Dir) != dir {
				t.Errorf("staging directory %s is not beside %s", p.Dir, dir)
			}
			if fi, err := os.Stat(p.Dir); err != nil || fi.Mode().Perm() != 0o700 {
				t.Errorf("staging directory: %v %v", fi.Mode(), err)
			}
			f := filepath.Join(p.Dir, "auth.p12")
			if err := os.WriteFile(f, []byte("key"), 0o600); err != nil {
				return err
			}
			p.Result.Files = append(p.Result.Files, f)
			return errors.New("injected: the keystore is full")
		}
		if _, err := installStaged(ctx, dir, ".redeem-", o, g.open, g.confirm); err == nil || !strings.Contains(err.Error(), "injected") {
			t.Fatalf("err %v", err)
		}
		untouched(t, dir)
		if staging == "" || g.confirmed != 0 {
			t.Fatalf("hook not called (%q) or confirmed %d times", staging, g.confirmed)
		}
	})

	t.Run("the confirmation is refused", func(t *testing.T) {
		g := newTestGateway(t)
		g.confirmErr = status.Error(codes.FailedPrecondition, "injected: redemption expired")
		dir := newDir(t)
		if _, err := installStaged(ctx, dir, ".redeem-", g.options(), g.open, g.confirm); err == nil || !strings.Contains(err.Error(), "injected") {
			t.Fatalf("err %v", err)
		}
		untouched(t, dir)
	})

	t.Run("the confirmation's answer is lost", func(t *testing.T) {
		g := newTestGateway(t)
		g.confirmErr = status.Error(codes.Unavailable, "injected: connection reset")
		dir := newDir(t)
		_, err := installStaged(ctx, dir, ".redeem-", g.options(), g.open, g.confirm)
		var unknown *ConfirmUnknownError
		if !errors.As(err, &unknown) {
			t.Fatalf("err %v, want a ConfirmUnknownError", err)
		}
		// The gateway may have confirmed: the files are kept, in the
		// staging directory the error names, and nothing is in place.
		staged, _ := filepath.Glob(filepath.Join(dir, ".redeem-*", "auth.p12"))
		if len(staged) != 1 || !strings.Contains(err.Error(), filepath.Dir(staged[0])) {
			t.Fatalf("staged %v; err %v", staged, err)
		}
		for name := range entries(t, dir) {
			if name != before && !strings.HasPrefix(name, ".redeem-") {
				t.Errorf("%s is in the output directory though the confirmation's outcome is unknown", name)
			}
		}
	})

	t.Run("a move fails after the confirmation", func(t *testing.T) {
		g := newTestGateway(t)
		dir := newDir(t)
		// An earlier install's files, and a directory where the last
		// file of this one goes.
		earlier := map[string]string{"auth.p12": "earlier auth", "auth.crt": "earlier crt", "encryption.p12": "earlier enc"}
		for name, body := range earlier {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.MkdirAll(filepath.Join(dir, "chain.pem", "x"), 0o700); err != nil {
			t.Fatal(err)
		}
		// An earlier file that is a symlink comes back as one.
		if err := os.Symlink(filepath.Join(dir, before), filepath.Join(dir, "signature.crt")); err != nil {
			t.Fatal(err)
		}
		_, err := installStaged(ctx, dir, ".redeem-", g.options(), g.open, g.confirm)
		if err == nil || !strings.Contains(err.Error(), "the files there are the earlier ones again") {
			t.Fatalf("err %v", err)
		}
		for name, body := range earlier {
			if b, _ := os.ReadFile(filepath.Join(dir, name)); string(b) != body {
				t.Errorf("%s after the failed move: %q, want the earlier %q", name, b, body)
			}
		}
		if target, err := os.Readlink(filepath.Join(dir, "signature.crt")); err != nil || target != filepath.Join(dir, before) {
			t.Errorf("the earlier symlink signature.crt after the failed move: %q, %v", target, err)
		}
		for name := range entries(t, dir) {
			if _, ok := earlier[name]; !ok && name != before && name != "chain.pem" && name != "signature.crt" && !strings.HasPrefix(name, ".redeem-") {
				t.Errorf("%s of the new install is in the output directory after the failed move", name)
			}
		}
		// The new files wait in the staging directory the error names.
		staged, _ := filepath.Glob(filepath.Join(dir, ".redeem-*", "signature.p12"))
		if len(staged) != 1 || !strings.Contains(err.Error(), filepath.Dir(staged[0])) {
			t.Errorf("staged %v; err %v", staged, err)
		}
	})

	t.Run("success", func(t *testing.T) {
		g := newTestGateway(t)
		dir := newDir(t)
		// A one-key file of an earlier install that this one does not
		// write is removed; a file the agent does not name so stays.
		const stale, other = "encryption-01-until-2020-01-31.p12", "encryption-notes.p12"
		for _, f := range []string{stale, other} {
			if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		res, err := installStaged(ctx, dir, ".redeem-", g.options(), g.open, g.confirm)
		if err != nil {
			t.Fatal(err)
		}
		got := entries(t, dir)
		want := map[string]os.FileMode{before: 0o600, other: 0o600, "auth.p12": 0o600, "auth.crt": 0o644, "signature.p12": 0o600, "signature.crt": 0o644,
			"encryption.p12": 0o600, "encryption-00-current.p12": 0o600, "encryption.crt": 0o644, "chain.pem": 0o644}
		if len(got) != len(want) {
			t.Fatalf("the output directory holds %v, want %v", got, want)
		}
		for name, mode := range want {
			if got[name].Perm() != mode {
				t.Errorf("%s: mode %v, want %v", name, got[name], mode)
			}
		}
		for _, f := range res.Files {
			if filepath.Dir(f) != dir {
				t.Errorf("Result.Files names %s, not in %s", f, dir)
			}
		}
		if slices.Contains(res.Files, filepath.Join(dir, before)) || len(res.Files) != len(want)-2 || res.CredentialSetID != "set" ||
			!slices.Equal(res.KeyHistoryFiles, []string{"encryption-00-current.p12"}) {
			t.Errorf("result %+v", res)
		}
		// Every PKCS#12 opens under the keystore PIN and names its key.
		for _, f := range []string{"auth.p12", "signature.p12", "encryption.p12", "encryption-00-current.p12"} {
			b, _ := os.ReadFile(filepath.Join(dir, f))
			es, _, err := pfx.Decode(b, g.options().KeystorePIN)
			if err != nil || len(es) != 1 || !strings.Contains(es[0].FriendlyName, ", serial "+es[0].Certificate.SerialNumber.Text(16)) {
				t.Errorf("%s: %v %+v", f, err, es)
			}
		}
	})
}

// TestKeystoreInstallIsWhole: with a PKCS#11 keystore, a package refused
// half way (no key-management item: found after the device certificates
// verified) and a refused confirmation leave the token as it was: no
// certificate imported, and the device keys made for the attempt deleted.
// A success keeps its device keys and certificates and the escrowed key.
func TestKeystoreInstallIsWhole(t *testing.T) {
	ctx := context.Background()
	path, err := pkcs11.SoftHSMModule()
	if err != nil {
		t.Fatal(err)
	}
	conf, err := pkcs11.WriteSoftHSMConfig(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	mod, err := pkcs11.OpenModule(path)
	if err != nil {
		t.Fatal(err)
	}
	defer mod.Close()
	if _, err := mod.InitToken("keystore", []byte("12345678"), []byte("87654321")); err != nil {
		t.Fatal(err)
	}
	tok, err := mod.OpenToken(ctx, pkcs11.TokenConfig{Label: "keystore", PIN: []byte("87654321")})
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	objects := func() []pkcs11.Object {
		t.Helper()
		var all []pkcs11.Object
		for _, c := range []pkcs11.Class{pkcs11.ClassPrivateKey, pkcs11.ClassPublicKey, pkcs11.ClassCertificate} {
			objs, err := tok.FindObjects(ctx, pkcs11.Query{Class: c})
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, objs...)
		}
		return all
	}

	// emptyToken deletes every object on the keystore.
	emptyToken := func(t *testing.T) {
		t.Helper()
		for _, c := range []pkcs11.Class{pkcs11.ClassPrivateKey, pkcs11.ClassPublicKey, pkcs11.ClassCertificate} {
			if _, err := tok.DeleteObjects(ctx, pkcs11.Query{Class: c}); err != nil {
				t.Fatal(err)
			}
		}
	}

	refused := func(t *testing.T, g *testGateway, want string) {
		t.Helper()
		o := g.options()
		o.Keystore = tok
		if _, err := installStaged(ctx, t.TempDir(), ".redeem-", o, g.open, g.confirm); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("err %v, want %q", err, want)
		}
		if objs := objects(); len(objs) != 0 {
			t.Fatalf("the failed install left %d objects on the keystore: %+v", len(objs), objs)
		}
	}
	t.Run("verification fails late", func(t *testing.T) {
		g := newTestGateway(t)
		g.noKM = true
		refused(t, g, "has no PROFILE_KEY_MANAGEMENT certificate")
	})
	t.Run("the confirmation is refused", func(t *testing.T) {
		g := newTestGateway(t)
		g.confirmErr = status.Error(codes.FailedPrecondition, "injected: redemption expired")
		o := g.options()
		o.Keystore = tok
		if _, err := installStaged(ctx, t.TempDir(), ".redeem-", o, g.open, g.confirm); err == nil || !strings.Contains(err.Error(), "injected") {
			t.Fatalf("err %v", err)
		}
		// The device keys and their certificates are gone. (The escrowed
		// key stays: it is the person's, and the next install finds it.)
		for _, ob := range objects() {
			if strings.HasPrefix(ob.Label, "credgw auth") || strings.HasPrefix(ob.Label, "credgw signature") {
				t.Errorf("left on the keystore: %v %q", ob.Class, ob.Label)
			}
		}
		emptyToken(t)
	})
	t.Run("the confirmation's answer is lost", func(t *testing.T) {
		g := newTestGateway(t)
		g.confirmErr = status.Error(codes.Unavailable, "injected: connection reset")
		o := g.options()
		o.Keystore = tok
		if _, err := installStaged(ctx, t.TempDir(), ".redeem-", o, g.open, g.confirm); err == nil || !strings.Contains(err.Error(), "the keys stay on the keystore") {
			t.Fatalf("err %v", err)
		}
		// The gateway may have confirmed: nothing is deleted.
		count := map[pkcs11.Class]int{}
		for _, ob := range objects() {
			count[ob.Class]++
		}
		if count[pkcs11.ClassPrivateKey] != 3 || count[pkcs11.ClassCertificate] != 3 {
			t.Fatalf("objects on the keystore after a lost confirmation: %v", count)
		}
		emptyToken(t)
	})
	t.Run("success", func(t *testing.T) {
		g := newTestGateway(t)
		o := g.options()
		o.Keystore = tok
		res, err := installStaged(ctx, t.TempDir(), ".redeem-", o, g.open, g.confirm)
		if err != nil {
			t.Fatal(err)
		}
		count := map[pkcs11.Class]int{}
		for _, ob := range objects() {
			count[ob.Class]++
		}
		// Two device keys and the escrowed one, each with its certificate.
		if count[pkcs11.ClassPrivateKey] != 3 || count[pkcs11.ClassCertificate] != 3 || len(res.Certificates) != 3 {
			t.Fatalf("objects on the keystore after the install: %v; %d certificates", count, len(res.Certificates))
		}
	})
	// current lists the CKA_IDs of the objects labelled current.
	current := func() map[pkcs11.Class]string {
		t.Helper()
		out := map[pkcs11.Class]string{}
		for _, ob := range objects() {
			if strings.HasSuffix(ob.Label, "(current)") {
				out[ob.Class] += fmt.Sprintf("%x ", ob.ID)
			}
		}
		return out
	}
	t.Run("a refused confirmation leaves the current key current", func(t *testing.T) {
		emptyToken(t)
		g := newTestGateway(t)
		o := g.options()
		o.Keystore = tok
		if _, err := installStaged(ctx, t.TempDir(), ".redeem-", o, g.open, g.confirm); err != nil {
			t.Fatal(err)
		}
		before := current()
		if len(before) != 3 {
			t.Fatalf("after the first install, current: %v; want a key pair and a certificate", before)
		}
		// The next enrollment: a new escrowed key, and the current one
		// again as history. The gateway refuses its confirmation.
		g.history = []pfx.Entry{g.lastKM}
		g.confirmErr = status.Error(codes.FailedPrecondition, "injected: redemption expired")
		if _, err := installStaged(ctx, t.TempDir(), ".redeem-", o, g.open, g.confirm); err == nil || !strings.Contains(err.Error(), "injected") {
			t.Fatalf("err %v", err)
		}
		// The new escrowed key stays, as history: its certificate is
		// revoked with the set the gateway refused, and a mail client
		// must not take it for the person's key.
		if after := current(); !maps.Equal(after, before) {
			t.Errorf("labelled current after a refused confirmation: %v, want %v (the first install's)", after, before)
		}
	})
}

// TestEarlierStagingNamed: a staging directory an earlier run left (an
// agent killed mid-install, or a confirmation whose answer was lost) may
// hold the device keys of an active set: the next install names it and
// leaves it alone.
func TestEarlierStagingNamed(t *testing.T) {
	dir := t.TempDir()
	left := filepath.Join(dir, ".redeem-1234")
	if err := os.Mkdir(left, 0o700); err != nil {
		t.Fatal(err)
	}
	renewLeft := filepath.Join(dir, ".renew-5678") // a renewal's, same directory
	if err := os.Mkdir(renewLeft, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(left, "auth.key"), []byte("key"), 0o600); err != nil {
		t.Fatal(err)
	}
	g := newTestGateway(t)
	o := g.options()
	var said []string
	o.Events = func(e Event) { said = append(said, e.Message) }
	if _, err := installStaged(context.Background(), dir, ".redeem-", o, g.open, g.confirm); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{left, renewLeft} {
		if !slices.ContainsFunc(said, func(m string) bool { return strings.Contains(m, l) }) {
			t.Errorf("the install did not name %s; it said %q", l, said)
		}
	}
	if _, err := os.Stat(filepath.Join(left, "auth.key")); err != nil {
		t.Errorf("the earlier staging directory was touched: %v", err)
	}
	for name := range entries(t, dir) {
		if strings.HasPrefix(name, ".redeem-") && name != ".redeem-1234" {
			t.Errorf("this install's staging directory %s stayed", name)
		}
	}
}
