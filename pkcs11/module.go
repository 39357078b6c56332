package pkcs11

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	p11 "github.com/miekg/pkcs11"
)

// Module is a loaded, initialised PKCS#11 library. There is at most one Module
// per library path in a process; OpenModule hands out references to it and the
// last Close finalises it.
type Module struct {
	path string

	// mu is held for reading around every PKCS#11 call sequence and for
	// writing while the library is (re)initialised, so that no call runs
	// against a half-initialised library.
	mu  sync.RWMutex
	ctx *p11.Ctx
	// gen counts initialisations. Sessions and handles from an older
	// generation are dead.
	gen atomic.Uint64

	refs int // guarded by registry.mu

	loginMu sync.Mutex
	// logins remembers, per token serial, a digest of the PIN that logged the
	// token in. Login state is per process, so a second login with another
	// PIN returns CKR_USER_ALREADY_LOGGED_IN without checking it; comparing
	// with this digest keeps a wrong PIN from being accepted that way.
	logins map[string][32]byte
	// refused remembers digests (serial and PIN) a token answered
	// CKR_PIN_INCORRECT: each wrong PIN costs one of the token's tries, and
	// a PIN read once is the same on every reconnect, so it is not sent to
	// that token again. Kept across re-initialisations.
	refused map[[32]byte]bool
}

var registry = struct {
	sync.Mutex
	modules map[string]*Module
}{modules: map[string]*Module{}}

// OpenModule loads and initialises the PKCS#11 library at path, or returns
// the process's existing Module for it. Every OpenModule needs a Close.
func OpenModule(path string) (*Module, error) {
	if path == "" {
		return nil, fmt.Errorf("%w: no module path given (set module-path, e.g. /usr/lib/softhsm/libsofthsm2.so)", ErrModule)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("%w: module path %q: %v", ErrModule, path, err)
	}
	// Two paths to one library (a symlink) must share one Module: the
	// dynamic loader hands out one copy, whose C_Finalize would end both.
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	registry.Lock()
	defer registry.Unlock()
	if m, ok := registry.modules[abs]; ok {
		m.refs++
		return m, nil
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("%w: module %s: %v (is its package installed? `make deps` installs SoftHSM and OpenSC)", ErrModule, abs, err)
	}
	ctx := p11.New(abs)
	if ctx == nil {
		return nil, fmt.Errorf("%w: module %s could not be loaded (not a PKCS#11 library, or built for another architecture)", ErrModule, abs)
	}
	if err := ctx.Initialize(); err != nil && !is(err, p11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		ctx.Destroy()
		return nil, fmt.Errorf("%w: initialise %s: %v", ErrModule, abs, err)
	}
	m := &Module{path: abs, ctx: ctx, refs: 1, logins: map[string][32]byte{}, refused: map[[32]byte]bool{}}
	m.gen.Store(1)
	registry.modules[abs] = m
	return m, nil
}

// Path is the absolute path of the library.
func (m *Module) Path() string { return m.path }

// Close drops one reference; the last one finalises and unloads the library.
func (m *Module) Close() error {
	registry.Lock()
	defer registry.Unlock()
	if m.refs <= 0 {
		return nil
	}
	m.refs--
	if m.refs > 0 {
		return nil
	}
	delete(registry.modules, m.path)
	m.mu.Lock()
	defer m.mu.Unlock()
	err := m.ctx.Finalize()
	m.ctx.Destroy()
	m.ctx = nil
	m.gen.Add(1)
	if err != nil && !is(err, p11.CKR_CRYPTOKI_NOT_INITIALIZED) {
		return fmt.Errorf("pkcs11: finalise %s: %w", m.path, err)
	}
	return nil
}

// retain adds a reference for a Token that outlives its caller's Module.
func (m *Module) retain() error {
	registry.Lock()
	defer registry.Unlock()
	if m.refs <= 0 {
		return ErrClosed
	}
	m.refs++
	return nil
}

// reinitialize finalises and initialises the library again, unless another
// caller already did so since generation seen. Some modules (SoftHSM among
// them) build their slot list only in C_Initialize: a token deleted and
// re-created, or created by another process, is invisible until then.
func (m *Module) reinitialize(seen uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx == nil {
		return ErrClosed
	}
	if m.gen.Load() != seen {
		return nil
	}
	_ = m.ctx.Finalize() // the old state is being thrown away
	m.gen.Add(1)
	m.loginMu.Lock()
	clear(m.logins)
	m.loginMu.Unlock()
	if err := m.ctx.Initialize(); err != nil && !is(err, p11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		return fmt.Errorf("%w: re-initialise %s: %v", ErrModule, m.path, err)
	}
	return nil
}

// TokenInfo describes one slot with a token.
type TokenInfo struct {
	SlotID       uint
	Label        string
	Serial       string
	Manufacturer string
	Model        string
	// Initialized is false for the free slot SoftHSM keeps for InitToken.
	Initialized bool
	// UserPINInitialized is false until a user PIN has been set.
	UserPINInitialized bool
}

// Tokens lists the slots that hold a token.
func (m *Module) Tokens() ([]TokenInfo, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.ctx == nil {
		return nil, ErrClosed
	}
	return m.tokensLocked()
}

func (m *Module) tokensLocked() ([]TokenInfo, error) {
	slots, err := m.ctx.GetSlotList(true)
	if err != nil {
		return nil, opError("list slots", err)
	}
	out := make([]TokenInfo, 0, len(slots))
	for _, s := range slots {
		ti, err := m.ctx.GetTokenInfo(s)
		if err != nil {
			continue // a slot whose token vanished while listing
		}
		out = append(out, TokenInfo{
			SlotID:             s,
			Label:              strings.TrimRight(ti.Label, " \x00"),
			Serial:             strings.TrimRight(ti.SerialNumber, " \x00"),
			Manufacturer:       strings.TrimRight(ti.ManufacturerID, " \x00"),
			Model:              strings.TrimRight(ti.Model, " \x00"),
			Initialized:        ti.Flags&p11.CKF_TOKEN_INITIALIZED != 0,
			UserPINInitialized: ti.Flags&p11.CKF_USER_PIN_INITIALIZED != 0,
		})
	}
	return out, nil
}

// pinDigest is what the login cache keeps instead of a PIN.
func pinDigest(serial string, pin []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte("credgw-pkcs11-login\x00" + serial + "\x00"))
	h.Write(pin)
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// login logs the token in on session sh with pin. Login state is per process
// and per token, so an already-logged-in token is accepted only with the same
// PIN that logged it in.
func (m *Module) login(sh p11.SessionHandle, serial string, pin []byte) error {
	d := pinDigest(serial, pin)
	// Held across C_Login: two Tokens of one token reconnecting at once
	// (two URIs naming it) would both send a wrong PIN, costing two tries.
	m.loginMu.Lock()
	defer m.loginMu.Unlock()
	if m.refused[d] {
		return fmt.Errorf("%w (the token refused this PIN before, and it is not sent again: every wrong PIN costs "+
			"one of the token's tries; fix the PIN source and start again)", ErrPINIncorrect)
	}
	err := m.ctx.Login(sh, p11.CKU_USER, string(pin))
	switch {
	case err == nil:
		m.logins[serial] = d
		return nil
	case is(err, p11.CKR_USER_ALREADY_LOGGED_IN):
		if prev, ok := m.logins[serial]; ok && subtle.ConstantTimeCompare(prev[:], d[:]) != 1 {
			return fmt.Errorf("%w (the token is logged in with another PIN in this process)", ErrPINIncorrect)
		}
		m.logins[serial] = d
		return nil
	case is(err, p11.CKR_PIN_INCORRECT):
		m.refused[d] = true
		if left := m.pinTriesLeft(sh); left != "" {
			return fmt.Errorf("%w (login refused by the token: check the PIN source; %s)", ErrPINIncorrect, left)
		}
	}
	return opError("login", err)
}

// pinTriesLeft says what the token reports of its PIN retry counter after
// a wrong PIN: PKCS#11 has flags, not a count. SoftHSM sets COUNT_LOW after any wrong PIN; OpenSC
// sets them from the card's retry counter (PIV VERIFY answers 63Cx).
func (m *Module) pinTriesLeft(sh p11.SessionHandle) string {
	si, err := m.ctx.GetSessionInfo(sh)
	if err != nil {
		return ""
	}
	ti, err := m.ctx.GetTokenInfo(si.SlotID)
	if err != nil {
		return ""
	}
	switch {
	case ti.Flags&p11.CKF_USER_PIN_LOCKED != 0:
		return "the PIN is now locked"
	case ti.Flags&p11.CKF_USER_PIN_FINAL_TRY != 0:
		return "final try: one more wrong PIN locks it"
	case ti.Flags&p11.CKF_USER_PIN_COUNT_LOW != 0:
		return "the token counts wrong PINs and few tries are left"
	}
	return ""
}

// InitToken initialises a new token on the module's free (uninitialised) slot
// with label, sets its SO PIN and user PIN, and returns it as found after a
// rescan (SoftHSM moves a token to a new slot id when it is initialised).
func (m *Module) InitToken(label string, soPIN, userPIN []byte) (TokenInfo, error) {
	if label == "" || len(label) > 32 {
		return TokenInfo{}, fmt.Errorf("pkcs11: init token: label must be 1-32 bytes, got %d", len(label))
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.ctx == nil {
		return TokenInfo{}, ErrClosed
	}
	tokens, err := m.tokensLocked()
	if err != nil {
		return TokenInfo{}, err
	}
	free := -1
	for i, t := range tokens {
		if t.Initialized && t.Label == label {
			return TokenInfo{}, fmt.Errorf("pkcs11: init token: a token labelled %q already exists (slot %d)", label, t.SlotID)
		}
		if !t.Initialized && free < 0 {
			free = i
		}
	}
	if free < 0 {
		return TokenInfo{}, fmt.Errorf("pkcs11: init token %q: the module has no free slot", label)
	}
	if err := m.ctx.InitToken(tokens[free].SlotID, string(soPIN), label); err != nil {
		return TokenInfo{}, opError(fmt.Sprintf("init token %q", label), err)
	}
	tokens, err = m.tokensLocked()
	if err != nil {
		return TokenInfo{}, err
	}
	var info TokenInfo
	found := false
	for _, t := range tokens {
		if t.Initialized && t.Label == label {
			info, found = t, true
			break
		}
	}
	if !found {
		return TokenInfo{}, fmt.Errorf("%w: token %q vanished after initialisation", ErrTokenNotFound, label)
	}
	sh, err := m.ctx.OpenSession(info.SlotID, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		return TokenInfo{}, opError("open session", err)
	}
	defer m.ctx.CloseSession(sh)
	if err := m.ctx.Login(sh, p11.CKU_SO, string(soPIN)); err != nil {
		return TokenInfo{}, opError("SO login", err)
	}
	defer m.ctx.Logout(sh)
	if err := m.ctx.InitPIN(sh, string(userPIN)); err != nil {
		return TokenInfo{}, opError("set user PIN", err)
	}
	info.UserPINInitialized = true
	return info, nil
}

// errNoToken builds the "not found" error, listing what the module does have
// so a misspelt label is easy to spot.
func errNoToken(m *Module, sel string, tokens []TokenInfo) error {
	var have []string
	for _, t := range tokens {
		if t.Initialized {
			have = append(have, fmt.Sprintf("%q (serial %s)", t.Label, t.Serial))
		}
	}
	if len(have) == 0 {
		return fmt.Errorf("%w: %s in %s: the module has no initialised token; %s", ErrTokenNotFound, sel, m.path, noTokenHint(m))
	}
	return fmt.Errorf("%w: %s in %s; tokens present: %s; %s", ErrTokenNotFound, sel, m.path, strings.Join(have, ", "), noTokenHint(m))
}

// noTokenHint says how a token comes to be: credgw makes keys in one,
// never the token itself. For SoftHSM it names the configuration the
// module read, whose token directory is where it looked.
func noTokenHint(m *Module) string {
	base := strings.ToLower(filepath.Base(m.path))
	if strings.Contains(base, "opensc") || strings.Contains(base, "ykcs11") || strings.Contains(base, "piv") {
		// A smart card's middleware.
		return "is the card (or the USB token) in the reader, and does pcscd see the reader (pcsc_scan)? " +
			"Name it by the label `pkcs11-tool --module " + m.path + " -L` prints (for a PIV card, OpenSC makes it from the PIV " +
			"Authentication certificate's name, at most 32 characters), or by serial="
	}
	if !strings.Contains(base, "softhsm") {
		return "credgw makes keys in a token, not the token: initialise it with the HSM vendor's tool, or fix the label"
	}
	where := "SOFTHSM2_CONF=" + os.Getenv("SOFTHSM2_CONF")
	if os.Getenv("SOFTHSM2_CONF") == "" {
		where = "SOFTHSM2_CONF is not set, so SoftHSM read /etc/softhsm/softhsm2.conf"
	}
	return "a card made by credgw hsm-sim (or dev init) is a token in its own SoftHSM directory: export the SOFTHSM2_CONF it printed; " +
		"the CA's token credgw does not make (it makes keys in it): create it with softhsm2-util --init-token --free --label LABEL; " +
		"either way SoftHSM read the SOFTHSM2_CONF that credgw sees (" + where + ")"
}

var errStaleGeneration = errors.New("pkcs11: module re-initialised")
