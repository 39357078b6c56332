// Package audit is how the application services record what they did in
// the hash-chained audit log (docs/audit.md). The services call Log; the
// log itself is kept by store/ (store.AuditStore), which chains and hashes
// the events.
//
// An operation that happened stays done when its event cannot be appended:
// the failure is logged as an error for the operator, never returned.
package audit

import (
	"context"
	"log/slog"
	"time"

	"github.com/credgw/credgw/store"
)

// Store is what the log needs of the store: the audit chain, and the
// credential sets an event names.
type Store interface {
	AppendAudit(ctx context.Context, e store.AuditEvent) (store.AuditEvent, error)
	AuditEvents(ctx context.Context, afterSeq int64, limit int, personID string) ([]store.AuditEvent, error)
	CredentialSet(ctx context.Context, id string) (store.CredentialSet, error)
	CertificatesOfSet(ctx context.Context, setID string) ([]store.CertificateRecord, error)
}

// Log records audit events.
type Log struct {
	st  Store
	log *slog.Logger
	now func() time.Time
}

// New returns a log on st; now is the clock of the events.
func New(st Store, log *slog.Logger, now func() time.Time) *Log {
	if now == nil {
		now = time.Now
	}
	return &Log{st: st, log: log, now: now}
}

// Caller is who made the request an event records, as the transport
// established it.
type Caller struct {
	// Source is the request's source address.
	Source string
	// Admin names an administrator (certificate subject and SHA-256); it
	// replaces the actor "admin" in events.
	Admin string
}

type callerKey struct{}

// WithCaller attaches the caller to the request's context: every event
// recorded for it carries the source address and names the administrator.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// Outcomes of events.
const (
	OK      = "ok"
	Refused = "refused"
	Error   = "error"
)

// Record appends e (at now, outcome "ok" unless set, with the caller's
// source address and administrator name). It outlives the caller's
// cancellation: the operation it records has happened.
func (l *Log) Record(ctx context.Context, e store.AuditEvent) { _ = l.record1(ctx, e) }

// record1 is Record, returning whether the event was appended.
func (l *Log) record1(ctx context.Context, e store.AuditEvent) error {
	e.At = l.now()
	if e.Outcome == "" {
		e.Outcome = OK
	}
	if c, ok := ctx.Value(callerKey{}).(Caller); ok {
		if e.Source == "" {
			e.Source = c.Source
		}
		if e.Actor == "admin" && c.Admin != "" {
			e.Actor = "admin:" + c.Admin
		}
	}
	_, err := l.st.AppendAudit(context.WithoutCancel(ctx), e)
	if err != nil {
		l.log.ErrorContext(ctx, "audit: append failed", "action", e.Action, "person_id", e.PersonID, "cause", err.Error())
	}
	return err
}

// Set records an action on a credential set, with its holder and serials.
func (l *Log) Set(ctx context.Context, actor, action, setID, detail string) {
	l.set(ctx, actor, action, OK, setID, detail)
}

// SetChecked is Set for an action that must not happen unrecorded: it
// returns the error when the event could not be appended.
func (l *Log) SetChecked(ctx context.Context, actor, action, setID, detail string) error {
	cs, serials := l.held(ctx, setID)
	return l.record1(ctx, setEvent(actor, action, OK, cs, serials, detail))
}

// Refused records a refused action on a credential set; detail says why.
func (l *Log) Refused(ctx context.Context, actor, action, setID, detail string) {
	l.set(ctx, actor, action, Refused, setID, detail)
}

// Failed records an action on a credential set that the gateway failed to
// carry out (outcome "error"); detail says what failed.
func (l *Log) Failed(ctx context.Context, actor, action, setID, detail string) {
	l.set(ctx, actor, action, Error, setID, detail)
}

func (l *Log) set(ctx context.Context, actor, action, outcome, setID, detail string) {
	held, serials := l.held(ctx, setID)
	l.record(ctx, actor, action, outcome, held, serials, detail)
}

// heldTimeout bounds held's reads, which no caller's deadline does.
const heldTimeout = 10 * time.Second

// held reads a set and its serials for an event (as much as can be read).
// A caller that went away still gets its event whole (the append does not
// wait for it either): a device hanging up mid-delivery is a common case.
func (l *Log) held(ctx context.Context, setID string) (store.CredentialSet, []string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), heldTimeout)
	defer cancel()
	held := store.CredentialSet{ID: setID}
	if cs, err := l.st.CredentialSet(ctx, setID); err == nil {
		held = cs
	}
	var serials []string
	if recs, err := l.st.CertificatesOfSet(ctx, setID); err == nil {
		for _, r := range recs {
			serials = append(serials, r.Serial)
		}
	}
	return held, serials
}

// SetOf records an action on a credential set the caller holds, with the
// serials it holds: Set without reading them again.
func (l *Log) SetOf(ctx context.Context, actor, action string, cs store.CredentialSet, serials []string, detail string) {
	l.record(ctx, actor, action, OK, cs, serials, detail)
}

func (l *Log) record(ctx context.Context, actor, action, outcome string, cs store.CredentialSet, serials []string, detail string) {
	l.Record(ctx, setEvent(actor, action, outcome, cs, serials, detail))
}

// setEvent is the event of an action on a credential set.
func setEvent(actor, action, outcome string, cs store.CredentialSet, serials []string, detail string) store.AuditEvent {
	e := store.AuditEvent{Actor: actor, Action: action, Outcome: outcome, Detail: "credential_set_id=" + cs.ID,
		PersonID: cs.PersonID, CardUUID: cs.CardUUID, Serials: serials}
	if detail != "" {
		e.Detail += "; " + detail
	}
	if e.Actor == "" && cs.PersonID != "" {
		e.Actor = "piv:" + cs.PersonID
	}
	return e
}

// Identity is the event of an action on every credential of a PIV
// identity.
func Identity(actor, action string, sel store.IdentitySelector, serials []string, detail string) store.AuditEvent {
	e := store.AuditEvent{Actor: actor, Action: action, PersonID: sel.PersonID, CardUUID: sel.CardUUID, Serials: serials,
		Detail: "identity=" + sel.String()}
	if detail != "" {
		e.Detail += "; " + detail
	}
	return e
}

// Events pages through the log in order: at most limit events after
// afterSeq, of one person when personID is set.
func (l *Log) Events(ctx context.Context, afterSeq int64, limit int, personID string) ([]store.AuditEvent, error) {
	return l.st.AuditEvents(ctx, afterSeq, limit, personID)
}
