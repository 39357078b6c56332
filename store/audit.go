package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// AuditEvent is one entry of the hash-chained audit log. It never holds a
// secret: no PIN, password, QR secret, token or key.
type AuditEvent struct {
	Seq      int64     `json:"seq"`
	At       time.Time `json:"at"`
	Actor    string    `json:"actor"`  // "piv:<person id>", "admin:<CN>", "portal:<CN>", "webhook", "device", "system"
	Action   string    `json:"action"` // e.g. "piv-auth", "enroll", "redeem", "confirm", "revoke", "terminate"
	PersonID string    `json:"person_id,omitempty"`
	CardUUID string    `json:"card_uuid,omitempty"`
	Serials  []string  `json:"serials,omitempty"`
	Source   string    `json:"source,omitempty"`
	Outcome  string    `json:"outcome"` // "ok" or what refused it
	Detail   string    `json:"detail,omitempty"`
	PrevHash string    `json:"prev_hash"`
	Hash     string    `json:"hash"`
}

// GenesisHash is the previous hash of the first event.
var GenesisHash = strings.Repeat("0", 64)

// ChainHash is the event's hash: SHA-256 over the previous hash and the
// canonical form (fixed field order, UTC seconds, no hash), hex.
func (e AuditEvent) ChainHash() string {
	c := e
	c.Hash = ""
	c.At = e.At.UTC().Truncate(time.Second)
	b, _ := json.Marshal(c) // a struct of strings, ints and a time: cannot fail
	h := sha256.New()
	h.Write([]byte(e.PrevHash))
	h.Write([]byte{0})
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

// AuditStore keeps the audit log.
type AuditStore interface {
	// AppendAudit adds an event at the head of the chain and returns it
	// with its seq and hashes.
	AppendAudit(ctx context.Context, e AuditEvent) (AuditEvent, error)
	// AuditEvents lists events after seq afterSeq, in order, at most limit
	// (0: all); with personID set, only that person's.
	AuditEvents(ctx context.Context, afterSeq int64, limit int, personID string) ([]AuditEvent, error)
	// AuditHead is the last seq and hash as recorded by the appends.
	AuditHead(ctx context.Context) (int64, string, error)
	// AuditLastSeq is the highest seq stored (0: none).
	AuditLastSeq(ctx context.Context) (int64, error)
}

func (s *DB) AppendAudit(ctx context.Context, e AuditEvent) (AuditEvent, error) {
	e.At = e.At.UTC().Truncate(time.Second)
	// Serials are stored comma-joined: an empty one would not read back,
	// and the event would then fail verification as if edited.
	e.Serials = slices.DeleteFunc(slices.Clone(e.Serials), func(s string) bool { return s == "" })
	if len(e.Serials) == 0 {
		e.Serials = nil
	}
	e = e.storable()
	if s.dialect == "postgres" {
		return s.appendAuditPG(ctx, e)
	}
	// A group write: the events of concurrent callers are chained in one
	// transaction, which takes the head row once.
	err := s.groupedTx(ctx, func(ctx context.Context, tx execer) error {
		// The head row first: this UPDATE serialises appends.
		if err := tx.QueryRowContext(ctx, `UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash`).Scan(&e.Seq, &e.PrevHash); err != nil {
			return wrapDB(err)
		}
		e.Hash = e.ChainHash()
		if _, err := tx.ExecContext(ctx, `UPDATE audit_head SET hash = $1 WHERE id = 1`, e.Hash); err != nil {
			return wrapDB(err)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO audit_events (seq, at, actor, action, person_id, card_uuid, serials, source, outcome, detail, prev_hash, hash)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
			e.Seq, ts(e.At), e.Actor, e.Action, e.PersonID, e.CardUUID, strings.Join(e.Serials, ","), e.Source, e.Outcome, e.Detail, e.PrevHash, e.Hash)
		return wrapDB(err)
	})
	return e, err
}

// storable is the event as both engines store it: PostgreSQL's text holds
// no NUL and only valid UTF-8, so each NUL and each byte that is not
// UTF-8 becomes U+FFFD, before the hash, on every engine. An event is
// never lost for what a comment or a certificate's name contains (the
// action it records is done by then).
func (e AuditEvent) storable() AuditEvent {
	clean := func(s string) string {
		if utf8.ValidString(s) && !strings.Contains(s, "\x00") {
			return s
		}
		return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
	}
	for _, f := range []*string{&e.Actor, &e.Action, &e.PersonID, &e.CardUUID, &e.Source, &e.Outcome, &e.Detail} {
		*f = clean(*f)
	}
	if e.Serials != nil {
		e.Serials = slices.Clone(e.Serials)
		for i := range e.Serials {
			e.Serials[i] = clean(e.Serials[i])
		}
	}
	return e
}

// appendAuditPG appends on PostgreSQL in one statement: the head row's
// UPDATE computes the new hash itself (ChainHash, with the seq and the
// previous hash it holds), and the event's INSERT takes both from it. The
// head row, which every append of every replica takes in turn, is then
// held for one statement and its commit, not for three statements and two
// more round trips (BEGIN, COMMIT): at about 0.4 ms of waiting an append,
// that lock was where appends queued across the cluster.
func (s *DB) appendAuditPG(ctx context.Context, e AuditEvent) (AuditEvent, error) {
	mid, err := e.chainMiddle()
	if err != nil {
		return e, err
	}
	// seq = seq + 1, prev_hash = hash and the new hash all read the row as
	// it was before this UPDATE (and, after waiting for a concurrent
	// append's commit, as that one left it). The zero byte is decode('00',
	// 'hex'), not a '\x00' literal, whose meaning depends on
	// standard_conforming_strings.
	err = s.w.QueryRowContext(ctx, `WITH head AS (
			UPDATE audit_head SET seq = seq + 1, prev_hash = hash,
				hash = encode(sha256(convert_to(hash, 'UTF8') || decode('00', 'hex')
					|| convert_to('{"seq":' || (seq + 1)::text, 'UTF8') || $1::bytea
					|| convert_to(hash || '","hash":""}', 'UTF8')), 'hex')
			WHERE id = 1 RETURNING seq, prev_hash, hash)
		INSERT INTO audit_events (seq, at, actor, action, person_id, card_uuid, serials, source, outcome, detail, prev_hash, hash)
		SELECT head.seq, $2::bigint, $3::text, $4::text, $5::text, $6::text, $7::text, $8::text, $9::text, $10::text, head.prev_hash, head.hash FROM head
		RETURNING seq, prev_hash, hash`,
		mid, ts(e.At), e.Actor, e.Action, e.PersonID, e.CardUUID, strings.Join(e.Serials, ","), e.Source, e.Outcome, e.Detail).Scan(&e.Seq, &e.PrevHash, &e.Hash)
	if err != nil {
		return e, wrapDB(err)
	}
	if want := e.ChainHash(); e.Hash != want {
		// Recorded already: say so loudly (credgw audit verify names it).
		return e, fmt.Errorf("store: audit event %d: the database chained it with hash %s, credgw computes %s", e.Seq, e.Hash, want)
	}
	return e, nil
}

// Canonical-form pieces that chainMiddle splits on: the seq is the first
// field and prev_hash and hash the last two (never omitted), and inside
// a JSON string a quote is always escaped, so neither piece can occur in
// a field's value.
const (
	chainHead = `{"seq":`
	chainTail = `","hash":""}`
)

// chainMiddle is the canonical form ChainHash hashes, without what only
// the head row knows: everything between the seq's digits and the
// previous hash. The form is chainHead + seq + middle + prev_hash +
// chainTail.
func (e AuditEvent) chainMiddle() ([]byte, error) {
	c := e
	c.Seq, c.PrevHash, c.Hash = 0, "", ""
	c.At = e.At.UTC().Truncate(time.Second)
	b, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	head, tail := chainHead+"0", chainTail
	if !strings.HasPrefix(string(b), head) || !strings.HasSuffix(string(b), tail) || !strings.HasSuffix(string(b[:len(b)-len(tail)]), `"prev_hash":"`) {
		return nil, fmt.Errorf("store: audit event: unexpected canonical form %.40q", b)
	}
	return b[len(head) : len(b)-len(tail)], nil
}

func (s *DB) AuditEvents(ctx context.Context, afterSeq int64, limit int, personID string) ([]AuditEvent, error) {
	q := `SELECT seq, at, actor, action, person_id, card_uuid, serials, source, outcome, detail, prev_hash, hash FROM audit_events WHERE seq > $1`
	args := []any{afterSeq}
	if personID != "" {
		// Any case of the person's id: events written before ids were
		// folded (migration 00021) keep the card's spelling. The
		// expression is the one audit_events_person indexes.
		q += ` AND ` + s.fold("person_id") + ` = ` + s.fold("$2")
		args = append(args, personID)
	}
	q += ` ORDER BY seq`
	if limit > 0 {
		q += fmt.Sprintf(` LIMIT %d`, limit)
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, wrapDB(err)
	}
	defer rows.Close()
	var out []AuditEvent
	for rows.Next() {
		var e AuditEvent
		var at int64
		var serials string
		if err := rows.Scan(&e.Seq, &at, &e.Actor, &e.Action, &e.PersonID, &e.CardUUID, &serials, &e.Source, &e.Outcome, &e.Detail, &e.PrevHash, &e.Hash); err != nil {
			return nil, wrapDB(err)
		}
		e.At = fromTS(at).UTC().Truncate(time.Second) // as hashed: a sub-second edit shows nothing
		if serials != "" {
			e.Serials = strings.Split(serials, ",")
		}
		out = append(out, e)
	}
	return out, wrapDB(rows.Err())
}

func (s *DB) AuditLastSeq(ctx context.Context) (int64, error) {
	var seq int64
	err := s.r.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM audit_events`).Scan(&seq)
	return seq, wrapDB(err)
}

func (s *DB) AuditHead(ctx context.Context) (int64, string, error) {
	var seq int64
	var hash string
	err := s.r.QueryRowContext(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&seq, &hash)
	return seq, hash, wrapDB(err)
}

// AuditProblem is where verification found the chain broken.
type AuditProblem struct {
	Seq    int64
	Reason string
}

func (p *AuditProblem) Error() string {
	return fmt.Sprintf("audit log broken at seq %d: %s", p.Seq, p.Reason)
}

// VerifyAudit walks the whole chain in order of seq and returns the first
// break: an edited event (its hash no longer matches its contents), a
// deleted, inserted or reordered event (a seq gap, or a prev_hash that is
// not the previous event's hash), or deleted trailing events (the head says
// more). It returns how many events it checked.
func VerifyAudit(ctx context.Context, s AuditStore) (int64, error) {
	v, err := VerifyAuditAnchored(ctx, s, nil)
	return v.Events, err
}

// AuditAnchor is an event's seq and hash kept outside the database (a
// ticket, a WORM store): a chain rewritten whole, head included, is
// consistent, but no longer has it.
type AuditAnchor struct {
	Seq  int64
	Hash string
}

// AuditVerified is what VerifyAuditAnchored checked: the events, and the
// last one's seq and hash (the anchor to keep for the next check).
type AuditVerified struct {
	Events   int64
	LastSeq  int64
	LastHash string
}

// VerifyAuditAnchored is VerifyAudit that also requires each anchor's
// event to be in the chain with the anchor's hash.
func VerifyAuditAnchored(ctx context.Context, s AuditStore, anchors []AuditAnchor) (AuditVerified, error) {
	n, last, err := verifyAudit(ctx, s, anchors)
	if err == nil && n == 0 {
		err = emptiedLog(ctx, s)
	}
	return AuditVerified{Events: n, LastSeq: n, LastHash: last}, err
}

// emptiedLog finds a log with no event in a store that recorded
// certificates: every issuance writes events, so they were deleted, the
// head reset with them (a store that cannot say passes).
func emptiedLog(ctx context.Context, s AuditStore) error {
	li, ok := s.(interface {
		LiveIssuers(ctx context.Context, now time.Time) ([]LiveIssuer, error)
	})
	if !ok {
		return nil
	}
	issuers, err := li.LiveIssuers(ctx, time.Time{}) // every certificate issued, expired or not
	if err != nil {
		return err
	}
	n := 0
	for _, i := range issuers {
		n += i.Count
	}
	if n > 0 {
		return &AuditProblem{Seq: 1, Reason: fmt.Sprintf("the log is empty, yet %d certificates are recorded (each issuance writes events): deleted, head and all", n)}
	}
	return nil
}

func verifyAudit(ctx context.Context, s AuditStore, anchors []AuditAnchor) (int64, string, error) {
	headSeq, headHash, err := s.AuditHead(ctx)
	if err != nil {
		return 0, "", err
	}
	kept := map[int64]string{}
	for _, a := range anchors {
		if a.Seq > headSeq {
			return 0, "", &AuditProblem{Seq: a.Seq, Reason: fmt.Sprintf("the log ends at seq %d, before the anchor kept outside (seq %d): events were deleted, the head with them", headSeq, a.Seq)}
		}
		kept[a.Seq] = strings.ToLower(a.Hash)
	}
	prev, want := GenesisHash, int64(1)
	const page = 1000
	var after int64
	for {
		evs, err := s.AuditEvents(ctx, after, page, "")
		if err != nil {
			return want - 1, prev, err
		}
		for _, e := range evs {
			if e.Seq > headSeq {
				// Appended after the head was read: not part of what
				// is checked now.
				evs = nil
				break
			}
			switch {
			case e.Seq != want:
				return want - 1, prev, &AuditProblem{Seq: want, Reason: fmt.Sprintf("event missing (the next stored event is seq %d): deleted", e.Seq)}
			case e.PrevHash != prev:
				return want - 1, prev, &AuditProblem{Seq: e.Seq, Reason: "prev_hash is not the previous event's hash: an event before it was deleted, inserted or reordered"}
			case e.ChainHash() != e.Hash:
				return want - 1, prev, &AuditProblem{Seq: e.Seq, Reason: "its contents do not match its hash: edited"}
			case kept[e.Seq] != "" && kept[e.Seq] != e.Hash:
				return want - 1, prev, &AuditProblem{Seq: e.Seq, Reason: "its hash is not the anchor kept outside the database: the chain was rewritten"}
			}
			prev, want, after = e.Hash, want+1, e.Seq
		}
		if len(evs) < page {
			break
		}
	}
	switch {
	case want-1 != headSeq:
		return want - 1, prev, &AuditProblem{Seq: want, Reason: fmt.Sprintf("the log ends at seq %d but %d events were appended: the last were deleted", want-1, headSeq)}
	case prev != headHash:
		return want - 1, prev, &AuditProblem{Seq: want - 1, Reason: "the last event's hash is not the one recorded at append: edited or replaced"}
	}
	if err := pastTheHead(ctx, s); err != nil {
		return want - 1, prev, err
	}
	return want - 1, prev, nil
}

// pastTheHead finds events stored past the head: not appended by credgw
// (an append moves the head and writes its event in one transaction, so
// whatever event a read sees, a later read of the head covers), but
// planted (every later append then fails on its seq) or left by moving the
// head back over an edit. The last seq is read first, the head after it.
func pastTheHead(ctx context.Context, s AuditStore) error {
	last, err := s.AuditLastSeq(ctx)
	if err != nil {
		return err
	}
	head, _, err := s.AuditHead(ctx)
	if err != nil {
		return err
	}
	if last > head {
		return &AuditProblem{Seq: last, Reason: fmt.Sprintf("an event is stored past the head (seq %d): not appended by credgw, or the head was moved back over it", head)}
	}
	return nil
}
