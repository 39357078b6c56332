package activation

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/credgw/credgw/store"
)

// TestConcurrentGuessesAreCountedFirst: 40 wrong passwords and the right one
// sent together on one activation. An attempt is counted before its
// comparison, so at most MaxAttempts wrong passwords are compared; every
// other guess answers ErrLocked (never "redeemed already"), and the right
// password issues only if it was counted among the first MaxAttempts.
func TestConcurrentGuessesAreCountedFirst(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	for round := 0; round < 3; round++ {
		e := h.enroll(t, h.signIn(t, "a@example.gov"))
		good := e.request(t)
		const guesses = 40
		start := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		wrong, locked := 0, 0
		var unexpected []error
		var correct error
		for i := 0; i <= guesses; i++ {
			req := good
			if i < guesses {
				req.Password = wrongPassword(good.Password)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, err := h.svc.Redeem(ctx, req, nil)
				mu.Lock()
				defer mu.Unlock()
				var wp *WrongPasswordError
				switch {
				case i == guesses:
					correct = err
				case errors.As(err, &wp):
					wrong++
				case errors.Is(err, ErrLocked):
					locked++
				default:
					unexpected = append(unexpected, err)
				}
			}()
		}
		close(start)
		wg.Wait()
		// The wrong password that locks answers ErrLocked: at most
		// MaxAttempts-1 answer "wrong password".
		if wrong > DefaultMaxAttempts-1 || len(unexpected) > 0 {
			t.Errorf("round %d: %d wrong passwords answered (at most %d), %d locked, others %v", round, wrong, DefaultMaxAttempts-1, locked, unexpected)
		}
		if correct != nil && !errors.Is(correct, ErrLocked) {
			t.Errorf("round %d: the right password got %v, want success or ErrLocked", round, correct)
		}
		a, err := h.st.ActivationByID(ctx, e.payload.ID)
		if err != nil {
			t.Fatal(err)
		}
		if a.FailedAttempts > DefaultMaxAttempts || (a.State != store.ActLocked && a.FailedAttempts != wrong) {
			t.Errorf("round %d: %s with %d failed attempts recorded, %d wrong passwords answered", round, a.State, a.FailedAttempts, wrong)
		}
		recs, err := h.st.CertificatesOfSet(ctx, e.en.CredentialSetID)
		if err != nil {
			t.Fatal(err)
		}
		// A right password refused was either refused before issuing, or
		// counted before the fifth wrong one, which locked the code while
		// it issued and revoked what it issued.
		if a.State == store.ActLocked || correct != nil {
			for _, r := range recs {
				if !r.Revoked() {
					t.Errorf("round %d: certificate %s of a refused or locked activation is live (%v)", round, r.Serial, correct)
				}
			}
		}
		if a.State == store.ActLocked {
			if _, err := h.svc.Redeem(ctx, good, nil); !errors.Is(err, ErrLocked) {
				t.Errorf("round %d: the right password on a locked code: %v, want ErrLocked", round, err)
			}
		}
	}
}

// TestRightPasswordGivesItsAttemptBack: a right password (a redemption, then
// resumes) is counted while it is compared and given back after: only wrong
// passwords lock.
func TestRightPasswordGivesItsAttemptBack(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	e := h.enroll(t, h.signIn(t, "a@example.gov"))
	good := e.request(t)
	bad := good
	bad.Password = wrongPassword(good.Password)
	for i := 0; i < DefaultMaxAttempts-1; i++ {
		var wp *WrongPasswordError
		if _, err := h.svc.Redeem(ctx, bad, nil); !errors.As(err, &wp) {
			t.Fatalf("wrong password %d: %v", i+1, err)
		}
	}
	for i := 0; i < 3; i++ {
		if _, err := h.svc.Redeem(ctx, good, nil); err != nil {
			t.Fatalf("right password %d: %v", i+1, err)
		}
	}
	if a, _ := h.st.ActivationByID(ctx, e.payload.ID); a.FailedAttempts != DefaultMaxAttempts-1 || a.State != store.ActRedeeming {
		t.Fatalf("%d failed attempts, state %s; want %d, redeeming", a.FailedAttempts, a.State, DefaultMaxAttempts-1)
	}
	if _, err := h.svc.Redeem(ctx, bad, nil); !errors.Is(err, ErrLocked) {
		t.Fatalf("the last wrong password: %v, want ErrLocked", err)
	}
}

func TestWrongPasswordSaysAttemptsInWords(t *testing.T) {
	for n, want := range map[int]string{1: "1 attempt left", 4: "4 attempts left", 0: "0 attempts left"} {
		if got := (&WrongPasswordError{AttemptsLeft: n}).Error(); !strings.Contains(got, want) {
			t.Errorf("%d: %q, want %q", n, got, want)
		}
	}
}
