package lifecycle_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credgw/credgw/activation"
	"github.com/credgw/credgw/activation/audit"
	"github.com/credgw/credgw/activation/lifecycle"
	"github.com/credgw/credgw/activation/notify"
	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/store"
)

type fixture struct {
	st  *store.SQLite
	svc *lifecycle.Service
}

// newFixture builds the lifecycle service on a real SQLite store and a CA
// with a software key; nothing is issued.
// wrapCAStore, when set, wraps the store the fixture's CA writes through.
var wrapCAStore func(store.IssuanceStore) store.IssuanceStore

func newFixture(t *testing.T) *fixture { t.Helper(); return newFixtureNotifying(t, notify.Config{}) }

// newFixtureNotifying is newFixture with an outbox configured by nc.
func newFixtureNotifying(t *testing.T, nc notify.Config) *fixture {
	t.Helper()
	return buildFixture(t, fixtureOptions{notify: nc})
}

// fixtureOptions change buildFixture's defaults.
type fixtureOptions struct {
	notify  notify.Config
	now     func() time.Time // nil: time.Now
	linkage lifecycle.Linkage
	// activationStore wraps the activation service's store (nil: none).
	activationStore func(*store.SQLite) store.Store
	// verifier answers the linkage checks (nil: a verifier that trusts
	// nothing); overdue is lifecycle.Config.Overdue.
	verifier lifecycle.CardStatus
	overdue  func(time.Duration)
}

// buildFixture makes a lifecycle service on a fresh SQLite store, with a
// software CA and KEK and a verifier that trusts nothing.
func buildFixture(t *testing.T, o fixtureOptions) *fixture {
	t.Helper()
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "credgw.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "lifecycle test CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(400 * 24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	var caStore store.IssuanceStore = st
	if wrapCAStore != nil {
		caStore = wrapCAStore(st)
	}
	ca, err := issuance.NewCA(issuance.Config{Name: "test", Chain: []*x509.Certificate{caCert}, Signer: key, Store: caStore,
		BaseURL: "http://127.0.0.1:9"})
	if err != nil {
		t.Fatal(err)
	}
	kek, err := issuance.NewFileKEK(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	esc, err := issuance.NewEscrow(issuance.EscrowConfig{KEK: kek, KEKID: "test", Store: st, KeyType: issuance.EscrowP256})
	if err != nil {
		t.Fatal(err)
	}
	ver, err := piv.NewVerifier(piv.Options{Roots: x509.NewCertPool(), Now: o.now})
	if err != nil {
		t.Fatal(err)
	}
	al := audit.New(st, log, nil)
	out, err := notify.New(o.notify, func(p string) string { return p }, st, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	var actStore store.Store = st
	if o.activationStore != nil {
		actStore = o.activationStore(st)
	}
	act, err := activation.New(activation.Config{Store: actStore, Issuer: ca, Escrow: esc, Pepper: make([]byte, 32), Gateway: "gw.example.com:443", Pin: make([]byte, 32),
		Verifier: ver, Audit: al, Notify: out, Log: log, Now: o.now})
	if err != nil {
		t.Fatal(err)
	}
	var status lifecycle.CardStatus = ver
	if o.verifier != nil {
		status = o.verifier
	}
	svc, err := lifecycle.New(lifecycle.Config{Store: st, Activation: act, CA: ca, Verifier: status, Audit: al, Notify: out, Log: log,
		Linkage: o.linkage, Overdue: o.overdue, Now: o.now})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{st: st, svc: svc}
}

// enroll stores a pending credential set of person and its activation.
func (f *fixture) enroll(t *testing.T, id, person string) {
	t.Helper()
	now := time.Now()
	cs := store.CredentialSet{ID: "set-" + id, PersonID: person, PIVCertSHA256: "c-" + id, CardUUID: "u-" + person, RawSubject: []byte{0x30, 0},
		Email: person + "@example.com", IdentityName: "phone", CredentialType: "t", State: store.SetPending, CreatedAt: now}
	a := store.Activation{ID: id, LookupHash: "lh-" + id, Verifier: []byte{1}, MaxAttempts: 3, CreatedAt: now, ExpiresAt: now.Add(10 * time.Minute)}
	if err := f.st.CreateEnrollment(context.Background(), cs, a, 0); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) revokeEvents(t *testing.T) int {
	t.Helper()
	evs, err := f.st.AuditEvents(context.Background(), 0, 1000, "")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range evs {
		if e.Action == "revoke" {
			n++
		}
	}
	return n
}

// TestRevokeOwn: a person may revoke only their own credential sets; a
// refusal changes nothing and records nothing.
func TestRevokeOwn(t *testing.T) {
	tests := []struct {
		name, caller, setID string
		want                error
	}{
		{"another person's set", "p1", "set-b", activation.ErrNotYours},
		{"unknown set", "p1", "set-nope", activation.ErrNotYours},
		{"empty person", "", "set-b", activation.ErrNotYours},
		{"own set", "p1", "set-a", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t)
			f.enroll(t, "a", "p1")
			f.enroll(t, "b", "p2")
			v, err := f.svc.RevokeOwn(ctx, tc.caller, tc.setID, issuance.ReasonUnspecified, false)
			cs := v.Set
			if !errors.Is(err, tc.want) {
				t.Fatalf("RevokeOwn: err = %v, want %v", err, tc.want)
			}
			wantEvents, wantA, wantB := 0, store.SetPending, store.SetPending
			if tc.want == nil {
				if cs.ID != tc.setID || cs.State != store.SetRevoked {
					t.Fatalf("RevokeOwn = %+v", cs)
				}
				wantEvents, wantA = 1, store.SetRevoked
			} else if cs.ID != "" {
				t.Fatalf("refused with a set: %+v", cs)
			}
			for id, want := range map[string]string{"set-a": wantA, "set-b": wantB} {
				got, err := f.st.CredentialSet(ctx, id)
				if err != nil || got.State != want {
					t.Errorf("%s: state %q, %v; want %q", id, got.State, err, want)
				}
			}
			if ac, err := f.st.ActivationByID(ctx, "b"); err != nil || ac.State != store.ActPending {
				t.Errorf("the other person's activation: %q, %v; want pending", ac.State, err)
			}
			if n := f.revokeEvents(t); n != wantEvents {
				t.Errorf("%d revoke audit events, want %d", n, wantEvents)
			}
		})
	}
}

// TestTerminate: a selector must name exactly one of FASC-N, card UUID or
// person; a refused termination records nothing and revokes nothing.
func TestTerminate(t *testing.T) {
	tests := []struct {
		name string
		sel  store.IdentitySelector
		want error
	}{
		{"no selector", store.IdentitySelector{}, store.ErrNoSelector},
		{"two selectors", store.IdentitySelector{PersonID: "p1", CardUUID: "u-p1"}, store.ErrNoSelector},
		{"person", store.IdentitySelector{PersonID: "p1"}, nil},
		{"card", store.IdentitySelector{CardUUID: "u-p1"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t)
			f.enroll(t, "a", "p1")
			f.enroll(t, "b", "p2")
			_, err := f.svc.Terminate(ctx, "admin", tc.sel, "left", "192.0.2.1")
			if !errors.Is(err, tc.want) {
				t.Fatalf("Terminate: err = %v, want %v", err, tc.want)
			}
			terminated, err := f.st.Terminated(ctx, nil, "u-p1", "p1")
			if err != nil {
				t.Fatal(err)
			}
			wantA, wantEvents := store.SetPending, 0
			if tc.want == nil {
				wantA, wantEvents = store.SetRevoked, 1
			}
			if terminated != (tc.want == nil) {
				t.Errorf("p1 terminated = %v", terminated)
			}
			for id, want := range map[string]string{"set-a": wantA, "set-b": store.SetPending} {
				got, err := f.st.CredentialSet(ctx, id)
				if err != nil || got.State != want {
					t.Errorf("%s: state %q, %v; want %q", id, got.State, err, want)
				}
			}
			evs, err := f.st.AuditEvents(ctx, 0, 1000, "")
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, e := range evs {
				if e.Action == "terminate" {
					n++
					// Why, in the chain: it was kept only in the
					// terminations table, editable unseen.
					if !strings.Contains(e.Detail, "comment=left") {
						t.Errorf("terminate event %q does not carry the termination's comment", e.Detail)
					}
				}
			}
			if n != wantEvents {
				t.Errorf("%d terminate audit events, want %d", n, wantEvents)
			}
		})
	}
}
