package portal

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Session is a signed-in person, as the backend sees them.
type Session struct {
	Token     string
	Subject   string
	Email     string
	CardUUID  string
	ExpiresAt time.Time
}

// Enrollment is what the QR page shows.
type Enrollment struct {
	ActivationID string
	QRPNG        []byte
	Password     string
	ExpiresAt    time.Time
}

// Credential is one row of "my credentials".
type Credential struct {
	ID, Name, Type, State, Device string
	// Activation is the state of its code: pending, redeeming, completed,
	// locked (too many wrong passwords) or expired.
	Activation      string
	Issued, Expires time.Time
}

// Backend does the work: card verification, sessions, enrollment.
type Backend interface {
	// SignIn verifies the TLS client certificate exactly as PKI-AUTH does
	// and opens a session.
	SignIn(ctx context.Context, leaf *x509.Certificate, chain []*x509.Certificate, source string) (Session, error)
	// Session finds the session of a cookie; card is the client
	// certificate of the request's TLS connection (nil if none), which must
	// be the card that signed in: otherwise the session ends and the answer
	// is ErrSessionGone.
	Session(ctx context.Context, token string, card *x509.Certificate) (Session, error)
	// SignOut ends the session on the server.
	SignOut(ctx context.Context, token string) error
	Enroll(ctx context.Context, token, identityName, credentialType string) (Enrollment, error)
	Credentials(ctx context.Context, token string) ([]Credential, error)
	// Revoke revokes one of the person's sets; lost: the device was lost
	// or stolen (its keys may be in someone else's hands), else replaced
	// or no longer used.
	Revoke(ctx context.Context, token, setID string, lost bool) error
	// CredentialTypes lists the types a person may choose.
	CredentialTypes() []string
	// TakeForm takes an enroll form by its one-time value for every
	// replica: taken is false if it was taken before (made: its
	// enrollment was made; otherwise another replica is making it).
	TakeForm(ctx context.Context, once string) (taken, made bool, err error)
	// EndForm records a taken form's outcome: made, or given back.
	EndForm(ctx context.Context, once string, made bool) error
	// Explain turns a backend error into what the person should read and
	// do: a title and a next step.
	Explain(err error) (title, next string, status int)
}

// CookieName is the session cookie. The __Host- prefix makes browsers
// refuse it unless it is Secure, host-only and Path=/, so a sibling domain
// cannot plant one.
const CookieName = "__Host-credgw_session"

// ErrSessionGone is what Backend.Session returns for an unknown or expired
// session; only then is the cookie cleared (not when the database is briefly
// unreachable).
var ErrSessionGone = errors.New("portal: session unknown or expired")

// Portal is the HTTP handler.
type Portal struct {
	b    Backend
	log  *slog.Logger
	tmpl *template.Template
	csrf []byte // key for CSRF tokens
	// forms are the enroll forms taken (their "once" value), so that a
	// reload of the QR page, which answers the POST, makes no second
	// enrollment. In this replica's memory, for formLife.
	formsMu sync.Mutex
	forms   map[string]*form
}

// form is an enroll form being made (done open) or made.
type form struct {
	at   time.Time
	made bool
	done chan struct{}
}

// formLife is how long an enroll form is remembered as taken: longer than
// a session (20 minutes), within which the form can be posted at all.
const formLife = 30 * time.Minute

// New builds the portal; csrfKey must be 32 random bytes shared by replicas.
// TimeLayout is how a page shows a time: with its date and zone, since
// the reader's zone may not be the gateway's.
const TimeLayout = "2006-01-02 15:04:05 MST"

func when(t time.Time) string { return t.Local().Format(TimeLayout) }

func New(b Backend, log *slog.Logger, csrfKey []byte) (*Portal, error) {
	if len(csrfKey) < 32 {
		return nil, errors.New("portal: the CSRF key must be at least 32 bytes")
	}
	t, err := template.New("").Funcs(template.FuncMap{
		"dataURI": func(png []byte) template.URL {
			return template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(png))
		},
		"when": when,
		"unix": func(t time.Time) int64 { return t.Unix() },
		"iso":  func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"note": credentialNote,
	}).ParseFS(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Portal{b: b, log: log, tmpl: t, csrf: csrfKey, forms: map[string]*form{}}, nil
}

// credentialNote says what a credential set's state means and what to do.
func credentialNote(c Credential) string {
	switch {
	case c.Activation == "locked":
		return "Locked: too many wrong passwords were typed on the device. Nothing was issued. Sign in with your card and enroll again."
	case c.Activation == "expired" && c.State != "revoked":
		return "Expired: the code was not used in time. Nothing was installed. Sign in with your card and enroll again."
	}
	switch c.State {
	case "pending":
		return "Waiting for your device: scan the code and type the password before the code expires."
	case "redeeming":
		return "Your device is downloading. Keep the app open until it says the credentials are installed. " +
			"If the app stopped with an error instead, nothing was installed: revoke this one and enroll again."
	case "active":
		return "In use on this device."
	case "revoked":
		return "Revoked: the device can no longer use these credentials."
	case "abandoned":
		return "Not installed. Sign in with your card and enroll again."
	}
	return ""
}

// Handler returns the portal's routes.
func (p *Portal) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	files := http.StripPrefix("/static/", http.FileServerFS(static))
	mux.Handle("GET /static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r) // files, not listings
			return
		}
		files.ServeHTTP(w, r)
	}))
	mux.HandleFunc("GET /{$}", p.home)
	mux.HandleFunc("GET /signin", p.signIn)
	mux.HandleFunc("POST /signout", closing(p.withSession(p.signOut)))
	mux.HandleFunc("GET /actions", p.withSession(p.actions))
	mux.HandleFunc("GET /enroll/app", p.withSession(p.appInstalled))
	mux.HandleFunc("GET /enroll", p.withSession(p.enrollForm))
	mux.HandleFunc("POST /enroll", p.withSession(p.enroll))
	mux.HandleFunc("GET /credentials", p.withSession(p.credentials))
	mux.HandleFunc("POST /credentials/revoke", p.withSession(p.revoke))
	mux.HandleFunc("GET /lost", p.withSession(p.credentials))
	return SecurityHeaders(mux)
}

// SecurityHeaders: a strict CSP (nothing from elsewhere, no inline script),
// no framing, no referrer, no caching of pages with passwords on them.
// The gateway also puts them on what it answers before the pages (a
// connection sent to a new one).
func SecurityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; img-src 'self' data:; style-src 'self'; script-src 'self'; "+
			"form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		hd.Set("Strict-Transport-Security", "max-age=31536000")
		h.ServeHTTP(w, r)
	})
}

type page struct {
	Title   string
	Session *Session
	CSRF    string
	Data    any
	Error   *errorInfo
}

type errorInfo struct{ Title, Next string }

func (p *Portal) render(w http.ResponseWriter, status int, name string, pg page) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := p.tmpl.ExecuteTemplate(w, name, pg); err != nil {
		p.log.Error("portal: render", "page", name, "err", err)
	}
}

func (p *Portal) fail(w http.ResponseWriter, err error) {
	title, next, status := p.b.Explain(err)
	p.render(w, status, "error.html", page{Title: title, Error: &errorInfo{Title: title, Next: next}})
}

// failIn is fail for a person signed in: the page keeps the session's
// header (the sign-out button), which some advice needs ("sign in again").
func (p *Portal) failIn(w http.ResponseWriter, err error, s Session) {
	title, next, status := p.b.Explain(err)
	if status == http.StatusUnauthorized {
		p.fail(w, err) // the session is over: no sign-out for it
		return
	}
	p.render(w, status, "error.html", page{Title: title, Session: &s, CSRF: p.csrfToken(s), Error: &errorInfo{Title: title, Next: next}})
}

// csrfToken is derived from the session token: nothing to store, and valid
// exactly as long as the session.
func (p *Portal) csrfToken(s Session) string {
	m := hmac.New(sha256.New, p.csrf)
	m.Write([]byte("credgw-portal-csrf\x00" + s.Token))
	return hex.EncodeToString(m.Sum(nil))
}

func (p *Portal) checkCSRF(r *http.Request, s Session) bool {
	got := r.PostFormValue("csrf")
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(p.csrfToken(s))) == 1
}

type sessionHandler func(w http.ResponseWriter, r *http.Request, s Session)

// withSession requires a live session; POSTs also need the CSRF token.
func (p *Portal) withSession(h sessionHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(CookieName)
		if err != nil || c.Value == "" {
			http.Redirect(w, r, "/", http.StatusSeeOther)
			return
		}
		var card *x509.Certificate
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			card = r.TLS.PeerCertificates[0]
		}
		s, err := p.b.Session(r.Context(), c.Value, card)
		if err != nil {
			if errors.Is(err, ErrSessionGone) {
				clearCookie(w)
			}
			p.fail(w, err)
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
			if !p.checkCSRF(r, s) {
				p.render(w, http.StatusForbidden, "error.html", page{Title: "Request refused", Error: &errorInfo{
					Title: "This form is out of date or did not come from this portal",
					Next:  "Go back to the start page and try again."}})
				return
			}
			if !formIsText(r) {
				p.render(w, http.StatusBadRequest, "error.html", page{Title: "Request refused", Error: &errorInfo{
					Title: "The form held characters that are not text",
					Next:  "Type the name again using letters, digits and spaces, and send the form again."}})
				return
			}
		}
		h(w, r, s)
	}
}

func clearCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

// home is the start page; a person signed in goes to their actions
// instead (signing in again would cost a PIN and a sign-in of the card's
// budget). A session that ended is forgotten here; one that cannot be
// looked up now is left for the next page to tell about.
func (p *Portal) home(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(CookieName); err == nil && c.Value != "" {
		var card *x509.Certificate
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			card = r.TLS.PeerCertificates[0]
		}
		switch _, err := p.b.Session(r.Context(), c.Value, card); {
		case err == nil:
			http.Redirect(w, r, "/actions", http.StatusSeeOther)
			return
		case errors.Is(err, ErrSessionGone):
			clearCookie(w)
		}
	}
	p.render(w, http.StatusOK, "home.html", page{Title: "Sign in"})
}

// signIn: the sign-in is the TLS client authentication itself (SP 800-157r1
// App. C.1); the certificate is checked as PKI-AUTH checks it.
func (p *Portal) signIn(w http.ResponseWriter, r *http.Request) {
	if !topLevelNavigation(r) {
		p.render(w, http.StatusForbidden, "error.html", page{Title: "Sign-in refused", Error: &errorInfo{
			Title: "A sign-in must be opened as a page of its own",
			Next:  "Another page tried to sign you in in the background. Open the portal's start page yourself and select Sign in."}})
		return
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		p.render(w, http.StatusUnauthorized, "error.html", page{Title: "No smart card", Error: &errorInfo{
			Title: "No smart card certificate was presented",
			Next:  "Insert your PIV card, then select the sign-in button again and pick your card's certificate when the browser asks."}})
		return
	}
	certs := r.TLS.PeerCertificates
	s, err := p.b.SignIn(r.Context(), certs[0], certs[1:], r.RemoteAddr)
	if err != nil {
		p.fail(w, err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: s.Token, Path: "/", MaxAge: int(time.Until(s.ExpiresAt).Seconds()),
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/actions", http.StatusSeeOther)
}

// closing closes the connection after the response, whatever it is: a
// sign-out refused (its session gone, a stale form) must not leave the
// card's handshake serving either.
func closing(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		h(w, r)
	}
}

func (p *Portal) signOut(w http.ResponseWriter, r *http.Request, s Session) {
	if err := p.b.SignOut(r.Context(), s.Token); err != nil {
		p.fail(w, err)
		return
	}
	clearCookie(w)
	// The connection is the card's handshake: it closes (closing; HTTP/2:
	// GOAWAY), so that whoever uses this browser next needs a card of
	// their own.
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// topLevelNavigation: the request is a page the person opened (a click, a
// typed address, a link from another site), not one another site's page
// made in the background (an image, a fetch, a frame). A sign-in spends the
// card's and the address's sign-in budget and is audited, so no page may
// run it unseen. Browsers send Fetch Metadata (Sec-Fetch-*) on every
// request over HTTPS; a client that sends none (an older browser, a script
// of the person's own) is not a browser another site can drive, and passes.
//
// From another site (cross-site, or a sibling: same-site) the navigation
// must also come from the person's own click or keypress
// (Sec-Fetch-User: ?1): a page that opened a window can navigate it to
// /signin again and again by script, each a top-level navigation, and the
// browser remembers the card certificate chosen, so nothing would show.
// A prefetch or prerender never signs in.
func topLevelNavigation(r *http.Request) bool {
	site, mode, dest := r.Header.Get("Sec-Fetch-Site"), r.Header.Get("Sec-Fetch-Mode"), r.Header.Get("Sec-Fetch-Dest")
	if p := r.Header.Get("Sec-Purpose") + r.Header.Get("Purpose"); strings.Contains(p, "prefetch") || strings.Contains(p, "prerender") {
		return false
	}
	if mode == "" && dest == "" && site == "" {
		return true
	}
	if mode != "navigate" || dest != "document" {
		return false
	}
	return site == "same-origin" || site == "none" || r.Header.Get("Sec-Fetch-User") == "?1"
}

// formIsText refuses a form whose values are not UTF-8 or hold a NUL: the
// names and identifiers in it are stored as text, and PostgreSQL refuses
// both with an error that is the gateway's, not the person's.
func formIsText(r *http.Request) bool {
	for _, vs := range r.PostForm {
		for _, v := range vs {
			if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
				return false
			}
		}
	}
	return true
}

func (p *Portal) actions(w http.ResponseWriter, r *http.Request, s Session) {
	p.render(w, http.StatusOK, "actions.html", page{Title: "What would you like to do?", Session: &s, CSRF: p.csrfToken(s)})
}

func (p *Portal) appInstalled(w http.ResponseWriter, r *http.Request, s Session) {
	p.render(w, http.StatusOK, "app.html", page{Title: "Install the app", Session: &s, CSRF: p.csrfToken(s)})
}

func (p *Portal) enrollForm(w http.ResponseWriter, r *http.Request, s Session) {
	once := make([]byte, 16)
	if _, err := rand.Read(once); err != nil {
		p.fail(w, err)
		return
	}
	p.render(w, http.StatusOK, "enroll.html", page{Title: "Your derived credential", Session: &s, CSRF: p.csrfToken(s),
		Data: enrollPage{Types: p.b.CredentialTypes(), Once: hex.EncodeToString(once)}})
}

// enrollPage is what the enroll form shows.
type enrollPage struct {
	Types []string
	Once  string // this form's one-time value
}

// formState is what takeForm found of a form.
type formState int

const (
	formFresh formState = iota // taken by this request
	formMade                   // its enrollment was made
	formBusy                   // another replica is making its enrollment
)

// takeForm takes an enroll form for this request. A repeat while the
// first is still under way on this replica (a double click) waits for it,
// and takes the form if that one failed; one under way on another replica
// (a load balancer's choice) is formBusy, remembered nowhere, so that a
// resubmission after it failed there is taken. A form without the value
// (a client of its own) is not tracked.
func (p *Portal) takeForm(ctx context.Context, once string) (formState, error) {
	if once == "" {
		return formFresh, nil
	}
	for {
		p.formsMu.Lock()
		now := time.Now()
		f, seen := p.forms[once]
		if !seen || (f.made && now.Sub(f.at) >= formLife) {
			if len(p.forms) >= 4096 {
				for k, old := range p.forms {
					if old.made && now.Sub(old.at) >= formLife {
						delete(p.forms, k)
					}
				}
			}
			f := &form{at: now, done: make(chan struct{})}
			p.forms[once] = f
			p.formsMu.Unlock()
			// Every replica: a resubmission a load balancer sent to
			// another one finds it taken there. Taken whatever the
			// browser does meanwhile (a double click cancels the first
			// request): a take left half done would block the form.
			taken, made, err := p.b.TakeForm(context.WithoutCancel(ctx), once)
			if err == nil && taken {
				return formFresh, nil
			}
			p.formsMu.Lock()
			if err == nil && made {
				f.made, f.at = true, now // made elsewhere
			} else {
				delete(p.forms, once)
			}
			close(f.done)
			p.formsMu.Unlock()
			switch {
			case err != nil:
				return formBusy, err
			case made:
				return formMade, nil
			}
			return formBusy, nil
		}
		p.formsMu.Unlock()
		if f.made {
			return formMade, nil
		}
		select {
		case <-f.done: // the first one ended: look again
		case <-ctx.Done():
			return formBusy, ctx.Err()
		}
	}
}

// endForm records the outcome of a taken form: made, or given back (it
// may be posted again).
func (p *Portal) endForm(ctx context.Context, once string, made bool) {
	if once == "" {
		return
	}
	if err := p.b.EndForm(ctx, once, made); err != nil {
		p.log.Error("portal: recording an enroll form's outcome", "err", err)
	}
	p.formsMu.Lock()
	defer p.formsMu.Unlock()
	f := p.forms[once]
	if f == nil {
		return
	}
	if made {
		f.made, f.at = true, time.Now()
	} else {
		delete(p.forms, once)
	}
	close(f.done)
}

func (p *Portal) enroll(w http.ResponseWriter, r *http.Request, s Session) {
	once := r.PostFormValue("once")
	if len(once) > 64 {
		once = once[:64]
	}
	state, err := p.takeForm(r.Context(), once)
	if err != nil {
		if r.Context().Err() == nil { // else the browser went away while the first submission ran
			p.fail(w, err)
		}
		return
	}
	if state == formBusy {
		p.render(w, http.StatusConflict, "error.html", page{Title: "This enrollment is being made", Session: &s, CSRF: p.csrfToken(s), Error: &errorInfo{
			Title: "This enrollment is being made",
			Next:  "The form was sent twice; the first is still being answered. Look under My derived credentials in a moment; if it is not there, open the enroll form again.",
		}})
		return
	}
	if state == formMade {
		// A reload of the QR page, or Back and resubmit: the code was
		// made and shown once; its secret is not kept to show again.
		p.render(w, http.StatusConflict, "error.html", page{Title: "This enrollment was made already", Session: &s, CSRF: p.csrfToken(s), Error: &errorInfo{
			Title: "This enrollment was made already",
			Next:  "Its QR code and password were shown once, on the page this form opened. If you did not scan it, revoke it under My derived credentials and enroll again.",
		}})
		return
	}
	// Made whatever the browser does meanwhile (a double click aborts the
	// first request): the repeat finds it made, not half done.
	en, err := p.b.Enroll(context.WithoutCancel(r.Context()), s.Token, r.PostFormValue("name"), r.PostFormValue("type"))
	p.endForm(context.WithoutCancel(r.Context()), once, err == nil)
	if err != nil {
		p.failIn(w, err, s)
		return
	}
	p.render(w, http.StatusOK, "qr.html", page{Title: "Scan the code", Session: &s, CSRF: p.csrfToken(s), Data: en})
}

func (p *Portal) credentials(w http.ResponseWriter, r *http.Request, s Session) {
	creds, err := p.b.Credentials(r.Context(), s.Token)
	if err != nil {
		p.fail(w, err)
		return
	}
	p.render(w, http.StatusOK, "credentials.html", page{Title: "My derived credentials", Session: &s, CSRF: p.csrfToken(s), Data: creds})
}

func (p *Portal) revoke(w http.ResponseWriter, r *http.Request, s Session) {
	var lost bool
	switch r.PostFormValue("why") {
	case "lost":
		lost = true
	case "replaced", "": // "" : a page from before the question
	default:
		p.render(w, http.StatusBadRequest, "error.html", page{Title: "Request refused", Session: &s, CSRF: p.csrfToken(s), Error: &errorInfo{
			Title: "The form did not say why the device goes",
			Next:  "Go back to your credentials and choose \"Lost or stolen\" or \"Replaced or no longer used\"."}})
		return
	}
	if err := p.b.Revoke(r.Context(), s.Token, r.PostFormValue("set"), lost); err != nil {
		p.fail(w, err)
		return
	}
	http.Redirect(w, r, "/credentials", http.StatusSeeOther)
}
