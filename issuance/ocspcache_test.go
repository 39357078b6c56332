package issuance

import (
	"bytes"
	"crypto"
	"fmt"
	"testing"

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
// budget per replica (anyone may ask, the CA key is the HSM's issuance
// key); past it the responder says tryLater (RFC 6960 §2.3), unsigned,
// while cached answers are still served.
func TestOCSPSigningBudget(t *testing.T) {
	r := newReplica(t)
	r.ocsp.signs = rate.NewLimiter(0, 2)
	var paths []string
	for range 3 {
		c := issue(t, DerivedPIVAuth, p256(t), identity(t)).Certificate
		paths = append(paths, getPath(ocspRequestFor(t, c.SerialNumber, testInit.Issuing)))
	}
	for i, p := range paths[:2] {
		if w := r.serve("GET", p, nil); w.Code != 200 || bytes.Equal(w.Body.Bytes(), ocsp.TryLaterErrorResponse) {
			t.Fatalf("certificate %d within the budget: HTTP %d %x", i, w.Code, w.Body.Bytes())
		}
	}
	w := r.serve("GET", paths[2], nil)
	if !bytes.Equal(w.Body.Bytes(), ocsp.TryLaterErrorResponse) || r.signatures() != 2 {
		t.Fatalf("past the budget: %x, %d signatures, want tryLater and 2", w.Body.Bytes(), r.signatures())
	}
	if cc := w.Header().Get("Cache-Control"); cc != "" && !bytes.Contains([]byte(cc), []byte("no-store")) {
		t.Errorf("tryLater cached by relying parties: Cache-Control %q", cc)
	}
	if w := r.serve("GET", paths[0], nil); bytes.Equal(w.Body.Bytes(), ocsp.TryLaterErrorResponse) || r.signatures() != 2 {
		t.Errorf("a cached answer past the budget: %x, %d signatures", w.Body.Bytes(), r.signatures())
	}
}
