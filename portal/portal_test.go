package portal

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

var errGone = ErrSessionGone

// fakeBackend knows two sessions, "alice" and "bob", and counts enrollments.
type fakeBackend struct {
	enrolls, revokes, signOuts int
	lost                       []bool // each revocation's: a lost or stolen device
	signIns                    int
	// enrollGate, if set, is waited on by Enroll, and its error returned.
	enrollGate chan error
	// forms are the forms taken, as the store keeps them for every
	// replica (true: made).
	formsMu sync.Mutex
	forms   map[string]bool
}

func (f *fakeBackend) TakeForm(ctx context.Context, once string) (taken, made bool, err error) {
	f.formsMu.Lock()
	defer f.formsMu.Unlock()
	if f.forms == nil {
		f.forms = map[string]bool{}
	}
	if m, ok := f.forms[once]; ok {
		return false, m, nil
	}
	f.forms[once] = false
	return true, false, nil
}

func (f *fakeBackend) EndForm(ctx context.Context, once string, made bool) error {
	f.formsMu.Lock()
	defer f.formsMu.Unlock()
	if made {
		f.forms[once] = true
	} else {
		delete(f.forms, once)
	}
	return nil
}

func (f *fakeBackend) SignIn(ctx context.Context, leaf *x509.Certificate, chain []*x509.Certificate, source string) (Session, error) {
	f.signIns++
	return Session{Token: "alice", ExpiresAt: time.Now().Add(20 * time.Minute)}, nil
}

func (f *fakeBackend) Session(ctx context.Context, token string, _ *x509.Certificate) (Session, error) {
	if token == "flaky" {
		return Session{}, context.DeadlineExceeded // the database, briefly away
	}
	if token == "alice" || token == "bob" {
		return Session{Token: token, Subject: "CN=" + token, ExpiresAt: time.Now().Add(time.Minute)}, nil
	}
	return Session{}, errGone
}

func (f *fakeBackend) SignOut(ctx context.Context, token string) error { f.signOuts++; return nil }

func (f *fakeBackend) Enroll(ctx context.Context, token, name, ctype string) (Enrollment, error) {
	if f.enrollGate != nil {
		if err := <-f.enrollGate; err != nil {
			return Enrollment{}, err
		}
	}
	f.enrolls++
	return Enrollment{ActivationID: "a", QRPNG: []byte{1}, Password: "12345678", ExpiresAt: time.Now().Add(10 * time.Minute)}, nil
}

func (f *fakeBackend) Credentials(ctx context.Context, token string) ([]Credential, error) {
	return []Credential{{ID: "s1", Name: "<script>alert(1)</script>", State: "abandoned", Issued: issuedAt}}, nil
}

func (f *fakeBackend) Revoke(ctx context.Context, token, setID string, lost bool) error {
	f.revokes++
	f.lost = append(f.lost, lost)
	return nil
}
func (f *fakeBackend) CredentialTypes() []string { return []string{"standard"} }
func (f *fakeBackend) Explain(err error) (string, string, int) {
	return "Your session has ended", "Sign in again.", http.StatusUnauthorized
}

var issuedAt = time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC)

func newTestPortal(t *testing.T) (*Portal, *fakeBackend) {
	t.Helper()
	f := &fakeBackend{}
	p, err := New(f, nil, []byte(strings.Repeat("k", 32)))
	if err != nil {
		t.Fatal(err)
	}
	return p, f
}

func TestNewRefusesShortKey(t *testing.T) {
	if _, err := New(&fakeBackend{}, nil, make([]byte, 16)); err == nil {
		t.Fatal("a 16-byte CSRF key was accepted")
	}
}

// TestRejections: every way a request is refused, and that the refused
// request did nothing.
func TestRejections(t *testing.T) {
	p, f := newTestPortal(t)
	h := p.Handler()
	alice := p.csrfToken(Session{Token: "alice"})
	bob := p.csrfToken(Session{Token: "bob"})
	tests := []struct {
		name     string
		method   string
		path     string
		cookie   string
		form     url.Values
		want     int
		location string
	}{
		{"page without a session", "GET", "/actions", "", nil, http.StatusSeeOther, "/"},
		{"post without a session", "POST", "/enroll", "", url.Values{"csrf": {alice}}, http.StatusSeeOther, "/"},
		{"unknown session", "GET", "/credentials", "mallory", nil, http.StatusUnauthorized, ""},
		{"post without CSRF token", "POST", "/enroll", "alice", url.Values{"name": {"n"}}, http.StatusForbidden, ""},
		{"post with a wrong CSRF token", "POST", "/enroll", "alice", url.Values{"csrf": {strings.Repeat("0", 64)}}, http.StatusForbidden, ""},
		{"post with another session's CSRF token", "POST", "/enroll", "alice", url.Values{"csrf": {bob}}, http.StatusForbidden, ""},
		{"revoke without CSRF token", "POST", "/credentials/revoke", "alice", url.Values{"set": {"s1"}}, http.StatusForbidden, ""},
		{"sign-out without CSRF token", "POST", "/signout", "alice", url.Values{}, http.StatusForbidden, ""},
		{"CSRF token in the query, not the form", "POST", "/enroll?csrf=" + alice, "alice", url.Values{}, http.StatusForbidden, ""},
		{"oversized form", "POST", "/enroll", "alice", url.Values{"csrf": {alice}, "name": {strings.Repeat("x", 20<<10)}}, http.StatusForbidden, ""},
		{"sign-in without TLS client certificate", "GET", "/signin", "", nil, http.StatusUnauthorized, ""},
		{"GET of a POST-only route", "GET", "/credentials/revoke", "alice", nil, http.StatusMethodNotAllowed, ""},
		{"revoke of a set id with a NUL", "POST", "/credentials/revoke", "alice", url.Values{"csrf": {alice}, "set": {"s1\x00"}}, http.StatusBadRequest, ""},
		{"enroll with a name that is not UTF-8", "POST", "/enroll", "alice", url.Values{"csrf": {alice}, "name": {"Phone \xff"}}, http.StatusBadRequest, ""},
		{"revoke of a set id that is not UTF-8", "POST", "/credentials/revoke", "alice", url.Values{"csrf": {alice}, "set": {"s\xed\xa0\x80"}}, http.StatusBadRequest, ""},
		// The static files are served, not listed.
		{"the static directory", "GET", "/static/", "", nil, http.StatusNotFound, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var body *strings.Reader
			if tc.form != nil {
				body = strings.NewReader(tc.form.Encode())
			} else {
				body = strings.NewReader("")
			}
			r := httptest.NewRequest(tc.method, tc.path, body)
			if tc.form != nil {
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
			if tc.cookie != "" {
				r.AddCookie(&http.Cookie{Name: CookieName, Value: tc.cookie})
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Fatalf("%s %s: %d, want %d\n%s", tc.method, tc.path, w.Code, tc.want, w.Body)
			}
			if tc.location != "" && w.Header().Get("Location") != tc.location {
				t.Fatalf("Location %q", w.Header().Get("Location"))
			}
			if w.Header().Get("Content-Security-Policy") == "" || w.Header().Get("X-Frame-Options") != "DENY" {
				t.Fatalf("security headers missing: %v", w.Header())
			}
			if tc.cookie == "mallory" && !strings.Contains(w.Header().Get("Set-Cookie"), "Max-Age=0") {
				t.Fatalf("an unknown session's cookie is not cleared: %q", w.Header().Get("Set-Cookie"))
			}
			// A sign-out closes the card's connection even when refused.
			if tc.path == "/signout" && w.Header().Get("Connection") != "close" {
				t.Fatalf("a refused sign-out keeps the connection: %v", w.Header())
			}
		})
	}
	if f.enrolls+f.revokes+f.signOuts+f.signIns != 0 {
		t.Fatalf("refused requests reached the backend: %+v", f)
	}
}

func TestAcceptedPostsAndEscaping(t *testing.T) {
	p, f := newTestPortal(t)
	h := p.Handler()
	csrf := p.csrfToken(Session{Token: "alice"})
	post := func(path string, form url.Values) *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", path, strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.AddCookie(&http.Cookie{Name: CookieName, Value: "alice"})
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	if w := post("/enroll", url.Values{"csrf": {csrf}, "name": {"n"}}); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `id="password">12345678<`) ||
		!regexp.MustCompile(`id="expiry" [^>]*>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+</time>`).MatchString(w.Body.String()) {
		t.Fatalf("enroll: %d %s", w.Code, w.Body)
	}
	if w := post("/credentials/revoke", url.Values{"csrf": {csrf}, "set": {"s1"}, "why": {"lost"}}); w.Code != http.StatusSeeOther {
		t.Fatalf("revoke: %d", w.Code)
	}
	if w := post("/credentials/revoke", url.Values{"csrf": {csrf}, "set": {"s1"}, "why": {"stolen?"}}); w.Code != http.StatusBadRequest {
		t.Fatalf("revoke with an unknown reason: %d, want 400", w.Code)
	}
	if len(f.lost) != 1 || !f.lost[0] {
		t.Fatalf("revocations %v, want one of a lost device", f.lost)
	}
	// Sign-out also closes the connection: the card's handshake must not
	// serve the next person at a shared workstation (a new session from
	// the old handshake, no card in the reader).
	if w := post("/signout", url.Values{"csrf": {csrf}}); w.Code != http.StatusSeeOther || !strings.Contains(w.Header().Get("Set-Cookie"), "Max-Age=0") ||
		w.Header().Get("Connection") != "close" {
		t.Fatalf("sign-out: %d %v", w.Code, w.Header())
	}
	if f.enrolls != 1 || f.revokes != 1 || f.signOuts != 1 {
		t.Fatalf("%+v", f)
	}
	r := httptest.NewRequest("GET", "/credentials", nil)
	r.AddCookie(&http.Cookie{Name: CookieName, Value: "alice"})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if strings.Contains(w.Body.String(), "<script>alert") || !strings.Contains(w.Body.String(), "enroll again") {
		t.Fatalf("credentials page:\n%s", w.Body)
	}
	// Times carry their date and zone.
	if !strings.Contains(w.Body.String(), "<td>"+issuedAt.Local().Format("2006-01-02 15:04:05 MST")+"</td>") {
		t.Fatalf("credentials page shows no issue time with date and zone:\n%s", w.Body)
	}
}

func TestSignInSetsCookie(t *testing.T) {
	p, f := newTestPortal(t)
	r := httptest.NewRequest("GET", "/signin", nil)
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{}}}
	w := httptest.NewRecorder()
	p.Handler().ServeHTTP(w, r)
	sc := w.Header().Get("Set-Cookie")
	if w.Code != http.StatusSeeOther || f.signIns != 1 {
		t.Fatalf("%d %+v", w.Code, f)
	}
	for _, attr := range []string{CookieName + "=alice", "Secure", "HttpOnly", "SameSite=Strict"} {
		if !strings.Contains(sc, attr) {
			t.Errorf("cookie %q lacks %s", sc, attr)
		}
	}
}

func TestCredentialNote(t *testing.T) {
	tests := []struct {
		c    Credential
		want string
	}{
		{Credential{State: "abandoned", Activation: "locked"}, "too many wrong passwords"},
		{Credential{State: "pending", Activation: "expired"}, "not used in time"},
		{Credential{State: "abandoned", Activation: "expired"}, "not used in time"},
		{Credential{State: "revoked", Activation: "expired"}, "Revoked"},
		{Credential{State: "pending", Activation: "pending"}, "Waiting for your device"},
		{Credential{State: "active", Activation: "completed"}, "In use"},
		{Credential{State: "revoked", Activation: "completed"}, "Revoked"},
	}
	for _, tc := range tests {
		if got := credentialNote(tc.c); !strings.Contains(got, tc.want) {
			t.Errorf("%+v: %q, want %q", tc.c, got, tc.want)
		}
	}
}

// TestOutageKeepsCookie: a session that cannot be looked up right now is not
// a session that ended: the cookie stays.
func TestOutageKeepsCookie(t *testing.T) {
	p, _ := newTestPortal(t)
	r := httptest.NewRequest("GET", "/actions", nil)
	r.AddCookie(&http.Cookie{Name: CookieName, Value: "flaky"})
	w := httptest.NewRecorder()
	p.Handler().ServeHTTP(w, r)
	if sc := w.Header().Get("Set-Cookie"); sc != "" {
		t.Fatalf("the cookie was cleared during an outage: %q", sc)
	}
}

// TestSignInRefusesEmbedding: a sign-in is a state-changing GET (it spends
// the card's and the address's sign-in budget and writes an audit event),
// so another site's page must not be able to run it in the background (an
// image, a script's fetch, a frame). A top-level navigation stays allowed,
// from anywhere: a link on the agency's intranet to /signin is how many
// people arrive. Browsers without Fetch Metadata are let through.
func TestSignInRefusesEmbedding(t *testing.T) {
	tests := []struct {
		name                   string
		site, mode, dest, user string
		want                   int
	}{
		{"another site's image", "cross-site", "no-cors", "image", "", http.StatusForbidden},
		{"another site's script fetch", "cross-site", "cors", "empty", "", http.StatusForbidden},
		{"another site's frame", "cross-site", "navigate", "iframe", "", http.StatusForbidden},
		{"a sibling site's fetch", "same-site", "cors", "empty", "", http.StatusForbidden},
		{"a sibling site's frame", "same-site", "navigate", "iframe", "", http.StatusForbidden},
		{"this portal's own frame", "same-origin", "navigate", "iframe", "", http.StatusForbidden},
		{"the sign-in button", "same-origin", "navigate", "document", "", http.StatusSeeOther},
		{"a typed address or bookmark", "none", "navigate", "document", "", http.StatusSeeOther},
		{"a sibling site's script navigating a window", "same-site", "navigate", "document", "", http.StatusForbidden},
		{"another site's script navigating a window it opened", "cross-site", "navigate", "document", "", http.StatusForbidden},
		{"a link on the intranet, clicked", "cross-site", "navigate", "document", "?1", http.StatusSeeOther},
		{"a link on a sibling site, clicked", "same-site", "navigate", "document", "?1", http.StatusSeeOther},
		{"a browser without Fetch Metadata", "", "", "", "", http.StatusSeeOther},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, f := newTestPortal(t)
			r := httptest.NewRequest("GET", "/signin", nil)
			r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{}}}
			for k, v := range map[string]string{"Sec-Fetch-Site": tc.site, "Sec-Fetch-Mode": tc.mode, "Sec-Fetch-Dest": tc.dest, "Sec-Fetch-User": tc.user} {
				if v != "" {
					r.Header.Set(k, v)
				}
			}
			w := httptest.NewRecorder()
			p.Handler().ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Fatalf("%d, want %d\n%s", w.Code, tc.want, w.Body)
			}
			if refused := tc.want == http.StatusForbidden; refused && (f.signIns != 0 || w.Header().Get("Set-Cookie") != "") {
				t.Fatalf("a refused sign-in reached the backend (%d) or set a cookie", f.signIns)
			} else if refused && !strings.Contains(w.Body.String(), "Sign in") {
				t.Fatalf("the refusal does not say what to do:\n%s", w.Body)
			}
		})
	}
}

// TestSignInNotPrefetched: a speculative load (prefetch, prerender) of
// /signin, which the browser may make on its own, never signs in.
func TestSignInNotPrefetched(t *testing.T) {
	for _, h := range [][2]string{{"Sec-Purpose", "prefetch"}, {"Sec-Purpose", "prefetch;prerender"}, {"Purpose", "prefetch"}} {
		p, f := newTestPortal(t)
		r := httptest.NewRequest("GET", "/signin", nil)
		r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{}}}
		r.Header.Set("Sec-Fetch-Site", "same-origin")
		r.Header.Set("Sec-Fetch-Mode", "navigate")
		r.Header.Set("Sec-Fetch-Dest", "document")
		r.Header.Set(h[0], h[1])
		w := httptest.NewRecorder()
		p.Handler().ServeHTTP(w, r)
		if w.Code != http.StatusForbidden || f.signIns != 0 {
			t.Errorf("%s: %s: %d, %d sign-ins", h[0], h[1], w.Code, f.signIns)
		}
	}
}

// TestEnrollFormMadeOnce: the QR page answers POST /enroll itself, so a
// reload (or Back and "resubmit") posted the same form again and made
// another enrollment each time, up to the person's cap. A form is taken
// once; its repeat says where the first one went.
func TestEnrollFormMadeOnce(t *testing.T) {
	p, f := newTestPortal(t)
	h := p.Handler()
	form := enrollForm(t, h)
	post := func() *httptest.ResponseRecorder { return postEnroll(h, form) }
	if w := post(); w.Code != http.StatusOK || f.enrolls != 1 {
		t.Fatalf("the form: %d, %d enrollments", w.Code, f.enrolls)
	}
	w := post()
	if w.Code != http.StatusConflict || f.enrolls != 1 || !strings.Contains(w.Body.String(), "My derived credentials") {
		t.Fatalf("the same form again: %d, %d enrollments\n%s", w.Code, f.enrolls, w.Body)
	}
	// Its page can sign out: the layout's form has the CSRF token.
	if !strings.Contains(w.Body.String(), `name="csrf" value="`+form.Get("csrf")+`"`) {
		t.Fatalf("the 409 page's sign-out form has no CSRF token:\n%s", w.Body)
	}

	// A double click: the repeat waits for the first submission; the
	// first failing, the repeat makes the enrollment.
	form.Set("once", strings.Repeat("ab", 16))
	f.enrollGate = make(chan error)
	first := make(chan *httptest.ResponseRecorder)
	go func() { first <- post() }()
	second := make(chan *httptest.ResponseRecorder)
	go func() { second <- post() }()
	f.enrollGate <- errors.New("the database went away") // one of them reaches Enroll first, and fails
	f.enrollGate <- nil                                  // the other one, then
	a, b := <-first, <-second
	if f.enrolls != 2 || (a.Code == http.StatusOK) == (b.Code == http.StatusOK) {
		t.Fatalf("a double click whose first submission failed: %d and %d, %d enrollments in all", a.Code, b.Code, f.enrolls)
	}
	if a.Code == http.StatusConflict || b.Code == http.StatusConflict {
		t.Fatalf("a repeat told 'made already' of a submission that failed: %d and %d", a.Code, b.Code)
	}
}

// TestStartPageForSignedIn: the start page showed "Sign in" to a person
// who was signed in, and its button led through another sign-in (a card
// PIN, and a token of the card's sign-in budget). A live session goes to
// the actions page; an ended one is forgotten and gets the start page; a
// session that cannot be looked up now keeps its cookie.
func TestStartPageForSignedIn(t *testing.T) {
	p, f := newTestPortal(t)
	tests := []struct {
		name, cookie string
		code         int
		location     string
		cleared      bool
	}{
		{"no cookie", "", http.StatusOK, "", false},
		{"signed in", "alice", http.StatusSeeOther, "/actions", false},
		{"session ended", "ended", http.StatusOK, "", true},
		{"store away", "flaky", http.StatusOK, "", false},
	}
	for _, tc := range tests {
		r := httptest.NewRequest("GET", "/", nil)
		if tc.cookie != "" {
			r.AddCookie(&http.Cookie{Name: CookieName, Value: tc.cookie})
		}
		w := httptest.NewRecorder()
		p.Handler().ServeHTTP(w, r)
		if w.Code != tc.code || w.Header().Get("Location") != tc.location {
			t.Errorf("%s: %d to %q, want %d to %q", tc.name, w.Code, w.Header().Get("Location"), tc.code, tc.location)
		}
		if cleared := strings.Contains(w.Header().Get("Set-Cookie"), "Max-Age=0"); cleared != tc.cleared {
			t.Errorf("%s: cookie cleared %v, want %v (%q)", tc.name, cleared, tc.cleared, w.Header().Get("Set-Cookie"))
		}
		if tc.code == http.StatusOK && !strings.Contains(w.Body.String(), `href="/signin"`) {
			t.Errorf("%s: the start page has no sign-in button", tc.name)
		}
	}
	if f.signIns != 0 {
		t.Fatalf("the start page signed in %d times", f.signIns)
	}
}

// TestEnrollFormMadeOnceOnEveryReplica: the form's one-time value was
// remembered in the replica's memory, so a resubmission that a load
// balancer sent to another replica made a second enrollment. The backend
// (the store, for every replica) now takes it too.
func TestEnrollFormMadeOnceOnEveryReplica(t *testing.T) {
	f := &fakeBackend{}
	var replicas []http.Handler
	for range 2 {
		p, err := New(f, nil, []byte(strings.Repeat("k", 32)))
		if err != nil {
			t.Fatal(err)
		}
		replicas = append(replicas, p.Handler())
	}
	form := enrollForm(t, replicas[0])
	post := func(h http.Handler) int { return postEnroll(h, form).Code }
	if code := post(replicas[0]); code != http.StatusOK {
		t.Fatalf("the form on the first replica: %d", code)
	}
	if code := post(replicas[1]); code != http.StatusConflict || f.enrolls != 1 {
		t.Fatalf("the same form on the other replica: %d, %d enrollments", code, f.enrolls)
	}
}

// TestEnrollFormGivenBackElsewhere: a form another replica was still
// making was remembered here as made, for 30 minutes, so after that
// replica's enrollment failed (the form given back) a resubmission here
// was told "made already" though nothing was. It is told "being made",
// remembered nowhere, and taken once given back.
func TestEnrollFormGivenBackElsewhere(t *testing.T) {
	f := &fakeBackend{}
	p, err := New(f, nil, []byte(strings.Repeat("k", 32)))
	if err != nil {
		t.Fatal(err)
	}
	h := p.Handler()
	form := enrollForm(t, h)
	post := func() *httptest.ResponseRecorder { return postEnroll(h, form) }
	// Another replica is making it.
	if taken, _, _ := f.TakeForm(context.Background(), form.Get("once")); !taken {
		t.Fatal("the other replica could not take the form")
	}
	if w := post(); w.Code != http.StatusConflict || !strings.Contains(w.Body.String(), "being made") {
		t.Fatalf("while another replica makes it: %d\n%s", w.Code, w.Body)
	}
	// It failed there and gave the form back: a resubmission here makes it.
	f.EndForm(context.Background(), form.Get("once"), false)
	if w := post(); w.Code != http.StatusOK || f.enrolls != 1 {
		t.Fatalf("after the other replica gave the form back: %d, %d enrollments\n%s", w.Code, f.enrolls, w.Body)
	}
}

// enrollForm opens the enroll form as alice and fills in its values.
func enrollForm(t *testing.T, h http.Handler) url.Values {
	t.Helper()
	get := httptest.NewRequest("GET", "/enroll", nil)
	get.AddCookie(&http.Cookie{Name: CookieName, Value: "alice"})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, get)
	form := url.Values{"name": {"Phone"}}
	for _, field := range []string{"csrf", "once"} {
		m := regexp.MustCompile(`name="` + field + `" value="([0-9a-f]+)"`).FindStringSubmatch(w.Body.String())
		if m == nil {
			t.Fatalf("the enroll form has no %s field:\n%s", field, w.Body)
		}
		form.Set(field, m[1])
	}
	return form
}

// postEnroll posts form as alice.
func postEnroll(h http.Handler, form url.Values) *httptest.ResponseRecorder {
	r := httptest.NewRequest("POST", "/enroll", strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.AddCookie(&http.Cookie{Name: CookieName, Value: "alice"})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}
