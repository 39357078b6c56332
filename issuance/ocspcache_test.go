package issuance

import (
	"bytes"
	"context"
	"crypto"
	"fmt"
	"math/big"
	"net/http/httptest"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
	"golang.org/x/time/rate"
)

// TestOCSPFullCacheEvictsOne: a full cache made room for one new answer
// by dropping every answer it held, so anyone cycling through more
// (serial, hash) pairs than it holds (revoked serials are on the public
// CRL, times four CertID hashes) made the CA key sign on every request,
// and so did ordinary traffic past 50,000 live certificates. Now one
// answer, the least recently used, makes room.
func TestOCSPFullCacheEvictsOne(t *testing.T) {
	r := newReplica(t)
	a := issue(t, DerivedPIVAuth, p256(t), identity(t)).Certificate
	pathA := getPath(ocspRequestFor(t, a.SerialNumber, testInit.Issuing))
	if w := r.serve("GET", pathA, nil); w.Code != 200 || r.signatures() != 1 {
		t.Fatalf("first GET of A: HTTP %d, %d signatures", w.Code, r.signatures())
	}
	now := r.cfg.Now()
	for i := 0; r.ocsp.len() < ocspCacheMax; i++ {
		r.ocsp.keep(ocspKey{hash: crypto.SHA1, serial: fmt.Sprintf("f%07x", i)}, ocspAnswer{der: []byte{1}, state: "0/0/0",
			thisUpdate: now, nextUpdate: now.Add(ocspLife), refresh: now.Add(ocspRefresh)}, now)
	}
	if w := r.serve("GET", pathA, nil); w.Code != 200 || r.signatures() != 1 {
		t.Fatalf("A again with the cache full: HTTP %d, %d signatures, want 1", w.Code, r.signatures())
	}
	b := issue(t, DerivedPIVAuth, p256(t), identity(t)).Certificate
	if w := r.serve("GET", getPath(ocspRequestFor(t, b.SerialNumber, testInit.Issuing)), nil); w.Code != 200 || r.signatures() != 2 {
		t.Fatalf("B: HTTP %d, %d signatures, want 2", w.Code, r.signatures())
	}
	if n := r.ocsp.len(); n != ocspCacheMax {
		t.Errorf("the cache holds %d answers after one new one, want %d", n, ocspCacheMax)
	}
	if w := r.serve("GET", pathA, nil); w.Code != 200 || r.signatures() != 2 {
		t.Errorf("A after B: %d signatures, want 2 (A was in use, and was dropped)", r.signatures())
	}
}

// TestOCSPSigningBudget: answers not in the cache are signed within a
// budget per replica and a share of it per source (anyone may ask, the CA
// key is the HSM's issuance key); past it the responder serves the answer
// it has if that is still before its nextUpdate, else tryLater (RFC 6960
// §2.3), unsigned and not cached.
func TestOCSPSigningBudget(t *testing.T) {
	r := newReplica(t)
	var certs []*big.Int
	for range 4 {
		certs = append(certs, issue(t, DerivedPIVAuth, p256(t), identity(t)).Certificate.SerialNumber)
	}
	get := func(serial *big.Int, from string) *httptest.ResponseRecorder {
		t.Helper()
		req := httptest.NewRequest("GET", getPath(ocspRequestFor(t, serial, testInit.Issuing)), nil)
		req.RemoteAddr = from
		w := httptest.NewRecorder()
		r.h.ServeHTTP(w, req)
		return w
	}
	tryLater := func(w *httptest.ResponseRecorder) bool {
		return bytes.Equal(w.Body.Bytes(), ocsp.TryLaterErrorResponse)
	}

	// One source's share: the second certificate it asks about waits,
	// while another source (another /64) is answered.
	r.ocsp.signs = rate.NewLimiter(0, 10)
	r.ocsp.perSource.Add("2001:db8:1::/64", rate.NewLimiter(0, 1))
	if w := get(certs[0], "[2001:db8:1::1]:4000"); tryLater(w) || r.signatures() != 1 {
		t.Fatalf("the source's first: %x, %d signatures", w.Body.Bytes(), r.signatures())
	}
	if w := get(certs[1], "[2001:db8:1::2]:4000"); !tryLater(w) || r.signatures() != 1 {
		t.Fatalf("past the source's share (same /64): %x, %d signatures, want tryLater", w.Body.Bytes(), r.signatures())
	} else if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("tryLater cacheable by relying parties: Cache-Control %q", cc)
	}
	if w := get(certs[1], "198.51.100.7:4000"); tryLater(w) || r.signatures() != 2 {
		t.Fatalf("another source: %x, %d signatures", w.Body.Bytes(), r.signatures())
	}

	// The replica's budget: spent, a new answer waits; cached answers
	// are served, and so is one past its refresh point but before its
	// nextUpdate.
	r.ocsp.signs = rate.NewLimiter(0, 0)
	if w := get(certs[2], "198.51.100.8:4000"); !tryLater(w) || r.signatures() != 2 {
		t.Fatalf("past the replica's budget: %x, %d signatures", w.Body.Bytes(), r.signatures())
	}
	if w := get(certs[0], "198.51.100.8:4000"); tryLater(w) || r.signatures() != 2 {
		t.Fatalf("a cached answer past the budget: %x, %d signatures", w.Body.Bytes(), r.signatures())
	}
	r.ahead.Store(int64(ocspRefresh + time.Minute))
	w := get(certs[0], "198.51.100.8:4000")
	if tryLater(w) || r.signatures() != 2 {
		t.Fatalf("an answer past its refresh point, budget spent: %x, %d signatures", w.Body.Bytes(), r.signatures())
	}
	if _, err := ocsp.ParseResponse(w.Body.Bytes(), testInit.Issuing); err != nil {
		t.Fatalf("the older answer: %v", err)
	}
	// A revocation changes the state: its answer needs a signature, and
	// the good answer is not served in its place. (The clock goes back
	// first: the store and its CRL are shared with the other tests.)
	r.ahead.Store(0)
	if err := r.Revoke(context.Background(), certs[0].Text(16), ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	if w := get(certs[0], "198.51.100.8:4000"); !tryLater(w) {
		t.Fatalf("a revoked certificate, budget spent: %x, want tryLater (never the good answer)", w.Body.Bytes())
	}
}

// TestOCSPIntentNotAnsweredRevoked: a certificate signed but not yet
// recorded (an intent) was answered revoked, and good a moment later once
// recorded: a revocation that undoes itself, which RFC 6960 §2.2 does not
// allow (revoked is for good, but for certificateHold). An intent is
// tryLater until it is recorded, or revoked by the sweep (a crash).
func TestOCSPIntentNotAnsweredRevoked(t *testing.T) {
	cfg := testCA.cfg
	var during []byte
	var c *CA
	cfg.afterSign = func(serial string) error {
		n, _ := new(big.Int).SetString(serial, 16)
		during = c.OCSP(context.Background(), ocspRequestFor(t, n, testInit.Issuing))
		return nil
	}
	c, err := NewCA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	key := p256(t)
	is, err := c.Issue(context.Background(), Request{Profile: DerivedPIVAuth, CSR: newCSR(t, key), Identity: identity(t)})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(during, ocsp.TryLaterErrorResponse) {
		r, perr := ocsp.ParseResponse(during, testInit.Issuing)
		t.Fatalf("OCSP before the record: %v %v, want tryLater", r, perr)
	}
	after, err := ocsp.ParseResponse(c.OCSP(context.Background(), ocspRequestFor(t, is.Certificate.SerialNumber, testInit.Issuing)), testInit.Issuing)
	if err != nil || after.Status != ocsp.Good {
		t.Fatalf("OCSP once recorded: %v %v, want good", after, err)
	}
}
