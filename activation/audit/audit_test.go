package audit_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/credgw/credgw/activation/audit"
	"github.com/credgw/credgw/store"
)

// fakeStore records appended events; appendErr makes every append fail.
type fakeStore struct {
	appendErr error
	appended  []store.AuditEvent
	ctxErr    []error // ctx.Err() seen by each append
	set       *store.CredentialSet
	certs     []store.CertificateRecord
}

func (f *fakeStore) AppendAudit(ctx context.Context, e store.AuditEvent) (store.AuditEvent, error) {
	f.ctxErr = append(f.ctxErr, ctx.Err())
	if f.appendErr != nil {
		return store.AuditEvent{}, f.appendErr
	}
	f.appended = append(f.appended, e)
	return e, nil
}

func (f *fakeStore) AuditEvents(context.Context, int64, int, string) ([]store.AuditEvent, error) {
	return f.appended, nil
}

func (f *fakeStore) CredentialSet(_ context.Context, id string) (store.CredentialSet, error) {
	if f.set == nil || f.set.ID != id {
		return store.CredentialSet{}, store.ErrNotFound
	}
	return *f.set, nil
}

func (f *fakeStore) CertificatesOfSet(_ context.Context, setID string) ([]store.CertificateRecord, error) {
	if f.set == nil || f.set.ID != setID {
		return nil, store.ErrNotFound
	}
	return f.certs, nil
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newLog(st audit.Store) (*audit.Log, *bytes.Buffer) {
	var buf bytes.Buffer
	return audit.New(st, slog.New(slog.NewTextHandler(&buf, nil)), func() time.Time { return t0 }), &buf
}

// TestRecord: Record stamps the event with the log's clock, fills the
// outcome "ok" unless one is given, and appends it even when the caller's
// context is cancelled.
func TestRecord(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name        string
		ctx         context.Context
		in          store.AuditEvent
		wantOutcome string
	}{
		{"outcome filled", context.Background(), store.AuditEvent{Actor: "system", Action: "sweep"}, "ok"},
		{"outcome kept", context.Background(), store.AuditEvent{Actor: "device", Action: "redeem", Outcome: "wrong password"}, "wrong password"},
		{"caller's at overwritten", context.Background(), store.AuditEvent{Actor: "system", Action: "sweep", At: t0.Add(-time.Hour)}, "ok"},
		{"cancelled caller", cancelled, store.AuditEvent{Actor: "piv:1", Action: "revoke"}, "ok"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := &fakeStore{}
			l, buf := newLog(st)
			l.Record(tc.ctx, tc.in)
			if len(st.appended) != 1 {
				t.Fatalf("%d events appended, want 1", len(st.appended))
			}
			got := st.appended[0]
			if !got.At.Equal(t0) || got.Outcome != tc.wantOutcome || got.Actor != tc.in.Actor || got.Action != tc.in.Action {
				t.Fatalf("appended %+v", got)
			}
			if st.ctxErr[0] != nil {
				t.Fatalf("the append saw a cancelled context: %v", st.ctxErr[0])
			}
			if buf.Len() != 0 {
				t.Fatalf("logged %q on success", buf)
			}
		})
	}
}

// TestRecordAppendFails: a failed append is logged as an error with the
// event's action and person and the cause; Record neither panics nor
// returns anything.
func TestRecordAppendFails(t *testing.T) {
	cause := errors.New("disk full")
	st := &fakeStore{appendErr: cause}
	l, buf := newLog(st)
	l.Record(context.Background(), store.AuditEvent{Actor: "piv:12345678901234", Action: "revoke", PersonID: "12345678901234"})
	l.Set(context.Background(), "admin:ops", "revoke", "no-such-set", "")
	if len(st.ctxErr) != 2 {
		t.Fatalf("%d appends tried, want 2", len(st.ctxErr))
	}
	out := buf.String()
	for _, want := range []string{"level=ERROR", `msg="audit: append failed"`, "action=revoke", "person_id=12345678901234", `cause="disk full"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log %q lacks %q", out, want)
		}
	}
	if n := strings.Count(out, "audit: append failed"); n != 2 {
		t.Errorf("%d failures logged, want 2", n)
	}
}

// TestSet: the event names the set, and its holder and serials when the
// set is known; the actor defaults to its holder.
func TestSet(t *testing.T) {
	set := &store.CredentialSet{ID: "set-1", PersonID: "p1", CardUUID: "c1"}
	certs := []store.CertificateRecord{{Serial: "0a"}, {Serial: "0b"}}
	tests := []struct {
		name                  string
		actor, setID, detail  string
		wantActor, wantDetail string
		wantPerson            string
		wantSerials           []string
	}{
		{"known set, actor given", "admin:ops", "set-1", "reason=keyCompromise", "admin:ops", "credential_set_id=set-1; reason=keyCompromise", "p1", []string{"0a", "0b"}},
		{"known set, actor from holder", "", "set-1", "", "piv:p1", "credential_set_id=set-1", "p1", []string{"0a", "0b"}},
		{"unknown set", "system", "set-9", "", "system", "credential_set_id=set-9", "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := &fakeStore{set: set, certs: certs}
			l, _ := newLog(st)
			l.Set(context.Background(), tc.actor, "revoke", tc.setID, tc.detail)
			if len(st.appended) != 1 {
				t.Fatalf("%d events appended, want 1", len(st.appended))
			}
			e := st.appended[0]
			if e.Actor != tc.wantActor || e.Detail != tc.wantDetail || e.PersonID != tc.wantPerson || !slices.Equal(e.Serials, tc.wantSerials) ||
				e.Action != "revoke" || e.Outcome != "ok" {
				t.Fatalf("appended %+v", e)
			}
		})
	}
}

// TestSetOf: an event of a set the caller holds is the event Set makes
// after reading the set and its certificates, without reading them.
func TestSetOf(t *testing.T) {
	set := store.CredentialSet{ID: "set-1", PersonID: "p1", CardUUID: "c1"}
	certs := []store.CertificateRecord{{Serial: "0a"}, {Serial: "0b"}}
	for _, actor := range []string{"device", ""} {
		read := &fakeStore{set: &set, certs: certs}
		l, _ := newLog(read)
		l.Set(context.Background(), actor, "confirm", set.ID, "redemption_id=r1")
		held := &fakeStore{} // knows no set: SetOf must not need it
		l, _ = newLog(held)
		l.SetOf(context.Background(), actor, "confirm", set, []string{"0a", "0b"}, "redemption_id=r1")
		if len(read.appended) != 1 || len(held.appended) != 1 {
			t.Fatalf("actor %q: %d and %d events appended, want 1 each", actor, len(read.appended), len(held.appended))
		}
		a, b := read.appended[0], held.appended[0]
		if a.Actor != b.Actor || a.Action != b.Action || a.Outcome != b.Outcome || a.Detail != b.Detail || a.PersonID != b.PersonID ||
			a.CardUUID != b.CardUUID || !slices.Equal(a.Serials, b.Serials) || b.CardUUID != "c1" {
			t.Fatalf("actor %q: Set appended %+v, SetOf %+v", actor, a, b)
		}
	}
}

// TestIdentity: the event of an action on a PIV identity names the
// selector in its detail.
func TestIdentity(t *testing.T) {
	tests := []struct {
		name       string
		sel        store.IdentitySelector
		detail     string
		wantDetail string
	}{
		{"person", store.IdentitySelector{PersonID: "p1"}, "", "identity=person_id:p1"},
		{"card with detail", store.IdentitySelector{CardUUID: "c1"}, "comment=left", "identity=card_uuid:c1; comment=left"},
		{"fascn", store.IdentitySelector{FASCN: []byte{0xd4, 0x32}}, "", "identity=fascn:d432"},
		{"no selector", store.IdentitySelector{}, "x", "identity=invalid; x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := audit.Identity("webhook", "terminate", tc.sel, []string{"01"}, tc.detail)
			if e.Detail != tc.wantDetail || e.Actor != "webhook" || e.Action != "terminate" || e.PersonID != tc.sel.PersonID ||
				e.CardUUID != tc.sel.CardUUID || !slices.Equal(e.Serials, []string{"01"}) || !e.At.IsZero() || e.Outcome != "" {
				t.Fatalf("Identity = %+v", e)
			}
		})
	}
}
