package pkcs11

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	p11 "github.com/miekg/pkcs11"
)

// DefaultMaxSessions bounds a token's session pool when TokenConfig leaves
// MaxSessions at zero.
const DefaultMaxSessions = 8

// TokenConfig selects a token and says how to use it.
type TokenConfig struct {
	// Label and/or Serial select the token; prefer them. SlotID narrows
	// the choice further, or alone selects a slot, but slot ids move (SoftHSM
	// gives a token a new slot id when it is initialised).
	Label  string
	Serial string
	SlotID *uint
	// PIN logs the user in. Nil means no login: public objects only.
	PIN []byte
	// MaxSessions bounds concurrent operations on the token.
	MaxSessions int
}

func (c TokenConfig) describe() string {
	switch {
	case c.Label == "" && c.Serial == "" && c.SlotID != nil:
		return fmt.Sprintf("token in slot %d", *c.SlotID)
	case c.Label != "" && c.Serial != "":
		return fmt.Sprintf("token %q (serial %s)", c.Label, c.Serial)
	case c.Serial != "":
		return fmt.Sprintf("token with serial %s", c.Serial)
	}
	return fmt.Sprintf("token %q", c.Label)
}

// Token is an open token with a bounded pool of logged-in sessions. It is
// safe for concurrent use. When the token goes away (session handle invalid,
// device removed, token not present, module re-initialised) the failing call
// reports it, the pool is dropped, and the next call finds the token again by
// label or serial, reopens sessions and logs in, with no process restart.
type Token struct {
	mod  *Module
	cfg  TokenConfig
	pin  []byte
	sem  chan struct{}
	name string

	mu        sync.Mutex
	connected bool
	seen      bool // connected at least once
	closed    bool
	gen       uint64 // module generation the sessions belong to
	epoch     uint64 // bumped on every reconnect; cached handles carry it
	slot      uint
	serial    string
	idle      []p11.SessionHandle
	mechs     map[uint]bool
	// otherReinit is when the module was last initialised again because
	// another token had the label (findSlot).
	otherReinit time.Time
}

// reinitEvery bounds how often findSlot initialises the module again while
// another token has the label (tests set it).
var reinitEvery = time.Minute

// session is a pooled session handle and the epoch it was opened in.
type session struct {
	h     p11.SessionHandle
	epoch uint64
	gen   uint64
}

// OpenToken opens the token selected by cfg. It connects once to report a
// missing token or a wrong PIN now rather than at first use.
func (m *Module) OpenToken(ctx context.Context, cfg TokenConfig) (*Token, error) {
	if cfg.Label == "" && cfg.Serial == "" && cfg.SlotID == nil {
		return nil, fmt.Errorf("pkcs11: open token: give a token label or serial (token= or serial= in a pkcs11: URI)")
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if err := m.retain(); err != nil {
		return nil, err
	}
	t := &Token{
		mod:  m,
		cfg:  cfg,
		pin:  append([]byte(nil), cfg.PIN...),
		sem:  make(chan struct{}, cfg.MaxSessions),
		name: cfg.describe(),
	}
	t.cfg.PIN = nil // only t.pin holds it
	if err := t.do(ctx, func(*p11.Ctx, p11.SessionHandle, uint64) error { return nil }); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// OpenURI loads the module named by u's module-path (fallback: defaultModule),
// and opens the token that u selects, with the PIN from u's pin-source or
// pin-value if it has one.
func OpenURI(ctx context.Context, u *URI, defaultModule string) (*Token, error) {
	path := u.ModulePath
	if path == "" {
		path = defaultModule
	}
	m, err := OpenModule(path)
	if err != nil {
		return nil, err
	}
	defer m.Close() // the token keeps its own reference
	cfg := TokenConfig{Label: u.Token, Serial: u.Serial, SlotID: u.SlotID}
	if u.HasPINValue() || u.PINSource != "" {
		pin, err := u.PIN()
		if err != nil {
			return nil, err
		}
		cfg.PIN = pin
	}
	return m.OpenToken(ctx, cfg)
}

// Module returns the module the token lives in.
func (t *Token) Module() *Module { return t.mod }

// Label is the token's label as configured.
func (t *Token) Label() string { return t.cfg.Label }

// String names the token; it never includes the PIN.
func (t *Token) String() string { return t.name }

// Close closes the pool's sessions and releases the module.
func (t *Token) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	idle := t.idle
	t.idle = nil
	gen := t.gen
	t.connected = false
	t.mu.Unlock()
	t.mod.mu.RLock()
	if t.mod.ctx != nil && t.mod.gen.Load() == gen {
		for _, h := range idle {
			_ = t.mod.ctx.CloseSession(h)
		}
	}
	t.mod.mu.RUnlock()
	// The PIN is not cleared here: a call that raced with Close may still
	// be reading it; it goes with the Token.
	return t.mod.Close()
}

// do runs fn on a pooled, logged-in session under the module's read lock.
// If fn fails because the session or token is gone, the pool is dropped and
// fn is tried once more on a fresh connection; if that fails too the error is
// returned and the next call tries again.
func (t *Token) do(ctx context.Context, fn func(c *p11.Ctx, sh p11.SessionHandle, epoch uint64) error) error {
	select {
	case t.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("pkcs11: %s: waiting for a session: %w", t.name, ctx.Err())
	}
	defer func() { <-t.sem }()

	var lastErr error
	for attempt := 0; attempt < 2; attempt++ {
		s, err := t.acquire()
		if err != nil {
			return t.reconnectError(err)
		}
		t.mod.mu.RLock()
		if t.mod.ctx == nil {
			t.mod.mu.RUnlock()
			return ErrClosed
		}
		if t.mod.gen.Load() != s.gen {
			t.mod.mu.RUnlock()
			t.invalidate(s.epoch)
			lastErr = errStaleGeneration
			continue
		}
		err = fn(t.mod.ctx, s.h, s.epoch)
		lost := err != nil && sessionLost(err)
		if lost && is(err, p11.CKR_GENERAL_ERROR) {
			// Modules also say CKR_GENERAL_ERROR for plain operation
			// failures (SoftHSM: a bad GCM tag, an OAEP label). Only a
			// session that no longer answers is lost.
			_, serr := t.mod.ctx.GetSessionInfo(s.h)
			lost = serr != nil
		}
		t.mod.mu.RUnlock()
		if lost {
			t.invalidate(s.epoch)
			lastErr = err
			continue
		}
		t.release(s)
		if u, ok := unavailable(t.name, err); ok {
			return u // e.g. CKR_DEVICE_MEMORY: the session lives, the device is failing
		}
		return err
	}
	if u, ok := unavailable(t.name, lastErr); ok {
		return u
	}
	reason := "session lost"
	if errors.Is(lastErr, errStaleGeneration) {
		reason = "module re-initialised"
	}
	return &UnavailableError{Op: t.name, Reason: reason, Err: lastErr}
}

// reconnectError classifies a failure to reach a token that was connected
// before: it is not found now because it went away (SoftHSM token removed,
// card pulled, HSM slot lost), or its module cannot be re-initialised. For a
// token never reached (OpenToken) the error stays what it is: there, a
// missing token is more likely a wrong label than an outage.
func (t *Token) reconnectError(err error) error {
	if u, ok := unavailable(t.name, err); ok {
		return u
	}
	t.mu.Lock()
	seen := t.seen
	t.mu.Unlock()
	switch {
	case !seen:
		return err
	case errors.Is(err, ErrTokenNotFound):
		return &UnavailableError{Op: t.name, Reason: "token not present", Err: err}
	case errors.Is(err, ErrModule):
		return &UnavailableError{Op: t.name, Reason: "module failing", Err: err}
	}
	return err
}

// acquire returns an idle session, opening one (and connecting first) as
// needed. The semaphore in do bounds how many are out at once.
func (t *Token) acquire() (session, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return session{}, ErrClosed
	}
	if t.connected && t.mod.gen.Load() != t.gen {
		t.dropLocked()
	}
	if !t.connected {
		if err := t.connectLocked(); err != nil {
			return session{}, err
		}
	}
	if n := len(t.idle); n > 0 {
		h := t.idle[n-1]
		t.idle = t.idle[:n-1]
		return session{h: h, epoch: t.epoch, gen: t.gen}, nil
	}
	t.mod.mu.RLock()
	defer t.mod.mu.RUnlock()
	if t.mod.gen.Load() != t.gen || t.mod.ctx == nil {
		t.dropLocked()
		return session{}, &UnavailableError{Op: t.name, Reason: "module re-initialised", Err: errStaleGeneration}
	}
	h, err := openSession(t.mod.ctx, t.slot)
	if err != nil {
		t.dropLocked()
		return session{}, opError(fmt.Sprintf("open session on %s", t.name), err)
	}
	return session{h: h, epoch: t.epoch, gen: t.gen}, nil
}

// release returns a healthy session to the pool.
func (t *Token) release(s session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || !t.connected || s.epoch != t.epoch {
		// Its pool is gone. Closing it could log the token out if it were
		// the last session, so it is closed only when the pool is live
		// elsewhere; a dead handle must not be closed at all (its number
		// may have been reused).
		return
	}
	t.idle = append(t.idle, s.h)
}

// invalidate drops the pool if it is still the one from epoch.
func (t *Token) invalidate(epoch uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.epoch == epoch {
		t.dropLocked()
	}
}

// dropLocked forgets all sessions without closing them: after a failure their
// handles are dead or about to be, and closing a reused handle number would
// close someone else's session.
func (t *Token) dropLocked() {
	t.connected = false
	t.idle = nil
	t.epoch++
}

// connectLocked finds the token, opens the pool's first session and logs in.
// That first session stays in the pool for the token's life: closing a
// token's last session logs it out and invalidates key handles.
func (t *Token) connectLocked() error {
	slot, info, gen, err := t.findSlot()
	if err != nil {
		return err
	}
	t.mod.mu.RLock()
	defer t.mod.mu.RUnlock()
	if t.mod.ctx == nil {
		return ErrClosed
	}
	if t.mod.gen.Load() != gen {
		return &UnavailableError{Op: t.name, Reason: "module re-initialised while connecting", Err: errStaleGeneration}
	}
	c := t.mod.ctx
	h, err := openSession(c, slot)
	if err != nil {
		return opError(fmt.Sprintf("open session on %s", t.name), err)
	}
	if t.pin != nil {
		if err := t.mod.login(h, info.Serial, t.pin); err != nil {
			_ = c.CloseSession(h)
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	mechs := map[uint]bool{}
	if list, err := c.GetMechanismList(slot); err == nil {
		for _, m := range list {
			mechs[m.Mechanism] = true
		}
	}
	t.epoch++
	t.connected = true
	t.seen = true
	t.gen = gen
	t.slot = slot
	t.serial = info.Serial
	t.idle = []p11.SessionHandle{h}
	t.mechs = mechs
	return nil
}

// findSlot looks the token up by label and serial. If it is not there, the
// module is re-initialised once and the lookup repeated: SoftHSM only sees
// tokens created or re-created since start-up after C_Initialize.
//
// Once connected, the token is the one of the serial it had then: another
// token under the label (a card swapped for the holder's replacement, whose
// label OpenSC makes from the same common name; a re-created HSM token) is
// refused before any login, so the PIN goes to no token but the one it was
// given for. A restart opens whichever is there.
func (t *Token) findSlot() (uint, TokenInfo, uint64, error) {
	serial := t.cfg.Serial
	if serial == "" && t.seen {
		serial = t.serial
	}
	var other *TokenInfo
	for attempt := 0; ; attempt++ {
		t.mod.mu.RLock()
		if t.mod.ctx == nil {
			t.mod.mu.RUnlock()
			return 0, TokenInfo{}, 0, ErrClosed
		}
		gen := t.mod.gen.Load()
		tokens, err := t.mod.tokensLocked()
		t.mod.mu.RUnlock()
		if err != nil {
			return 0, TokenInfo{}, 0, err
		}
		// The label as given, else as OpenSC cuts a card's name: two
		// cards whose names share their first 32 bytes are told apart
		// by serial only.
		var exact, cut []TokenInfo
		for _, ti := range tokens {
			if !ti.Initialized || (t.cfg.SlotID != nil && ti.SlotID != *t.cfg.SlotID) {
				continue
			}
			switch {
			case t.cfg.Label == "" || ti.Label == t.cfg.Label:
				exact = append(exact, ti)
			case labelMatches(ti.Label, t.cfg.Label):
				cut = append(cut, ti)
			}
		}
		candidates := exact
		if serial != "" {
			// The token meant is known by its serial: under either form.
			candidates = append(exact, cut...)
		} else if len(candidates) == 0 {
			if len(cut) > 1 && serial == "" {
				return 0, TokenInfo{}, 0, fmt.Errorf("%w: %s: %d tokens carry the label %q, the first 32 bytes of that name; name the one meant by serial=",
					ErrTokenNotFound, t.name, len(cut), cut[0].Label)
			}
			candidates = cut
		}
		for _, ti := range candidates {
			if serial == "" || ti.Serial == serial {
				return ti.SlotID, ti, gen, nil
			}
			other = &ti
		}
		if attempt > 0 || (other != nil && time.Since(t.otherReinit) < reinitEvery) {
			// (Another token under the label is there already: the
			// module is initialised again at most every reinitEvery,
			// which drops every other token's sessions on it; SoftHSM
			// sees the first token back only then.)
			if other != nil && t.cfg.Serial == "" {
				return 0, TokenInfo{}, 0, &UnavailableError{Op: t.name, Reason: "another token under its label",
					Err: fmt.Errorf("%w: the token present has serial %s, credgw opened serial %s and sends its PIN to no other; "+
						"put that token back, or restart credgw to use this one", ErrTokenChanged, other.Serial, serial)}
			}
			return 0, TokenInfo{}, 0, errNoToken(t.mod, t.name, tokens)
		}
		if other != nil {
			t.otherReinit = time.Now()
		}
		if err := t.mod.reinitialize(gen); err != nil {
			return 0, TokenInfo{}, 0, err
		}
	}
}

func openSession(c *p11.Ctx, slot uint) (p11.SessionHandle, error) {
	h, err := c.OpenSession(slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if is(err, p11.CKR_TOKEN_WRITE_PROTECTED) {
		// A real card through OpenSC may be read-only.
		h, err = c.OpenSession(slot, p11.CKF_SERIAL_SESSION)
	}
	return h, err
}

// hasMechanism reports whether the token advertised mechanism m.
func (t *Token) hasMechanism(m uint) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.mechs[m]
}

// currentEpoch is the pool's connection epoch.
func (t *Token) currentEpoch() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.epoch
}

// labelMatches tells whether a token labelled have is the one configured
// as want: the same label, or want as OpenSC makes a PIV card's label from
// its 9A certificate's common name (':' made '.', cut to PKCS#11's 32
// bytes), so a card is found by the name on its certificate.
func labelMatches(have, want string) bool {
	if have == want {
		return true
	}
	w := strings.ReplaceAll(want, ":", ".")
	if len(w) > 32 {
		w = w[:32]
	}
	return strings.TrimRight(w, " ") == have
}
