package session_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/credgw/credgw/activation/audit"
	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/piv/session"
	"github.com/credgw/credgw/store"
)

// countingStore counts session lookups.
type countingStore struct {
	*store.SQLite
	lookups atomic.Int32
}

func (c *countingStore) PIVSession(ctx context.Context, tokenHash string) (store.PIVSession, error) {
	c.lookups.Add(1)
	return c.SQLite.PIVSession(ctx, tokenHash)
}

// TestPortalLookupRefusals: what a portal request's session cookie is
// refused for. A cookie that is not a token cost a database read for
// anyone who completed a TLS handshake; a session went on serving (listing
// and revoking the owner's credentials) for up to 20 minutes after the
// person's PIV identity was terminated.
func TestPortalLookupRefusals(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	c := f.pki.newCard(t)
	o, err := f.svc.SignInTLS(ctx, c.cert, nil, "192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.LookupPortal(ctx, o.Token, c.cert, true); err != nil {
		t.Fatalf("the session just opened: %v", err)
	}

	cs := &countingStore{SQLite: f.st}
	v, err := piv.NewVerifier(piv.Options{Roots: f.pki.pool})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc, err := session.New(session.Config{GatewayID: "gw-test", Store: cs, Verifier: v, Audit: audit.New(cs, log, f.clock.Now), Log: log, Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "alice", strings.Repeat("A", 42), strings.Repeat("A", 44), strings.Repeat("!", 43), o.Token + "="} {
		if _, err := svc.LookupPortal(ctx, bad, c.cert, true); !errors.Is(err, session.ErrSessionGone) {
			t.Errorf("cookie %q: %v, want ErrSessionGone", bad, err)
		}
	}
	if n := cs.lookups.Load(); n != 0 {
		t.Errorf("%d database reads for cookies that are no token, want 0", n)
	}
	if _, err := svc.LookupPortal(ctx, o.Token, c.cert, true); err != nil || cs.lookups.Load() != 1 {
		t.Fatalf("the real token: %v, %d reads", err, cs.lookups.Load())
	}

	if err := f.st.Terminate(ctx, store.Termination{Selector: store.IdentitySelector{CardUUID: c.uuid}, TerminatedAt: f.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.LookupPortal(ctx, o.Token, c.cert, true); !errors.Is(err, session.ErrTerminated) {
		t.Fatalf("the session of a terminated identity: %v, want ErrTerminated", err)
	}
	if _, err := f.svc.LookupPortal(ctx, o.Token, c.cert, true); !errors.Is(err, session.ErrSessionGone) {
		t.Fatalf("the session again: %v, want it ended", err)
	}
}
