package server

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/credgw/credgw/activation/lifecycle"
	"github.com/credgw/credgw/activation/notify"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/store"
)

// The termination webhook: an identity management system tells credgw that
// a PIV identity account has ended (FIPS 201-3 §2.9.4; SP 800-157r1 §2.4:
// do not wait for the card certificate's revocation). The request is
//
//	POST /v1/webhooks/termination
//	X-Credgw-Timestamp: <unix seconds>
//	X-Credgw-Signature: sha256=<hex HMAC-SHA-256(key, timestamp "." body)>
//	{"card_uuid": "…"} | {"fascn": "<50 hex digits>"} | {"person_id": "…"}, optional "comment"
//
// A timestamp outside termination_webhook.max_skew is refused, so a captured
// request cannot be replayed later; inside the window a replay terminates an
// identity that is terminated already, which changes nothing.
const webhookPath = "/v1/webhooks/termination"

type terminationEvent struct {
	FASCN    string `json:"fascn,omitempty"`
	CardUUID string `json:"card_uuid,omitempty"`
	PersonID string `json:"person_id,omitempty"`
	Comment  string `json:"comment,omitempty"`
}

type webhook struct {
	s   *Server
	key []byte
}

func loadWebhookKey(cfg *Config) ([]byte, error) {
	key, err := notify.ReadKeyFile(cfg.Path(cfg.Webhook.SecretFile), "termination_webhook.secret_file")
	if err != nil {
		return nil, err
	}
	// The receiver of notifications holds their key to verify them: with
	// the same key it could sign terminations.
	if n := cfg.Notify.Webhook; n.URL != "" && n.SecretFile != "" {
		// Compared as HMAC keys: one padded with zeros, or one longer than
		// the hash's block and its digest, sign alike.
		probe := []byte("credgw webhook key probe")
		if other, err := notify.ReadKeyFile(cfg.Path(n.SecretFile), "notifications.webhook.secret_file"); err == nil &&
			hmac.Equal([]byte(notify.Signature(key, time.Unix(0, 0), probe)), []byte(notify.Signature(other, time.Unix(0, 0), probe))) {
			return nil, errors.New("termination_webhook.secret_file holds the key of notifications.webhook.secret_file: " +
				"whoever receives notifications could sign terminations; give each its own key (openssl rand -hex 32)")
		}
	}
	return key, nil
}

// WebhookSignature is the X-Credgw-Signature value for a body sent at ts.
func WebhookSignature(key []byte, ts time.Time, body []byte) string {
	return notify.Signature(key, ts, body)
}

// checkWebhook verifies the timestamp window and the signature and parses
// the event; its errors say what to fix and are safe to return.
func checkWebhook(key []byte, now time.Time, maxSkew time.Duration, personAttr, tsHeader, sigHeader string, body []byte) (terminationEvent, store.IdentitySelector, error) {
	var ev terminationEvent
	secs, err := strconv.ParseInt(tsHeader, 10, 64)
	if err != nil {
		return ev, store.IdentitySelector{}, errors.New("X-Credgw-Timestamp: want unix seconds")
	}
	ts := time.Unix(secs, 0)
	// The signature first: only an authenticated sender learns about the
	// clock.
	if !hmac.Equal([]byte(sigHeader), []byte(WebhookSignature(key, ts, body))) {
		return ev, store.IdentitySelector{}, errors.New("X-Credgw-Signature does not match: sign \"<timestamp>.<body>\" with HMAC-SHA-256 under the shared key")
	}
	if d := now.Sub(ts); d > maxSkew || d < -maxSkew {
		return ev, store.IdentitySelector{}, fmt.Errorf("X-Credgw-Timestamp is %s from the gateway's clock (at most %s): send a fresh request", d.Round(time.Second), maxSkew)
	}
	if err := exactKeys(body); err != nil {
		return ev, store.IdentitySelector{}, fmt.Errorf("body: want JSON {\"card_uuid\"|\"fascn\"|\"person_id\": …, \"comment\": …}: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ev); err != nil {
		return ev, store.IdentitySelector{}, fmt.Errorf("body: want JSON {\"card_uuid\"|\"fascn\"|\"person_id\": …, \"comment\": …}: %v", err)
	}
	var sel *credgwv1.PIVIdentitySelector
	n := 0
	if ev.FASCN != "" {
		n++
		raw, err := hex.DecodeString(ev.FASCN)
		if err != nil {
			return ev, store.IdentitySelector{}, errors.New("fascn: want the 25-byte FASC-N in hex")
		}
		sel = &credgwv1.PIVIdentitySelector{Selector: &credgwv1.PIVIdentitySelector_Fascn{Fascn: raw}}
	}
	if ev.CardUUID != "" {
		n++
		sel = &credgwv1.PIVIdentitySelector{Selector: &credgwv1.PIVIdentitySelector_CardUuid{CardUuid: ev.CardUUID}}
	}
	if ev.PersonID != "" {
		n++
		sel = &credgwv1.PIVIdentitySelector{Selector: &credgwv1.PIVIdentitySelector_PersonId{PersonId: ev.PersonID}}
	}
	if n != 1 {
		return ev, store.IdentitySelector{}, errors.New("body: give exactly one of fascn, card_uuid, person_id")
	}
	if len(ev.Comment) > 1024 {
		return ev, store.IdentitySelector{}, errors.New("comment: at most 1024 bytes")
	}
	st, err := selector(sel, personAttr)
	if err != nil {
		return ev, store.IdentitySelector{}, errors.New(strings.TrimPrefix(err.Error(), "rpc error: code = InvalidArgument desc = "))
	}
	return ev, st, nil
}

// exactKeys refuses a body whose object has a key twice or in another case
// than documented: encoding/json matches keys without regard to case and
// keeps the last of two, so {"person_id": A, "PERSON_ID": B} would
// terminate B while a log or a proxy that reads the first sees A.
func exactKeys(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return errors.New("not a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		k, _ := t.(string)
		switch {
		case k != "card_uuid" && k != "fascn" && k != "person_id" && k != "comment":
			return fmt.Errorf("unknown field %q (keys are lower case)", k)
		case seen[k]:
			return fmt.Errorf("field %q twice", k)
		}
		seen[k] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return err
		}
	}
	return nil
}

func (h *webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 16<<10))
	if err != nil {
		http.Error(w, "body: at most 16 KiB", http.StatusRequestEntityTooLarge)
		return
	}
	ev, sel, err := checkWebhook(h.key, h.s.now(), h.s.cfg.Webhook.MaxSkew.Duration, h.s.cfg.PIV.PersonAttribute,
		r.Header.Get("X-Credgw-Timestamp"), r.Header.Get("X-Credgw-Signature"), body)
	if err != nil {
		h.s.log.WarnContext(r.Context(), "termination webhook refused", "source", r.RemoteAddr, "cause", err.Error())
		code := http.StatusBadRequest
		if strings.HasPrefix(err.Error(), "X-Credgw-") {
			code = http.StatusUnauthorized
		}
		http.Error(w, err.Error(), code)
		return
	}
	if h.s.lifecycle == nil {
		http.Error(w, "issuance is not configured (no ca section in the config)", http.StatusServiceUnavailable)
		return
	}
	// A replay is recognised until the timestamp could no longer pass
	// the skew check: its signature is remembered that long.
	sig := r.Header.Get("X-Credgw-Signature")
	ts, _ := strconv.ParseInt(r.Header.Get("X-Credgw-Timestamp"), 10, 64) // checked by checkWebhook
	window := time.Unix(ts, 0).Add(h.s.cfg.Webhook.MaxSkew.Duration)
	// The termination runs to its end even if the sender hangs up.
	serials, err := h.s.lifecycle.TerminateOnce(context.WithoutCancel(r.Context()), sig, window, sel, ev.Comment, r.RemoteAddr)
	if errors.Is(err, lifecycle.ErrReplayed) {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	if err != nil {
		h.s.log.Error("termination webhook failed", "identity", sel.String(), "cause", err.Error())
		http.Error(w, "the termination could not be completed; send it again", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"terminated": sel.String(), "revoked_serials": append([]string{}, serials...)})
}
