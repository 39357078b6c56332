package store

import (
	"context"
	"errors"
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
