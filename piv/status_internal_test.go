package piv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// slowResponder serves one issuer's OCSP and CRL, holding every request
// until the test releases its path, and counts the requests.
type slowResponder struct {
	srv          *httptest.Server
	issuer, leaf *x509.Certificate
	ocspDown     bool
	arrived      chan string
	calls        map[string]*atomic.Int64
	release      map[string]chan struct{}
	once         map[string]*sync.Once
}

func newSlowResponder(t *testing.T, ocspDown bool) *slowResponder {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "status test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	r := &slowResponder{ocspDown: ocspDown, arrived: make(chan string, 8),
		calls:   map[string]*atomic.Int64{"/ocsp": {}, "/crl": {}},
		release: map[string]chan struct{}{"/ocsp": make(chan struct{}), "/crl": make(chan struct{})},
		once:    map[string]*sync.Once{"/ocsp": {}, "/crl": {}}}
	if r.issuer, err = x509.ParseCertificate(caDER); err != nil {
		t.Fatal(err)
	}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		p := req.URL.Path
		if r.calls[p] == nil {
			http.NotFound(w, req)
			return
		}
		r.calls[p].Add(1)
		select {
		case r.arrived <- p:
		default:
		}
		<-r.release[p]
		switch {
		case p == "/ocsp" && r.ocspDown:
			http.Error(w, "down", http.StatusServiceUnavailable)
		case p == "/ocsp":
			der, err := ocsp.CreateResponse(r.issuer, r.issuer, ocsp.Response{Status: ocsp.Good, SerialNumber: r.leaf.SerialNumber,
				ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(time.Hour)}, key)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.Write(der)
		default:
			der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1),
				ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(time.Hour)}, r.issuer, key)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.Write(der)
		}
	}))
	// Release anything still held before the server waits for its handlers.
	t.Cleanup(func() { r.open("/ocsp"); r.open("/crl"); r.srv.Close() })
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(4242), Subject: pkix.Name{CommonName: "card"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		OCSPServer: []string{r.srv.URL + "/ocsp"}, CRLDistributionPoints: []string{r.srv.URL + "/crl"}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, r.issuer, leafKey.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	if r.leaf, err = x509.ParseCertificate(leafDER); err != nil {
		t.Fatal(err)
	}
	return r
}

// open releases every request held on path, now and later.
func (r *slowResponder) open(path string) { r.once[path].Do(func() { close(r.release[path]) }) }

// waitJoins waits until n verifications wait on a fetch of kind ("ocsp" or
// "crl"). The timeout only turns a deadlock into a failure.
func waitJoins(t *testing.T, joins <-chan string, kind string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		select {
		case f := <-joins:
			if k, _, _ := strings.Cut(f, "\x00"); k != kind {
				t.Fatalf("a verification waits on a %s fetch, want %s", k, kind)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%d of %d verifications wait on the %s fetch", i, n, kind)
		}
	}
}

// TestStatusFetchSharedUnderWave: 50 verifications of one card at once,
// against a responder that answers only when released: one OCSP request
// (and, with OCSP down, one CRL request) serves them all, and the caller
// that started the fetch giving up does not fail it for the others.
func TestStatusFetchSharedUnderWave(t *testing.T) {
	tests := []struct {
		name       string
		ocspDown   bool
		wantCRL    int64
		wantSource string
	}{
		{"OCSP answers", false, 0, "ocsp"},
		{"OCSP down: CRL", true, 1, "crl"},
	}
	const wave = 50
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newSlowResponder(t, tc.ocspDown)
			s := newStatusChecker(Options{HTTPClient: r.srv.Client(), OCSPTimeout: time.Minute, CRLTimeout: time.Minute,
				MaxStatusAge: DefaultMaxStatusAge, Now: time.Now})
			var waits, ended atomic.Int64
			s.opts.NetworkWait = func(context.Context) func() error {
				waits.Add(1)
				return func() error { ended.Add(1); return nil }
			}
			joins := make(chan string, 4*wave)
			s.joined = func(flight string) { joins <- flight }
			type result struct {
				source string
				err    error
			}

			// The first verification starts the fetch, then gives up.
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			first := make(chan result, 1)
			go func() { src, err := s.check(ctx, r.leaf, r.issuer); first <- result{src, err} }()
			waitJoins(t, joins, "ocsp", 1)
			if p := <-r.arrived; p != "/ocsp" {
				t.Fatalf("first request to %s", p)
			}
			results := make(chan result, wave)
			for i := 1; i < wave; i++ {
				go func() { src, err := s.check(context.Background(), r.leaf, r.issuer); results <- result{src, err} }()
			}
			waitJoins(t, joins, "ocsp", wave-1)
			cancel()
			if got := <-first; !errors.Is(got.err, context.Canceled) {
				t.Fatalf("the caller that gave up: %q, %v; want context.Canceled", got.source, got.err)
			}
			r.open("/ocsp")
			if tc.ocspDown {
				waitJoins(t, joins, "crl", wave-1)
				r.open("/crl")
			}
			for i := 1; i < wave; i++ {
				if got := <-results; got.err != nil || got.source != tc.wantSource {
					t.Fatalf("verification %d: %q, %v; want %s", i, got.source, got.err, tc.wantSource)
				}
			}
			if n := r.calls["/ocsp"].Load(); n != 1 {
				t.Errorf("%d OCSP requests for %d verifications, want 1", n, wave)
			}
			if n := r.calls["/crl"].Load(); n != tc.wantCRL {
				t.Errorf("%d CRL requests for %d verifications, want %d", n, wave, tc.wantCRL)
			}
			// The answer is cached: the next verification fetches it
			// no more (a failed OCSP fetch is not cached: it is tried
			// again).
			if src, err := s.check(context.Background(), r.leaf, r.issuer); err != nil || src != tc.wantSource {
				t.Fatalf("after the wave: %q, %v", src, err)
			}
			wantOCSP := int64(1)
			if tc.ocspDown {
				wantOCSP = 2
			}
			if o, c := r.calls["/ocsp"].Load(), r.calls["/crl"].Load(); o != wantOCSP || c != tc.wantCRL {
				t.Errorf("after the wave: %d OCSP and %d CRL requests, want %d and %d", o, c, wantOCSP, tc.wantCRL)
			}
			// Every verification's wait on a fetch, shared or not, was
			// a network wait, and every one ended.
			wantWaits := int64(wave)
			if tc.ocspDown {
				wantWaits = wave + (wave - 1) + 1
			}
			if w, e := waits.Load(), ended.Load(); w != wantWaits || e != w {
				t.Errorf("%d network waits begun and %d ended, want %d", w, e, wantWaits)
			}
		})
	}
}

// TestStatusCacheBounded: the cache keeps at most its cap, evicting the
// oldest fetch; answers older than the maximum status age or past their
// nextUpdate are dropped.
func TestStatusCacheBounded(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	const maxAge = 5 * time.Minute
	c := newStatusCache[int](maxCachedOCSP, maxAge)
	for i := 0; i < maxCachedOCSP+100; i++ {
		c.put(fmt.Sprint(i), i, now.Add(time.Duration(i)*time.Millisecond), now.Add(time.Hour))
	}
	if n := c.len(); n != maxCachedOCSP {
		t.Fatalf("%d cached answers, cap %d", n, maxCachedOCSP)
	}
	if len(c.byKey) != c.len() {
		t.Fatalf("index of %d for %d answers", len(c.byKey), c.len())
	}
	at := now.Add(time.Minute)
	if _, ok := c.get("0", at); ok {
		t.Error("the oldest answer was kept past the cap")
	}
	if v, ok := c.get(fmt.Sprint(maxCachedOCSP+99), at); !ok || v != maxCachedOCSP+99 {
		t.Error("the newest answer was evicted")
	}

	// Past the maximum age, every old answer goes at the next insert.
	later := now.Add(time.Hour)
	c.put("fresh", 1, later, later.Add(time.Hour))
	if n := c.len(); n != 1 {
		t.Fatalf("%d answers after all but one aged out, want 1", n)
	}
	// Past nextUpdate: not used, and dropped.
	c.put("short", 2, later, later.Add(time.Minute))
	if _, ok := c.get("short", later.Add(2*time.Minute)); ok {
		t.Error("an answer past its nextUpdate was used")
	}
	if _, ok := c.get("fresh", later.Add(maxAge)); ok {
		t.Error("an answer as old as the maximum age was used")
	}
	if n := c.len(); n != 0 {
		t.Fatalf("%d answers left, want 0", n)
	}
}
