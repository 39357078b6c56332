package activation_test

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
	"testing"
	"time"

	"github.com/credgw/credgw/activation"
	"github.com/credgw/credgw/activation/audit"
	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/store"
)

// newService builds the activation service on a real SQLite store and a
// CA with a software key; nothing is issued.
func newService(t *testing.T) (*activation.Service, *store.SQLite) {
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
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "activation test CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := issuance.NewCA(issuance.Config{Name: "test", Chain: []*x509.Certificate{caCert}, Signer: key, Store: st,
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
	svc, err := activation.New(activation.Config{Store: st, Issuer: ca, Escrow: esc, Pepper: make([]byte, 32), Gateway: "gw.example.com:443", Pin: make([]byte, 32),
		Verifier: goodCards{}, Audit: audit.New(st, log, nil), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	return svc, st
}

// enroll stores a pending credential set of person p1 and its activation.
func enroll(t *testing.T, st *store.SQLite, id string) {
	t.Helper()
	now := time.Now()
	cs := store.CredentialSet{ID: "set-" + id, PersonID: "p1", PIVCertSHA256: "c-" + id, CardUUID: "u1", RawSubject: []byte{0x30, 0},
		Email: "p1@example.com", IdentityName: "phone", CredentialType: "t", State: store.SetPending, CreatedAt: now}
	a := store.Activation{ID: id, LookupHash: "lh-" + id, Verifier: []byte{1}, MaxAttempts: 3, CreatedAt: now, ExpiresAt: now.Add(10 * time.Minute)}
	if err := st.CreateEnrollment(context.Background(), cs, a, 0); err != nil {
		t.Fatal(err)
	}
}

// TestCancel: only a pending activation can be cancelled; a refusal
// leaves the activation and its set as they were, with no audit event.
func TestCancel(t *testing.T) {
	tests := []struct {
		name string
		id   string
		// before brings activation "a" into the case's state.
		before  func(t *testing.T, svc *activation.Service, st *store.SQLite)
		want    error
		wantAct string // activation a's state after
		wantSet string // set-a's state after
	}{
		{"unknown activation", "nope", nil, activation.ErrNoSuch, store.ActPending, store.SetPending},
		{"locked", "a", func(t *testing.T, svc *activation.Service, st *store.SQLite) {
			for range 3 {
				if _, _, err := st.RecordFailedAttempt(context.Background(), "a"); err != nil {
					t.Fatal(err)
				}
			}
		}, activation.ErrPrecondition, store.ActLocked, store.SetAbandoned},
		{"being redeemed", "a", func(t *testing.T, svc *activation.Service, st *store.SQLite) {
			if err := st.BeginRedemption(context.Background(), "a", "r1", time.Now()); err != nil {
				t.Fatal(err)
			}
		}, activation.ErrPrecondition, store.ActRedeeming, store.SetRedeeming},
		{"cancelled already", "a", func(t *testing.T, svc *activation.Service, st *store.SQLite) {
			if _, err := svc.Cancel(context.Background(), "a", "first"); err != nil {
				t.Fatal(err)
			}
		}, activation.ErrPrecondition, store.ActExpired, store.SetRevoked},
		{"pending", "a", nil, nil, store.ActExpired, store.SetRevoked},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			svc, st := newService(t)
			enroll(t, st, "a")
			if tc.before != nil {
				tc.before(t, svc, st)
			}
			before := cancelEvents(t, st)
			_, err := svc.Cancel(ctx, tc.id, "by the help desk")
			if !errors.Is(err, tc.want) {
				t.Fatalf("Cancel: err = %v, want %v", err, tc.want)
			}
			ac, err := st.ActivationByID(ctx, "a")
			if err != nil || ac.State != tc.wantAct {
				t.Errorf("activation: state %q, %v; want %q", ac.State, err, tc.wantAct)
			}
			cs, err := st.CredentialSet(ctx, "set-a")
			if err != nil || cs.State != tc.wantSet {
				t.Errorf("set: state %q, %v; want %q", cs.State, err, tc.wantSet)
			}
			added := cancelEvents(t, st) - before
			want := 0
			if tc.want == nil {
				want = 1
			}
			if added != want {
				t.Errorf("Cancel wrote %d cancel-activation events, want %d", added, want)
			}
		})
	}
}

func cancelEvents(t *testing.T, st *store.SQLite) int {
	t.Helper()
	evs, err := st.AuditEvents(context.Background(), 0, 1000, "")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range evs {
		if e.Action == "cancel-activation" {
			n++
		}
	}
	return n
}

// goodCards finds every card good (the tests here do not revoke cards).
type goodCards struct{}

func (goodCards) VerifyPIVAuth(context.Context, *x509.Certificate, []*x509.Certificate) (*piv.Result, error) {
	return &piv.Result{}, nil
}
