package piv

import (
	"context"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestStatusFetchFollowsNoRedirect: an OCSP responder or CRL server that
// answers with a redirect (or anyone on the plain-HTTP path who forges
// one) cannot point the gateway at another address: the fetch fails (the
// status then fails closed) and the target is never asked.
func TestStatusFetchFollowsNoRedirect(t *testing.T) {
	var reached atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached.Add(1) }))
	defer target.Close()
	for _, code := range []int{http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+"/internal", code)
		}))
		v, err := NewVerifier(Options{Roots: x509.NewCertPool(), HTTPClient: &http.Client{}})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range []string{http.MethodGet, http.MethodPost} {
			_, err := v.status.fetch(context.Background(), m, redirector.URL+"/ocsp", []byte("request"), "application/ocsp-request", 10*time.Second, 1<<10)
			if err == nil || !strings.Contains(err.Error(), "does not follow redirects") {
				t.Errorf("%d %s: err %v, want a refused redirect", code, m, err)
			}
		}
		redirector.Close()
	}
	if n := reached.Load(); n != 0 {
		t.Fatalf("the redirect target was asked %d times", n)
	}
}
