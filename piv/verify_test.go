package piv_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	hsmsim "github.com/credgw/credgw/hsm-sim"
	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/pkcs11"
)

// The test binary's hsm-sim environment, its issuer served through a switch
// that can take OCSP or CRL down, and a count of OCSP requests.
var (
	env    *hsmsim.Env
	module *pkcs11.Module
	outage = struct {
		sync.Mutex
		ocsp, crl bool
		// rootCRL, if set, is served for the issuing CA's CRL DP (the
		// root's CRL) instead of hsm-sim's empty one.
		rootCRL []byte
	}{}
	ocspCalls atomic.Int64
	envDir    string
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "credgw-piv-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	envDir = dir + "/env"
	if env, err = hsmsim.Init(envDir, "http://"+ln.Addr().String()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	h := env.Handler(nil)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		outage.Lock()
		ocspDown, crlDown, rootCRL := outage.ocsp, outage.crl, outage.rootCRL
		outage.Unlock()
		if rootCRL != nil && !crlDown && len(env.IssuingCA().CRLDistributionPoints) > 0 &&
			strings.HasSuffix(env.IssuingCA().CRLDistributionPoints[0], r.URL.Path) {
			w.Write(rootCRL)
			return
		}
		switch {
		case strings.HasPrefix(r.URL.Path, "/ocsp"):
			ocspCalls.Add(1)
			if ocspDown {
				http.Error(w, "down", http.StatusServiceUnavailable)
				return
			}
		case strings.HasPrefix(r.URL.Path, "/crl"):
			if crlDown {
				http.Error(w, "down", http.StatusServiceUnavailable)
				return
			}
		}
		h.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	if module, err = env.OpenModule(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer module.Close()
	return m.Run()
}

func setOutage(t *testing.T, ocspDown, crlDown bool) {
	outage.Lock()
	outage.ocsp, outage.crl = ocspDown, crlDown
	outage.Unlock()
	t.Cleanup(func() {
		outage.Lock()
		outage.ocsp, outage.crl = false, false
		outage.Unlock()
	})
}

// revokeIssuingCA makes the root's CRL list the issuing CA, signed with the
// root key hsm-sim keeps in its environment, until the test ends.
func revokeIssuingCA(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(envDir, "issuer", "piv-ca", "root.key"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("root.key: no PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(now.Unix()), ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(24 * time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: env.IssuingCA().SerialNumber, RevocationTime: now.Add(-time.Minute), ReasonCode: 2}},
	}, env.Root(), k.(crypto.Signer))
	if err != nil {
		t.Fatal(err)
	}
	outage.Lock()
	outage.rootCRL = der
	outage.Unlock()
	t.Cleanup(func() {
		outage.Lock()
		outage.rootCRL = nil
		outage.Unlock()
	})
}

// TestIssuingCARevocation: the status of every CA between the card and the
// anchor is checked as the card's is (RFC 5280 §6.1.3(a)(3)): a card whose
// issuing CA its root has revoked is refused, and a CA whose status cannot
// be found fails closed.
func TestIssuingCARevocation(t *testing.T) {
	cert := newCard(t, hsmsim.Good, pkcs11.ECP256, "")
	if _, err := newVerifier(t, nil).VerifyPIVAuth(context.Background(), cert, nil); err != nil {
		t.Fatalf("a good card under a good CA: %v", err)
	}
	t.Run("revoked by the root", func(t *testing.T) {
		revokeIssuingCA(t)
		_, err := newVerifier(t, nil).VerifyPIVAuth(context.Background(), cert, nil)
		if !errors.Is(err, piv.ErrRevoked) || !strings.Contains(err.Error(), "issuing CA") {
			t.Fatalf("err = %v, want ErrRevoked naming the issuing CA", err)
		}
	})
	t.Run("the root's CRL unreachable", func(t *testing.T) {
		setOutage(t, false, true) // the card's OCSP answers; the CA has only the CRL
		_, err := newVerifier(t, nil).VerifyPIVAuth(context.Background(), cert, nil)
		if !errors.Is(err, piv.ErrStatusUnavailable) || !strings.Contains(err.Error(), "issuing CA") {
			t.Fatalf("err = %v, want ErrStatusUnavailable naming the issuing CA", err)
		}
	})
}

var cardSeq atomic.Int64

func newCard(t *testing.T, v hsmsim.Variant, key pkcs11.KeyType, email string) *x509.Certificate {
	t.Helper()
	name := fmt.Sprintf("v%d-%s", cardSeq.Add(1), v)
	if _, err := env.NewCard(context.Background(), module, hsmsim.CardSpec{Name: name, PIN: []byte("123456"), Key: key, Variant: v, Email: email}); err != nil {
		t.Fatal(err)
	}
	c, err := env.CardCertificate(name, "9a")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newVerifier(t *testing.T, now func() time.Time) *piv.Verifier {
	t.Helper()
	v, err := piv.NewVerifier(piv.Options{Roots: env.TrustPool(), Intermediates: []*x509.Certificate{env.IssuingCA()}, Now: now,
		OCSPTimeout: 2 * time.Second, CRLTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerifyPIVAuth(t *testing.T) {
	tests := []struct {
		name       string
		variant    hsmsim.Variant
		key        pkcs11.KeyType
		ocspDown   bool
		crlDown    bool
		want       error
		wantSource string
	}{
		{"good p256", hsmsim.Good, pkcs11.ECP256, false, false, nil, "ocsp"},
		{"good rsa2048", hsmsim.Good, pkcs11.RSA2048, false, false, nil, "ocsp"},
		{"good, OCSP down: CRL", hsmsim.Good, pkcs11.ECP256, true, false, nil, "crl"},
		{"good, both down: fail closed", hsmsim.Good, pkcs11.ECP256, true, true, piv.ErrStatusUnavailable, ""},
		{"revoked (OCSP)", hsmsim.Revoked, pkcs11.ECP256, false, false, piv.ErrRevoked, ""},
		{"revoked (CRL while OCSP is down)", hsmsim.Revoked, pkcs11.ECP256, true, false, piv.ErrRevoked, ""},
		{"revoked, both down", hsmsim.Revoked, pkcs11.ECP256, true, true, piv.ErrStatusUnavailable, ""},
		{"expired", hsmsim.Expired, pkcs11.ECP256, false, false, piv.ErrExpired, ""},
		{"not yet valid", hsmsim.NotYetValid, pkcs11.ECP256, false, false, piv.ErrNotYetValid, ""},
		{"wrong policy", hsmsim.WrongPolicy, pkcs11.ECP256, false, false, piv.ErrPolicy, ""},
		{"untrusted issuer", hsmsim.Untrusted, pkcs11.ECP256, false, false, piv.ErrUntrusted, ""},
		// Issue 14, point 6: the EKU must allow client authentication and
		// the leaf must not sign certificates or CRLs.
		{"EKU serverAuth only", hsmsim.EKUServerAuth, pkcs11.ECP256, false, false, piv.ErrKeyUsage, ""},
		{"EKU codeSigning only", hsmsim.EKUCodeSigning, pkcs11.ECP256, false, false, piv.ErrKeyUsage, ""},
		{"EKU id-PIV-cardAuth only", hsmsim.EKUCardAuth, pkcs11.ECP256, false, false, piv.ErrKeyUsage, ""},
		{"keyCertSign on a leaf", hsmsim.KUCertSign, pkcs11.ECP256, false, false, piv.ErrKeyUsage, ""},
		{"cRLSign on a leaf", hsmsim.KUCRLSign, pkcs11.ECP256, false, false, piv.ErrKeyUsage, ""},
		{"keyCertSign on an RSA leaf", hsmsim.KUCertSign, pkcs11.RSA2048, false, false, piv.ErrKeyUsage, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cert := newCard(t, tc.variant, tc.key, "")
			setOutage(t, tc.ocspDown, tc.crlDown)
			// A fresh verifier each time: no cache from another case.
			res, err := newVerifier(t, nil).VerifyPIVAuth(context.Background(), cert, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if err != nil {
				return
			}
			if res.StatusSource != tc.wantSource || len(res.Chain) != 3 || res.Identity.CardUUID == "" || len(res.Identity.PersonID) != 14 {
				t.Fatalf("result %+v", res)
			}
		})
	}
}

func TestOCSPCache(t *testing.T) {
	cert := newCard(t, hsmsim.Good, pkcs11.ECP256, "")
	now := time.Now()
	clock := func() time.Time { return now }
	v := newVerifier(t, clock)
	before := ocspCalls.Load()
	for i := 0; i < 5; i++ {
		if _, err := v.VerifyPIVAuth(context.Background(), cert, nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := ocspCalls.Load() - before; n != 1 {
		t.Fatalf("%d OCSP requests for 5 verifications, want 1 (cached until nextUpdate)", n)
	}
	// A cached good answer stands until nextUpdate even if the card is
	// revoked meanwhile; after nextUpdate the revocation shows.
	now = now.Add(5 * time.Hour) // hsm-sim OCSP responses live 4 hours
	if _, err := v.VerifyPIVAuth(context.Background(), cert, nil); err != nil {
		t.Fatal(err)
	}
	if n := ocspCalls.Load() - before; n != 2 {
		t.Fatalf("%d OCSP requests after nextUpdate, want 2", n)
	}
}

func TestRevokedAfterCacheExpiry(t *testing.T) {
	name := fmt.Sprintf("late-revoke-%d", cardSeq.Add(1))
	if _, err := env.NewCard(context.Background(), module, hsmsim.CardSpec{Name: name, PIN: []byte("123456")}); err != nil {
		t.Fatal(err)
	}
	cert, _ := env.CardCertificate(name, "9a")
	now := time.Now()
	v := newVerifier(t, func() time.Time { return now })
	if _, err := v.VerifyPIVAuth(context.Background(), cert, nil); err != nil {
		t.Fatal(err)
	}
	if err := env.RevokeCard(name, 1); err != nil {
		t.Fatal(err)
	}
	now = now.Add(5 * time.Hour)
	if _, err := v.VerifyPIVAuth(context.Background(), cert, nil); !errors.Is(err, piv.ErrRevoked) {
		t.Fatalf("err = %v, want ErrRevoked", err)
	}
}

// TestDigitalSignatureEmail: the card's 9C certificate supplies the email of
// record; mismatched subjects are refused.
func TestDigitalSignatureEmail(t *testing.T) {
	name := fmt.Sprintf("email-%d", cardSeq.Add(1))
	if _, err := env.NewCard(context.Background(), module, hsmsim.CardSpec{Name: name, PIN: []byte("123456"), Email: "sig@example.com"}); err != nil {
		t.Fatal(err)
	}
	auth, _ := env.CardCertificate(name, "9a")
	sig, _ := env.CardCertificate(name, "9c")
	v := newVerifier(t, nil)
	email, err := v.VerifyDigitalSignature(context.Background(), sig, auth, nil)
	if err != nil || email != "sig@example.com" {
		t.Fatalf("email %q, %v", email, err)
	}
	other := newCard(t, hsmsim.Good, pkcs11.ECP256, "")
	if _, err := v.VerifyDigitalSignature(context.Background(), sig, other, nil); !errors.Is(err, piv.ErrMalformed) {
		t.Fatalf("another card's 9C: %v", err)
	}
	// The PIV Auth certificate is not a Digital Signature certificate.
	if _, err := v.VerifyDigitalSignature(context.Background(), auth, auth, nil); !errors.Is(err, piv.ErrPolicy) {
		t.Fatalf("9A as 9C: %v", err)
	}
}

// TestDigitalSignatureOfThisCard: the email of record comes only from a 9C
// bound to the card beyond its subject name: issued by the 9A's CA, or by
// a sibling CA (one issued by the same CA, as DoD CACs' identity and email
// CAs are), or naming the card's UUID. A namesake's 9C from elsewhere in
// the trusted PKI is ErrNotThisCard (before, any 9C of the same name
// chaining to an anchor supplied the email). Accepted ones go on to their
// status, which this PKI has none of: ErrStatusUnavailable.
func TestDigitalSignatureOfThisCard(t *testing.T) {
	issue := newIssuer(t)
	anyPolicy := oid(asn1.ObjectIdentifier{2, 5, 29, 32, 0})
	ca := func(name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, Policies: []x509.OID{anyPolicy}}
		if parent == nil {
			return issue(tmpl, tmpl, k.Public(), k), k
		}
		return issue(tmpl, parent, k.Public(), parentKey), k
	}
	root, rootKey := ca("agency root", nil, nil)
	idCA, idKey := ca("ID CA", root, rootKey)
	emailCA, emailKey := ca("EMAIL CA", root, rootKey) // a sibling
	middle, middleKey := ca("another program's CA", root, rootKey)
	farCA, farKey := ca("a CA further away", middle, middleKey) // not a sibling
	subject := pkix.Name{CommonName: "Jane Q. Public", Organization: []string{"U.S. Government"}}
	cardUUID, _ := url.Parse("urn:uuid:12345678-1234-4234-8234-123456789abc")
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	auth := issue(&x509.Certificate{Subject: subject, KeyUsage: x509.KeyUsageDigitalSignature, URIs: []*url.URL{cardUUID},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, Policies: []x509.OID{oid(piv.PolicyCommonAuthentication)}}, idCA, k.Public(), idKey)
	sig := func(parent *x509.Certificate, parentKey *ecdsa.PrivateKey, uuid bool) *x509.Certificate {
		tmpl := &x509.Certificate{Subject: subject, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}, EmailAddresses: []string{"jane@example.gov"},
			Policies: []x509.OID{oid(piv.PolicyCommonHardware)}}
		if uuid {
			tmpl.URIs = []*url.URL{cardUUID}
		}
		return issue(tmpl, parent, k.Public(), parentKey)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	v, err := piv.NewVerifier(piv.Options{Roots: roots, Intermediates: []*x509.Certificate{idCA, emailCA, middle, farCA},
		OCSPTimeout: time.Second, CRLTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// One CA with two certificates (the same name and key, from different
	// issuers: a cross-certificate), one for each policy: the 9A's path
	// goes through the one, the 9C's through the other, and their parents
	// differ (no siblings). It is still the same CA.
	renewedKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	renewed := func(p x509.OID, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) *x509.Certificate {
		return issue(&x509.Certificate{Subject: pkix.Name{CommonName: "renewed CA"}, IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, Policies: []x509.OID{p}}, parent, renewedKey.Public(), parentKey)
	}
	renewedForAuth := renewed(oid(piv.PolicyCommonAuthentication), root, rootKey)
	renewedForSig := renewed(oid(piv.PolicyCommonHardware), middle, middleKey)
	auth2 := issue(&x509.Certificate{Subject: subject, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, Policies: []x509.OID{oid(piv.PolicyCommonAuthentication)}},
		renewedForAuth, k.Public(), renewedKey)
	sig2 := sig(renewedForSig, renewedKey, false)
	v2, err := piv.NewVerifier(piv.Options{Roots: roots, Intermediates: []*x509.Certificate{renewedForAuth, renewedForSig, middle},
		OCSPTimeout: time.Second, CRLTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v2.VerifyDigitalSignature(context.Background(), sig2, auth2, nil); !errors.Is(err, piv.ErrStatusUnavailable) {
		t.Fatalf("a 9C through another certificate of the 9A's CA: %v, want it taken (then ErrStatusUnavailable)", err)
	}
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		want error
	}{
		{"from the 9A's CA", sig(idCA, idKey, false), piv.ErrStatusUnavailable},
		{"from a sibling CA", sig(emailCA, emailKey, false), piv.ErrStatusUnavailable},
		{"a namesake's, from a CA further away", sig(farCA, farKey, false), piv.ErrNotThisCard},
		{"from a CA further away, naming the card's UUID", sig(farCA, farKey, true), piv.ErrStatusUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := v.VerifyDigitalSignature(context.Background(), tc.cert, auth, nil); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// ownChain makes a root and a leaf from tmpl for checks that fail before any
// network access.
func ownChain(t *testing.T, tmpl *x509.Certificate, leafKey any) (*x509.CertPool, *x509.Certificate) {
	t.Helper()
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	root := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	rootDER, _ := x509.CreateCertificate(rand.Reader, root, root, rootKey.Public(), rootKey)
	rootCert, _ := x509.ParseCertificate(rootDER)
	tmpl.SerialNumber = big.NewInt(2)
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, rootCert, leafKey.(crypto.Signer).Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(rootCert)
	return pool, leaf
}

func oid(o asn1.ObjectIdentifier) x509.OID {
	ints := make([]uint64, len(o))
	for i, v := range o {
		ints[i] = uint64(v)
	}
	r, _ := x509.OIDFromInts(ints)
	return r
}

// TestVerifyRejectsLocally: rejections that need no revocation check.
func TestVerifyRejectsLocally(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	auth := []x509.OID{oid(piv.PolicyCommonAuthentication)}
	tests := []struct {
		name string
		tmpl x509.Certificate
		key  any
		want error
	}{
		{"derived PIV policy", x509.Certificate{KeyUsage: x509.KeyUsageDigitalSignature, Policies: []x509.OID{oid(piv.PolicyDerivedPIVAuth)}}, p256, piv.ErrPolicy},
		{"derived hardware policy beside 3.13", x509.Certificate{KeyUsage: x509.KeyUsageDigitalSignature, Policies: []x509.OID{oid(piv.PolicyCommonAuthentication), oid(piv.PolicyDerivedPIVAuthHW)}}, p256, piv.ErrPolicy},
		{"PIV-I policy", x509.Certificate{KeyUsage: x509.KeyUsageDigitalSignature, Policies: []x509.OID{oid(piv.PolicyPIVIAuthentication)}}, p256, piv.ErrPolicy},
		{"no policy", x509.Certificate{KeyUsage: x509.KeyUsageDigitalSignature}, p256, piv.ErrPolicy},
		{"no digitalSignature", x509.Certificate{KeyUsage: x509.KeyUsageKeyAgreement, Policies: auth}, p256, piv.ErrKeyUsage},
		{"P-224 key", x509.Certificate{KeyUsage: x509.KeyUsageDigitalSignature, Policies: auth}, p224, piv.ErrKey},
		{"RSA-1024 key", x509.Certificate{KeyUsage: x509.KeyUsageDigitalSignature, Policies: auth}, rsa1024, piv.ErrKey},
		{"not chaining to the configured anchors", x509.Certificate{KeyUsage: x509.KeyUsageDigitalSignature, Policies: auth}, p256, piv.ErrUntrusted},

		// EKU and KU of the PIV Authentication certificate. ErrUntrusted
		// means the usage checks passed (the path is checked after them).
		{"EKU serverAuth only", withEKU(auth, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}), p256, piv.ErrKeyUsage},
		{"EKU codeSigning only", withEKU(auth, []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}), p256, piv.ErrKeyUsage},
		{"EKU serverAuth and codeSigning", withEKU(auth, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageCodeSigning}), p256, piv.ErrKeyUsage},
		{"EKU emailProtection only", withEKU(auth, []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}), p256, piv.ErrKeyUsage},
		{"EKU id-PIV-cardAuth only", withEKU(auth, nil, piv.EKUPIVCardAuth), p256, piv.ErrKeyUsage},
		{"EKU anyExtendedKeyUsage only", withEKU(auth, []x509.ExtKeyUsage{x509.ExtKeyUsageAny}), p256, piv.ErrKeyUsage},
		{"EKU anyExtendedKeyUsage beside clientAuth", withEKU(auth, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageAny}), p256, piv.ErrKeyUsage},
		{"EKU codeSigning beside clientAuth", withEKU(auth, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageCodeSigning}), p256, piv.ErrKeyUsage},
		{"keyCertSign on a leaf", x509.Certificate{KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, Policies: auth}, p256, piv.ErrKeyUsage},
		{"cRLSign on a leaf", x509.Certificate{KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign, Policies: auth}, p256, piv.ErrKeyUsage},
		{"EKU clientAuth: usage accepted", withEKU(auth, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}), p256, piv.ErrUntrusted},
		{"EKU smartcardLogon only: usage accepted", withEKU(auth, nil, piv.EKUSmartCardLogon), p256, piv.ErrUntrusted},
		{"EKU id-pkinit-KPClientAuth only: usage accepted", withEKU(auth, nil, piv.EKUPKINITClientAuth), p256, piv.ErrUntrusted},
		{"EKU cardAuth beside clientAuth: usage accepted", withEKU(auth, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, piv.EKUPIVCardAuth), p256, piv.ErrUntrusted},
		{"EKU serverAuth beside clientAuth: usage accepted", withEKU(auth, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}), p256, piv.ErrUntrusted},
		{"no EKU: usage accepted", x509.Certificate{KeyUsage: x509.KeyUsageDigitalSignature, Policies: auth}, p256, piv.ErrUntrusted},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.tmpl.Subject = pkix.Name{CommonName: "someone"}
			_, leaf := ownChain(t, &tc.tmpl, tc.key)
			v := newVerifier(t, nil) // anchored at hsm-sim, not at ownChain's root
			if _, err := v.VerifyPIVAuth(context.Background(), leaf, nil); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// withEKU is a digitalSignature template asserting policies with these EKUs.
func withEKU(policies []x509.OID, eku []x509.ExtKeyUsage, unknown ...asn1.ObjectIdentifier) x509.Certificate {
	return x509.Certificate{KeyUsage: x509.KeyUsageDigitalSignature, Policies: policies, ExtKeyUsage: eku, UnknownExtKeyUsage: unknown}
}

// TestKeyUsageMessages: a refusal says what the certificate has and what a
// PIV Authentication certificate needs.
func TestKeyUsageMessages(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	auth := []x509.OID{oid(piv.PolicyCommonAuthentication)}
	tests := []struct {
		tmpl x509.Certificate
		want []string
	}{
		{withEKU(auth, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}), []string{"EKU allows only serverAuth", "must allow client authentication"}},
		{withEKU(auth, []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}), []string{"codeSigning"}},
		{withEKU(auth, nil, piv.EKUPIVCardAuth), []string{"id-PIV-cardAuth", "Card Authentication"}},
		{withEKU(auth, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageAny}), []string{"anyExtendedKeyUsage"}},
		{x509.Certificate{KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, Policies: auth}, []string{"keyCertSign"}},
		{x509.Certificate{KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign, Policies: auth}, []string{"cRLSign"}},
	}
	for _, tc := range tests {
		tc.tmpl.Subject = pkix.Name{CommonName: "someone"}
		_, leaf := ownChain(t, &tc.tmpl, p256)
		_, err := newVerifier(t, nil).VerifyPIVAuth(context.Background(), leaf, nil)
		if !errors.Is(err, piv.ErrKeyUsage) {
			t.Errorf("%v: err = %v, want ErrKeyUsage", tc.want, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q does not say %q", err, w)
			}
		}
	}
}

func TestNewVerifierRejects(t *testing.T) {
	if _, err := piv.NewVerifier(piv.Options{}); err == nil {
		t.Error("no roots accepted")
	}
	if _, err := piv.NewVerifier(piv.Options{Roots: env.TrustPool(), Policies: []asn1.ObjectIdentifier{piv.PolicyDerivedPIVAuth}}); err == nil {
		t.Error("derived policy accepted as proof")
	}
	if _, err := piv.NewVerifier(piv.Options{Roots: env.TrustPool(), PersonAttribute: "shoe-size"}); err == nil {
		t.Error("unknown person attribute accepted")
	}
}

func TestParseCertificates(t *testing.T) {
	for _, bad := range [][]byte{nil, {}, {0x30, 0x03, 0x01}, []byte("not DER")} {
		if _, err := piv.ParseCertificates(bad); !errors.Is(err, piv.ErrMalformed) {
			t.Errorf("ParseCertificates(%x) = %v", bad, err)
		}
	}
}

func TestChallengeSignatureAlgorithms(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	d := piv.ChallengeDigest("gw", "sid", make([]byte, 32))
	ecSig, _ := ecdsa.SignASN1(rand.Reader, ec, d)
	pkcs1, _ := rsa.SignPKCS1v15(rand.Reader, rk, crypto.SHA256, d)
	pss, _ := rsa.SignPSS(rand.Reader, rk, crypto.SHA256, d, nil)
	edPub, edKey, _ := ed25519.GenerateKey(rand.Reader)
	tests := []struct {
		name string
		pub  any
		alg  piv.SignatureAlgorithm
		sig  []byte
		ok   bool
		want error // ErrBadSignature when nil
	}{
		{"ecdsa auto", &ec.PublicKey, piv.SigAuto, ecSig, true, nil},
		{"ecdsa named", &ec.PublicKey, piv.SigECDSASHA256, ecSig, true, nil},
		{"ecdsa claimed rsa", &ec.PublicKey, piv.SigRSAPKCS1SHA256, ecSig, false, nil},
		{"pkcs1 auto", &rk.PublicKey, piv.SigAuto, pkcs1, true, nil},
		{"pkcs1 named", &rk.PublicKey, piv.SigRSAPKCS1SHA256, pkcs1, true, nil},
		{"pkcs1 claimed pss", &rk.PublicKey, piv.SigRSAPSSSHA256, pkcs1, false, nil},
		{"pss auto", &rk.PublicKey, piv.SigAuto, pss, true, nil},
		{"pss named", &rk.PublicKey, piv.SigRSAPSSSHA256, pss, true, nil},
		{"rsa claimed ecdsa", &rk.PublicKey, piv.SigECDSASHA256, pkcs1, false, nil},
		{"empty", &ec.PublicKey, piv.SigAuto, nil, false, nil},
		{"other digest", &ec.PublicKey, piv.SigAuto, func() []byte {
			s, _ := ecdsa.SignASN1(rand.Reader, ec, piv.ChallengeDigest("gw", "other", make([]byte, 32)))
			return s
		}(), false, nil},
		// A key PIV does not allow is the caller's certificate's fault
		// (PermissionDenied), not the gateway's (it was Internal).
		{"ed25519 key", edPub, piv.SigAuto, ed25519.Sign(edKey, d), false, piv.ErrKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := piv.VerifyChallengeSignature(tc.pub, tc.alg, d, tc.sig)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			want := tc.want
			if want == nil {
				want = piv.ErrBadSignature
			}
			if err != nil && !errors.Is(err, want) {
				t.Fatalf("err %v is not %v", err, want)
			}
		})
	}
}

// TestPersonIDFolded: a person id taken from an email address or a UPN is
// folded to lower case (ASCII letters), so that a termination, a key history
// or a limit that names the person in another case reaches them; directory
// systems and mail routing treat both without regard to case.
func TestPersonIDFolded(t *testing.T) {
	name := fmt.Sprintf("v%d-mixed-case", cardSeq.Add(1))
	if _, err := env.NewCard(context.Background(), module, hsmsim.CardSpec{Name: name, PIN: []byte("123456"), Key: pkcs11.ECP256,
		Email: "Pat.Doe@Example.COM", UPN: "PDoe@Agency.Example"}); err != nil {
		t.Fatal(err)
	}
	cert, err := env.CardCertificate(name, "9a")
	if err != nil {
		t.Fatal(err)
	}
	for attr, want := range map[string]string{"email": "pat.doe@example.com", "upn": "pdoe@agency.example"} {
		v, err := piv.NewVerifier(piv.Options{Roots: env.TrustPool(), Intermediates: []*x509.Certificate{env.IssuingCA()},
			PersonAttribute: attr, OCSPTimeout: 2 * time.Second, CRLTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		res, err := v.VerifyPIVAuth(context.Background(), cert, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.Identity.PersonID != want {
			t.Errorf("person_attribute %s: person id %q, want %q", attr, res.Identity.PersonID, want)
		}
		// The attribute itself is kept as the card spells it.
		if res.Identity.Email != "Pat.Doe@Example.COM" || res.Identity.UPN != "PDoe@Agency.Example" {
			t.Errorf("person_attribute %s: email %q, UPN %q changed", attr, res.Identity.Email, res.Identity.UPN)
		}
	}
	for in, want := range map[string]string{"": "", "ABC-xyz@Q.ORG": "abc-xyz@q.org", "ÄBC@x": "Äbc@x", "12345678000001": "12345678000001"} {
		if got := piv.FoldPersonID(in); got != want {
			t.Errorf("FoldPersonID(%q) = %q, want %q", in, got, want)
		}
	}
}
