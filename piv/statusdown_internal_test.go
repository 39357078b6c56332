package piv

import (
	"context"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestTimedOutFetchNotRepeatedAtOnce: a responder that timed out was asked
// again by the next verification needing it, so a linkage run over the
// cards of an issuer whose responder drops traffic waited the fetch
// timeout once per card (and overdue cards of healthy issuers waited
// behind them). A URL whose exchange timed out is not asked again for
// failedFetchRetry: the verifications meanwhile go on to the CRL at once,
// and it is asked again after that time. A responder that answers with an
// error is asked again at once (it costs no wait, and is used as soon as
// it is back).
func TestTimedOutFetchNotRepeatedAtOnce(t *testing.T) {
	tests := []struct {
		name      string
		hold      bool // the responder holds requests past the timeout; else it answers 503
		wantOCSP  int64
		wantCause string
	}{
		{"drops traffic", true, 1, "deadline exceeded"},
		{"answers 503", false, 20, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newSlowResponder(t, true) // OCSP answers 503 once released; the CRL is good
			if !tc.hold {
				r.open("/ocsp")
			}
			r.open("/crl")
			var mu sync.Mutex
			now := time.Now()
			clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
			var failed []string
			s := newStatusChecker(Options{HTTPClient: r.srv.Client(), OCSPTimeout: 200 * time.Millisecond, CRLTimeout: time.Minute,
				MaxStatusAge: DefaultMaxStatusAge, Now: clock, StatusFetchFailed: func(src string) { mu.Lock(); failed = append(failed, src); mu.Unlock() }})
			ctx := context.Background()
			card := func(serial int64) {
				leaf := *r.leaf
				leaf.SerialNumber = big.NewInt(serial)
				src, err := s.check(ctx, &leaf, r.issuer)
				if err != nil || src != "crl" {
					t.Fatalf("card %d: status from %q, %v; want crl", serial, src, err)
				}
			}
			for serial := int64(1); serial <= 20; serial++ {
				card(serial)
			}
			if n := r.calls["/ocsp"].Load(); n != tc.wantOCSP {
				t.Errorf("%d OCSP requests for 20 cards, want %d", n, tc.wantOCSP)
			}
			if n := r.calls["/crl"].Load(); n != 1 {
				t.Errorf("%d CRL requests, want 1 (cached)", n)
			}
			if int64(len(failed)) != tc.wantOCSP {
				t.Errorf("%d fetch failures counted, want %d (a fetch not made is not a failed fetch)", len(failed), tc.wantOCSP)
			}
			if !tc.hold {
				return
			}
			// The reason says why it was not asked, and what the failure was.
			leaf := *r.leaf
			leaf.SerialNumber = big.NewInt(99)
			_, err := s.ocspStatus(ctx, &leaf, r.issuer)
			if !errors.Is(err, errRecentlyFailed) || !strings.Contains(err.Error(), tc.wantCause) || !strings.Contains(err.Error(), "timed out") {
				t.Errorf("OCSP status while the responder rests: %v; want errRecentlyFailed, the cause (%s) and when it is asked again", err, tc.wantCause)
			}
			mu.Lock()
			now = now.Add(failedFetchRetry)
			mu.Unlock()
			card(21)
			if n := r.calls["/ocsp"].Load(); n != 2 {
				t.Errorf("%d OCSP requests once the retry time passed, want 2", n)
			}
		})
	}
}
