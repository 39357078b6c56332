package issuance

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha1"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
	"golang.org/x/crypto/ocsp"
)

// countingSigner is the CA key with a count of what it signed: the proof
// that an answer cost no signature.
type countingSigner struct {
	crypto.Signer
	n atomic.Int64
}

func (s *countingSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	s.n.Add(1)
	return s.Signer.Sign(r, digest, opts)
}

// replica is a second CA on the test store (another gateway replica) with
// a counting signer and a clock the test moves forward.
type replica struct {
	*CA
	signer *countingSigner
	ahead  atomic.Int64 // nanoseconds added to the real clock
	h      http.Handler
}

func newReplica(t testing.TB) *replica {
	t.Helper()
	r := &replica{signer: &countingSigner{Signer: testCA.cfg.Signer}}
	cfg := testCA.cfg
	cfg.Signer = r.signer
	cfg.Now = func() time.Time { return time.Now().Add(time.Duration(r.ahead.Load())) }
	ca, err := NewCA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.CA, r.h = ca, ca.Handler()
	return r
}

func (r *replica) signatures() int64 { return r.signer.n.Load() }

// serve runs one request through the replica's handler.
func (r *replica) serve(method, target string, body []byte, header ...string) *httptest.ResponseRecorder {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req := httptest.NewRequest(method, target, rd)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	r.h.ServeHTTP(w, req)
	return w
}

// getPath is the RFC 5019 GET path of an OCSP request, URL-encoded.
func getPath(der []byte) string {
	return "/ocsp/issuing-ca/" + url.PathEscape(base64.StdEncoding.EncodeToString(der))
}

func ocspRequestFor(t testing.TB, serial *big.Int, issuer *x509.Certificate) []byte {
	t.Helper()
	der, err := ocsp.CreateRequest(&x509.Certificate{SerialNumber: serial}, issuer, &ocsp.RequestOptions{Hash: crypto.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

var (
	oidSHA1   = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidMD5    = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 5}
	oidNonce  = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 2}
	testNonce = []byte("0123456789abcdef0123456789abcdef")
)

// rawOCSPRequest builds an OCSPRequest by hand: one CertID per serial,
// under the test CA's SHA-1 hashes unless the algorithm says otherwise,
// with a nonce extension when nonce is set.
func rawOCSPRequest(t testing.TB, alg asn1.ObjectIdentifier, nonce []byte, serials ...*big.Int) []byte {
	t.Helper()
	bits, err := publicKeyBits(testInit.Issuing)
	if err != nil {
		t.Fatal(err)
	}
	nameHash, keyHash := sha1.Sum(testInit.Issuing.RawSubject), sha1.Sum(bits)
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { // OCSPRequest
		b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { // TBSRequest
			b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { // requestList
				for _, s := range serials {
					b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { // Request
						b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { // CertID
							b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
								b.AddASN1ObjectIdentifier(alg)
								b.AddASN1NULL()
							})
							b.AddASN1OctetString(nameHash[:])
							b.AddASN1OctetString(keyHash[:])
							b.AddASN1BigInt(s)
						})
					})
				}
			})
			if nonce != nil {
				b.AddASN1(casn1.Tag(2).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
					b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { // Extensions
						b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
							b.AddASN1ObjectIdentifier(oidNonce)
							b.AddASN1(casn1.OCTET_STRING, func(b *cryptobyte.Builder) {
								b.AddASN1OctetString(nonce)
							})
						})
					})
				})
			}
		})
	})
	der, err := b.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestOCSPRejections: every way the responder refuses a request, with what
// it answers; none costs a signature.
func TestOCSPRejections(t *testing.T) {
	r := newReplica(t)
	known := issue(t, DerivedPIVAuth, p256(t), identity(t)).Certificate.SerialNumber
	unknown, _ := new(big.Int).SetString("7fffffffffffffffffff", 16)
	valid := ocspRequestFor(t, known, testInit.Issuing)
	tests := []struct {
		name   string
		method string
		target string
		body   []byte
		code   int
		want   []byte // the OCSP error response, if any
	}{
		{"bad base64", "GET", "/ocsp/issuing-ca/not*base64!", nil, 200, ocsp.MalformedRequestErrorResponse},
		{"empty GET", "GET", "/ocsp/issuing-ca/", nil, 200, ocsp.MalformedRequestErrorResponse},
		{"bad DER", "GET", getPath([]byte("not an OCSP request")), nil, 200, ocsp.MalformedRequestErrorResponse},
		{"trailing data", "POST", "/ocsp/issuing-ca", append(append([]byte{}, valid...), 0), 200, ocsp.MalformedRequestErrorResponse},
		{"no CertID", "POST", "/ocsp/issuing-ca", rawOCSPRequest(t, oidSHA1, nil), 200, ocsp.MalformedRequestErrorResponse},
		{"multi-CertID", "GET", getPath(rawOCSPRequest(t, oidSHA1, nil, known, known)), nil, 200, ocsp.MalformedRequestErrorResponse},
		{"multi-CertID POST", "POST", "/ocsp/issuing-ca", rawOCSPRequest(t, oidSHA1, nil, known, unknown), 200, ocsp.MalformedRequestErrorResponse},
		{"unsupported hash", "POST", "/ocsp/issuing-ca", rawOCSPRequest(t, oidMD5, nil, known), 200, ocsp.MalformedRequestErrorResponse},
		{"wrong issuer hash", "GET", getPath(ocspRequestFor(t, known, testInit.Root)), nil, 200, ocsp.UnauthorizedErrorResponse},
		{"unknown serial GET", "GET", getPath(ocspRequestFor(t, unknown, testInit.Issuing)), nil, 200, ocsp.UnauthorizedErrorResponse},
		{"unknown serial POST", "POST", "/ocsp/issuing-ca", ocspRequestFor(t, unknown, testInit.Issuing), 200, ocsp.UnauthorizedErrorResponse},
		{"negative serial", "POST", "/ocsp/issuing-ca", rawOCSPRequest(t, oidSHA1, nil, big.NewInt(-5)), 200, ocsp.UnauthorizedErrorResponse},
		{"method not allowed", "PUT", "/ocsp/issuing-ca", valid, 405, nil},
		{"method not allowed GET path", "DELETE", getPath(valid), nil, 405, nil},
		{"POST below the responder", "POST", getPath(valid), valid, 404, nil},
		{"oversized body", "POST", "/ocsp/issuing-ca", make([]byte, maxOCSPReq+1), 413, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := r.serve(tt.method, tt.target, tt.body)
			if w.Code != tt.code {
				t.Fatalf("HTTP %d, want %d: %s", w.Code, tt.code, w.Body)
			}
			if tt.want != nil {
				if !bytes.Equal(w.Body.Bytes(), tt.want) {
					_, err := ocsp.ParseResponse(w.Body.Bytes(), nil)
					t.Fatalf("answer %x (%v), want %x", w.Body.Bytes(), err, tt.want)
				}
				if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
					t.Errorf("Cache-Control %q on an unsigned error", cc)
				}
			}
			if n := r.signatures(); n != 0 {
				t.Fatalf("%d signatures for a refused request", n)
			}
		})
	}
	// Chunked (no Content-Length): the size limit still holds.
	req := httptest.NewRequest("POST", "/ocsp/issuing-ca", io.MultiReader(bytes.NewReader(make([]byte, maxOCSPReq)), strings.NewReader("x")))
	req.ContentLength = -1
	w := httptest.NewRecorder()
	r.h.ServeHTTP(w, req)
	if w.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked oversized body: HTTP %d", w.Code)
	}
}

// TestOCSPUnknownSerialSignsNothing is the acceptance line: OCSP for a
// serial this CA did not issue is unauthorized and the CA key signs nothing,
// however often it is asked.
func TestOCSPUnknownSerialSignsNothing(t *testing.T) {
	r := newReplica(t)
	for i := 0; i < 50; i++ {
		serial := new(big.Int).SetUint64(uint64(0xdead0000 + i))
		w := r.serve("GET", getPath(ocspRequestFor(t, serial, testInit.Issuing)), nil)
		if !bytes.Equal(w.Body.Bytes(), ocsp.UnauthorizedErrorResponse) {
			t.Fatalf("serial %x: %x", serial, w.Body.Bytes())
		}
	}
	if n := r.signatures(); n != 0 {
		t.Fatalf("%d CA signatures for unknown serials, want 0", n)
	}
}

var maxAgeRE = regexp.MustCompile(`^max-age=(\d+), public, no-transform, must-revalidate$`)

// TestOCSPPresignedAndReplacedOnRevocation: the first GET of a certificate
// signs once; repeated GETs, a POST, a request with a nonce and conditional
// GETs sign nothing more; a revocation made by another replica replaces the
// answer on the next request; the refresh point re-signs.
func TestOCSPPresignedAndReplacedOnRevocation(t *testing.T) {
	ctx := context.Background()
	r := newReplica(t)
	cert := issue(t, DerivedPIVAuth, p256(t), identity(t)).Certificate
	req := ocspRequestFor(t, cert.SerialNumber, testInit.Issuing)

	first := r.serve("GET", getPath(req), nil)
	resp, err := ocsp.ParseResponseForCert(first.Body.Bytes(), cert, testInit.Issuing)
	if err != nil || resp.Status != ocsp.Good {
		t.Fatalf("first GET: %v %v", resp, err)
	}
	if n := r.signatures(); n != 1 {
		t.Fatalf("%d signatures for the first GET, want 1", n)
	}
	h := first.Header()
	m := maxAgeRE.FindStringSubmatch(h.Get("Cache-Control"))
	if m == nil {
		t.Fatalf("Cache-Control %q", h.Get("Cache-Control"))
	}
	maxAge, _ := strconv.Atoi(m[1])
	if maxAge > int(ocspRefresh/time.Second) || maxAge < int((ocspRefresh-ocspBackdate-time.Minute)/time.Second) {
		t.Errorf("max-age %d, want about %v", maxAge, ocspRefresh-ocspBackdate)
	}
	if got, want := h.Get("Last-Modified"), resp.ThisUpdate.UTC().Format(http.TimeFormat); got != want {
		t.Errorf("Last-Modified %q, want thisUpdate %q", got, want)
	}
	expires, err := http.ParseTime(h.Get("Expires"))
	if err != nil || expires.After(resp.NextUpdate) || !expires.Equal(resp.ThisUpdate.Add(ocspRefresh)) {
		t.Errorf("Expires %q (%v), want the refresh point %v before nextUpdate %v", h.Get("Expires"), err, resp.ThisUpdate.Add(ocspRefresh), resp.NextUpdate)
	}
	etag := h.Get("ETag")
	if etag == "" {
		t.Error("no ETag")
	}

	for i := 0; i < 20; i++ {
		if w := r.serve("GET", getPath(req), nil); !bytes.Equal(w.Body.Bytes(), first.Body.Bytes()) {
			t.Fatal("a repeated GET got another response")
		}
	}
	if w := r.serve("POST", "/ocsp/issuing-ca", req); !bytes.Equal(w.Body.Bytes(), first.Body.Bytes()) || w.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("POST: %q, same response %v", w.Header().Get("Cache-Control"), bytes.Equal(w.Body.Bytes(), first.Body.Bytes()))
	}
	if w := r.serve("GET", getPath(req), nil, "If-None-Match", etag); w.Code != http.StatusNotModified {
		t.Errorf("If-None-Match: HTTP %d", w.Code)
	}
	// If-Modified-Since alone is not honoured: revalidation is by the ETag
	// (TestOCSPRevocationChangesLastModified).
	if w := r.serve("GET", getPath(req), nil, "If-Modified-Since", h.Get("Last-Modified")); w.Code != http.StatusOK {
		t.Errorf("If-Modified-Since: HTTP %d, want the answer", w.Code)
	}
	// RFC 8954: nonces are ignored — the pre-signed SHA-1 response, without one.
	withNonce := rawOCSPRequest(t, oidSHA1, testNonce, cert.SerialNumber)
	n1 := r.serve("GET", getPath(withNonce), nil)
	n2 := r.serve("POST", "/ocsp/issuing-ca", rawOCSPRequest(t, oidSHA1, []byte("another nonce, another request"), cert.SerialNumber))
	nr, err := ocsp.ParseResponseForCert(n1.Body.Bytes(), cert, testInit.Issuing)
	if err != nil || nr.Status != ocsp.Good || !bytes.Equal(n1.Body.Bytes(), n2.Body.Bytes()) {
		t.Fatalf("requests with nonces: %v, same answer %v", err, bytes.Equal(n1.Body.Bytes(), n2.Body.Bytes()))
	}
	for _, e := range nr.Extensions {
		if e.Id.Equal(oidNonce) {
			t.Error("the response carries a nonce")
		}
	}
	if n := r.signatures(); n != 2 { // the SHA-256 and the SHA-1 response
		t.Fatalf("%d signatures after repeated, conditional and nonce requests, want 2", n)
	}

	// Revoked on another replica: the next GET here says so.
	if err := testCA.Revoke(ctx, cert.SerialNumber.Text(16), ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	w := r.serve("GET", getPath(req), nil)
	rev, err := ocsp.ParseResponseForCert(w.Body.Bytes(), cert, testInit.Issuing)
	if err != nil || rev.Status != ocsp.Revoked {
		t.Fatalf("after revocation: %v %v", rev, err)
	}
	if rev.ThisUpdate.Before(rev.RevokedAt) {
		t.Errorf("thisUpdate %v before the revocation %v", rev.ThisUpdate, rev.RevokedAt)
	}
	// Signed after what it reports (RFC 6960 §4.2.1: producedAt is when it
	// was signed; x/crypto/ocsp set it to the minute, truncated, before a
	// fresh revocation).
	if rev.ProducedAt.Before(rev.ThisUpdate) || rev.ProducedAt.Before(rev.RevokedAt) {
		t.Errorf("producedAt %v before thisUpdate %v or the revocation %v", rev.ProducedAt, rev.ThisUpdate, rev.RevokedAt)
	}
	if w.Header().Get("ETag") == etag {
		t.Error("the revoked answer has the good answer's ETag")
	}
	r.serve("GET", getPath(req), nil)
	if n := r.signatures(); n != 3 {
		t.Fatalf("%d signatures after the revocation, want 3", n)
	}

	// At the refresh point the response is signed anew.
	r.ahead.Store(int64(ocspRefresh))
	w = r.serve("GET", getPath(req), nil)
	again, err := ocsp.ParseResponseForCert(w.Body.Bytes(), cert, testInit.Issuing)
	if err != nil || again.Status != ocsp.Revoked || !again.ThisUpdate.After(rev.ThisUpdate) {
		t.Fatalf("after the refresh point: %v %v", again, err)
	}
	// producedAt is the CA's clock, as thisUpdate is.
	if again.ProducedAt.Before(again.ThisUpdate) {
		t.Errorf("after the refresh point: producedAt %v before thisUpdate %v", again.ProducedAt, again.ThisUpdate)
	}
	r.serve("GET", getPath(req), nil)
	if n := r.signatures(); n != 4 {
		t.Fatalf("%d signatures after the refresh point, want 4", n)
	}
}

// TestOCSPConcurrentFirstRequestsSignOnce: a burst of requests for a
// certificate no one asked about before costs one signature.
func TestOCSPConcurrentFirstRequestsSignOnce(t *testing.T) {
	r := newReplica(t)
	cert := issue(t, DerivedPIVAuth, p256(t), identity(t)).Certificate
	path := getPath(ocspRequestFor(t, cert.SerialNumber, testInit.Issuing))
	var wg sync.WaitGroup
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if w := r.serve("GET", path, nil); w.Code != 200 || bytes.Equal(w.Body.Bytes(), ocsp.InternalErrorErrorResponse) {
				t.Errorf("HTTP %d", w.Code)
			}
		}()
	}
	wg.Wait()
	if n := r.signatures(); n != 1 {
		t.Fatalf("%d signatures for a burst of first requests, want 1", n)
	}
}

// TestOCSPGETWithRawSlashes: base64 holds "/"; a client that does not
// URL-encode it ("////" below) is answered, not redirected by path
// cleaning.
func TestOCSPGETWithRawSlashes(t *testing.T) {
	r := newReplica(t)
	serial, _ := new(big.Int).SetString("7fffffffffffffffffffffffff", 16)
	b64 := base64.StdEncoding.EncodeToString(ocspRequestFor(t, serial, testInit.Issuing))
	if !strings.Contains(b64, "//") {
		t.Fatalf("the test request's base64 has no //: %s", b64)
	}
	w := r.serve("GET", "/ocsp/issuing-ca/"+b64, nil)
	if w.Code != 200 || !bytes.Equal(w.Body.Bytes(), ocsp.UnauthorizedErrorResponse) {
		t.Fatalf("HTTP %d %x for %s", w.Code, w.Body.Bytes(), b64)
	}
}
