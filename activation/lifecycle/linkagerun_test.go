package lifecycle_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credgw/credgw/activation/lifecycle"
	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/store"
)

// cardStatus is a verifier that calls check for each card.
type cardStatus struct {
	check func(ctx context.Context) error
}

func (c cardStatus) VerifyPIVAuth(ctx context.Context, _ *x509.Certificate, _ []*x509.Certificate) (*piv.Result, error) {
	return &piv.Result{}, c.check(ctx)
}

func (c cardStatus) StatusAtExpiry(ctx context.Context, _ *x509.Certificate) error {
	return c.check(ctx)
}

// linkageFixture is a clock fixture whose linkage checks ask v, with n
// cards due (first_check 1m; the clock at +10m).
func linkageFixture(t *testing.T, lk lifecycle.Linkage, v lifecycle.CardStatus, overdue func(time.Duration), n int) *clockFixture {
	t.Helper()
	lk.FirstCheck = time.Minute
	f := newClockFixtureWith(t, lk, fixtureOptions{verifier: v, overdue: overdue})
	for i := range n {
		sha := fmt.Sprintf("card-%02d", i)
		f.keepPIVCert(t, sha)
		f.enrollCard(t, sha, fmt.Sprintf("p%d", i), "u-"+sha, sha, nil)
	}
	f.at(10 * time.Minute)
	return f
}

// TestLinkageChecksCardsInParallel: the checks of one run were made one
// after another, so a few slow responders held every other card's check
// behind them. Up to linkage.concurrency checks run at once, and no more.
func TestLinkageChecksCardsInParallel(t *testing.T) {
	const conc, cards = 4, 12
	var inFlight, most atomic.Int32
	all := make(chan struct{})
	var once sync.Once
	v := cardStatus{check: func(ctx context.Context) error {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		if n == conc {
			once.Do(func() { close(all) })
		}
		// The first checks wait until conc of them run at once. The
		// timeout only turns a run that never gets there into a failure.
		select {
		case <-all:
			return nil
		case <-time.After(30 * time.Second):
			return errors.New("never ran alongside others")
		}
	}}
	f := linkageFixture(t, lifecycle.Linkage{Concurrency: conc}, v, nil, cards)
	res, err := f.svc.Linkage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Checked != cards || res.Good != cards {
		t.Fatalf("%+v, want %d checked and good", res, cards)
	}
	if m := most.Load(); m != conc {
		t.Errorf("at most %d checks at once, want %d (linkage.concurrency)", m, conc)
	}
}

// TestLinkageCutShortIsNotUnknown: a check cut short by the run's end (the
// status fetch cancelled) was recorded as "unverifiable", counted unknown
// and logged as a card certificate that no longer verifies, on the way to
// linkage.on_unknown. It is released as it was, and checked by the next run.
func TestLinkageCutShortIsNotUnknown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls atomic.Int32
	v := cardStatus{check: func(c context.Context) error {
		if calls.Add(1) == 1 {
			cancel() // the run's budget ends while the first card is asked
			<-c.Done()
			return fmt.Errorf("piv: revocation status: %w", c.Err())
		}
		return nil
	}}
	var overdue []time.Duration
	f := linkageFixture(t, lifecycle.Linkage{Concurrency: 1}, v, func(d time.Duration) { overdue = append(overdue, d) }, 3)
	res, _ := f.svc.Linkage(ctx)
	if res.Unknown != 0 {
		t.Errorf("a check cut short counted unknown: %+v", res)
	}
	rows := linkageRows(t, f)
	for sha, l := range rows {
		if !l.UnknownSince.IsZero() || l.LastStatus != "" {
			t.Errorf("%s after the run was cut short: status %q, unknown since %v; want as it was", sha, l.LastStatus, l.UnknownSince)
		}
	}
	// Every card is still due, and the age of the oldest due check was
	// reported (≥ 9 minutes: due at +1m, the clock at +10m).
	if len(overdue) == 0 || overdue[len(overdue)-1] < 9*time.Minute {
		t.Errorf("overdue reported %v, want the oldest due check's age (≥ 9m)", overdue)
	}
	// The next run finds them all (none waits for a lease to expire).
	res, err := f.svc.Linkage(context.Background())
	if err != nil || res.Good != 3 {
		t.Fatalf("next run: %+v %v, want 3 good", res, err)
	}
	if got := overdue[len(overdue)-1]; got != 0 {
		t.Errorf("overdue after a complete run: %v, want 0", got)
	}
}

// linkageRows reads every linkage row (claiming them far in the future,
// then releasing them as they were).
func linkageRows(t *testing.T, f *clockFixture) map[string]store.Linkage {
	t.Helper()
	ctx := context.Background()
	far := time.Now().Add(365 * 24 * time.Hour)
	rows, err := f.st.ClaimLinkage(ctx, far, time.Second, 1000)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]store.Linkage{}
	for _, l := range rows {
		out[l.CertSHA256] = l
		if err := f.st.FinishLinkage(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestLinkageCarriesKeyCompromise: a card revoked at its issuer for
// keyCompromise (its key, and so PKI-AUTH with it, in someone else's
// hands) had its derived credentials revoked cessationOfOperation, as if
// the device were simply retired: anyone holding the card's key could
// have enrolled them. A compromise of the card's key, or of a CA above it,
// revokes them keyCompromise; any other reason cessationOfOperation.
func TestLinkageCarriesKeyCompromise(t *testing.T) {
	tests := []struct {
		name   string
		status error
		want   int
	}{
		{"card key compromised", &piv.RevokedError{Source: "OCSP", Reason: 1}, 1},
		{"issuing CA compromised", fmt.Errorf("the card's issuing CA: %w", &piv.RevokedError{Source: "CRL", Reason: 2}), 1},
		{"card superseded", &piv.RevokedError{Source: "CRL", Reason: 4}, 5},
		{"no reason given", &piv.RevokedError{Source: "OCSP", Reason: -1}, 5},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := cardStatus{check: func(context.Context) error { return tc.status }}
			f := linkageFixture(t, lifecycle.Linkage{}, v, nil, 1)
			serial := fmt.Sprintf("cc%02d", i)
			f.record(t, serial, "test", "p0", "set-card-00")
			res, err := f.svc.Linkage(context.Background())
			if err != nil || res.Revoked != 1 {
				t.Fatalf("%+v %v, want the card's sets revoked", res, err)
			}
			rec, err := f.st.Certificate(context.Background(), serial)
			if err != nil || !rec.Revoked() {
				t.Fatalf("%+v %v", rec, err)
			}
			if rec.RevocationReason != tc.want {
				t.Errorf("derived certificate revoked with reason %d, want %d", rec.RevocationReason, tc.want)
			}
		})
	}
}

// TestLinkageAnswerAtTheBudgetsEndIsKept: a check whose good answer came as
// the run's budget ended was counted good but not recorded (the write used
// the ended context), and its row stayed claimed until the claim lapsed.
// An answer had is recorded whatever the budget.
func TestLinkageAnswerAtTheBudgetsEndIsKept(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls atomic.Int32
	v := cardStatus{check: func(context.Context) error {
		if calls.Add(1) == 1 {
			cancel() // the budget ends as the first card's answer comes
		}
		return nil
	}}
	f := linkageFixture(t, lifecycle.Linkage{Concurrency: 1}, v, nil, 3)
	res, _ := f.svc.Linkage(ctx)
	if res.Good != 1 {
		t.Fatalf("cut run: %+v, want the one good answer", res)
	}
	good := 0
	for sha, l := range linkageRows(t, f) {
		if l.LastStatus == "good" {
			good++
		} else if l.LastStatus != "" {
			t.Errorf("%s: status %q", sha, l.LastStatus)
		}
	}
	if good != 1 {
		t.Fatalf("%d rows recorded good after the cut run, want 1 (the answer had)", good)
	}
	// The two not reached are checked by the next run at once.
	if res, err := f.svc.Linkage(context.Background()); err != nil || res.Good != 2 {
		t.Fatalf("next run: %+v %v, want the 2 left", res, err)
	}
}
