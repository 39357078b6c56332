package activation

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/credgw/credgw/activation/audit"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/store"
)

// failingAudit is the store whose audit appends fail while fail is set.
type failingAudit struct {
	*store.SQLite
	fail *atomic.Bool
}

func (f failingAudit) AppendAudit(ctx context.Context, e store.AuditEvent) (store.AuditEvent, error) {
	if f.fail.Load() {
		return store.AuditEvent{}, store.ErrBusy
	}
	return f.SQLite.AppendAudit(ctx, e)
}

// TestKeyRecoveryIsRecordedFirst: a package carrying escrowed keys is a
// key recovery (Common Policy §4.12.1, §5.4.1). Its audit event named the
// set's own certificates, not the earlier keys that left escrow with it,
// and an audit log that could not be written did not stop the delivery.
// The event now lists the key history's certificate serials, and while
// the event cannot be written the package is not delivered (Unavailable:
// the device's retry resumes it once the log works).
func TestKeyRecoveryIsRecordedFirst(t *testing.T) {
	var fail atomic.Bool
	h := newHarness(t, func(c *Config) {
		c.Audit = audit.New(failingAudit{c.Store.(*store.SQLite), &fail}, c.Log, c.Now)
	})
	ctx := context.Background()
	alice := h.signIn(t, "a@example.gov")
	first := h.install(t, h.enroll(t, alice))
	firstKM := ""
	for _, it := range first.Manifest.GetItems() {
		if it.GetName() == "encryption.p12" {
			firstKM = it.GetSerial()
		}
	}
	e := h.enroll(t, h.again(alice))
	req := e.request(t)
	fail.Store(true)
	if d, err := h.svc.Redeem(ctx, req, nil); !errors.Is(err, ErrAuditUnavailable) {
		t.Fatalf("Redeem with the audit log failing: %v (delivered: %v), want ErrAuditUnavailable", err, d != nil)
	}
	fail.Store(false)
	d, err := h.svc.Redeem(ctx, req, nil)
	if err != nil || keyCount(t, d) != 2 {
		t.Fatalf("the retry once the log works: %v", err)
	}
	evs, err := h.st.AuditEvents(ctx, 0, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range evs {
		if ev.Action == "redeem" && strings.Contains(ev.Detail, "redemption_id="+d.RedemptionID) && strings.Contains(ev.Detail, "key_history="+firstKM) {
			found = true
			// The first delivery's event was never written: the retry's
			// is the account of the issuance, verdict included.
			if !strings.Contains(ev.Detail, "; issued") || !strings.Contains(ev.Detail, "attestation=") {
				t.Errorf("the only redeem event of %s does not say it issued, with the attestation verdict: %q", d.RedemptionID, ev.Detail)
			}
		}
	}
	if !found {
		t.Errorf("no redeem event of %s naming the key history (%s)", d.RedemptionID, firstKM)
	}
	// A later resume, with the issuance recorded, says so.
	if _, err := h.svc.Redeem(ctx, req, nil); err != nil {
		t.Fatal(err)
	}
	evs, err = h.st.AuditEvents(ctx, 0, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	issued, resumed := 0, 0
	for _, ev := range evs {
		if ev.Action == "redeem" && strings.Contains(ev.Detail, "redemption_id="+d.RedemptionID) {
			switch {
			case strings.Contains(ev.Detail, "; issued"):
				issued++
			case strings.Contains(ev.Detail, "; resumed") && strings.Contains(ev.Detail, "attestation="):
				resumed++
			default:
				t.Errorf("redeem event %q", ev.Detail)
			}
		}
	}
	if issued != 1 || resumed != 1 {
		t.Errorf("%d issued and %d resumed events of %s, want 1 and 1", issued, resumed, d.RedemptionID)
	}
}

// TestHangUpThenResumeOneIssuedEvent: a device hanging up while its
// package is sealed (the cause of most resumes) left the first event
// without its person (the set was read with the cancelled context), so
// the resume did not find it and wrote a second "issued" event.
func TestHangUpThenResumeOneIssuedEvent(t *testing.T) {
	h := newHarness(t, nil)
	alice := h.signIn(t, "hangup@example.gov")
	e := h.enroll(t, alice)
	req := e.request(t)
	ctx, cancel := context.WithCancel(context.Background())
	d, err := h.svc.Redeem(ctx, req, func(st credgwv1.Stage, _, _ int, _ string) {
		if st == credgwv1.Stage_STAGE_PACKAGING {
			cancel()
		}
	})
	if err == nil {
		t.Logf("delivered despite the hang-up (%s)", d.RedemptionID)
	}
	d, err = h.svc.Redeem(context.Background(), req, nil)
	if err != nil {
		t.Fatalf("the retry: %v", err)
	}
	evs, err := h.st.AuditEvents(context.Background(), 0, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	issued := 0
	for _, ev := range evs {
		if ev.Action == "redeem" && strings.Contains(ev.Detail, "redemption_id="+d.RedemptionID) && strings.Contains(ev.Detail, "; issued") {
			issued++
			if ev.PersonID == "" {
				t.Errorf("the issued event has no person: %q", ev.Detail)
			}
		}
	}
	if issued != 1 {
		t.Errorf("%d issued events of %s, want 1", issued, d.RedemptionID)
	}
}
