package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func appendEvents(t *testing.T, s Store, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := s.AppendAudit(context.Background(), AuditEvent{At: t0.Add(time.Duration(i) * time.Second), Actor: "piv:p", Action: "enroll",
			PersonID: "p", Serials: []string{"01", "02"}, Outcome: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAuditTampering: every kind of tampering is found and named.
func TestAuditTampering(t *testing.T) {
	tests := []struct {
		name    string
		tamper  []string
		wantSeq int64
		want    string
	}{
		{"intact", nil, 0, ""},
		{"edited actor", []string{`UPDATE audit_events SET actor = 'admin:x' WHERE seq = 3`}, 3, "edited"},
		{"edited serials", []string{`UPDATE audit_events SET serials = '01' WHERE seq = 2`}, 2, "edited"},
		{"edited and rehashed", []string{`UPDATE audit_events SET outcome = 'refused', hash = '` + strings.Repeat("a", 64) + `' WHERE seq = 2`}, 2, "edited"},
		{"deleted", []string{`DELETE FROM audit_events WHERE seq = 3`}, 3, "deleted"},
		{"deleted last", []string{`DELETE FROM audit_events WHERE seq = 5`}, 5, "the last were deleted"},
		{"deleted first and renumbered", []string{`DELETE FROM audit_events WHERE seq = 1`, `UPDATE audit_events SET seq = seq - 1`}, 1, "prev_hash"},
		{"reordered", []string{`UPDATE audit_events SET seq = 100 WHERE seq = 2`, `UPDATE audit_events SET seq = 2 WHERE seq = 3`, `UPDATE audit_events SET seq = 3 WHERE seq = 100`}, 2, "prev_hash"},
		{"inserted", []string{`UPDATE audit_events SET seq = seq + 10 WHERE seq >= 3`, `UPDATE audit_events SET seq = seq - 9 WHERE seq >= 13`,
			`INSERT INTO audit_events (seq, at, actor, action, outcome, prev_hash, hash) SELECT 3, at, actor, action, outcome, hash, hash FROM audit_events WHERE seq = 2`}, 3, "edited"},
		// Events past the head were taken for appends made while verify
		// ran, and not checked: an edit hidden by moving the head back,
		// or a row planted at head+1 (every later append then fails).
		{"edited and the head moved back", []string{`UPDATE audit_events SET actor = 'system' WHERE seq = 5`,
			`UPDATE audit_head SET seq = 4, hash = (SELECT hash FROM audit_events WHERE seq = 4) WHERE id = 1`}, 5, "past the head"},
		{"planted past the head", []string{
			`INSERT INTO audit_events (seq, at, actor, action, outcome, prev_hash, hash) SELECT 6, at, actor, action, outcome, hash, hash FROM audit_events WHERE seq = 5`}, 6, "past the head"},
	}
	for name, open := range engines(t) {
		for _, tc := range tests {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				s := open(t)
				appendEvents(t, s, 5)
				for _, q := range tc.tamper {
					if _, err := s.(*DB).w.Exec(q); err != nil {
						t.Fatalf("%s: %v", q, err)
					}
				}
				n, err := VerifyAudit(context.Background(), s)
				if tc.want == "" {
					if err != nil || n != 5 {
						t.Fatalf("intact chain: %d, %v", n, err)
					}
					return
				}
				var p *AuditProblem
				if !errors.As(err, &p) || p.Seq != tc.wantSeq || !strings.Contains(p.Reason, tc.want) {
					t.Fatalf("got %v, want seq %d %q", err, tc.wantSeq, tc.want)
				}
			})
		}
	}
}

// TestAuditConcurrentAppends: appends from many goroutines form one chain.
func TestAuditConcurrentAppends(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		var wg sync.WaitGroup
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < 10; j++ {
					if _, err := s.AppendAudit(context.Background(), AuditEvent{At: t0, Actor: "system", Action: "sweep", Outcome: "ok"}); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if n, err := VerifyAudit(context.Background(), s); err != nil || n != 80 {
			t.Fatalf("%d events, %v", n, err)
		}
		evs, err := s.AuditEvents(context.Background(), 0, 0, "p")
		if err != nil || len(evs) != 0 {
			t.Fatalf("person filter: %v %v", evs, err)
		}
	})
}

// auditOddities are events whose canonical form has escapes, non-ASCII
// text, the field names of the chain in values, and empty optional fields.
var auditOddities = []AuditEvent{
	{At: t0, Actor: "system", Action: "sweep", Outcome: "ok"},
	{At: t0.Add(1500 * time.Millisecond), Actor: `admin:CN=O'Brien "Ops" <ops&co>`, Action: "revoke", PersonID: "p-1", CardUUID: "c-1",
		Serials: []string{"0a", "0b"}, Source: "203.0.113.7", Outcome: "refused: \\ \t \n \u00e9 \u2028 \U0001F511", Detail: `"prev_hash":"","hash":""}`},
	{At: t0.In(time.FixedZone("EST", -5*3600)), Actor: "piv:p", Action: "enroll", Outcome: "ok", Detail: "\x01\x1f control characters (PostgreSQL text holds no NUL and only valid UTF-8)"},
	{At: t0, Actor: "webhook", Action: "terminate", Outcome: "ok", Serials: []string{""}, Detail: `{"seq":0,`},
}

// TestAuditChainMiddle: the canonical form is chainHead, the seq, the
// middle, the previous hash and chainTail, for every oddity; and the hash
// over that assembly is ChainHash (what PostgreSQL computes).
func TestAuditChainMiddle(t *testing.T) {
	for i, e := range auditOddities {
		e.Seq, e.PrevHash = int64(1000+i), strings.Repeat("ab", 32)
		mid, err := e.chainMiddle()
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		c := e
		c.At = e.At.UTC().Truncate(time.Second)
		want, _ := json.Marshal(c)
		got := chainHead + strconv.FormatInt(e.Seq, 10) + string(mid) + e.PrevHash + chainTail
		if got != string(want) {
			t.Fatalf("event %d:\n got %s\nwant %s", i, got, want)
		}
		h := sha256.Sum256([]byte(e.PrevHash + "\x00" + got))
		if hex.EncodeToString(h[:]) != e.ChainHash() {
			t.Fatalf("event %d: the assembled form does not hash to ChainHash", i)
		}
	}
}

// TestAuditOdditiesVerify: on every engine (PostgreSQL computes the hash in
// SQL), odd events chain, verify, and read back as written.
func TestAuditOdditiesVerify(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		for i, e := range auditOddities {
			got, err := s.AppendAudit(ctx, e)
			if err != nil {
				t.Fatalf("event %d: %v", i, err)
			}
			if got.Seq != int64(i+1) || got.Hash != got.ChainHash() {
				t.Fatalf("event %d: seq %d hash %s, ChainHash %s", i, got.Seq, got.Hash, got.ChainHash())
			}
		}
		if n, err := VerifyAudit(ctx, s); err != nil || n != int64(len(auditOddities)) {
			t.Fatalf("verify: %d, %v", n, err)
		}
		seq, hash, err := s.AuditHead(ctx)
		evs, _ := s.AuditEvents(ctx, 0, 0, "")
		if err != nil || seq != int64(len(auditOddities)) || len(evs) != len(auditOddities) || hash != evs[len(evs)-1].Hash {
			t.Fatalf("head %d %s, %d events, %v", seq, hash, len(evs), err)
		}
	})
}

// TestAuditNULAndInvalidUTF8: an event whose text holds a NUL or bytes
// that are not UTF-8 (an admin's comment, a certificate's name) is
// recorded on both engines, each such character as U+FFFD, chained and
// verified alike. PostgreSQL's text holds neither, so before, the append
// failed there, after the action it records had been done: an admin
// could revoke with a NUL in the comment and leave no audit event.
func TestAuditNULAndInvalidUTF8(t *testing.T) {
	forEachEngine(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		e := AuditEvent{At: t0, Actor: "admin:CN=Ops\xff", Action: "revoke", Outcome: "ok", Serials: []string{"0a"},
			Detail: "reason=keyCompromise; comment=a\x00b"}
		got, err := s.AppendAudit(ctx, e)
		if err != nil {
			t.Fatalf("append: %v", err)
		}
		if n, err := VerifyAudit(ctx, s); err != nil || n != 1 {
			t.Fatalf("verify: %d, %v", n, err)
		}
		evs, err := s.AuditEvents(ctx, 0, 0, "")
		if err != nil || len(evs) != 1 {
			t.Fatalf("read back: %d events, %v", len(evs), err)
		}
		if r := evs[0]; r.Detail != "reason=keyCompromise; comment=a\uFFFDb" || r.Actor != "admin:CN=Ops\uFFFD" || r.Hash != got.Hash {
			t.Fatalf("read back actor %q detail %q hash %s, want U+FFFD for the NUL and the stray byte, hash %s", r.Actor, r.Detail, r.Hash, got.Hash)
		}
	})
}

// TestAuditAnchors: someone who can write the database can rewrite the
// whole chain and its head, and VerifyAudit finds it intact; audit.md
// says to keep the last hash elsewhere, but nothing printed it or checked
// against it. VerifyAuditAnchored reports the last seq and hash, and
// fails when a kept (seq, hash) is not in the chain.
func TestAuditAnchors(t *testing.T) {
	for name, open := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s := open(t)
			appendEvents(t, s, 5)
			v, err := VerifyAuditAnchored(ctx, s, nil)
			if err != nil || v.Events != 5 || v.LastSeq != 5 || len(v.LastHash) != 64 {
				t.Fatalf("intact chain: %+v, %v", v, err)
			}
			kept := AuditAnchor{Seq: v.LastSeq, Hash: v.LastHash}
			if _, err := VerifyAuditAnchored(ctx, s, []AuditAnchor{kept, {Seq: 2, Hash: mustEvent(t, s, 2).Hash}}); err != nil {
				t.Fatalf("the chain with its own anchors: %v", err)
			}
			// The same number of events, rewritten whole: intact to
			// VerifyAudit, not to the anchor.
			rewritten := open(t)
			for i := 0; i < 5; i++ {
				if _, err := rewritten.AppendAudit(ctx, AuditEvent{At: t0.Add(time.Duration(i) * time.Second), Actor: "piv:p", Action: "enroll",
					PersonID: "p", Outcome: "refused"}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := VerifyAudit(ctx, rewritten); err != nil {
				t.Fatalf("a rewritten chain is consistent: %v", err)
			}
			var p *AuditProblem
			if _, err := VerifyAuditAnchored(ctx, rewritten, []AuditAnchor{kept}); !errors.As(err, &p) || p.Seq != 5 || !strings.Contains(p.Reason, "anchor") {
				t.Fatalf("a rewritten chain against the kept anchor: %v", err)
			}
			if _, err := VerifyAuditAnchored(ctx, s, []AuditAnchor{{Seq: 7, Hash: kept.Hash}}); !errors.As(err, &p) || !strings.Contains(p.Reason, "anchor") {
				t.Fatalf("an anchor past the end (events deleted with the head): %v", err)
			}
		})
	}
}

func mustEvent(t *testing.T, s Store, seq int64) AuditEvent {
	t.Helper()
	evs, err := s.AuditEvents(context.Background(), seq-1, 1, "")
	if err != nil || len(evs) != 1 {
		t.Fatalf("event %d: %v", seq, err)
	}
	return evs[0]
}

// appendingStore appends an event before each read: verify runs while
// appends go on.
type appendingStore struct{ Store }

func (a appendingStore) busy(ctx context.Context) error {
	_, err := a.Store.AppendAudit(ctx, AuditEvent{At: t0, Actor: "system", Action: "busy", Outcome: "ok"})
	return err
}

func (a appendingStore) AuditHead(ctx context.Context) (int64, string, error) {
	if err := a.busy(ctx); err != nil {
		return 0, "", err
	}
	return a.Store.AuditHead(ctx)
}

func (a appendingStore) AuditLastSeq(ctx context.Context) (int64, error) {
	if err := a.busy(ctx); err != nil {
		return 0, err
	}
	return a.Store.AuditLastSeq(ctx)
}

func (a appendingStore) AuditEvents(ctx context.Context, after int64, limit int, person string) ([]AuditEvent, error) {
	if err := a.busy(ctx); err != nil {
		return nil, err
	}
	return a.Store.AuditEvents(ctx, after, limit, person)
}

// TestAuditPlantedFarPastTheHeadUnderLoad: an event planted far past the
// head passed verify on a busy gateway (the head moved at every look, and
// after ten looks verify gave up looking; or an append between two looks
// hid it). One past even the head of now is a break, however busy; and a
// chain appended to at every read is intact.
func TestAuditPlantedFarPastTheHeadUnderLoad(t *testing.T) {
	for name, open := range engines(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			appendEvents(t, s, 5)
			if n, err := VerifyAudit(context.Background(), appendingStore{s}); err != nil || n < 5 {
				t.Fatalf("an intact chain appended to at every read: %d, %v", n, err)
			}
			if _, err := s.(*DB).w.Exec(`INSERT INTO audit_events (seq, at, actor, action, outcome, prev_hash, hash) SELECT 1000000, at, actor, action, outcome, hash, hash FROM audit_events WHERE seq = 5`); err != nil {
				t.Fatal(err)
			}
			_, err := VerifyAudit(context.Background(), appendingStore{s})
			var p *AuditProblem
			if !errors.As(err, &p) || p.Seq != 1000000 || !strings.Contains(p.Reason, "past the head") {
				t.Fatalf("verify under appends: %v, want the event at seq 1000000 past the head", err)
			}
		})
	}
}

// TestAuditEmptiedIsABreak: a log whose every event was deleted, the head
// reset with them, verified "intact: 0 events" in a store that recorded
// certificates (each issuance writes events): the whole history gone,
// and verify content. An empty log is a break where certificates were
// issued.
func TestAuditEmptiedIsABreak(t *testing.T) {
	for name, open := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s := open(t)
			if _, err := VerifyAudit(ctx, s); err != nil {
				t.Fatalf("a new store's empty log: %v", err)
			}
			appendEvents(t, s, 3)
			if err := s.CreateIssuanceIntent(ctx, CertificateRecord{Serial: "0a", Issuer: "ca", Profile: "p", SPKISHA256: "k", PersonID: "p",
				NotBefore: t0, NotAfter: t0.Add(time.Hour), CreatedAt: t0}); err != nil {
				t.Fatal(err)
			}
			if err := s.RecordIssued(ctx, "0a", []byte{0x30}, "h", "", t0); err != nil {
				t.Fatal(err)
			}
			for _, q := range []string{`DELETE FROM audit_events`, `UPDATE audit_head SET seq = 0, hash = '` + GenesisHash + `' WHERE id = 1`} {
				if _, err := s.(*DB).w.Exec(q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			_, err := VerifyAudit(ctx, s)
			var p *AuditProblem
			if !errors.As(err, &p) || !strings.Contains(p.Reason, "empty") {
				t.Fatalf("an emptied log beside recorded certificates: %v, want a break", err)
			}
		})
	}
}
