// Package session is the PKI-AUTH session service (FIPS 201-3 §6.2.3.1,
// SP 800-157r1 App. C.1): a single-use challenge, the card's signature over
// it, the PIV Authentication certificate validated by piv.Verifier (path,
// policy, OCSP/CRL, fail closed), and a PIV session whose token is kept only
// as a hash. A TLS client authentication by the card (the portal) stands in
// for the challenge. It is an application service: the gRPC handlers and
// the portal call it; it calls piv/, store/ and the audit log.
package session

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/credgw/credgw/activation/audit"
	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/store"
)

// Errors the transport maps to codes. Their messages say what to do.
var (
	// ErrUnknownChallenge: no challenge has that session id.
	ErrUnknownChallenge = errors.New("unknown session: call BeginSession first")
	// ErrReplay: the challenge was used already.
	ErrReplay = errors.New("this challenge was used already (replay); call BeginSession for a new one")
	// ErrChallengeExpired: the challenge's time ran out (the message says when).
	ErrChallengeExpired = errors.New("the challenge expired")
	// ErrNotTLSCard: a PIV caller signs in with another card than the one of
	// its TLS connection.
	ErrNotTLSCard = errors.New("the PIV Authentication certificate is not the one of the TLS connection")
	// ErrSessionGone: the session token is unknown, expired or signed out.
	ErrSessionGone = errors.New("the PIV session token is unknown or expired: sign in with the card again")
	// ErrOtherCard: a PIV caller uses the session of another card.
	ErrOtherCard = errors.New("this PIV session belongs to another card than the one of the TLS connection")
	// ErrTerminated: the PIV identity (card or person) has been terminated.
	ErrTerminated = errors.New("activation: this PIV identity has been terminated; its derived credentials are revoked and no new ones are issued")
)

// Defaults of the piv section that this service uses.
const (
	DefaultChallengeTTL = 2 * time.Minute
	DefaultSessionTTL   = 20 * time.Minute
)

// Store is what sessions need of the store.
type Store interface {
	CreateChallenge(ctx context.Context, c store.Challenge) error
	ConsumeChallenge(ctx context.Context, sessionID string, now time.Time) (store.Challenge, error)
	CreatePIVSession(ctx context.Context, s store.PIVSession, cert store.PIVCertificate) error
	PIVSession(ctx context.Context, tokenHash string) (store.PIVSession, error)
	EndPIVSession(ctx context.Context, tokenHash string, now time.Time) error
	PIVCertificate(ctx context.Context, sha256 string) (store.PIVCertificate, error)
	Terminated(ctx context.Context, fascn []byte, cardUUID, personID string) (bool, error)
	DeleteExpired(ctx context.Context, now time.Time) (int64, error)
	Ping(ctx context.Context) error
	NoteCardSignOut(ctx context.Context, certSHA256 string, at time.Time) error
	CardSignOut(ctx context.Context, certSHA256 string) (time.Time, bool, error)
	TakePortalForm(ctx context.Context, onceHash string, now time.Time) (taken, made bool, err error)
	EndPortalForm(ctx context.Context, onceHash string, made bool) error
}

// Config configures the service.
type Config struct {
	// GatewayID is signed into every challenge digest.
	GatewayID string
	// ChallengeTTL (default 2m) and SessionTTL (default 20m).
	ChallengeTTL, SessionTTL time.Duration
	Store                    Store
	Verifier                 *piv.Verifier
	Audit                    *audit.Log
	Log                      *slog.Logger
	Now                      func() time.Time
}

// Service runs PKI-AUTH sessions.
type Service struct{ cfg Config }

// Ready reports whether sign-in can be served: the store answers within
// ctx. The gateway's /readyz asks it.
func (s *Service) Ready(ctx context.Context) error { return s.cfg.Store.Ping(ctx) }

// New fills in the defaults.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Verifier == nil || cfg.Audit == nil || cfg.Log == nil {
		return nil, errors.New("session: needs a store, a verifier, an audit log and a logger")
	}
	if cfg.ChallengeTTL == 0 {
		cfg.ChallengeTTL = DefaultChallengeTTL
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{cfg: cfg}, nil
}

// randomToken is n random bytes, base64url without padding.
func randomToken(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// sessionTokenBytes is the size of a session token (before base64url).
const sessionTokenBytes = 32

// wellFormedToken reports whether t could be a session token: 32 bytes,
// base64url without padding.
func wellFormedToken(t string) bool {
	if len(t) != base64.RawURLEncoding.EncodedLen(sessionTokenBytes) {
		return false
	}
	_, err := base64.RawURLEncoding.Strict().DecodeString(t)
	return err == nil
}

// TokenHash is what the store keeps of a session token.
func TokenHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// portalHash is what the store keeps of a portal session's token: another
// hash than TokenHash, so that a portal cookie is never a gRPC session
// token (and the reverse).
func portalHash(token string) string { return TokenHash("credgw-portal-session\x00" + token) }

// Begin makes a single-use challenge.
func (s *Service) Begin(ctx context.Context) (store.Challenge, error) {
	sid, err := randomToken(16)
	if err != nil {
		return store.Challenge{}, err
	}
	challenge := make([]byte, piv.ChallengeSize)
	if _, err := rand.Read(challenge); err != nil {
		return store.Challenge{}, err
	}
	now := s.cfg.Now()
	c := store.Challenge{SessionID: sid, Challenge: challenge, GatewayID: s.cfg.GatewayID, CreatedAt: now, ExpiresAt: now.Add(s.cfg.ChallengeTTL)}
	if err := s.cfg.Store.CreateChallenge(ctx, c); err != nil {
		return store.Challenge{}, err
	}
	return c, nil
}

// Proof is a card's answer to a challenge.
type Proof struct {
	SessionID string
	// Certificates are the DER PIV Authentication certificate and the
	// intermediates the client sent; they are parsed after the challenge
	// is spent.
	Certificates [][]byte
	Algorithm    piv.SignatureAlgorithm
	Signature    []byte
	// DigitalSignature is the card's 9C certificate, or nil: the email of
	// record comes from it when 9A has none.
	DigitalSignature []byte
	// TLSCard is the PIV Authentication certificate of the caller's TLS
	// connection, when it signed in with one: it must be the same card.
	TLSCard *x509.Certificate
	// Source is the caller's address, for the audit log.
	Source string
}

type spentKey struct{}

// WithSpent returns ctx for a Complete that calls spent once it has spent
// its challenge, whatever follows (a refusal too): the gateway's count of
// a card's outstanding challenges goes down then, and not for a session id
// no challenge had.
func WithSpent(ctx context.Context, spent func()) context.Context {
	return context.WithValue(ctx, spentKey{}, spent)
}

// Opened is a PIV session just opened.
type Opened struct {
	Token       string
	ExpiresAt   time.Time
	Identity    piv.Identity
	EmailSource string
	Leaf        *x509.Certificate
	// Fingerprint is the hex SHA-256 of the PIV Authentication certificate.
	Fingerprint string
}

// Complete spends the challenge (single use, whatever follows: a malformed
// certificate too), checks the card's signature over it and its
// certificate, and opens a session. A refusal after the challenge is spent
// is recorded in the audit log with its reason (a refusal before — an
// unknown or replayed session id — carries no identity and is only logged,
// so that nobody can grow the log without a fresh challenge, and those are
// rate-limited).
func (s *Service) Complete(ctx context.Context, p Proof) (*Opened, error) {
	now := s.cfg.Now()
	ch, err := s.cfg.Store.ConsumeChallenge(ctx, p.SessionID, now)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, ErrUnknownChallenge
	case errors.Is(err, store.ErrAlreadyUsed):
		s.cfg.Log.InfoContext(ctx, "PKI-AUTH refused: a replayed challenge", "source", p.Source)
		return nil, ErrReplay
	case err != nil:
		return nil, err
	}
	if spent, ok := ctx.Value(spentKey{}).(func()); ok {
		spent()
	}
	o, err := s.complete(ctx, ch, now, p)
	if err != nil {
		var leaf *x509.Certificate
		var inter []*x509.Certificate
		if len(p.Certificates) > 0 {
			leaf, _ = x509.ParseCertificate(p.Certificates[0])
			inter, _ = piv.ParseCertificates(p.Certificates[1:]...)
		}
		s.recordRefusal(ctx, "piv-auth", "session_id="+ch.SessionID+"; ", leaf, inter, p.Source, err)
	}
	return o, err
}

// complete is Complete once the challenge is spent.
func (s *Service) complete(ctx context.Context, ch store.Challenge, now time.Time, p Proof) (*Opened, error) {
	if !now.Before(ch.ExpiresAt) {
		return nil, fmt.Errorf("%w at %s; call BeginSession again and sign within %s", ErrChallengeExpired,
			ch.ExpiresAt.UTC().Format("15:04:05Z"), s.cfg.ChallengeTTL)
	}
	chain, err := piv.ParseCertificates(p.Certificates...)
	if err != nil {
		return nil, err
	}
	leaf, inter := chain[0], chain[1:]
	if p.TLSCard != nil && !bytes.Equal(p.TLSCard.Raw, leaf.Raw) {
		return nil, ErrNotTLSCard
	}
	digest := piv.ChallengeDigest(ch.GatewayID, ch.SessionID, ch.Challenge)
	if err := piv.VerifyChallengeSignature(leaf.PublicKey, p.Algorithm, digest, p.Signature); err != nil {
		return nil, err
	}
	res, err := s.cfg.Verifier.VerifyPIVAuth(ctx, leaf, inter)
	if err != nil {
		return nil, err
	}
	id := res.Identity
	emailSource := ""
	var dsDER []byte
	if id.Email != "" {
		emailSource = "piv-auth"
	} else if len(p.DigitalSignature) > 0 {
		ds, err := piv.ParseCertificates(p.DigitalSignature)
		if err != nil {
			return nil, fmt.Errorf("digital_signature_certificate: %w", err)
		}
		email, err := s.cfg.Verifier.VerifyDigitalSignature(ctx, ds[0], leaf, inter)
		switch {
		case errors.Is(err, piv.ErrNotThisCard):
			emailSource = EmailSourceUnbound
			// Not shown to be this card's: its email is not taken, and
			// the sign-in goes on without one (S/MIME credentials then
			// say the card gave none). Recorded: a namesake's
			// certificate sent with a card may be hostile.
			s.cfg.Log.WarnContext(ctx, "PKI-AUTH: the Digital Signature certificate is not taken as this card's; no email of record",
				"person_id", id.PersonID, "cause", err.Error())
			s.cfg.Audit.Record(ctx, store.AuditEvent{Actor: "piv:" + id.PersonID, Action: "digital-signature", PersonID: id.PersonID,
				CardUUID: id.CardUUID, Source: p.Source, Outcome: "refused",
				Detail: "not shown to be this card's, so no email of record taken from it: " + err.Error()})
		case err != nil:
			return nil, fmt.Errorf("digital_signature_certificate: %w", err)
		default:
			// Kept with this PIV Authentication certificate, for the portal.
			id.Email, emailSource, dsDER = email, "digital-signature", ds[0].Raw
		}
	}
	o, err := s.open(ctx, ch.SessionID, res, id, emailSource, dsDER, p.Source, TokenHash)
	if err != nil {
		return nil, err
	}
	s.cfg.Log.InfoContext(ctx, "PKI-AUTH succeeded", "person_id", id.PersonID, "card_uuid", id.CardUUID,
		"piv_auth_serial", leaf.SerialNumber.Text(16), "status_source", res.StatusSource)
	return o, nil
}

// EmailSourceUnbound is the email source of a session whose card sent a
// Digital Signature certificate not shown to be the card's (another CA,
// no card UUID): no email was taken from it, and signing in again cannot
// change that.
const EmailSourceUnbound = "digital-signature-unbound"

// SignInTLS opens a session for a card that authenticated the TLS
// connection (the portal): the handshake stands in for the challenge (SP
// 800-157r1 App. C.1), and a spent challenge row keeps the session's record
// complete.
func (s *Service) SignInTLS(ctx context.Context, leaf *x509.Certificate, chain []*x509.Certificate, source string) (*Opened, error) {
	o, err := s.signInTLS(ctx, leaf, chain, source)
	if err != nil {
		s.recordRefusal(ctx, "portal-sign-in", "", leaf, chain, source, err)
	}
	return o, err
}

// recordRefusal records a refused sign-in in the audit log: the reason,
// the certificate's SHA-256 and the card it claims to be, and the source.
// A certificate that does not chain to the PIV anchors, or does not parse,
// is only logged: anyone can make one, so recording it would let anyone
// grow the log (the portal and PKI-AUTH rate-limit per address too). That
// holds whatever check refused it first: the key, key usage and policy
// are checked before the path, so a certificate refused for those is
// recorded only if it chains.
func (s *Service) recordRefusal(ctx context.Context, action, detail string, leaf *x509.Certificate, inter []*x509.Certificate, source string, err error) {
	if leaf == nil || errors.Is(err, piv.ErrUntrusted) || errors.Is(err, piv.ErrMalformed) || !s.cfg.Verifier.Chains(leaf, inter) {
		s.cfg.Log.InfoContext(ctx, "sign-in refused", "action", action, "source", source, "cause", err.Error())
		return
	}
	e := store.AuditEvent{Actor: "card", Action: action, Outcome: audit.Refused, Source: source, Detail: detail + "refused: " + err.Error()}
	sum := sha256.Sum256(leaf.Raw)
	e.Detail += "; piv_auth_sha256=" + hex.EncodeToString(sum[:])
	// Claimed, not proven: the certificate did not verify.
	if id, ierr := piv.IdentityFromCertificate(leaf); ierr == nil && id.CardUUID != "" {
		e.Detail += "; claimed_card_uuid=" + id.CardUUID
	}
	s.cfg.Audit.Record(ctx, e)
}

func (s *Service) signInTLS(ctx context.Context, leaf *x509.Certificate, chain []*x509.Certificate, source string) (*Opened, error) {
	res, err := s.cfg.Verifier.VerifyPIVAuth(ctx, leaf, chain)
	if err != nil {
		return nil, err
	}
	id := res.Identity
	emailSource := ""
	if id.Email != "" {
		emailSource = "piv-auth"
	} else if email, err := s.keptSignatureEmail(ctx, res, chain); err != nil {
		return nil, err
	} else if email != "" {
		id.Email, emailSource = email, "digital-signature"
	}
	sid, err := randomToken(16)
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	if err := s.cfg.Store.CreateChallenge(ctx, store.Challenge{SessionID: sid, Challenge: []byte("tls-client-auth"), GatewayID: s.cfg.GatewayID,
		CreatedAt: now, ExpiresAt: now}); err != nil {
		return nil, err
	}
	if _, err := s.cfg.Store.ConsumeChallenge(ctx, sid, now); err != nil {
		return nil, err
	}
	o, err := s.open(ctx, sid, res, id, emailSource, nil, source, portalHash)
	if err != nil {
		return nil, err
	}
	s.cfg.Log.InfoContext(ctx, "portal sign-in", "person_id", id.PersonID, "card_uuid", id.CardUUID, "status_source", res.StatusSource)
	return o, nil
}

// keptSignatureEmail is the email of the Digital Signature (9C)
// certificate that an earlier PKI-AUTH verified with this very PIV
// Authentication certificate (a browser presents 9A alone), or "". It is
// checked again — same subject as the card's 9A, its own path, policy and
// status today — so that a 9C revoked or expired since gives nothing; it
// is found by the SHA-256 of the certificate the TLS handshake proved, so
// one card's email never reaches another card.
func (s *Service) keptSignatureEmail(ctx context.Context, res *piv.Result, chain []*x509.Certificate) (string, error) {
	kept, err := s.cfg.Store.PIVCertificate(ctx, res.Fingerprint())
	if errors.Is(err, store.ErrNotFound) || (err == nil && len(kept.DigitalSignature) == 0) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	ds, err := piv.ParseCertificates(kept.DigitalSignature)
	var email string
	if err == nil {
		email, err = s.cfg.Verifier.VerifyDigitalSignature(ctx, ds[0], res.Leaf, chain)
	}
	if errors.Is(err, piv.ErrStatusUnavailable) {
		return "", err
	}
	if err != nil {
		s.cfg.Log.WarnContext(ctx, "portal sign-in: the Digital Signature certificate kept for this card does not verify; no email of record",
			"person_id", res.Identity.PersonID, "card_uuid", res.Identity.CardUUID, "cause", err.Error())
		return "", nil
	}
	return email, nil
}

// open keeps the copy of the verified PIV Authentication certificate (and
// the Digital Signature certificate verified with it, if any) and records a
// session of SessionTTL; only the token's hash is stored.
func (s *Service) open(ctx context.Context, sessionID string, res *piv.Result, id piv.Identity, emailSource string, digitalSignature []byte, src string, hash func(string) string) (*Opened, error) {
	// A terminated identity's card may still verify (a collected card's
	// certificate need not be revoked: SP 800-157r1 §2.4).
	if t, err := s.cfg.Store.Terminated(ctx, id.FASCNRaw, id.CardUUID, id.PersonID); err != nil {
		return nil, err
	} else if t {
		return nil, ErrTerminated
	}
	token, err := randomToken(sessionTokenBytes)
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	expires := now.Add(s.cfg.SessionTTL)
	leaf := res.Leaf
	fp := res.Fingerprint()
	err = s.cfg.Store.CreatePIVSession(ctx, store.PIVSession{
		TokenHash: hash(token), SessionID: sessionID, CertSHA256: fp, PersonID: id.PersonID,
		FASCN: id.FASCNRaw, CardUUID: id.CardUUID, UPN: id.UPN, Email: id.Email, EmailSource: emailSource,
		Subject: id.Subject, SourceAddr: src, CreatedAt: now, ExpiresAt: expires,
	}, store.PIVCertificate{
		SHA256: fp, DER: leaf.Raw, Serial: leaf.SerialNumber.Text(16), Issuer: leaf.Issuer.String(),
		Subject: id.Subject, FASCN: id.FASCNRaw, CardUUID: id.CardUUID, NotAfter: leaf.NotAfter, DigitalSignature: digitalSignature,
	})
	if err != nil {
		return nil, err
	}
	s.cfg.Audit.Record(ctx, store.AuditEvent{Actor: "piv:" + id.PersonID, Action: "piv-auth", PersonID: id.PersonID, CardUUID: id.CardUUID,
		Source: src, Detail: "piv_auth_sha256=" + fp + "; status=" + res.StatusSource})
	return &Opened{Token: token, ExpiresAt: expires, Identity: id, EmailSource: emailSource, Leaf: leaf, Fingerprint: fp}, nil
}

// Lookup finds the live session of a token. With tlsCard (a caller signed
// in by its card's TLS client certificate), the session must be of that
// card.
//
// A token must be one Complete made: anything else (a portal cookie
// prefixed as the store hashes portal sessions, portalHash) is no
// session, and costs no database read. A session whose PIV identity was
// terminated since the sign-in ends (ErrTerminated), as LookupPortal's.
func (s *Service) Lookup(ctx context.Context, token string, tlsCard *x509.Certificate) (store.PIVSession, error) {
	if !wellFormedToken(token) {
		return store.PIVSession{}, ErrSessionGone
	}
	sess, err := s.cfg.Store.PIVSession(ctx, TokenHash(token))
	if errors.Is(err, store.ErrNotFound) || (err == nil && !s.cfg.Now().Before(sess.ExpiresAt)) {
		return store.PIVSession{}, ErrSessionGone
	}
	if err != nil {
		return store.PIVSession{}, err
	}
	if tlsCard != nil {
		fp := sha256.Sum256(tlsCard.Raw)
		if hex.EncodeToString(fp[:]) != sess.CertSHA256 {
			return store.PIVSession{}, ErrOtherCard
		}
	}
	if err := s.endIfTerminated(ctx, sess, TokenHash(token), "piv-session"); err != nil {
		return store.PIVSession{}, err
	}
	return sess, nil
}

// endIfTerminated ends a session (kept under hash) whose PIV identity was
// terminated since its sign-in, audits it under action and answers
// ErrTerminated; nil for a live identity.
func (s *Service) endIfTerminated(ctx context.Context, sess store.PIVSession, hash, action string) error {
	terminated, err := s.cfg.Store.Terminated(ctx, sess.FASCN, sess.CardUUID, sess.PersonID)
	if err != nil || !terminated {
		return err
	}
	if err := s.cfg.Store.EndPIVSession(context.WithoutCancel(ctx), hash, s.cfg.Now()); err != nil {
		return err
	}
	s.cfg.Log.InfoContext(ctx, action+" of a terminated PIV identity: ended", "person_id", sess.PersonID, "card_uuid", sess.CardUUID)
	s.cfg.Audit.Record(ctx, store.AuditEvent{Actor: "piv:" + sess.PersonID, Action: action, Outcome: "refused",
		PersonID: sess.PersonID, CardUUID: sess.CardUUID, Detail: "session ended: the PIV identity has been terminated"})
	return ErrTerminated
}

// End signs a session out (a token Complete made; nothing else is one).
func (s *Service) End(ctx context.Context, token string) error {
	if !wellFormedToken(token) {
		return nil
	}
	return s.cfg.Store.EndPIVSession(ctx, TokenHash(token), s.cfg.Now())
}

// LookupPortal finds the live portal session of a cookie. It is bound to
// the card that signed in: card, the client certificate of the request's
// TLS connection, must be that card. A cookie presented without it or over
// another card's connection (a stolen cookie) ends the session, and the
// answer is ErrSessionGone. With card nil and check false, the caller has
// checked the card in the same request already.
func (s *Service) LookupPortal(ctx context.Context, token string, card *x509.Certificate, check bool) (store.PIVSession, error) {
	if !wellFormedToken(token) {
		// No session has it: not worth a database read (anyone with a
		// TLS handshake can send cookies).
		return store.PIVSession{}, ErrSessionGone
	}
	sess, err := s.cfg.Store.PIVSession(ctx, portalHash(token))
	if errors.Is(err, store.ErrNotFound) || (err == nil && !s.cfg.Now().Before(sess.ExpiresAt)) {
		return store.PIVSession{}, ErrSessionGone
	}
	if err != nil || !check {
		return sess, err
	}
	why := "no client certificate"
	if card != nil {
		fp := sha256.Sum256(card.Raw)
		if hex.EncodeToString(fp[:]) == sess.CertSHA256 {
			// The person may have been terminated since the sign-in:
			// the session ends then (it lists and revokes credentials).
			if err := s.endIfTerminated(ctx, sess, portalHash(token), "portal-session"); err != nil {
				return store.PIVSession{}, err
			}
			return sess, nil
		}
		why = "another card's client certificate"
	}
	if err := s.cfg.Store.EndPIVSession(context.WithoutCancel(ctx), portalHash(token), s.cfg.Now()); err != nil {
		return store.PIVSession{}, err
	}
	s.cfg.Log.WarnContext(ctx, "portal session presented with "+why+": ended", "person_id", sess.PersonID, "card_uuid", sess.CardUUID)
	s.cfg.Audit.Record(ctx, store.AuditEvent{Actor: "piv:" + sess.PersonID, Action: "portal-session", Outcome: "refused",
		PersonID: sess.PersonID, CardUUID: sess.CardUUID, Detail: "session ended: presented with " + why})
	return store.PIVSession{}, ErrSessionGone
}

// EndPortal signs a portal session out.
func (s *Service) EndPortal(ctx context.Context, token string) error {
	return s.cfg.Store.EndPIVSession(ctx, portalHash(token), s.cfg.Now())
}

// NoteCardSignOut records, for every replica, that the card (its PIV
// Authentication certificate) signed out of the portal now: a connection
// of that card opened before must not sign anyone in again.
// at is the replica's time of it (the store keeps microseconds).
func (s *Service) NoteCardSignOut(ctx context.Context, card *x509.Certificate, at time.Time) error {
	fp := sha256.Sum256(card.Raw)
	return s.cfg.Store.NoteCardSignOut(ctx, hex.EncodeToString(fp[:]), at)
}

// CardChains reports whether a card certificate chains to the PIV trust
// anchors (no status asked): one anybody could make does not.
func (s *Service) CardChains(leaf *x509.Certificate, inter []*x509.Certificate) bool {
	return s.cfg.Verifier.Chains(leaf, inter)
}

// CardSignOut is when the card last signed out of the portal, on any
// replica, by that replica's clock (ok false: not within two hours).
func (s *Service) CardSignOut(ctx context.Context, card *x509.Certificate) (at time.Time, ok bool, err error) {
	fp := sha256.Sum256(card.Raw)
	return s.cfg.Store.CardSignOut(ctx, hex.EncodeToString(fp[:]))
}

// TakePortalForm takes the portal's enroll form with this one-time value,
// for every replica: false if it was taken before (made: its enrollment
// was made; otherwise it is being made).
func (s *Service) TakePortalForm(ctx context.Context, once string) (taken, made bool, err error) {
	return s.cfg.Store.TakePortalForm(ctx, TokenHash("credgw-portal-form\x00"+once), s.cfg.Now())
}

// EndPortalForm records a taken form's outcome: made, or given back.
func (s *Service) EndPortalForm(ctx context.Context, once string, made bool) error {
	return s.cfg.Store.EndPortalForm(ctx, TokenHash("credgw-portal-form\x00"+once), made)
}

// Sweep deletes expired challenges and sessions. It is idempotent: every
// replica may run it.
func (s *Service) Sweep(ctx context.Context) {
	if n, err := s.cfg.Store.DeleteExpired(ctx, s.cfg.Now()); err != nil {
		s.cfg.Log.WarnContext(ctx, "deleting expired PIV sessions", "err", err)
	} else if n > 0 {
		s.cfg.Log.DebugContext(ctx, "deleted expired PIV sessions and challenges", "rows", n)
	}
}
