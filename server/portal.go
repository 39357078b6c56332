package server

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"sort"
	"strings"

	"github.com/credgw/credgw/activation"
	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/piv"
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
	res, err := b.s.verifier.VerifyPIVAuth(ctx, leaf, chain)
	if err != nil {
		return portal.Session{}, err
	}
	id := res.Identity
	emailSource := ""
	if id.Email != "" {
		emailSource = "piv-auth"
	}
	// TLS client authentication stands in for the challenge (SP 800-157r1
	// App. C.1); a spent challenge row keeps the session's record complete.
	sid, err := randomToken(16)
	if err != nil {
		return portal.Session{}, err
	}
	now := b.s.now()
	if err := b.s.store.CreateChallenge(ctx, store.Challenge{SessionID: sid, Challenge: []byte("tls-client-auth"), GatewayID: b.s.cfg.GatewayID,
		CreatedAt: now, ExpiresAt: now}); err != nil {
		return portal.Session{}, err
	}
	if _, err := b.s.store.ConsumeChallenge(ctx, sid, now); err != nil {
		return portal.Session{}, err
	}
	token, expires, err := b.s.openPIVSession(ctx, sid, res, id, emailSource, source)
	if err != nil {
		return portal.Session{}, err
	}
	b.s.log.Info("portal sign-in", "person_id", id.PersonID, "card_uuid", id.CardUUID, "status_source", res.StatusSource)
	return portal.Session{Token: token, Subject: id.Subject, Email: id.Email, CardUUID: id.CardUUID, ExpiresAt: expires}, nil
}

func (b portalBackend) session(ctx context.Context, token string) (store.PIVSession, error) {
	sess, err := b.s.store.PIVSession(ctx, TokenHash(token))
	if errors.Is(err, store.ErrNotFound) || (err == nil && !b.s.now().Before(sess.ExpiresAt)) {
		return store.PIVSession{}, errSessionGone
	}
	return sess, err
}

func (b portalBackend) Session(ctx context.Context, token string) (portal.Session, error) {
	sess, err := b.session(ctx, token)
	if err != nil {
		return portal.Session{}, err
	}
	return portal.Session{Token: token, Subject: sess.Subject, Email: sess.Email, CardUUID: sess.CardUUID, ExpiresAt: sess.ExpiresAt}, nil
}

func (b portalBackend) SignOut(ctx context.Context, token string) error {
	return b.s.store.EndPIVSession(ctx, TokenHash(token), b.s.now())
}

func (b portalBackend) Enroll(ctx context.Context, token, name, ctype string) (portal.Enrollment, error) {
	sess, err := b.session(ctx, token)
	if err != nil {
		return portal.Enrollment{}, err
	}
	if b.s.activation == nil {
		return portal.Enrollment{}, errNoCA
	}
	en, err := b.s.activation.Enroll(ctx, sess, name, ctype)
	if err != nil {
		return portal.Enrollment{}, err
	}
	b.s.auditSet(ctx, "piv:"+sess.PersonID, "enroll", en.CredentialSetID, "activation_id="+en.ActivationID+"; portal")
	b.s.log.Info("enrollment created (portal)", "person_id", sess.PersonID, "activation_id", en.ActivationID)
	return portal.Enrollment{ActivationID: en.ActivationID, QRPNG: en.PNG, Password: en.Password, ExpiresAt: en.ExpiresAt}, nil
}

func (b portalBackend) Credentials(ctx context.Context, token string) ([]portal.Credential, error) {
	sess, err := b.session(ctx, token)
	if err != nil {
		return nil, err
	}
	sets, err := b.s.store.CredentialSetsOfPerson(ctx, sess.PersonID)
	if err != nil {
		return nil, err
	}
	var out []portal.Credential
	for _, cs := range sets {
		c := portal.Credential{ID: cs.ID, Name: cs.IdentityName, Type: cs.CredentialType, State: cs.State, Issued: cs.CreatedAt}
		if strings.Contains(cs.Device, `"model"`) {
			c.Device = deviceModel(cs.Device)
		}
		a, err := b.s.store.ActivationOfSet(ctx, cs.ID)
		switch {
		case err == nil:
			c.Activation = a.State
			if a.State == store.ActPending && !b.s.now().Before(a.ExpiresAt) {
				c.Activation = store.ActExpired // not swept yet
			}
		case !errors.Is(err, store.ErrNotFound):
			return nil, err
		}
		recs, err := b.s.store.CertificatesOfSet(ctx, cs.ID)
		if err != nil {
			return nil, err
		}
		for _, r := range recs {
			if c.Expires.IsZero() || r.NotAfter.Before(c.Expires) {
				c.Expires = r.NotAfter
			}
		}
		out = append(out, c)
	}
	return out, nil
}

func (b portalBackend) Revoke(ctx context.Context, token, setID string) error {
	sess, err := b.session(ctx, token)
	if err != nil {
		return err
	}
	if b.s.activation == nil {
		return errNoCA
	}
	if _, err := b.s.activation.RevokeSet(ctx, sess.PersonID, setID, issuance.ReasonCessationOfOperation); err != nil {
		return err
	}
	b.s.auditSet(ctx, "piv:"+sess.PersonID, "revoke", setID, "by its owner (portal); reason=5")
	b.s.notifySet(ctx, "revocation", setID, "Derived PIV credentials were revoked", "Derived PIV credentials of yours were revoked at your request (portal).")
	b.s.log.Info("credential set revoked by its owner (portal)", "person_id", sess.PersonID, "credential_set_id", setID)
	return nil
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
	case errors.Is(err, errSessionGone):
		return "Your session has ended", "Sign in with your card again.", http.StatusUnauthorized
	case errors.Is(err, activation.ErrTerminated):
		return "Your PIV account has been terminated", "You cannot sign in or enroll. If this is a mistake, contact your badge office.", http.StatusForbidden
	case errors.Is(err, activation.ErrCap):
		return "You have the most derived credentials allowed", "Revoke one you no longer use (My derived credentials), then enroll again.", http.StatusConflict
	case errors.Is(err, issuance.ErrNoEmail):
		return "Your card has no email address", "The S/MIME credentials need the email on your card. Contact your badge office.", http.StatusConflict
	case errors.Is(err, activation.ErrSessionTooOld):
		return "Your sign-in is too old to enroll", "Sign in with your card again; enrollment must follow within 20 minutes.", http.StatusUnauthorized
	case errors.Is(err, activation.ErrInvalid):
		return "Please check the form", strings.TrimPrefix(err.Error(), "activation: invalid request: "), http.StatusBadRequest
	case errors.Is(err, activation.ErrNotYours):
		return "No such credential", "It may have been revoked already.", http.StatusNotFound
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
	b, err := os.ReadFile(cfg.Path(cfg.Portal.CSRFKeyFile))
	if err != nil {
		return nil, err
	}
	k, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(k) < 32 {
		return nil, errors.New("portal.csrf_key_file: want 64 hex digits")
	}
	return k, nil
}

func deviceModel(j string) string {
	i := strings.Index(j, `"model":"`)
	if i < 0 {
		return ""
	}
	rest := j[i+len(`"model":"`):]
	if k := strings.IndexByte(rest, '"'); k >= 0 {
		return rest[:k]
	}
	return ""
}
