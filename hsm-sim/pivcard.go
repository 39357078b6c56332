package hsmsim

import (
	"bytes"
	"context"
	"crypto"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/credgw/credgw/pkcs11"
)

// PIVAID is the PIV card application's AID with its version (SP 800-73-4
// Part 1 §2.2); a SELECT may name any prefix of it of five bytes or more.
var PIVAID = []byte{0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00}

// DefaultPINTries is the PIN retry counter's reset value of a simulated card.
const DefaultPINTries = 3

// PIV data object tags (SP 800-73-4 Part 1 Table 3) the card serves.
const (
	tagDiscovery = 0x7E
	tagCHUID     = 0x5FC102
	tagCCC       = 0x5FC107
	tagCert9A    = 0x5FC105
	tagCert9C    = 0x5FC10A
	tagCert9D    = 0x5FC10B
	tagCert9E    = 0x5FC101
)

// PIV algorithm identifiers (SP 800-78-4 Table 6-2).
const (
	algRSA3072 = 0x05
	algRSA2048 = 0x07
	algECP256  = 0x11
	algECP384  = 0x14
)

// PIVCardOptions tunes a card application.
type PIVCardOptions struct {
	// PINTries is the retry counter's reset value (default 3). The counter
	// is kept in the card's directory, so removing the card does not
	// reset it.
	PINTries int
}

// PIVCard is the PIV card application (SP 800-73-4 Part 2 card edge, the
// subset middleware uses) of a simulated card: SELECT, GET DATA, VERIFY,
// GENERAL AUTHENTICATE, command chaining and GET RESPONSE over the card's
// SoftHSM token. Keys never leave the token; the PIN is checked by a
// login to it. It is safe for concurrent use but, as a card, answers one
// command at a time.
type PIVCard struct {
	mod       *pkcs11.Module
	label     string
	keyType   pkcs11.KeyType
	pub       *pkcs11.Token // no login: certificates and 9E
	objects   map[uint32][]byte
	triesFile string
	maxTries  int

	mu         sync.Mutex
	priv       *pkcs11.Token // logged in by the first right VERIFY
	signers    map[byte]*pkcs11.Signer
	triesLeft  int
	verified   bool
	justVerify bool // a VERIFY since the last GENERAL AUTHENTICATE (PIN Always, 9C)
	chain      *Command
	pending    []byte
}

// OpenPIVCard opens the PIV card application of card name on module m.
func (e *Env) OpenPIVCard(ctx context.Context, m *pkcs11.Module, name string, o PIVCardOptions) (*PIVCard, error) {
	info, err := e.Card(name)
	if err != nil {
		return nil, err
	}
	if o.PINTries <= 0 {
		o.PINTries = DefaultPINTries
	}
	if o.PINTries > 15 {
		return nil, fmt.Errorf("hsmsim: PIN tries %d: a card counts at most 15", o.PINTries)
	}
	kt, err := pkcs11.ParseKeyType(info.KeyType)
	if err != nil {
		return nil, err
	}
	tok, err := m.OpenToken(ctx, pkcs11.TokenConfig{Label: name, MaxSessions: 2})
	if err != nil {
		return nil, err
	}
	c := &PIVCard{
		mod: m, label: name, keyType: kt, pub: tok, objects: map[uint32][]byte{},
		triesFile: filepath.Join(e.certDir(name), "pin-tries-left"), maxTries: o.PINTries,
		signers: map[byte]*pkcs11.Signer{},
	}
	if err := c.buildObjects(ctx, info); err != nil {
		tok.Close()
		return nil, err
	}
	c.triesLeft = c.maxTries
	if b, err := os.ReadFile(c.triesFile); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n >= 0 && n <= c.maxTries {
			c.triesLeft = n
		}
	}
	return c, nil
}

// Close releases the card's token sessions.
func (c *PIVCard) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.priv != nil {
		c.priv.Close()
		c.priv = nil
	}
	return c.pub.Close()
}

// ATR is the card's answer to reset: T=1, historical bytes "credgw PIV".
func (c *PIVCard) ATR() []byte {
	hist := []byte("credgw PIV")
	atr := []byte{0x3B, 0x80 | byte(len(hist)), 0x80, 0x01}
	atr = append(atr, hist...)
	var tck byte
	for _, b := range atr[1:] {
		tck ^= b
	}
	return append(atr, tck)
}

// Reset is a power cycle or warm reset: the security status (PIN
// verified) and any pending chain or response are lost.
func (c *PIVCard) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.verified, c.justVerify = false, false
	c.chain, c.pending = nil, nil
}

// buildObjects makes the data objects the card serves from its record and
// its token's certificates.
func (c *PIVCard) buildObjects(ctx context.Context, info *CardInfo) error {
	c.objects[tagDiscovery] = tlv(tagDiscovery,
		tlv(0x4F, PIVAID),
		tlv(0x5F2F, []byte{0x40, 0x00})) // PIN usage policy: PIV Card Application PIN only
	fascn, err := hex.DecodeString(info.FASCN)
	if err != nil {
		return err
	}
	guid, err := hex.DecodeString(strings.ReplaceAll(info.UUID, "-", ""))
	if err != nil || len(guid) != 16 {
		return fmt.Errorf("hsmsim: card %q: UUID %q", info.Name, info.UUID)
	}
	expiry := info.Created.AddDate(1, 0, 0).Format("20060102")
	c.objects[tagCHUID] = tlv(0x53,
		tlv(0x30, fascn), tlv(0x34, guid), tlv(0x35, []byte(expiry)),
		tlv(0x3E, nil), // issuer signature: not simulated
		tlv(0xFE, nil))
	cardID := append([]byte{0xA0, 0x00, 0x00, 0x01, 0x16}, guid...) // GSC-RID + card UUID
	c.objects[tagCCC] = tlv(0x53,
		tlv(0xF0, cardID), tlv(0xF1, []byte{0x21}), tlv(0xF2, []byte{0x21}), tlv(0xF3, nil),
		tlv(0xF4, []byte{0x00}), tlv(0xF5, []byte{0x10}), tlv(0xF6, nil), tlv(0xF7, nil),
		tlv(0xFA, nil), tlv(0xFB, nil), tlv(0xFC, nil), tlv(0xFD, nil), tlv(0xFE, nil))
	for tag, slot := range certTags() {
		cert, err := c.pub.Certificate(ctx, slot.ID, "")
		if errors.Is(err, pkcs11.ErrObjectNotFound) {
			continue // no email: no 9C or 9D certificate; GET DATA says 6A82
		}
		if err != nil {
			return err
		}
		c.objects[tag] = tlv(0x53, tlv(0x70, cert.Raw), tlv(0x71, []byte{0x00}), tlv(0xFE, nil))
	}
	return nil
}

func certTags() map[uint32]pkcs11.PIVSlot {
	return map[uint32]pkcs11.PIVSlot{
		tagCert9A: pkcs11.PIVAuthentication, tagCert9C: pkcs11.PIVSignature,
		tagCert9D: pkcs11.PIVKeyManagement, tagCert9E: pkcs11.PIVCardAuthentication,
	}
}

// Transmit runs one command APDU and returns the response APDU (data and
// status word).
func (c *PIVCard) Transmit(ctx context.Context, apdu []byte) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	cmd, err := ParseCommand(apdu)
	if err != nil {
		c.chain, c.pending = nil, nil
		return sw(swWrongLength)
	}
	if cmd.INS == 0xC0 { // GET RESPONSE
		if c.pending == nil {
			return sw(swConditionsNotMet)
		}
		return c.respond(cmd, c.pending)
	}
	c.pending = nil
	if cmd.CLA&^0x10 != 0x00 {
		c.chain = nil
		return sw(swCLANotSupported)
	}
	if c.chain != nil {
		if cmd.INS != c.chain.INS || cmd.P1 != c.chain.P1 || cmd.P2 != c.chain.P2 {
			c.chain = nil
			return sw(swLastCommandExpected)
		}
		data := append(c.chain.Data, cmd.Data...)
		if len(data) > 1<<16 {
			c.chain = nil
			return sw(swWrongLength)
		}
		cmd.Data = data
	}
	if cmd.Chained() {
		cmd.Data = append([]byte(nil), cmd.Data...)
		c.chain = &cmd
		return sw(swOK)
	}
	c.chain = nil
	var body []byte
	var status int
	switch cmd.INS {
	case 0xA4:
		body, status = c.selectApp(cmd)
	case 0xCB:
		body, status = c.getData(cmd)
	case 0x20:
		body, status = c.verify(ctx, cmd)
	case 0x87:
		body, status = c.generalAuthenticate(ctx, cmd, c.justVerify)
		c.justVerify = false
	default:
		status = swINSNotSupported
	}
	if status != swOK {
		return sw(status)
	}
	return c.respond(cmd, body)
}

// respond sends at most Le bytes of body; the rest waits for GET RESPONSE
// (61xx).
func (c *PIVCard) respond(cmd Command, body []byte) []byte {
	max := cmd.Le
	if !cmd.HasLe {
		max = 256
	}
	if len(body) <= max {
		c.pending = nil
		return append(append([]byte(nil), body...), 0x90, 0x00)
	}
	c.pending = body[max:]
	next := len(c.pending)
	if next > 255 {
		next = 0 // 6100: 256 or more
	}
	return append(append([]byte(nil), body[:max]...), 0x61, byte(next))
}

func sw(s int) []byte { return []byte{byte(s >> 8), byte(s)} }

// selectApp answers SELECT by AID with the Application Property Template.
func (c *PIVCard) selectApp(cmd Command) ([]byte, int) {
	if cmd.P1 != 0x04 || cmd.P2 != 0x00 {
		return nil, swIncorrectP1P2
	}
	if len(cmd.Data) < 5 || !bytes.HasPrefix(PIVAID, cmd.Data) {
		return nil, swFileNotFound
	}
	algs := []byte{algECP256, algECP384, algRSA2048, algRSA3072}
	var ac []byte
	for _, a := range algs {
		ac = append(ac, tlv(0x80, []byte{a})...)
	}
	ac = append(ac, tlv(0x06, []byte{0x00})...)
	return tlv(0x61,
		tlv(0x4F, PIVAID[5:]), // PIX of the application with its version
		tlv(0x79, tlv(0x4F, PIVAID[:5])),
		tlv(0x50, []byte("credgw hsm-sim PIV")),
		tlv(0xAC, ac)), swOK
}

// getData answers GET DATA for the objects the card holds: all are
// readable without the PIN (the simulation holds no PIN-protected object).
func (c *PIVCard) getData(cmd Command) ([]byte, int) {
	if cmd.P1 != 0x3F || cmd.P2 != 0xFF {
		return nil, swIncorrectP1P2
	}
	tlvs, err := parseTLVs(cmd.Data)
	if err != nil || len(tlvs) != 1 || tlvs[0].Tag != 0x5C || len(tlvs[0].Value) == 0 || len(tlvs[0].Value) > 3 {
		return nil, swWrongData
	}
	var tag uint32
	for _, b := range tlvs[0].Value {
		tag = tag<<8 | uint32(b)
	}
	obj, ok := c.objects[tag]
	if !ok {
		return nil, swFileNotFound
	}
	return obj, swOK
}

// verify checks the PIV Card Application PIN (key reference 80) by a login
// to the card's token, with the card's retry counter.
func (c *PIVCard) verify(ctx context.Context, cmd Command) ([]byte, int) {
	if cmd.P2 != 0x80 {
		return nil, swRefNotFound
	}
	switch cmd.P1 {
	case 0xFF: // reset the security status
		if len(cmd.Data) != 0 {
			return nil, swWrongData
		}
		c.verified = false
		return nil, swOK
	case 0x00:
	default:
		return nil, swIncorrectP1P2
	}
	if c.triesLeft == 0 {
		return nil, swAuthBlocked
	}
	if len(cmd.Data) == 0 { // status query
		if c.verified {
			return nil, swOK
		}
		return nil, 0x63C0 | c.triesLeft
	}
	if len(cmd.Data) != 8 {
		return nil, swWrongData
	}
	pin := bytes.TrimRight(cmd.Data, "\xFF")
	valid := len(pin) >= 6
	for _, b := range pin {
		valid = valid && b >= '0' && b <= '9'
	}
	ok := false
	if valid {
		var err error
		if ok, err = c.checkPIN(ctx, pin); err != nil {
			return nil, swNoPreciseDiagnosis
		}
	}
	if !ok {
		c.verified = false
		c.setTries(c.triesLeft - 1)
		if c.triesLeft == 0 {
			return nil, swAuthBlocked
		}
		return nil, 0x63C0 | c.triesLeft
	}
	c.setTries(c.maxTries)
	c.verified, c.justVerify = true, true
	return nil, swOK
}

// checkPIN logs in to the token with pin. The first right PIN keeps its
// token (the logged-in one the private keys are used through); later
// checks compare with it (pkcs11's login cache) and close theirs.
func (c *PIVCard) checkPIN(ctx context.Context, pin []byte) (bool, error) {
	tok, err := c.mod.OpenToken(ctx, pkcs11.TokenConfig{Label: c.label, PIN: pin, MaxSessions: 2})
	if errors.Is(err, pkcs11.ErrPINIncorrect) || errors.Is(err, pkcs11.ErrPINLocked) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if c.priv == nil {
		c.priv = tok
	} else {
		tok.Close()
	}
	return true, nil
}

func (c *PIVCard) setTries(n int) {
	if n < 0 {
		n = 0
	}
	c.triesLeft = n
	_ = writeFileAtomic(c.triesFile, []byte(strconv.Itoa(n)+"\n"), 0o600)
}

// TriesLeft is the PIN retry counter.
func (c *PIVCard) TriesLeft() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.triesLeft
}

// generalAuthenticate signs (81 challenge) or agrees a key (85 point) with
// one of the card's four keys.
func (c *PIVCard) generalAuthenticate(ctx context.Context, cmd Command, justVerified bool) ([]byte, int) {
	slot, ok := pkcs11.PIVSlotByKeyRef(cmd.P2)
	if !ok || (cmd.P2 != 0x9A && cmd.P2 != 0x9C && cmd.P2 != 0x9D && cmd.P2 != 0x9E) {
		return nil, swRefNotFound
	}
	if cmd.P1 != c.algorithm() {
		return nil, swIncorrectP1P2
	}
	outer, err := parseTLVs(cmd.Data)
	if err != nil || len(outer) != 1 || outer[0].Tag != 0x7C {
		return nil, swWrongData
	}
	inner, err := parseTLVs(outer[0].Value)
	if err != nil {
		return nil, swWrongData
	}
	var challenge, point []byte
	var haveResponse, haveChallenge, havePoint bool
	for _, t := range inner {
		switch t.Tag {
		case 0x82:
			haveResponse = len(t.Value) == 0
		case 0x81:
			challenge, haveChallenge = t.Value, true
		case 0x85:
			point, havePoint = t.Value, true
		}
	}
	if !haveResponse || haveChallenge == havePoint {
		return nil, swWrongData
	}
	switch {
	case slot.KeyRef == 0x9C && !justVerified:
		return nil, swSecurityNotSatisfed // PIN Always
	case slot.PINRequired && !c.verified:
		return nil, swSecurityNotSatisfed
	}
	s, err := c.signer(ctx, slot)
	if err != nil {
		return nil, swNoPreciseDiagnosis
	}
	var out []byte
	switch {
	case havePoint:
		if c.keyType.IsRSA() {
			return nil, swWrongData
		}
		out, err = s.ECDH(ctx, point)
	case c.keyType.IsRSA():
		out, err = s.RawRSA(ctx, challenge)
	default:
		// The hash, exactly as long as the key (SP 800-73-4 Part 2
		// §3.2.4; SP 800-78-4 pairs P-384 with SHA-384): strict applets
		// answer 6A80 to a shorter input, and so does this card, so a
		// middleware or caller that sends a SHA-256 digest to a P-384 key
		// fails here as on those cards.
		size := (s.Curve().Params().BitSize + 7) / 8
		if len(challenge) != size {
			return nil, swWrongData
		}
		out, err = s.SignContext(ctx, challenge, crypto.Hash(0))
	}
	if err != nil {
		return nil, swWrongData
	}
	return tlv(0x7C, tlv(0x82, out)), swOK
}

func (c *PIVCard) algorithm() byte {
	switch c.keyType {
	case pkcs11.ECP384:
		return algECP384
	case pkcs11.RSA2048:
		return algRSA2048
	case pkcs11.RSA3072:
		return algRSA3072
	}
	return algECP256
}

// signer finds a slot's private key: 9E on the token without login, the
// others on the token the right PIN logged in.
func (c *PIVCard) signer(ctx context.Context, slot pkcs11.PIVSlot) (*pkcs11.Signer, error) {
	if s, ok := c.signers[slot.KeyRef]; ok {
		return s, nil
	}
	tok := c.pub
	if slot.PINRequired {
		if c.priv == nil {
			return nil, pkcs11.ErrPINRequired
		}
		tok = c.priv
	}
	s, err := tok.Signer(ctx, slot.PrivateKey())
	if err != nil {
		return nil, err
	}
	c.signers[slot.KeyRef] = s
	return s, nil
}
