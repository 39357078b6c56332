package activation

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/credgw/credgw/activation/code"
	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/store"
)

// noticeFailing is the store whose CertificatesOfSet and
// EnqueueNotification fail while their flags are set.
type noticeFailing struct {
	store.Store
	failCerts, failEnqueue *atomic.Bool
}

func (f noticeFailing) CertificatesOfSet(ctx context.Context, id string) ([]store.CertificateRecord, error) {
	if f.failCerts.Load() {
		return nil, store.ErrUnavailable
	}
	return f.Store.CertificatesOfSet(ctx, id)
}

func (f noticeFailing) EnqueueNotification(ctx context.Context, n store.Notification) error {
	if f.failEnqueue.Load() {
		return store.ErrUnavailable
	}
	return f.Store.EnqueueNotification(ctx, n)
}

// TestConfirmRetryStillTells: a confirmation is committed before the
// person is told; when what came after failed (reading the set's
// certificates, or queueing the notice itself), the device got an error
// and asked again, and the repeat answered "confirmed" without telling:
// an escrowed-key delivery went untold (Common Policy §4.12.1), and its
// confirm event unwritten. A repeat tells, and records, what the first
// did not, and nothing twice.
func TestConfirmRetryStillTells(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		failCerts, failNotice bool
	}{
		{"the certificates unreadable", true, false},
		{"the notice not queued", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var failCerts, failEnqueue atomic.Bool
			h := newHarness(t, func(c *Config) {
				c.Store = noticeFailing{Store: c.Store, failCerts: &failCerts, failEnqueue: &failEnqueue}
				withMail(t)(c)
			})
			ctx := context.Background()
			e := h.enroll(t, h.signIn(t, "a@example.gov"))
			req := e.request(t)
			d, err := h.svc.Redeem(ctx, req, nil)
			if err != nil {
				t.Fatal(err)
			}
			failCerts.Store(tc.failCerts)
			failEnqueue.Store(tc.failNotice)
			if _, err := h.svc.Confirm(ctx, d.RedemptionID, req.Secret, d.SHA256); !errors.Is(err, store.ErrUnavailable) {
				t.Fatalf("first confirmation: %v, want the store's failure", err)
			}
			failCerts.Store(false)
			failEnqueue.Store(false)
			for range 2 { // the retry, and a repeat of it
				if _, err := h.svc.Confirm(ctx, d.RedemptionID, req.Secret, d.SHA256); err != nil {
					t.Fatalf("retry: %v", err)
				}
			}
			kinds := h.noticeKinds(t)
			if kinds["binding"] != 1 || kinds["key-delivery"] != 1 {
				t.Errorf("notices queued %v, want one binding and one key-delivery", kinds)
			}
			evs, err := h.st.AuditEvents(ctx, 0, 0, "")
			if err != nil {
				t.Fatal(err)
			}
			confirms := 0
			for _, ev := range evs {
				if ev.Action == "confirm" {
					confirms++
				}
			}
			if confirms != 1 {
				t.Errorf("%d confirm events, want 1", confirms)
			}
		})
	}
}

// TestNoKeyDeliveryNoticeWithoutEscrow: a set without an escrowed key (an
// authentication-only credential type) was told "your escrowed S/MIME
// encryption key and its key history were delivered to a device": a false
// alarm that wears down the true ones.
func TestNoKeyDeliveryNoticeWithoutEscrow(t *testing.T) {
	h := newHarness(t, func(cfg *Config) {
		withMail(t)(cfg)
		cfg.CredentialTypes = map[string][]issuance.Profile{
			DefaultCredentialType: issuance.Profiles(),
			"authentication-only": {issuance.DerivedPIVAuth},
		}
	})
	ctx := context.Background()
	en, err := h.svc.Enroll(ctx, EnrollRequest{Session: h.signIn(t, "a@example.gov"), IdentityName: "Phone", CredentialType: "authentication-only"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := code.ParsePayload(en.Payload)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	req := RedeemRequest{ActivationID: p.ID, Secret: p.Secret, Password: en.Password, CSRs: map[issuance.Profile]*x509.CertificateRequest{issuance.DerivedPIVAuth: csr}}
	d, err := h.svc.Redeem(ctx, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Confirm(ctx, d.RedemptionID, req.Secret, d.SHA256); err != nil {
		t.Fatal(err)
	}
	if kinds := h.noticeKinds(t); kinds["binding"] != 1 || kinds["key-delivery"] != 0 {
		t.Errorf("notices %v, want a binding notice and no key-delivery one", kinds)
	}
}

// noticeKinds counts the outbox's notifications by kind.
func (h *harness) noticeKinds(t *testing.T) map[string]int {
	t.Helper()
	ns, err := h.st.Notifications(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, n := range ns {
		kinds[n.Kind]++
	}
	return kinds
}
