package issuance

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credgw/credgw/store"
	"golang.org/x/crypto/ocsp"
)

func fetchCRL(t *testing.T) *x509.RevocationList {
	t.Helper()
	resp, err := http.Get(testCA.CRLURL())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	der, _ := io.ReadAll(resp.Body)
	lintCRL(t, der)
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(testInit.Issuing); err != nil {
		t.Fatalf("CRL signature: %v", err)
	}
	return crl
}

func crlHas(crl *x509.RevocationList, serial string) bool {
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.Text(16) == serial {
			return true
		}
	}
	return false
}

func ocspStatus(t *testing.T, serial string) string {
	t.Helper()
	n, _ := new(big.Int).SetString(serial, 16)
	req, err := ocsp.CreateRequest(&x509.Certificate{SerialNumber: n}, testInit.Issuing, &ocsp.RequestOptions{Hash: crypto.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(testCA.OCSPURL(), "application/ocsp-request", bytes.NewReader(req))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if bytes.Equal(body, ocsp.UnauthorizedErrorResponse) {
		return "unauthorized"
	}
	r, err := ocsp.ParseResponse(body, testInit.Issuing)
	if err != nil {
		t.Fatalf("OCSP: %v", err)
	}
	return map[int]string{ocsp.Good: "good", ocsp.Revoked: "revoked", ocsp.Unknown: "unknown"}[r.Status]
}

func TestRevocation(t *testing.T) {
	ctx := context.Background()
	c := issue(t, DerivedPIVAuth, p256(t), identity(t)).Certificate
	serial := c.SerialNumber.Text(16)
	before := fetchCRL(t)
	if st := ocspStatus(t, serial); st != "good" {
		t.Fatalf("fresh certificate: %s", st)
	}
	if st := ocspStatus(t, "7fffffffffffffffffff"); st != "unauthorized" {
		t.Fatalf("unknown serial: %s", st)
	}
	if err := testCA.Revoke(ctx, serial, ocsp.KeyCompromise); err != nil {
		t.Fatal(err)
	}
	if st := ocspStatus(t, serial); st != "revoked" {
		t.Fatalf("after revocation: %s", st)
	}
	after := fetchCRL(t)
	if !crlHas(after, serial) || crlHas(before, serial) {
		t.Fatal("the CRL does not reflect the revocation")
	}
	if after.Number.Cmp(before.Number) <= 0 {
		t.Errorf("CRL number %v after %v", after.Number, before.Number)
	}
	if !bytes.Equal(after.AuthorityKeyId, testInit.Issuing.SubjectKeyId) {
		t.Error("CRL AKID is not the CA's SKID")
	}
	if h := after.NextUpdate.Sub(after.ThisUpdate).Hours(); h > 48 {
		t.Errorf("CRL nextUpdate %v hours ahead", h)
	}
	if err := testCA.Revoke(ctx, serial, 0); !errors.Is(err, ErrAlreadyRevoked) {
		t.Errorf("second revocation: %v", err)
	}
	if err := testCA.Revoke(ctx, "abcdef", 0); !errors.Is(err, ErrNotIssued) {
		t.Errorf("unknown serial: %v", err)
	}
	if err := testCA.Revoke(ctx, serial, 8); err == nil {
		t.Error("removeFromCRL accepted")
	}
}

// TestOpenSSLAcceptsWhatCredgwMakes: openssl verify on each chain, openssl
// crl on the CRL, openssl ocsp against the running responder.
func TestOpenSSLAcceptsWhatCredgwMakes(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl is needed (make deps)")
	}
	dir := t.TempDir()
	write := func(name string, certs ...*x509.Certificate) string {
		var b bytes.Buffer
		for _, c := range certs {
			pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	openssl := func(args ...string) string {
		out, err := exec.Command("openssl", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	root := write("root.pem", testInit.Root)
	inter := write("issuing.pem", testInit.Issuing)
	var good, revoked string
	for _, p := range Profiles() {
		c := issue(t, p, p256(t), identity(t)).Certificate
		leaf := write(string(p)+".pem", c)
		if out := openssl("verify", "-CAfile", root, "-untrusted", inter, "-purpose", "any", leaf); !strings.Contains(out, ": OK") {
			t.Errorf("openssl verify %s: %s", p, out)
		}
		if good == "" {
			good = leaf
		} else if revoked == "" {
			revoked = leaf
			if err := testCA.Revoke(context.Background(), c.SerialNumber.Text(16), 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	crlDER, err := testCA.CRL(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	lintCRL(t, crlDER)
	crlFile := filepath.Join(dir, "ca.crl")
	os.WriteFile(crlFile, crlDER, 0o644)
	if out := openssl("crl", "-inform", "DER", "-in", crlFile, "-noout", "-text", "-CAfile", inter); !strings.Contains(out, "verify OK") && !strings.Contains(out, "Certificate Revocation List") {
		t.Errorf("openssl crl: %s", out)
	}
	ocspArgs := func(cert string) []string {
		return []string{"ocsp", "-issuer", inter, "-cert", cert, "-url", testCA.OCSPURL(), "-CAfile", root, "-verify_other", inter}
	}
	if out := openssl(ocspArgs(good)...); !strings.Contains(out, good+": good") || !strings.Contains(out, "Response verify OK") {
		t.Errorf("openssl ocsp good: %s", out)
	}
	if out := openssl(ocspArgs(revoked)...); !strings.Contains(out, revoked+": revoked") {
		t.Errorf("openssl ocsp revoked: %s", out)
	}
}

// TestCRLOneRebuildForAllReplicas: two CAs (two replicas) on one store; after
// a revocation, many concurrent fetches on both rebuild the CRL once: every
// answer has the same CRL number, one more than before.
func TestCRLOneRebuildForAllReplicas(t *testing.T) {
	ctx := context.Background()
	other, err := NewCA(testCA.cfg)
	if err != nil {
		t.Fatal(err)
	}
	before, err := testCA.CRL(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := x509.ParseRevocationList(before)
	c := issue(t, DerivedPIVAuth, p256(t), identity(t)).Certificate
	if err := other.Revoke(ctx, c.SerialNumber.Text(16), 1); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	numbers := map[string]int{}
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ca := testCA
			if i%2 == 1 {
				ca = other
			}
			der, err := ca.CRL(ctx, false)
			if err != nil {
				t.Error(err)
				return
			}
			crl, _ := x509.ParseRevocationList(der)
			mu.Lock()
			numbers[crl.Number.String()+"/"+fmt.Sprint(crlHas(crl, c.SerialNumber.Text(16)))]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	after, _ := testCA.CRL(ctx, false)
	a, _ := x509.ParseRevocationList(after)
	if a.Number.Cmp(b.Number) <= 0 {
		t.Fatalf("CRL number %v after the rebuild, %v before", a.Number, b.Number)
	}
	want := a.Number.String() + "/true"
	// Fetches that came before the rebuild finished may get the previous
	// CRL (within its nextUpdate); none may see a second rebuild.
	for k := range numbers {
		if k != want && k != b.Number.String()+"/false" {
			t.Fatalf("CRL numbers seen %v, want only %s (and the previous one)", numbers, want)
		}
	}
	if numbers[want] == 0 {
		t.Fatalf("no fetch saw the rebuilt CRL: %v", numbers)
	}
}

// TestCRLDatesLint: a CRL made right after a revocation, and one right
// after several, pass zlint (no revocation later than thisUpdate) and say
// so by their dates; TestMain lints every other CRL the tests make.
func TestCRLDatesLint(t *testing.T) {
	ctx := context.Background()
	before, _ := crlLints.report()
	for _, batch := range []int{1, 4} {
		var serials []string
		for i := 0; i < batch; i++ {
			s := issue(t, DerivedPIVAuth, p256(t), identity(t)).Certificate.SerialNumber.Text(16)
			if err := testCA.Revoke(ctx, s, ReasonKeyCompromise); err != nil {
				t.Fatal(err)
			}
			serials = append(serials, s)
		}
		der, err := testCA.CRL(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		lintCRL(t, der)
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range serials {
			if !crlHas(crl, s) {
				t.Fatalf("%s is not on the CRL made right after its revocation", s)
			}
		}
		for _, e := range crl.RevokedCertificateEntries {
			if e.RevocationTime.After(crl.ThisUpdate) {
				t.Errorf("batch of %d: %x revoked at %v, after thisUpdate %v", batch, e.SerialNumber, e.RevocationTime, crl.ThisUpdate)
			}
		}
		if crl.ThisUpdate.After(time.Now()) {
			t.Errorf("thisUpdate %v is in the future", crl.ThisUpdate)
		}
	}
	if after, _ := crlLints.report(); after < before+2 {
		t.Errorf("the afterCRL lint hook saw %d new CRLs, want at least 2", after-before)
	}
}

// TestCRLCachingHeaders: the CRL goes out with Expires and max-age to the
// refresh point (not after nextUpdate), its digest as ETag, and a
// conditional GET with that ETag gets 304. It has no Last-Modified (see
// TestCRLRevalidationSeesEveryRebuild): If-Modified-Since gets the CRL.
func TestCRLCachingHeaders(t *testing.T) {
	h := testCA.Handler()
	get := func(header ...string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", "/crl/issuing-ca.crl", nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w
	}
	w := get()
	if w.Code != 200 {
		t.Fatalf("HTTP %d", w.Code)
	}
	crl, err := x509.ParseRevocationList(w.Body.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	hd := w.Header()
	if got := hd.Get("Last-Modified"); got != "" {
		t.Errorf("Last-Modified %q, want none", got)
	}
	refresh := crl.ThisUpdate.Add(crlRefresh)
	expires, err := http.ParseTime(hd.Get("Expires"))
	if err != nil || !expires.Equal(refresh) || expires.After(crl.NextUpdate) {
		t.Errorf("Expires %q, want %v (nextUpdate %v)", hd.Get("Expires"), refresh, crl.NextUpdate)
	}
	m := maxAgeRE.FindStringSubmatch(hd.Get("Cache-Control"))
	if m == nil {
		t.Fatalf("Cache-Control %q", hd.Get("Cache-Control"))
	}
	if maxAge, _ := strconv.Atoi(m[1]); maxAge <= 0 || time.Duration(maxAge)*time.Second > time.Until(refresh)+time.Second {
		t.Errorf("max-age %d, refresh in %v", maxAge, time.Until(refresh))
	}
	sum := sha256.Sum256(w.Body.Bytes())
	if got, want := hd.Get("ETag"), fmt.Sprintf("%q", hex.EncodeToString(sum[:16])); got != want {
		t.Errorf("ETag %s, want %s", got, want)
	}
	if w := get("If-None-Match", hd.Get("ETag")); w.Code != http.StatusNotModified || w.Body.Len() != 0 {
		t.Errorf("If-None-Match: HTTP %d, %d bytes", w.Code, w.Body.Len())
	}
	if w := get("If-None-Match", `"0"`); w.Code != 200 {
		t.Errorf("If-None-Match another CRL: HTTP %d", w.Code)
	}
	if w := get("If-Modified-Since", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)); w.Code != 200 {
		t.Errorf("If-Modified-Since: HTTP %d, want the CRL", w.Code)
	}
}

// TestCRLNumberAfterRestore: the CRL number was a counter in the database,
// so a restore from a backup took it back, and the next CRL reused a
// number already published with other contents (RFC 5280 §5.2.3: numbers
// increase); its ETag, the number, made a cache holding the old CRL answer
// 304 and keep it, without the revocation made after the restore. The
// number now never falls below the time (milliseconds), and the ETag is
// the CRL's own digest.
func TestCRLNumberAfterRestore(t *testing.T) {
	ctx := context.Background()
	kept := issue(t, DerivedPIVAuth, p256(t), identity(t)).Certificate
	if _, err := testCA.CRL(ctx, true); err != nil {
		t.Fatal(err)
	}
	// The backup, then a revocation and its CRL.
	copyPath := filepath.Join(t.TempDir(), "backup.db")
	if err := testStore.Backup(ctx, copyPath); err != nil {
		t.Fatal(err)
	}
	lost := issue(t, DerivedPIVAuth, p256(t), identity(t)).Certificate
	if err := testCA.Revoke(ctx, lost.SerialNumber.Text(16), 1); err != nil {
		t.Fatal(err)
	}
	get := func(h http.Handler, etag string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", "/crl/issuing-ca.crl", nil)
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w
	}
	before := get(testCA.Handler(), "")
	published, err := x509.ParseRevocationList(before.Body.Bytes())
	if err != nil || !crlHas(published, lost.SerialNumber.Text(16)) {
		t.Fatalf("the CRL before the restore: %v", err)
	}
	// The restored database: the revocation after the backup is gone;
	// another one is made.
	restored, err := store.OpenSQLite(ctx, copyPath)
	if err != nil {
		t.Fatal(err)
	}
	defer restored.Close()
	cfg := testCA.cfg
	cfg.Store = restored
	ca, err := NewCA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Revoke(ctx, kept.SerialNumber.Text(16), 1); err != nil {
		t.Fatal(err)
	}
	after := get(ca.Handler(), "")
	crl, err := x509.ParseRevocationList(after.Body.Bytes())
	if err != nil || !crlHas(crl, kept.SerialNumber.Text(16)) {
		t.Fatalf("the CRL after the restore: %v", err)
	}
	if crl.Number.Cmp(published.Number) <= 0 {
		t.Fatalf("CRL number %v after the restore, not above %v published before it", crl.Number, published.Number)
	}
	if w := get(ca.Handler(), before.Header().Get("ETag")); w.Code != http.StatusOK {
		t.Fatalf("a cache holding the CRL from before the restore (ETag %s) got HTTP %d, want the new CRL", before.Header().Get("ETag"), w.Code)
	}
}

// downStore is the store with its database gone once down is set (or
// failing with err, if set).
type downStore struct {
	store.IssuanceStore
	down atomic.Bool
	err  atomic.Value // error
}

func (d *downStore) Certificate(ctx context.Context, serial string) (store.CertificateRecord, error) {
	if d.down.Load() {
		return store.CertificateRecord{}, store.ErrUnavailable
	}
	if err, ok := d.err.Load().(error); ok {
		return store.CertificateRecord{}, err
	}
	return d.IssuanceStore.Certificate(ctx, serial)
}

func (d *downStore) CRL(ctx context.Context, issuer string) (store.StoredCRL, error) {
	if d.down.Load() {
		return store.StoredCRL{}, store.ErrUnavailable
	}
	return d.IssuanceStore.CRL(ctx, issuer)
}

func (d *downStore) CRLState(ctx context.Context, issuer string) (store.StoredCRL, error) {
	if d.down.Load() {
		return store.StoredCRL{}, store.ErrUnavailable
	}
	return d.IssuanceStore.CRLState(ctx, issuer)
}

// TestRespondersOutliveTheDatabase: with the database away (a PostgreSQL
// restart, a failover), the CRL answered 503 and OCSP tryLater, even for
// answers signed a moment before, so every relying party that fails
// closed refused every derived credential until it was back. Nothing can
// be revoked while it is away: the last CRL and the signed OCSP answers
// are served until their nextUpdate.
func TestRespondersOutliveTheDatabase(t *testing.T) {
	ctx := context.Background()
	ds := &downStore{IssuanceStore: testStore}
	cfg := testCA.cfg
	cfg.Store = ds
	ca, err := NewCA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := issue(t, DerivedPIVAuth, p256(t), identity(t)).Certificate
	req, err := ocsp.CreateRequest(c, testInit.Issuing, &ocsp.RequestOptions{Hash: crypto.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	good := ca.OCSP(ctx, req)
	crl, err := ca.CRL(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	ds.down.Store(true)
	if got := ca.OCSP(ctx, req); !bytes.Equal(got, good) {
		r, err := ocsp.ParseResponse(got, nil)
		t.Fatalf("OCSP with the database away: %v %v, want the answer signed before", r, err)
	}
	got, err := ca.CRL(ctx, false)
	if err != nil || !bytes.Equal(got, crl) {
		t.Fatalf("the CRL with the database away: %v", err)
	}
	// A certificate no answer was signed for: tryLater, as before.
	other := issue(t, DerivedPIVAuth, p256(t), identity(t)).Certificate
	oreq, _ := ocsp.CreateRequest(other, testInit.Issuing, &ocsp.RequestOptions{Hash: crypto.SHA256})
	if _, err := ocsp.ParseResponse(ca.OCSP(ctx, oreq), nil); !errors.Is(err, ocsp.ResponseError{Status: ocsp.TryLater}) && err.Error() != (ocsp.ResponseError{Status: ocsp.TryLater}).Error() {
		t.Fatalf("OCSP for a certificate never answered, database away: %v, want tryLater", err)
	}
}

// failingSigner is the CA key, failing when fail is set (the HSM away).
type failingSigner struct {
	crypto.Signer
	fail atomic.Bool
}

func (f *failingSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if f.fail.Load() {
		return nil, errors.New("the HSM is away")
	}
	return f.Signer.Sign(r, digest, opts)
}

// TestRespondersFallBackOnlyWhileTheDatabaseIsAway: the last CRL and the
// cached OCSP answers stand in only while the store is unreachable
// (nothing can be revoked meanwhile). A rebuild that fails with the
// database up (the CA key away after a revocation) must not serve the
// CRL without that revocation, and an OCSP read that fails for another
// reason (a deadline) gets tryLater, not an answer that may be stale.
func TestRespondersFallBackOnlyWhileTheDatabaseIsAway(t *testing.T) {
	ctx := context.Background()
	ca, fs, cfg, c := revokedWithKeyToFail(t)
	fs.fail.Store(true)
	der, err := ca.CRL(ctx, false)
	fs.fail.Store(false)
	if err == nil {
		crl, _ := x509.ParseRevocationList(der)
		t.Fatalf("a failed rebuild after a revocation served a CRL (lists it: %v)", crlHas(crl, c.SerialNumber.Text(16)))
	}

	ds := &downStore{IssuanceStore: testStore}
	cfg.Signer, cfg.Store = testCA.cfg.Signer, ds
	ca, err = NewCA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	good := issue(t, DerivedPIVAuth, p256(t), identity(t)).Certificate
	req, _ := ocsp.CreateRequest(good, testInit.Issuing, &ocsp.RequestOptions{Hash: crypto.SHA256})
	ca.OCSP(ctx, req)
	ds.err.Store(context.DeadlineExceeded)
	if _, err := ocsp.ParseResponse(ca.OCSP(ctx, req), nil); err == nil || err.Error() != (ocsp.ResponseError{Status: ocsp.TryLater}).Error() {
		t.Fatalf("OCSP when the store read failed for another reason than the database being away: %v, want tryLater", err)
	}
}

// TestFailedRebuildGivesItsClaimBack: a rebuild that failed (the CA key
// away after a revocation) kept its claim for the lease's 30 s, and every
// other fetch, on any replica, served the stored CRL without the
// revocation meanwhile. It gives the claim back: the next fetch rebuilds
// (and fails while the key is away). A CRL only due for its refresh,
// nothing revoked since, is still served while the key is away.
func TestFailedRebuildGivesItsClaimBack(t *testing.T) {
	ctx := context.Background()
	ca, fs, cfg, c := revokedWithKeyToFail(t)
	fs.fail.Store(true)
	for i := range 3 {
		if der, err := ca.CRL(ctx, false); err == nil {
			crl, _ := x509.ParseRevocationList(der)
			t.Fatalf("fetch %d with the key away after a revocation: a CRL served (lists it: %v)", i+1, crlHas(crl, c.SerialNumber.Text(16)))
		}
	}
	fs.fail.Store(false)
	der, err := ca.CRL(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	fresh, _ := x509.ParseRevocationList(der)
	if !crlHas(fresh, c.SerialNumber.Text(16)) {
		t.Fatal("the CRL with the key back lacks the revocation")
	}
	// Past the refresh point, nothing revoked: served while the key is
	// away (it is true until its nextUpdate).
	later := cfg
	later.Now = func() time.Time { return time.Now().Add(crlRefresh + time.Hour) }
	ca2, err := NewCA(later)
	if err != nil {
		t.Fatal(err)
	}
	fs.fail.Store(true)
	defer fs.fail.Store(false)
	if der, err := ca2.CRL(ctx, false); err != nil || !bytes.Equal(der, fresh.Raw) {
		t.Fatalf("a CRL due for its refresh, the key away: %v", err)
	}
}

// blockingSigner fails once released, after telling that it was asked.
type blockingSigner struct {
	crypto.Signer
	asked, release chan struct{}
}

func (b *blockingSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	b.asked <- struct{}{}
	<-b.release
	return nil, errors.New("the HSM timed out")
}

// TestStaleCRLNotServedDuringAnotherRebuild: while one replica's rebuild
// held the claim (an HSM failing by timing out), every other fetch served
// the stored CRL even when it lacked a revocation. A stale CRL is never
// served: the fetch waits for the rebuild, or says to retry.
func TestStaleCRLNotServedDuringAnotherRebuild(t *testing.T) {
	ctx := context.Background()
	if _, err := testCA.CRL(ctx, true); err != nil {
		t.Fatal(err)
	}
	c := issue(t, DerivedPIVAuth, p256(t), identity(t)).Certificate
	if err := testCA.Revoke(ctx, c.SerialNumber.Text(16), 1); err != nil {
		t.Fatal(err)
	}
	bs := &blockingSigner{Signer: testCA.cfg.Signer, asked: make(chan struct{}), release: make(chan struct{})}
	cfg := testCA.cfg
	cfg.Signer = bs
	slow, err := NewCA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { _, err := slow.CRL(ctx, false); done <- err }()
	<-bs.asked // the slow replica holds the claim, signing
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	der, err := testCA.CRL(wctx, false)
	cancel()
	if err == nil {
		crl, _ := x509.ParseRevocationList(der)
		if !crlHas(crl, c.SerialNumber.Text(16)) {
			t.Fatal("another replica served the CRL without the revocation while the rebuild ran")
		}
	}
	close(bs.release)
	if err := <-done; err == nil {
		t.Fatal("the failing rebuild succeeded")
	}
	der, err = testCA.CRL(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if crl, _ := x509.ParseRevocationList(der); !crlHas(crl, c.SerialNumber.Text(16)) {
		t.Fatal("the CRL after the failed rebuild lacks the revocation")
	}
}

// revokedWithKeyToFail is a CA whose key fails once fs.fail is set, with
// a CRL built and then a certificate c revoked (the CRL stale).
func revokedWithKeyToFail(t *testing.T) (*CA, *failingSigner, Config, *x509.Certificate) {
	t.Helper()
	ctx := context.Background()
	fs := &failingSigner{Signer: testCA.cfg.Signer}
	cfg := testCA.cfg
	cfg.Signer = fs
	ca, err := NewCA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.CRL(ctx, true); err != nil {
		t.Fatal(err)
	}
	c := issue(t, DerivedPIVAuth, p256(t), identity(t)).Certificate
	if err := ca.Revoke(ctx, c.SerialNumber.Text(16), 1); err != nil {
		t.Fatal(err)
	}
	return ca, fs, cfg, c
}

// TestStatusOutagesReported: a CRL answered 503 and an OCSP request
// answered tryLater because the store or the key failed were invisible:
// no log line, no metric, so relying parties failed closed unnoticed. Each
// is reported (the gateway counts and logs it) with its cause.
func TestStatusOutagesReported(t *testing.T) {
	ds := &downStore{IssuanceStore: testStore}
	cfg := testCA.cfg
	cfg.Store = ds
	var mu sync.Mutex
	got := map[string]error{}
	cfg.StatusUnavailable = func(kind string, err error) {
		mu.Lock()
		defer mu.Unlock()
		got[kind] = err
	}
	ca, err := NewCA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := issue(t, DerivedPIVAuth, p256(t), identity(t)).Certificate
	req, _ := ocsp.CreateRequest(c, testInit.Issuing, &ocsp.RequestOptions{Hash: crypto.SHA256})
	ds.down.Store(true)
	w := httptest.NewRecorder()
	ca.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/crl/"+cfg.Name+".crl", nil))
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("the CRL with the database away and none built: HTTP %d, want 503", w.Code)
	}
	ca.OCSP(context.Background(), req)
	mu.Lock()
	defer mu.Unlock()
	for _, kind := range []string{"crl", "ocsp"} {
		if !errors.Is(got[kind], store.ErrUnavailable) {
			t.Errorf("%s outage reported as %v, want the store's error", kind, got[kind])
		}
	}
}

// TestStatusDatesNeverAhead: a revocation recorded by a replica whose
// clock runs ahead made thisUpdate of the CRL and of the OCSP answer that
// report it as far ahead (their one-minute backdate was cancelled by
// "thisUpdate = the revocation time"): relying parties reject a CRL or an
// answer from their future (RFC 6960 §4.2.2.1; OpenSSL: "CRL is not yet
// valid"). thisUpdate is now the signer's own backdated time, and a later
// revocation time is listed as that.
func TestStatusDatesNeverAhead(t *testing.T) {
	ctx := context.Background()
	c := issue(t, DerivedPIVAuth, p256(t), identity(t)).Certificate
	ahead := newReplica(t)
	ahead.ahead.Store(int64(2 * time.Minute))
	if err := ahead.Revoke(ctx, c.SerialNumber.Text(16), ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	behind := newReplica(t) // the signer's clock: now
	der, err := behind.CRL(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if !crlHas(crl, c.SerialNumber.Text(16)) {
		t.Fatal("the CRL lacks the revocation")
	}
	if now := time.Now(); crl.ThisUpdate.After(now) {
		t.Errorf("CRL thisUpdate %s is ahead of its signer's clock (%s)", crl.ThisUpdate, now)
	}
	for _, e := range crl.RevokedCertificateEntries {
		if e.RevocationTime.After(crl.ThisUpdate) {
			t.Errorf("entry %x revoked at %s, after thisUpdate %s", e.SerialNumber, e.RevocationTime, crl.ThisUpdate)
		}
	}
	req, err := ocsp.CreateRequest(c, testInit.Issuing, &ocsp.RequestOptions{Hash: crypto.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	r, err := ocsp.ParseResponse(behind.OCSP(ctx, req), testInit.Issuing)
	if err != nil {
		t.Fatal(err)
	}
	if now := time.Now(); r.Status != ocsp.Revoked || r.ThisUpdate.After(now) || r.RevokedAt.After(r.ThisUpdate) {
		t.Errorf("OCSP: status %d, thisUpdate %s, revoked at %s (now %s)", r.Status, r.ThisUpdate, r.RevokedAt, now)
	}
}

// TestCRLRevalidationSeesEveryRebuild: the CRL's Last-Modified was its
// thisUpdate, and two CRLs can share one (built in the same second, or the
// later one by a replica whose clock is behind the one that built the
// earlier): a client revalidating with If-Modified-Since got 304 and kept
// the CRL without the newer revocation until its refresh (RFC 9110
// §8.8.2). HTTP dates have one-second resolution and replicas their own
// clocks, so no Last-Modified is sent: revalidation is by the ETag (the
// CRL's digest), and If-Modified-Since gets the current CRL.
func TestCRLRevalidationSeesEveryRebuild(t *testing.T) {
	ctx := context.Background()
	c1 := issue(t, DerivedPIVAuth, p256(t), identity(t)).Certificate
	c2 := issue(t, DerivedPIVAuth, p256(t), identity(t)).Certificate
	frozen := time.Now()
	ahead := testCA.cfg
	ahead.Now = func() time.Time { return frozen.Add(2 * time.Minute) } // a replica whose clock runs ahead
	behind := testCA.cfg
	behind.Now = func() time.Time { return frozen }
	get := func(cfg Config, header ...string) *httptest.ResponseRecorder {
		t.Helper()
		ca, err := NewCA(cfg)
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest("GET", "/crl/"+cfg.Name+".crl", nil)
		if len(header) == 2 {
			req.Header.Set(header[0], header[1])
		}
		w := httptest.NewRecorder()
		ca.Handler().ServeHTTP(w, req)
		return w
	}
	if err := testCA.Revoke(ctx, c1.SerialNumber.Text(16), ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	first := get(ahead)
	if first.Code != http.StatusOK {
		t.Fatalf("HTTP %d", first.Code)
	}
	if err := testCA.Revoke(ctx, c2.SerialNumber.Text(16), ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	for _, h := range [][]string{
		{"If-Modified-Since", frozen.Add(2 * time.Minute).UTC().Format(http.TimeFormat)},
		{"If-None-Match", first.Header().Get("ETag")},
	} {
		again := get(behind, h...)
		if again.Code != http.StatusOK {
			t.Fatalf("revalidation (%s) after a second revocation: HTTP %d, want 200 with the new CRL", h[0], again.Code)
		}
		crl, err := x509.ParseRevocationList(again.Body.Bytes())
		if err != nil || !crlHas(crl, c2.SerialNumber.Text(16)) {
			t.Fatalf("the new CRL: %v", err)
		}
	}
}

// TestOCSPRevocationChangesLastModified: an OCSP answer's Last-Modified is
// its thisUpdate (RFC 5019 §6.2). A revoked answer could carry a
// thisUpdate no later than the good one before it (made in the same
// second, or the good one by a replica whose clock runs ahead), so a
// cache revalidating the good answer with If-Modified-Since got 304 and
// kept "good". Revalidation is by the ETag alone; If-Modified-Since is not
// honoured.
func TestOCSPRevocationChangesLastModified(t *testing.T) {
	ctx := context.Background()
	c := issue(t, DerivedPIVAuth, p256(t), identity(t)).Certificate
	frozen := time.Now()
	cfg := testCA.cfg
	cfg.Now = func() time.Time { return frozen }
	ca, err := NewCA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := getPath(ocspRequestFor(t, c.SerialNumber, testInit.Issuing))
	serve := func(header ...string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", path, nil)
		if len(header) == 2 {
			req.Header.Set(header[0], header[1])
		}
		w := httptest.NewRecorder()
		ca.Handler().ServeHTTP(w, req)
		return w
	}
	// The good answer comes from a replica whose clock runs 90 s ahead:
	// its thisUpdate is later than the revocation time the other records.
	aheadCfg := cfg
	aheadCfg.Now = func() time.Time { return frozen.Add(90 * time.Second) }
	ahead, err := NewCA(aheadCfg)
	if err != nil {
		t.Fatal(err)
	}
	good := httptest.NewRecorder()
	ahead.Handler().ServeHTTP(good, httptest.NewRequest("GET", path, nil))
	if r, err := ocsp.ParseResponse(good.Body.Bytes(), testInit.Issuing); err != nil || r.Status != ocsp.Good {
		t.Fatalf("before: %v", err)
	}
	if err := ca.Revoke(ctx, c.SerialNumber.Text(16), ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	w := serve("If-Modified-Since", good.Header().Get("Last-Modified"))
	if w.Code != http.StatusOK {
		t.Fatalf("revalidating the good answer after the revocation: HTTP %d, want 200", w.Code)
	}
	if r, err := ocsp.ParseResponse(w.Body.Bytes(), testInit.Issuing); err != nil || r.Status != ocsp.Revoked || r.ThisUpdate.After(frozen) {
		t.Fatalf("after: %v", err)
	}
}

// TestCRLDropsLongExpiredEntries: every revoked certificate stayed on the
// CRL for good (unconfirmed packages and superseded renewals put nearly
// every certificate there), so the CRL every relying party fetches grew
// without end. RFC 5280 §5 lets an entry go once a regularly scheduled CRL
// issued after the certificate's expiry listed it: an entry is left out
// when the CRL before (which listed it) was issued after its expiry, and
// kept otherwise, however long ago it expired (a gap in CRL issuance must
// not drop an entry no CRL listed after its expiry). OCSP still answers
// revoked for it.
func TestCRLDropsLongExpiredEntries(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	clock := now
	cfg := testCA.cfg
	cfg.Name = "expiry-ca"
	cfg.Now = func() time.Time { return clock }
	ca, err := NewCA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	revoked := func(serial string, notAfter time.Time) {
		t.Helper()
		rec := store.CertificateRecord{Serial: serial, Issuer: cfg.Name, Profile: "derived-piv-auth", SPKISHA256: "expiry-" + serial, PersonID: "p",
			NotBefore: notAfter.AddDate(-1, 0, 0), NotAfter: notAfter, CreatedAt: notAfter.AddDate(-1, 0, 0)}
		if err := testStore.CreateIssuanceIntent(ctx, rec); err != nil {
			t.Fatal(err)
		}
		if err := testStore.RecordIssued(ctx, serial, []byte{0x30}, "h", "", rec.CreatedAt); err != nil {
			t.Fatal(err)
		}
		if _, err := testStore.RevokeCertificate(ctx, serial, int(ReasonKeyCompromise), now.Add(-48*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	listed := func() map[string]bool {
		t.Helper()
		der, err := ca.CRL(ctx, true)
		if err != nil {
			t.Fatal(err)
		}
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, s := range []string{"e1", "e2", "e3"} {
			out[s] = crlHas(crl, s)
		}
		return out
	}
	revoked("e1", now.Add(-25*time.Hour)) // expired long ago
	revoked("e2", now.Add(time.Hour))     // expires during a gap in CRLs
	revoked("e3", now.Add(90*24*time.Hour))
	if got := listed(); !got["e1"] || !got["e2"] || !got["e3"] {
		t.Fatalf("the first CRL (none before it): %v, want all listed", got)
	}
	if got := listed(); got["e1"] || !got["e2"] || !got["e3"] {
		t.Fatalf("the next CRL: %v, want e1 left out (the CRL before, made after its expiry, listed it)", got)
	}
	clock = now.Add(48 * time.Hour) // no CRL for two days
	if got := listed(); !got["e2"] || !got["e3"] {
		t.Fatalf("after a gap: %v, want e2 listed (no CRL since its expiry listed it)", got)
	}
	if got := listed(); got["e2"] || !got["e3"] {
		t.Fatalf("the CRL after that: %v, want e2 left out", got)
	}
}

// TestCRLListsRevokedAfterExpiry: a certificate revoked after it expired (a
// signing key found compromised later: relying parties checking old
// signatures need it) was never listed, as the CRL before the revocation,
// made after the expiry, counted as having listed it. It is listed by the
// next CRL, and left out after that one. And a replica whose clock ran
// ahead signed a CRL dated in the future; the next CRL, from a replica
// with the right clock, then left out entries that expired before that
// date but after its own thisUpdate: unlisted while still valid.
func TestCRLListsRevokedAfterExpiry(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	clock := now
	cfg := testCA.cfg
	cfg.Name = "late-revocation-ca"
	cfg.Now = func() time.Time { return clock }
	ca, err := NewCA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	record := func(serial string, notAfter time.Time) {
		t.Helper()
		rec := store.CertificateRecord{Serial: serial, Issuer: cfg.Name, Profile: "digital-signature", SPKISHA256: "late-" + serial, PersonID: "p",
			NotBefore: notAfter.AddDate(-1, 0, 0), NotAfter: notAfter, CreatedAt: notAfter.AddDate(-1, 0, 0)}
		if err := testStore.CreateIssuanceIntent(ctx, rec); err != nil {
			t.Fatal(err)
		}
		if err := testStore.RecordIssued(ctx, serial, []byte{0x30}, "h", "", rec.CreatedAt); err != nil {
			t.Fatal(err)
		}
	}
	listed := func(c *CA, serial string) bool {
		t.Helper()
		der, err := c.CRL(ctx, true)
		if err != nil {
			t.Fatal(err)
		}
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		return crlHas(crl, serial)
	}
	record("1a7e", now.Add(-time.Hour)) // expired an hour ago
	if listed(ca, "1a7e") {
		t.Fatal("a certificate never revoked is listed")
	}
	if err := ca.Revoke(ctx, "1a7e", ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(2 * time.Minute)
	if !listed(ca, "1a7e") {
		t.Fatal("the first CRL after the revocation of an expired certificate does not list it")
	}
	// It goes once a CRL made past the allowance for slow replicas'
	// clocks (replicaSkew) after its revocation listed it.
	clock = clock.Add(2 * time.Hour)
	listed(ca, "1a7e")
	clock = clock.Add(2 * time.Hour)
	if listed(ca, "1a7e") {
		t.Fatal("it is still listed hours later: it was listed after its expiry and revocation")
	}

	// Another replica, 2 minutes ahead, signs a CRL; then this one.
	record("5e1", clock.Add(30*time.Second))
	if err := ca.Revoke(ctx, "5e1", ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	aheadCfg := cfg
	aheadCfg.Now = func() time.Time { return clock.Add(2 * time.Minute) }
	ahead, err := NewCA(aheadCfg)
	if err != nil {
		t.Fatal(err)
	}
	if !listed(ahead, "5e1") {
		t.Fatal("the ahead replica's CRL does not list 5e1")
	}
	if !listed(ca, "5e1") {
		t.Fatal("the next CRL, from a replica with the right clock, leaves out 5e1, revoked and valid for 30 more seconds")
	}

	// A replica 3 minutes slow revokes a certificate that expired an
	// hour ago, after this one's last CRL: its revocation time is before
	// that CRL's thisUpdate, which never listed it.
	record("5e3", clock.Add(-time.Hour))
	slowCfg := cfg
	slowCfg.Now = func() time.Time { return clock.Add(-3 * time.Minute) }
	slow, err := NewCA(slowCfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := slow.Revoke(ctx, "5e3", ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(time.Minute)
	if !listed(ca, "5e3") {
		t.Fatal("the first CRL after a slow replica's revocation of an expired certificate does not list it: it is never listed")
	}
}
