package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/credgw/credgw/activation"
	"github.com/credgw/credgw/activation/notify"
	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/piv/session"
	"github.com/credgw/credgw/pkcs11"
	"github.com/credgw/credgw/portal"
	"github.com/credgw/credgw/store"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// portalBackend is what the portal pages ask of the gateway. Its sessions
// are PIV sessions, in the store: any replica serves any page.
type portalBackend struct{ s *Server }

var _ portal.Backend = portalBackend{}

var errSessionGone = portal.ErrSessionGone

func (b portalBackend) SignIn(ctx context.Context, leaf *x509.Certificate, chain []*x509.Certificate, source string) (portal.Session, error) {
	// The address first: a certificate is not verified yet, and anyone
	// can mint new ones to get new per-card buckets.
	host := sourceKeyOf(source, b.s.cfg.Limits.SourcePrefixV6)
	undoAddr, wait, ok := b.s.limits.signInAddr.reserve(host)
	if !ok {
		return portal.Session{}, limited("sign-ins from this address", wait)
	}
	sum := sha256.Sum256(leaf.Raw)
	if wait, ok := b.s.limits.signInCard.take(hex.EncodeToString(sum[:])); !ok {
		undoAddr() // a refused sign-in spends nothing
		return portal.Session{}, limited("sign-ins with this card", wait)
	}
	o, err := b.s.sessions.SignInTLS(ctx, leaf, chain, source)
	if err != nil {
		return portal.Session{}, err
	}
	id := o.Identity
	return portal.Session{Token: o.Token, Subject: id.Subject, Email: id.Email, CardUUID: id.CardUUID, ExpiresAt: o.ExpiresAt}, nil
}

// TakeForm takes an enroll form for every replica (the store).
func (b portalBackend) TakeForm(ctx context.Context, once string) (taken, made bool, err error) {
	return b.s.sessions.TakePortalForm(ctx, once)
}

// EndForm records a taken form's outcome.
func (b portalBackend) EndForm(ctx context.Context, once string, made bool) error {
	return b.s.sessions.EndPortalForm(ctx, once, made)
}

// session finds the portal session of a token whose card the portal has
// checked in this request (Session).
func (b portalBackend) session(ctx context.Context, token string) (store.PIVSession, error) {
	sess, err := b.s.sessions.LookupPortal(ctx, token, nil, false)
	if errors.Is(err, session.ErrSessionGone) {
		return sess, errSessionGone
	}
	return sess, err
}

func (b portalBackend) Session(ctx context.Context, token string, card *x509.Certificate) (portal.Session, error) {
	sess, err := b.s.sessions.LookupPortal(ctx, token, card, true)
	switch {
	case errors.Is(err, session.ErrSessionGone):
		err = errSessionGone
	case errors.Is(err, session.ErrTerminated):
		// Ended: the cookie goes too (and the page says why).
		err = errors.Join(errSessionGone, err)
	}
	if err != nil {
		return portal.Session{}, err
	}
	return portal.Session{Token: token, Subject: sess.Subject, Email: sess.Email, CardUUID: sess.CardUUID, ExpiresAt: sess.ExpiresAt}, nil
}

func (b portalBackend) SignOut(ctx context.Context, token string) error {
	if err := b.s.sessions.EndPortal(ctx, token); err != nil {
		return err
	}
	if ended, ok := ctx.Value(signedOutKey{}).(*bool); ok {
		*ended = true
	}
	return nil
}

// signedOutKey carries, in a portal request's context, where SignOut
// records that it ended the session (freshCardProof then notes the card's
// sign-out).
type signedOutKey struct{}

func (b portalBackend) Enroll(ctx context.Context, token, name, ctype string) (portal.Enrollment, error) {
	sess, err := b.session(ctx, token)
	if err != nil {
		return portal.Enrollment{}, err
	}
	if b.s.activation == nil {
		return portal.Enrollment{}, errNoCA
	}
	if wait, ok := b.s.limits.enrollCard.take(sess.CertSHA256); !ok {
		return portal.Enrollment{}, limited("enrollments for this card", wait)
	}
	en, err := b.s.activation.Enroll(ctx, activation.EnrollRequest{Session: sess, IdentityName: name, CredentialType: ctype, Portal: true})
	if err != nil {
		return portal.Enrollment{}, err
	}
	return portal.Enrollment{ActivationID: en.ActivationID, QRPNG: en.PNG, Password: en.Password, ExpiresAt: en.ExpiresAt}, nil
}

func (b portalBackend) Credentials(ctx context.Context, token string) ([]portal.Credential, error) {
	sess, err := b.session(ctx, token)
	if err != nil || b.s.activation == nil {
		return nil, err
	}
	vs, err := b.s.activation.SetsOfPerson(ctx, sess.PersonID)
	if err != nil {
		return nil, err
	}
	var out []portal.Credential
	for _, v := range vs {
		cs := v.Set
		c := portal.Credential{ID: cs.ID, Name: cs.IdentityName, Type: cs.CredentialType, State: cs.State, Issued: cs.CreatedAt}
		c.Device = storedDevice(cs.Device).GetModel()
		if v.Activation != nil {
			c.Activation = v.Activation.State
		}
		for _, r := range v.Certificates {
			if c.Expires.IsZero() || r.NotAfter.Before(c.Expires) {
				c.Expires = r.NotAfter
			}
		}
		out = append(out, c)
	}
	return out, nil
}

func (b portalBackend) Revoke(ctx context.Context, token, setID string, lost bool) error {
	sess, err := b.session(ctx, token)
	if err != nil {
		return err
	}
	if b.s.lifecycle == nil {
		return errNoCA
	}
	// A lost or stolen device's keys may be in someone else's hands
	// (keyCompromise: relying parties distrust what they signed, and the
	// escrowed keys it received are marked compromised in later key
	// histories); a device replaced or retired simply ends.
	reason := issuance.ReasonCessationOfOperation
	if lost {
		reason = issuance.ReasonKeyCompromise
	}
	_, err = b.s.lifecycle.RevokeOwn(ctx, sess.PersonID, setID, reason, true)
	return err
}

func (b portalBackend) CredentialTypes() []string {
	if b.s.activation == nil {
		return nil
	}
	t := b.s.activation.CredentialTypes()
	sort.Strings(t)
	return t
}

// Explain tells the person what happened and what to do next.
func (b portalBackend) Explain(err error) (string, string, int) {
	switch {
	case errors.Is(err, piv.ErrRevoked):
		return "Your card has been revoked", "You cannot use this card to enroll. Contact your badge office for a new card.", http.StatusForbidden
	case errors.Is(err, piv.ErrExpired), errors.Is(err, piv.ErrNotYetValid):
		return "Your card's certificate is not valid today", "Contact your badge office to renew your card.", http.StatusForbidden
	case errors.Is(err, piv.ErrStatusUnavailable):
		return "Your card's status cannot be checked right now", "Try again in a few minutes. Nothing was changed.", http.StatusServiceUnavailable
	case errors.Is(err, piv.ErrPolicy), errors.Is(err, piv.ErrUntrusted), errors.Is(err, piv.ErrKeyUsage), errors.Is(err, piv.ErrKey), errors.Is(err, piv.ErrMalformed):
		return "This is not a PIV card this portal accepts", "Sign in with your agency PIV card (its PIV Authentication certificate). Derived credentials and other cards cannot be used here.", http.StatusForbidden
	case errors.Is(err, activation.ErrTerminated):
		return "Your PIV account has been terminated", "You cannot sign in or enroll. If this is a mistake, contact your badge office.", http.StatusForbidden
	case errors.Is(err, errSessionGone):
		return "Your session has ended", "Sign in with your card again.", http.StatusUnauthorized
	case errors.Is(err, activation.ErrCap):
		return "You have the most derived credentials allowed", "Revoke one you no longer use (My derived credentials), then enroll again.", http.StatusConflict
	case errors.Is(err, issuance.ErrNoEmail):
		// Many cards carry the email only in their Digital Signature (9C)
		// certificate, which a browser's TLS sign-in does not present; a
		// PKI-AUTH with the card sends it, and the gateway keeps it.
		return "We do not know your card's email address",
			"The S/MIME credentials need your email address. Many cards hold it only in their Digital Signature certificate, which a browser cannot show us: " +
				"sign in once with this card using credgw piv login (or your agency's enrollment app), then sign out here (the button above) and sign in again. " +
				"If your card has no email address, contact your badge office.", http.StatusConflict
	case errors.Is(err, activation.ErrSessionTooOld):
		return "Your sign-in is too old to enroll", "Sign in with your card again; enrollment must follow within 20 minutes.", http.StatusUnauthorized
	case errors.Is(err, activation.ErrInvalid):
		return "Please check the form", strings.TrimPrefix(err.Error(), "activation: invalid request: "), http.StatusBadRequest
	case errors.Is(err, activation.ErrNotYours):
		return "No such credential", "It may have been revoked already.", http.StatusNotFound
	case errors.Is(err, pkcs11.ErrTokenUnavailable):
		// The operator's log says which token and why; the person can
		// only wait (the gateway reconnects on its own).
		b.s.log.Warn("portal: the HSM is unavailable", "cause", err.Error())
		return "Enrollment is unavailable right now", "The credential service cannot reach its HSM. Try again in a few minutes; if it lasts, contact your help desk.", http.StatusServiceUnavailable
	case errors.Is(err, pkcs11.ErrKeyChanged):
		b.s.log.Error("portal: HSM key changed: refusing to use it", "cause", err.Error())
		return "Enrollment is unavailable right now", "The credential service's HSM needs its operator's attention. Try again later; if it lasts, contact your help desk.", http.StatusServiceUnavailable
	case errors.Is(err, store.ErrUnavailable):
		b.s.log.Warn("portal: the database is unavailable", "cause", err.Error())
		return "Enrollment is unavailable right now", "The credential service cannot reach its database. Try again in a few minutes; if it lasts, contact your help desk.", http.StatusServiceUnavailable
	}
	if st, ok := status.FromError(err); ok && st.Code() == codes.ResourceExhausted {
		// The limit says what was too many (sign-ins or enrollments, for
		// the card or from the address) and when to try again.
		return "Too many requests", st.Message() + ".", http.StatusTooManyRequests
	}
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unavailable {
		return "Enrollment is unavailable right now", st.Message(), http.StatusServiceUnavailable
	}
	if st, ok := status.FromError(err); ok && st.Code() == codes.FailedPrecondition {
		return "Enrollment is not available", st.Message(), http.StatusServiceUnavailable
	}
	b.s.log.Error("portal: internal error", "cause", err.Error())
	return "Something went wrong", "Try again. If it happens again, contact your help desk.", http.StatusInternalServerError
}

// portalCSRFKey reads portal.csrf_key_file (shared by replicas) or makes
// one for this process.
func portalCSRFKey(cfg *Config) ([]byte, error) {
	if cfg.Portal.CSRFKeyFile == "" {
		k := make([]byte, 32)
		_, err := rand.Read(k)
		return k, err
	}
	// Whoever reads it can forge the portal's CSRF tokens: a secret
	// file like the webhooks' keys.
	return notify.ReadKeyFile(cfg.Path(cfg.Portal.CSRFKeyFile), "portal.csrf_key_file")
}

// connOpenedKey is the context key of a portal connection's accept time.
type connOpenedKey struct{}

// connOpened is the portal server's ConnContext: it notes when the
// connection was accepted, just before its TLS handshake.
func (s *Server) connOpened(ctx context.Context, _ net.Conn) context.Context {
	return context.WithValue(ctx, connOpenedKey{}, s.now())
}

// freshCardProof bounds how long one TLS handshake with the card serves
// the portal (portal.max_connection_age). The card's proof is the
// handshake: a browser keeps its connection alive, so without a bound a
// card pulled from the reader would go on serving its session, and new
// sign-ins, for as long as the person's tab keeps the connection busy. A
// request on an older connection is answered with a 307 to itself and
// the connection closes (HTTP/2: GOAWAY), so the browser sends it again on
// a new connection, whose handshake needs the card: with the card there
// the person notices nothing; without it, the session ends (LookupPortal
// ends a session presented without its card) and no sign-in succeeds.
// A 307 keeps the method and the form, CSRF token included.
//
// A sign-out ends the card's other connections the same way: a browser may
// hold several (HTTP/1.1 keep-alive), and the next person at the
// workstation must not sign in on one of them without the card.
func (s *Server) freshCardProof(h http.Handler) http.Handler {
	maxAge := s.cfg.Portal.MaxConnectionAge.Duration
	signOuts := &cardSignOuts{by: map[string]time.Time{}}
	elsewhere := &seenSignOuts{by: map[string]seenSignOut{}}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		opened, ok := r.Context().Value(connOpenedKey{}).(time.Time)
		card := ""
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			sum := sha256.Sum256(r.TLS.PeerCertificates[0].Raw)
			card = hex.EncodeToString(sum[:])
		}
		if ok && (s.now().Sub(opened) > maxAge || card != "" && (signOuts.after(card, opened) || s.signedOutElsewhere(r, card, opened, elsewhere))) {
			w.Header().Set("Connection", "close")
			w.Header().Set("Cache-Control", "no-store")
			// To this path on the portal: one leading slash, for a path
			// such as "//evil.example/x" (not yet cleaned by the mux)
			// would be a Location on another host.
			to := "/" + strings.TrimLeft(r.URL.EscapedPath(), "/")
			if r.URL.RawQuery != "" {
				to += "?" + r.URL.RawQuery
			}
			http.Redirect(w, r, to, http.StatusTemporaryRedirect)
			return
		}
		// Only a sign-out that ended this card's session counts (a refused
		// one, without session or CSRF token, would let anyone add rows).
		ended := new(bool)
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), signedOutKey{}, ended)))
		if card != "" && !*ended && s.ownSignOut(r) {
			// The sign-out form of a session that had expired (or was
			// ended elsewhere): refused, it ends no session, but the
			// person at this card asked to sign out, and the card's other
			// connections must not sign anyone in without it.
			*ended = true
		}
		if card != "" && *ended {
			now := s.now()
			signOuts.note(card, now, maxAge)
			// For the other replicas (a browser's connections may be
			// spread over them): their sign-ins look it up. This replica
			// knows it by its own clock already.
			at := time.UnixMicro(now.UnixMicro()).UTC() // as the store keeps it
			elsewhere.since(card, at, now, maxAge)
			if err := s.sessions.NoteCardSignOut(context.WithoutCancel(r.Context()), r.TLS.PeerCertificates[0], at); err != nil {
				s.log.Error("portal: recording a card's sign-out for the other replicas", "err", err)
			}
		}
	})
}

// ownSignOut reports whether r is a sign-out posted from the portal's own
// page (Sec-Fetch-Site: same-origin; another site's form, or a client that
// sends no Fetch Metadata, is not) by a card that chains to the PIV trust
// anchors (a self-made certificate would let anyone add rows).
func (s *Server) ownSignOut(r *http.Request) bool {
	return r.Method == http.MethodPost && r.URL.Path == "/signout" && r.Header.Get("Sec-Fetch-Site") == "same-origin" &&
		s.sessions.CardChains(r.TLS.PeerCertificates[0], r.TLS.PeerCertificates[1:])
}

// signedOutElsewhere reports, for a sign-in (GET /signin), whether the
// card of its connection signed out on any replica after the connection
// opened. Only a sign-in needs it: every other page needs a session, and
// a sign-out ends the session for every replica. A store that does not
// answer lets the sign-in go on (bounded by max_connection_age).
//
// The stored time is the clock of the replica that served the sign-out;
// this replica's clock may differ, and a connection compared with it
// could be sent to a new one again and again. So a sign-out counts here
// from when this replica first saw it: connections opened before are
// sent to a new connection (those opened between the sign-out and then
// once more than needed), and those opened after are fresh.
func (s *Server) signedOutElsewhere(r *http.Request, card string, opened time.Time, seen *seenSignOuts) bool {
	if r.URL.Path != "/signin" || r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return false
	}
	at, ok, err := s.sessions.CardSignOut(r.Context(), r.TLS.PeerCertificates[0])
	if err != nil {
		s.log.Warn("portal: looking up the card's sign-outs on other replicas", "err", err)
		return false
	}
	if !ok {
		return false
	}
	return opened.Before(seen.since(card, at, s.now(), s.cfg.Portal.MaxConnectionAge.Duration))
}

// seenSignOuts is, per card, the last stored sign-out this replica saw and
// when (by its own clock) it first saw it.
type seenSignOuts struct {
	mu sync.Mutex
	by map[string]seenSignOut
}

type seenSignOut struct{ stored, localAt time.Time }

// since is when, by this replica's clock, the card's sign-out stored at
// stored counts from.
func (c *seenSignOuts) since(card string, stored, now time.Time, keep time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.by[card]
	if !ok || !e.stored.Equal(stored) {
		e = seenSignOut{stored: stored, localAt: now}
		c.by[card] = e
		if len(c.by)%256 == 0 {
			for k, v := range c.by {
				if now.Sub(v.localAt) > keep {
					delete(c.by, k)
				}
			}
		}
	}
	return e.localAt
}

// cardSignOuts is when each card last signed out of the portal on this
// replica (a connection lives on one), kept for max_connection_age: older
// connections are ended by their age anyway.
type cardSignOuts struct {
	mu sync.Mutex
	by map[string]time.Time
}

// after reports whether card signed out after a connection opened at t.
func (c *cardSignOuts) after(card string, t time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.by[card]
	return ok && t.Before(at)
}

func (c *cardSignOuts) note(card string, now time.Time, keep time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.by[card] = now
	if len(c.by)%256 == 0 {
		for k, at := range c.by {
			if now.Sub(at) > keep {
				delete(c.by, k)
			}
		}
	}
}
