package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"html"
	"io"
	"math/big"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credgw/credgw/activation/code"
	"github.com/credgw/credgw/agent"
	hsmsim "github.com/credgw/credgw/hsm-sim"
	"github.com/credgw/credgw/pkcs11"
	"github.com/credgw/credgw/portal"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/server"
	"google.golang.org/grpc/codes"
)

// browser is an HTTPS client of the portal presenting cert (nil: none),
// with a cookie jar; it does not follow redirects so tests see them.
type browser struct {
	t    *testing.T
	c    *http.Client
	base string
}

func newBrowser(t *testing.T, cert *tls.Certificate) *browser {
	t.Helper()
	pem, err := os.ReadFile(dev.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	jar, _ := cookiejar.New(nil)
	tc := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12,
		// Present the certificate even when its issuer is not one the
		// portal names, as a careless browser would.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if cert == nil {
				return &tls.Certificate{}, nil
			}
			return cert, nil
		}}
	tr := &http.Transport{TLSClientConfig: tc}
	t.Cleanup(tr.CloseIdleConnections)
	return &browser{t: t, base: "https://" + gw.PortalAddr(), c: &http.Client{Jar: jar, Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type pageResp struct {
	code int
	hdr  http.Header
	body string
}

func (b *browser) do(method, path string, form url.Values) pageResp {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.base+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	return pageResp{code: resp.StatusCode, hdr: resp.Header, body: string(raw)}
}

func (b *browser) sessionCookie() *http.Cookie {
	u, _ := url.Parse(b.base)
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == portal.CookieName {
			return c
		}
	}
	return nil
}

var (
	csrfRe     = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)
	passwordRe = regexp.MustCompile(`<strong id="password">([0-9]+)</strong>`)
	qrRe       = regexp.MustCompile(`<img id="qr" src="data:image/png;base64,([^"]+)"`)
	setRe      = regexp.MustCompile(`name="set" value="([^"]+)"`)
)

func match(t *testing.T, re *regexp.Regexp, body string) string {
	t.Helper()
	m := re.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("%s not in page:\n%s", re, body)
	}
	return html.UnescapeString(m[1])
}

// TestPortalJourney: card sign-in by TLS client authentication, enrollment,
// the QR code and password read off the page, redemption by the agent, the
// credential in the list, revocation, sign-out.
func TestPortalJourney(t *testing.T) {
	ctx := context.Background()
	c := newCard(t, hsmsim.CardSpec{Email: "portal.user@example.com"})
	cert := c.tlsCert()
	b := newBrowser(t, &cert)

	home := b.do("GET", "/", nil)
	if home.code != http.StatusOK || !strings.Contains(home.body, `href="/signin"`) {
		t.Fatalf("home: %d %s", home.code, home.body)
	}
	csp := home.hdr.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "frame-ancestors 'none'", "script-src 'self'", "form-action 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if home.hdr.Get("X-Frame-Options") != "DENY" || home.hdr.Get("Cache-Control") != "no-store" {
		t.Errorf("headers %v", home.hdr)
	}
	if strings.Contains(home.body, "http://") || strings.Contains(home.body, "https://") {
		t.Errorf("the page loads something from elsewhere:\n%s", home.body)
	}

	in := b.do("GET", "/signin", nil)
	if in.code != http.StatusSeeOther || in.hdr.Get("Location") != "/actions" {
		t.Fatalf("sign-in: %d %s", in.code, in.body)
	}
	setCookie := in.hdr.Get("Set-Cookie")
	for _, attr := range []string{"Secure", "HttpOnly", "SameSite=Strict", "Path=/"} {
		if !strings.Contains(setCookie, attr) {
			t.Errorf("session cookie %q lacks %s", setCookie, attr)
		}
	}
	sc := b.sessionCookie()
	if sc == nil {
		t.Fatal("no session cookie")
	}
	rememberSecret([]byte(sc.Value))
	var maxAge int
	for _, p := range strings.Split(setCookie, ";") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(p), "Max-Age="); ok {
			maxAge = atoi(t, v)
		}
	}
	if maxAge <= 0 || maxAge > 20*60 {
		t.Errorf("cookie Max-Age %d, want at most 20 minutes", maxAge)
	}

	acts := b.do("GET", "/actions", nil)
	for _, want := range []string{"enroll for a derived mobile smart card credential", "My derived credentials", "Report a lost or replaced device"} {
		if !strings.Contains(acts.body, want) {
			t.Errorf("actions page lacks %q", want)
		}
	}
	if app := b.do("GET", "/enroll/app", nil); app.code != http.StatusOK || !strings.Contains(app.body, `href="/enroll"`) {
		t.Fatalf("app page: %d %s", app.code, app.body)
	}
	form := b.do("GET", "/enroll", nil)
	csrf := match(t, csrfRe, form.body)
	if !strings.Contains(form.body, `<label for="name">`) || !strings.Contains(form.body, `<label for="type">`) {
		t.Errorf("the form's fields are not labelled:\n%s", form.body)
	}

	// A post without the token, or with another's, is refused and
	// enrolls nothing.
	for _, bad := range []url.Values{
		{"name": {"Phone"}},
		{"name": {"Phone"}, "csrf": {strings.Repeat("0", 64)}},
	} {
		if r := b.do("POST", "/enroll", bad); r.code != http.StatusForbidden {
			t.Fatalf("POST /enroll %v: %d, want 403", bad, r.code)
		}
	}
	if r := b.do("GET", "/credentials", nil); strings.Contains(r.body, "<table") {
		t.Fatalf("a refused post enrolled something:\n%s", r.body)
	}
	if r := b.do("POST", "/enroll", url.Values{"csrf": {csrf}, "name": {""}}); r.code != http.StatusBadRequest ||
		!strings.Contains(r.body, `id="next"`) {
		t.Fatalf("empty identity name: %d %s", r.code, r.body)
	}

	qr := b.do("POST", "/enroll", url.Values{"csrf": {csrf}, "name": {"Entrust Derived Cred"}})
	if qr.code != http.StatusOK {
		t.Fatalf("enroll: %d %s", qr.code, qr.body)
	}
	payload, password := readQRPage(t, qr.body)
	if !strings.Contains(qr.body, `id="countdown"`) || !strings.Contains(qr.body, `src="/static/countdown.js"`) {
		t.Errorf("the QR page has no countdown")
	}
	res, err := agent.Redeem(ctx, agent.Options{Payload: payload, Password: password, OutDir: t.TempDir(), KeystorePIN: "correct horse",
		Device: &credgwv1.DeviceInfo{Model: "portal phone"}})
	if err != nil {
		t.Fatal(err)
	}

	list := b.do("GET", "/credentials", nil)
	if !strings.Contains(list.body, "portal phone") || !strings.Contains(list.body, ">active<") {
		t.Fatalf("credentials page:\n%s", list.body)
	}
	setID := match(t, setRe, list.body)
	if setID != res.CredentialSetID {
		t.Fatalf("the page lists set %s, the agent installed %s", setID, res.CredentialSetID)
	}
	if r := b.do("POST", "/credentials/revoke", url.Values{"set": {setID}}); r.code != http.StatusForbidden {
		t.Fatalf("revoke without CSRF: %d", r.code)
	}
	if !strings.Contains(list.body, `name="why" value="lost"`) || !strings.Contains(list.body, `name="why" value="replaced"`) {
		t.Fatalf("the credentials page does not ask why the device goes:\n%s", list.body)
	}
	// A lost or stolen phone's keys may be in someone else's hands:
	// keyCompromise (it was cessationOfOperation, as for a phone
	// replaced).
	if r := b.do("POST", "/credentials/revoke", url.Values{"csrf": {csrf}, "set": {setID}, "why": {"lost"}}); r.code != http.StatusSeeOther {
		t.Fatalf("revoke: %d %s", r.code, r.body)
	}
	recs, err := gwStore.CertificatesOfSet(ctx, setID)
	if err != nil || len(recs) != 3 {
		t.Fatalf("%d records, %v", len(recs), err)
	}
	for _, r := range recs {
		if r.RevokedAt.IsZero() {
			t.Errorf("certificate %s (%s) not revoked", r.Serial, r.Profile)
		}
		if r.RevocationReason != 1 {
			t.Errorf("certificate %s (%s) of a lost phone revoked with reason %d, want keyCompromise (1)", r.Serial, r.Profile, r.RevocationReason)
		}
	}
	if list := b.do("GET", "/credentials", nil); !strings.Contains(list.body, ">revoked<") {
		t.Fatalf("after revoke:\n%s", list.body)
	}

	// Sign-out ends the session on the server, not only in the browser.
	if r := b.do("POST", "/signout", url.Values{"csrf": {csrf}}); r.code != http.StatusSeeOther {
		t.Fatalf("sign-out: %d", r.code)
	}
	stolen := newBrowser(t, nil)
	u, _ := url.Parse(stolen.base)
	stolen.c.Jar.SetCookies(u, []*http.Cookie{{Name: sc.Name, Value: sc.Value}})
	if r := stolen.do("GET", "/actions", nil); r.code != http.StatusUnauthorized || !strings.Contains(r.body, "Sign in with your card again") {
		t.Fatalf("ended session still works: %d %s", r.code, r.body)
	}
}

// readQRPage reads the password and the QR image off the QR page, as the
// person and the device would.
func readQRPage(t *testing.T, body string) (code.Payload, string) {
	t.Helper()
	password := match(t, passwordRe, body)
	rememberSecret([]byte(password))
	png, err := base64.StdEncoding.DecodeString(match(t, qrRe, body))
	if err != nil {
		t.Fatal(err)
	}
	text, err := agent.DecodeQR(png)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := code.ParsePayload(text)
	if err != nil {
		t.Fatal(err)
	}
	rememberSecret(payload.Secret)
	return payload, password
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n := 0
	for _, r := range s {
		if r < '0' || r > '9' {
			t.Fatalf("not a number: %q", s)
		}
		n = n*10 + int(r-'0')
	}
	return n
}

// TestPortalSignInRefusals: each refused sign-in gets its own error page,
// saying what to do next, and no session.
func TestPortalSignInRefusals(t *testing.T) {
	withCard := func(v hsmsim.Variant) func(t *testing.T) *tls.Certificate {
		return func(t *testing.T) *tls.Certificate {
			c := newCard(t, hsmsim.CardSpec{Variant: v}).tlsCert()
			return &c
		}
	}
	tests := []struct {
		name              string
		ocspDown, crlDown bool
		clock             time.Duration
		cert              func(t *testing.T) *tls.Certificate
		code              int
		page              string
	}{
		{"no client certificate", false, false, 0, func(*testing.T) *tls.Certificate { return nil }, http.StatusUnauthorized, "No smart card certificate"},
		{"revoked card", false, false, 0, withCard(hsmsim.Revoked), http.StatusForbidden, "Your card has been revoked"},
		{"certificate without id-fpki-common-authentication", false, false, 0, withCard(hsmsim.WrongPolicy), http.StatusForbidden, "not a PIV card this portal accepts"},
		{"untrusted issuer", false, false, 0, withCard(hsmsim.Untrusted), http.StatusForbidden, "not a PIV card this portal accepts"},
		{"expired card", false, false, 0, withCard(hsmsim.Expired), http.StatusForbidden, "not valid today"},
		{"the gateway's own client certificate", false, false, 0, func(t *testing.T) *tls.Certificate {
			c := keyPair(t, dev.PortalCert, dev.PortalKey)
			return &c
		}, http.StatusForbidden, "not a PIV card this portal accepts"},
		{"status unavailable: fail closed", true, true, 25 * time.Hour, withCard(hsmsim.Good), http.StatusServiceUnavailable, "cannot be checked right now"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cert := tc.cert(t)
			setOutage(t, tc.ocspDown, tc.crlDown)
			clockOffset.Add(int64(tc.clock))
			defer clockOffset.Add(-int64(tc.clock))
			b := newBrowser(t, cert)
			r := b.do("GET", "/signin", nil)
			if r.code != tc.code || !strings.Contains(r.body, tc.page) || !strings.Contains(r.body, `id="next"`) {
				t.Fatalf("got %d, want %d with %q:\n%s", r.code, tc.code, tc.page, r.body)
			}
			if sc := r.hdr.Get("Set-Cookie"); sc != "" {
				t.Fatalf("a refused sign-in set a cookie: %q", sc)
			}
			if r := b.do("GET", "/actions", nil); r.code != http.StatusSeeOther {
				t.Fatalf("/actions without a session: %d", r.code)
			}
		})
	}
}

// TestPortalForgedSession: a cookie that is no session gets the sign-in
// again, and a forged form post is refused before it reaches the backend.
func TestPortalForgedSession(t *testing.T) {
	b := newBrowser(t, nil)
	u, _ := url.Parse(b.base)
	b.c.Jar.SetCookies(u, []*http.Cookie{{Name: portal.CookieName, Value: "forged"}})
	if r := b.do("GET", "/credentials", nil); r.code != http.StatusUnauthorized {
		t.Fatalf("forged cookie: %d", r.code)
	}
	// The refusal cleared the cookie; the forger sends it again.
	b.c.Jar.SetCookies(u, []*http.Cookie{{Name: portal.CookieName, Value: "forged"}})
	if r := b.do("POST", "/enroll", url.Values{"csrf": {"x"}, "name": {"n"}}); r.code != http.StatusUnauthorized {
		t.Fatalf("forged cookie post: %d", r.code)
	}
}

// TestPortalShowsLockout: after too many wrong passwords on the device, the
// person's list says the code is locked and what to do.
func TestPortalShowsLockout(t *testing.T) {
	c := newCard(t, hsmsim.CardSpec{Email: "clumsy@example.com"})
	cert := c.tlsCert()
	b := newBrowser(t, &cert)
	if r := b.do("GET", "/signin", nil); r.code != http.StatusSeeOther {
		t.Fatalf("sign-in: %d %s", r.code, r.body)
	}
	rememberSecret([]byte(b.sessionCookie().Value))
	csrf := match(t, csrfRe, b.do("GET", "/enroll", nil).body)
	qr := b.do("POST", "/enroll", url.Values{"csrf": {csrf}, "name": {"Phone"}})
	payload, _ := readQRPage(t, qr.body)
	for i := 0; i < 5; i++ {
		if _, err := agent.Redeem(context.Background(), agent.Options{Payload: payload, Password: "00000000", OutDir: t.TempDir(), KeystorePIN: "correct horse"}); err == nil {
			t.Fatal("a wrong password redeemed")
		}
	}
	if list := b.do("GET", "/credentials", nil); !strings.Contains(list.body, "too many wrong passwords") {
		t.Fatalf("credentials page after lockout:\n%s", list.body)
	}
}

// TestPortalSignInNeedsTheCardEachConnection: a TLS session resumed from an
// earlier handshake with the card carries the card's certificate without
// the card signing anything. The portal must not take it for the card: a
// browser whose card was pulled out, resuming, gets the sign-in refused
// and the signed-in page sends it back to sign in.
func TestPortalSignInNeedsTheCardEachConnection(t *testing.T) {
	c := newCard(t, hsmsim.CardSpec{Email: "resume@example.com"})
	cert := c.tlsCert()
	var pulled atomic.Bool
	b := newBrowser(t, &cert)
	tr := b.c.Transport.(*http.Transport)
	tr.TLSClientConfig.ClientSessionCache = tls.NewLRUClientSessionCache(8)
	tr.TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if pulled.Load() {
			return &tls.Certificate{}, nil
		}
		return &cert, nil
	}
	if r := b.do("GET", "/signin", nil); r.code != http.StatusSeeOther {
		t.Fatalf("sign-in with the card: %d %s", r.code, r.body)
	}
	if r := b.do("GET", "/actions", nil); r.code != http.StatusOK {
		t.Fatalf("the first page: %d %s", r.code, r.body)
	}
	pulled.Store(true)
	tr.CloseIdleConnections()
	if r := b.do("GET", "/actions", nil); r.code == http.StatusOK {
		t.Fatalf("the session's page over a resumed TLS session without the card: %d", r.code)
	}
	jar, _ := cookiejar.New(nil)
	b.c.Jar = jar
	tr.CloseIdleConnections()
	if r := b.do("GET", "/signin", nil); r.code != http.StatusUnauthorized || !strings.Contains(r.body, "No smart card certificate") {
		t.Fatalf("sign-in over a resumed TLS session without the card: got %d, want 401:\n%s", r.code, r.body)
	}
}

// TestPortalConnectionAgeBounded: the card's proof is the TLS handshake,
// so a connection kept alive would serve a person's session (and a new
// sign-in) long after the card left the reader. A request on a connection
// older than portal.max_connection_age is sent again, on a new connection:
// a 307 to the same address, and the connection closes. The new handshake
// needs the card, so with the card gone the session ends, and with the
// card there the person notices nothing.
func TestPortalConnectionAgeBounded(t *testing.T) {
	c := newCard(t, hsmsim.CardSpec{Email: "keepalive@example.com"})
	cert := c.tlsCert()
	var pulled atomic.Bool
	var handshakes atomic.Int32
	b := newBrowser(t, &cert)
	tr := b.c.Transport.(*http.Transport)
	tr.TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		handshakes.Add(1)
		if pulled.Load() {
			return &tls.Certificate{}, nil
		}
		return &cert, nil
	}
	t.Cleanup(func() { clockOffset.Store(0) })
	age := server.DefaultPortalMaxConnectionAge + time.Second
	// resent checks the 307 of a request on an aged connection, and that
	// the next request makes a new handshake.
	resent := func(t *testing.T, method, path string, form url.Values) {
		t.Helper()
		before := handshakes.Load()
		r := b.do(method, path, form)
		if r.code != http.StatusTemporaryRedirect || r.hdr.Get("Location") != path {
			t.Fatalf("%s %s on a connection older than %v: got %d (Location %q), want 307 to itself:\n%s",
				method, path, server.DefaultPortalMaxConnectionAge, r.code, r.hdr.Get("Location"), r.body)
		}
		if handshakes.Load() != before {
			t.Fatalf("the 307 came from a new connection, not the aged one")
		}
		// Like every portal answer, with the security headers.
		for _, h := range []string{"Content-Security-Policy", "X-Frame-Options", "Strict-Transport-Security", "X-Content-Type-Options"} {
			if r.hdr.Get(h) == "" {
				t.Fatalf("the 307 has no %s", h)
			}
		}
	}
	signIn := func(t *testing.T) {
		t.Helper()
		clockOffset.Store(0)
		tr.CloseIdleConnections()
		pulled.Store(false)
		if r := b.do("GET", "/signin", nil); r.code != http.StatusSeeOther {
			t.Fatalf("sign-in with the card: %d %s", r.code, r.body)
		}
		if r := b.do("GET", "/actions", nil); r.code != http.StatusOK {
			t.Fatalf("the first page: %d %s", r.code, r.body)
		}
	}

	t.Run("the card still there: the page, on a new connection", func(t *testing.T) {
		signIn(t)
		clockOffset.Store(int64(age))
		resent(t, "GET", "/actions", nil)
		before := handshakes.Load()
		if r := b.do("GET", "/actions", nil); r.code != http.StatusOK {
			t.Fatalf("the page again, with the card: %d %s", r.code, r.body)
		}
		if handshakes.Load() != before+1 {
			t.Fatalf("the page again made %d handshakes, want 1", handshakes.Load()-before)
		}
	})
	t.Run("the card pulled: the session ends", func(t *testing.T) {
		signIn(t)
		sc := b.sessionCookie()
		page := b.do("GET", "/enroll", nil)
		m := regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`).FindStringSubmatch(page.body)
		if m == nil {
			t.Fatalf("no CSRF token on the enroll page: %d %s", page.code, page.body)
		}
		pulled.Store(true)
		clockOffset.Store(int64(age))
		// An enrollment posted on the aged connection would give whoever
		// sits at the browser a code for their own device.
		resent(t, "POST", "/enroll", url.Values{"csrf": {m[1]}, "name": {"Left behind"}})
		if r := b.do("POST", "/enroll", url.Values{"csrf": {m[1]}, "name": {"Left behind"}}); r.code != http.StatusUnauthorized {
			t.Fatalf("the enrollment again, without the card: %d %s", r.code, r.body)
		}
		// The session ended: the card back in the reader cannot use it.
		pulled.Store(false)
		u, _ := url.Parse(b.base)
		b.c.Jar.SetCookies(u, []*http.Cookie{{Name: sc.Name, Value: sc.Value}})
		if r := b.do("GET", "/actions", nil); r.code != http.StatusUnauthorized {
			t.Fatalf("the session survived a request without the card: %d", r.code)
		}
	})
	t.Run("a path that reads as another host is not redirected there", func(t *testing.T) {
		// "//evil.example/x" on an aged connection was sent back as
		// Location: //evil.example/x, which a browser follows off-site.
		signIn(t)
		for _, path := range []string{"//evil.example/phish", "///evil.example/phish?x=1", "/\\evil.example/phish"} {
			clockOffset.Add(int64(age)) // each 307 closes its connection: age the next one
			r := b.do("GET", path, nil)
			loc := r.hdr.Get("Location")
			if r.code != http.StatusTemporaryRedirect || strings.HasPrefix(loc, "//") || strings.HasPrefix(loc, "/\\") || strings.Contains(loc, "://") {
				t.Errorf("GET %s on an aged connection: %d Location %q, want a 307 to a path on the portal", path, r.code, loc)
			}
		}
	})
	t.Run("the card pulled: no new sign-in", func(t *testing.T) {
		signIn(t)
		jar, _ := cookiejar.New(nil)
		b.c.Jar = jar
		pulled.Store(true)
		clockOffset.Store(int64(age))
		resent(t, "GET", "/signin", nil)
		if r := b.do("GET", "/signin", nil); r.code != http.StatusUnauthorized || !strings.Contains(r.body, "No smart card certificate") {
			t.Fatalf("sign-in again, without the card: got %d, want 401:\n%s", r.code, r.body)
		}
	})
}

// TestPortalSessionBoundToCard: the portal cookie works only over a TLS
// connection authenticated by the card that signed in. Replayed with no
// client certificate, or with another card's, it ends the session and the
// page says to sign in again; and it is not a gRPC session token (issue
// 14, point 1).
func TestPortalSessionBoundToCard(t *testing.T) {
	ctx := context.Background()
	signIn := func(t *testing.T) (*browser, *http.Cookie) {
		c := newCard(t, hsmsim.CardSpec{Email: "bound@example.com"})
		cert := c.tlsCert()
		b := newBrowser(t, &cert)
		if r := b.do("GET", "/signin", nil); r.code != http.StatusSeeOther {
			t.Fatalf("sign-in: %d %s", r.code, r.body)
		}
		if r := b.do("GET", "/actions", nil); r.code != http.StatusOK {
			t.Fatalf("the owner's first page: %d %s", r.code, r.body)
		}
		return b, b.sessionCookie()
	}
	replay := func(t *testing.T, cert *tls.Certificate, sc *http.Cookie) pageResp {
		thief := newBrowser(t, cert)
		u, _ := url.Parse(thief.base)
		thief.c.Jar.SetCookies(u, []*http.Cookie{{Name: sc.Name, Value: sc.Value}})
		return thief.do("POST", "/enroll", url.Values{"csrf": {"x"}, "name": {"Stolen"}})
	}
	other := newCard(t, hsmsim.CardSpec{Email: "other@example.com"}).tlsCert()
	for name, cert := range map[string]*tls.Certificate{"no client certificate": nil, "another card": &other} {
		t.Run(name, func(t *testing.T) {
			owner, sc := signIn(t)
			if r := replay(t, cert, sc); r.code != http.StatusUnauthorized || !strings.Contains(r.body, "Sign in with your card again") {
				t.Fatalf("replayed cookie: %d %s", r.code, r.body)
			}
			// The session ended: its own card cannot use it any more.
			if r := owner.do("GET", "/actions", nil); r.code != http.StatusUnauthorized {
				t.Fatalf("the owner's session survived the replay: %d", r.code)
			}
		})
	}
	t.Run("the person terminated since", func(t *testing.T) {
		c := newCard(t, hsmsim.CardSpec{Email: "leaver@example.com"})
		cert := c.tlsCert()
		owner := newBrowser(t, &cert)
		if r := owner.do("GET", "/signin", nil); r.code != http.StatusSeeOther {
			t.Fatalf("sign-in: %d %s", r.code, r.body)
		}
		admin := credgwv1.NewAdminClient(dial(t, keyPair(t, dev.AdminCert, dev.AdminKey)))
		if _, err := admin.TerminateIdentity(ctx, &credgwv1.TerminateIdentityRequest{Identity: &credgwv1.PIVIdentitySelector{
			Selector: &credgwv1.PIVIdentitySelector_CardUuid{CardUuid: c.info.UUID}}}); err != nil {
			t.Fatal(err)
		}
		r := owner.do("GET", "/credentials", nil)
		if r.code != http.StatusForbidden || !strings.Contains(r.body, "terminated") || !strings.Contains(r.hdr.Get("Set-Cookie"), "Max-Age=0") {
			t.Fatalf("the session of a terminated person: %d (Set-Cookie %q) %s", r.code, r.hdr.Get("Set-Cookie"), r.body)
		}
	})
	t.Run("as a gRPC session token", func(t *testing.T) {
		_, sc := signIn(t)
		_, err := credgwv1.NewEnrollmentClient(portalConn(t)).CreateEnrollment(ctx, &credgwv1.CreateEnrollmentRequest{
			SessionToken: sc.Value, IdentityName: "Stolen"})
		wantCode(t, err, codes.Unauthenticated)
	})
}

// TestPortalSignOutEndsTheCardsOtherConnections: a browser may hold more
// than one connection with the card's handshake (HTTP/1.1 keep-alive).
// Sign-out closed the one that carried it, and the next person at the
// workstation could sign in on another without the card. A request on a
// connection of that card opened before its sign-out is sent to a new
// connection (307, closed), whose handshake needs the card.
func TestPortalSignOutEndsTheCardsOtherConnections(t *testing.T) {
	c := newCard(t, hsmsim.CardSpec{Email: "shared-desk@example.com"})
	cert := c.tlsCert()
	var pulled atomic.Bool
	withCard := func(b *browser) *browser { return pullableCard(b, &cert, &pulled) }
	first, second := withCard(newBrowser(t, &cert)), withCard(newBrowser(t, &cert)) // two connections, one card
	if r := first.do("GET", "/signin", nil); r.code != http.StatusSeeOther {
		t.Fatalf("sign-in: %d %s", r.code, r.body)
	}
	if r := second.do("GET", "/", nil); r.code != http.StatusOK { // the second connection is open
		t.Fatalf("the second connection: %d", r.code)
	}
	page := first.do("GET", "/actions", nil)
	m := regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`).FindStringSubmatch(page.body)
	if m == nil {
		t.Fatalf("no CSRF token: %d %s", page.code, page.body)
	}
	if r := first.do("POST", "/signout", url.Values{"csrf": {m[1]}}); r.code != http.StatusSeeOther {
		t.Fatalf("sign-out: %d %s", r.code, r.body)
	}
	pulled.Store(true) // the person leaves with the card
	// (The client drops a Connection: close header; the next request
	// showing no card proves it came on a new connection.)
	if r := second.do("GET", "/signin", nil); r.code != http.StatusTemporaryRedirect {
		t.Fatalf("sign-in on a connection of the card from before its sign-out: %d, want 307", r.code)
	}
	if r := second.do("GET", "/signin", nil); r.code != http.StatusUnauthorized {
		t.Fatalf("sign-in again, on a new connection, without the card: %d, want 401", r.code)
	}
	// With the card back, a new connection signs in as ever.
	pulled.Store(false)
	second.c.Transport.(*http.Transport).CloseIdleConnections() // the one without the card
	if r := second.do("GET", "/signin", nil); r.code != http.StatusSeeOther {
		t.Fatalf("sign-in with the card: %d %s", r.code, r.body)
	}
}

// TestPortalSignInRefusalRecorded: a refused portal sign-in is in the audit
// log, refused, with the reason, the card and the source (issue 14,
// point 8).
func TestPortalSignInRefusalRecorded(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		variant hsmsim.Variant
		reason  string
	}{{hsmsim.Revoked, "revoked"}, {hsmsim.Expired, "expired"}, {hsmsim.WrongPolicy, "policy"}} {
		t.Run(tc.reason, func(t *testing.T) {
			c := newCard(t, hsmsim.CardSpec{Variant: tc.variant})
			cert := c.tlsCert()
			leaf, _ := x509.ParseCertificate(cert.Certificate[0])
			sum := sha256.Sum256(leaf.Raw)
			fp := hex.EncodeToString(sum[:])
			if r := newBrowser(t, &cert).do("GET", "/signin", nil); r.code != http.StatusForbidden {
				t.Fatalf("a %s card signed in: %d", tc.reason, r.code)
			}
			evs, err := gwStore.AuditEvents(ctx, 0, 0, "")
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range evs {
				if ev.Action == "portal-sign-in" && strings.Contains(ev.Detail, fp) {
					if ev.Outcome != "refused" || ev.Source == "" || !strings.Contains(ev.Detail, tc.reason) {
						t.Fatalf("the refusal is recorded as %+v", ev)
					}
					return
				}
			}
			t.Fatal("the refused portal sign-in is not in the audit log")
		})
	}
}

// TestPortalSelfMadeCertificateNotRecorded: anyone can make a certificate
// and present it; refusing it is logged, never written to the audit log,
// whatever it lacks besides a trusted issuer (a policy, the key usage), or
// anyone could grow the log with a card UUID of their choosing.
func TestPortalSelfMadeCertificateNotRecorded(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		tmpl x509.Certificate
	}{
		{"no policy", x509.Certificate{KeyUsage: x509.KeyUsageDigitalSignature}},
		{"keyCertSign, the PIV Authentication policy", x509.Certificate{KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
			Policies: []x509.OID{mustOID(t, "2.16.840.1.101.3.2.1.3.13")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			tmpl := tc.tmpl
			tmpl.SerialNumber = big.NewInt(7)
			tmpl.Subject = pkix.Name{CommonName: "Self Made"}
			tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
			der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, key.Public(), key)
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(der)
			fp := hex.EncodeToString(sum[:])
			cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
			if r := newBrowser(t, &cert).do("GET", "/signin", nil); r.code != http.StatusForbidden {
				t.Fatalf("a self-made certificate: %d", r.code)
			}
			evs, err := gwStore.AuditEvents(ctx, 0, 0, "")
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range evs {
				if strings.Contains(ev.Detail, fp) {
					t.Fatalf("the refusal of a self-made certificate is in the audit log: %+v", ev)
				}
			}
		})
	}
}

func mustOID(t *testing.T, s string) x509.OID {
	t.Helper()
	o, err := x509.ParseOID(s)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// TestPortalEventsCarrySource: an enrollment made in the portal is
// recorded with the browser's source address (issue 14, point 8).
func TestPortalEventsCarrySource(t *testing.T) {
	ctx := context.Background()
	c := newCard(t, hsmsim.CardSpec{Email: "portal.source@example.com"})
	cert := c.tlsCert()
	b := newBrowser(t, &cert)
	if r := b.do("GET", "/signin", nil); r.code != http.StatusSeeOther {
		t.Fatalf("sign-in: %d", r.code)
	}
	csrf := match(t, csrfRe, b.do("GET", "/enroll", nil).body)
	if r := b.do("POST", "/enroll", url.Values{"csrf": {csrf}, "name": {"Phone"}}); r.code != http.StatusOK {
		t.Fatalf("enroll: %d %s", r.code, r.body)
	}
	evs, err := gwStore.AuditEvents(ctx, 0, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	for i := len(evs) - 1; i >= 0; i-- {
		if ev := evs[i]; ev.Action == "enroll" && strings.Contains(ev.Detail, "portal") && strings.EqualFold(ev.CardUUID, c.info.UUID) {
			if !strings.HasPrefix(ev.Source, "127.0.0.1:") {
				t.Fatalf("the portal enrollment is recorded from %q", ev.Source)
			}
			return
		}
	}
	t.Fatal("no portal enrollment event")
}

// TestPortalEmailOnlyInDigitalSignature: a card whose email is only in its
// 9C certificate cannot give it to the portal (a browser presents 9A
// alone). Until a PKI-AUTH with that card sent its 9C, the portal enrolls
// nothing and says how to fix it; after one, the portal enrolls with the
// 9C's email. Another card gets nothing of it.
func TestPortalEmailOnlyInDigitalSignature(t *testing.T) {
	ctx := context.Background()
	const email = "nine-c.portal@example.com"
	c := newCard(t, hsmsim.CardSpec{Email: email, EmailOnlyInSignature: true})
	other := newCard(t, hsmsim.CardSpec{Email: "other.nine-c@example.com", EmailOnlyInSignature: true})
	enroll := func(c *card) pageResp {
		t.Helper()
		cert := c.tlsCert()
		b := newBrowser(t, &cert)
		if in := b.do("GET", "/signin", nil); in.code != http.StatusSeeOther {
			t.Fatalf("sign-in: %d %s", in.code, in.body)
		}
		csrf := match(t, csrfRe, b.do("GET", "/enroll", nil).body)
		return b.do("POST", "/enroll", url.Values{"csrf": {csrf}, "name": {"Entrust Derived Cred"}})
	}
	refused := func(c *card) {
		t.Helper()
		r := enroll(c)
		if r.code != http.StatusConflict || !strings.Contains(r.body, "credgw piv login") || !strings.Contains(r.body, "Digital Signature certificate") {
			t.Fatalf("enroll without a known email: %d\n%s", r.code, r.body)
		}
		if strings.Contains(r.body, `id="password"`) || strings.Contains(r.body, `id="qr"`) {
			t.Fatalf("an activation was shown:\n%s", r.body)
		}
	}
	refused(c)

	// One PKI-AUTH with the card, sending its 9C as `credgw piv login` does.
	client := credgwv1.NewPIVAuthClient(portalConn(t))
	ds, err := c.tok.Certificate(ctx, pkcs11.PIVSignature.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	begin, err := client.BeginSession(ctx, &credgwv1.BeginSessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.CompleteSession(ctx, &credgwv1.CompleteSessionRequest{SessionId: begin.GetSessionId(),
		PivAuthCertificate: c.auth.Raw, Signature: c.sign(t, begin), DigitalSignatureCertificate: ds.Raw})
	if err != nil {
		t.Fatal(err)
	}
	rememberSecret([]byte(resp.GetSessionToken()))

	qr := enroll(c)
	if qr.code != http.StatusOK {
		t.Fatalf("enroll after PKI-AUTH: %d %s", qr.code, qr.body)
	}
	payload, password := readQRPage(t, qr.body)
	res, err := agent.Redeem(ctx, agent.Options{Payload: payload, Password: password, OutDir: t.TempDir(), KeystorePIN: "correct horse"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []credgwv1.Profile{credgwv1.Profile_PROFILE_DIGITAL_SIGNATURE, credgwv1.Profile_PROFILE_KEY_MANAGEMENT} {
		if got := res.Certificates[p].EmailAddresses; len(got) != 1 || got[0] != email {
			t.Errorf("%v certificate for %v, want %s", p, got, email)
		}
	}
	// The other card never sent its 9C: still nothing.
	refused(other)
}

// TestPortalSignOutReachesOtherReplicas: a card's sign-out was
// remembered in the replica's memory, so a keep-alive connection of that
// card that a load balancer had given to another replica went on signing
// people in without the card (until portal.max_connection_age). The
// sign-out is now in the store: another replica sends a sign-in on a
// connection from before it to a new connection (307), whose handshake
// needs the card.
func TestPortalSignOutReachesOtherReplicas(t *testing.T) {
	other := limitedGateway(t, func(*server.LimitsConfig) {})
	c := newCard(t, hsmsim.CardSpec{Email: "two-replicas@example.com"})
	cert := c.tlsCert()
	var pulled atomic.Bool
	withCard := func(b *browser) *browser { return pullableCard(b, &cert, &pulled) }
	here, there := withCard(newBrowser(t, &cert)), withCard(newBrowser(t, &cert))
	there.base = "https://" + other.PortalAddr()
	if r := there.do("GET", "/", nil); r.code != http.StatusOK { // a connection to the other replica, with the card
		t.Fatalf("the other replica: %d", r.code)
	}
	signInAndOut(t, here)
	pulled.Store(true)
	if r := there.do("GET", "/signin", nil); r.code != http.StatusTemporaryRedirect {
		t.Fatalf("sign-in on the other replica, on a connection of the card from before its sign-out: %d, want 307", r.code)
	}
	if r := there.do("GET", "/signin", nil); r.code != http.StatusUnauthorized {
		t.Fatalf("sign-in again, on a new connection, without the card: %d, want 401", r.code)
	}
}

// TestPortalSignOutAcrossSkewedClocks: a sign-out is stored by the clock
// of the replica that served it; another replica compared it with its own
// connections' opening times, so with that replica's clock 30 s ahead,
// every new connection of the card to the other one was sent to a new
// connection again (307) for 30 s: a redirect loop instead of a sign-in.
// A replica now counts a stored sign-out from when it first saw it.
func TestPortalSignOutAcrossSkewedClocks(t *testing.T) {
	behind := skewedReplica(t, -30*time.Second)
	card := newCard(t, hsmsim.CardSpec{Email: "skewed@example.com"})
	cert := card.tlsCert()
	signInAndOut(t, newBrowser(t, &cert))
	// New connections of the card to the replica whose clock is behind:
	// at most one is sent to a new connection, then it signs in.
	there := newBrowser(t, &cert)
	there.base = "https://" + behind.PortalAddr()
	redirects := 0
	for range 3 {
		there.c.Transport.(*http.Transport).CloseIdleConnections()
		r := there.do("GET", "/signin", nil)
		if r.code == http.StatusSeeOther {
			break
		}
		if r.code != http.StatusTemporaryRedirect {
			t.Fatalf("sign-in on the other replica: %d %s", r.code, r.body)
		}
		redirects++
	}
	if redirects > 1 {
		t.Fatalf("%d new connections in a row sent to a new connection: a loop", redirects)
	}
}

// TestPortalSecondSignOutOnSlowerReplica: the store kept the later of two
// sign-out times, so a second sign-out on a replica whose clock is behind
// left the stored value as it was, and a connection of the card to the
// first replica opened between the two sign-outs signed in without the
// card. The latest sign-out replaces the last, whatever its time.
func TestPortalSecondSignOutOnSlowerReplica(t *testing.T) {
	behind := skewedReplica(t, -30*time.Second)
	card := newCard(t, hsmsim.CardSpec{Email: "second-sign-out@example.com"})
	cert := card.tlsCert()
	signInAndOut(t, newBrowser(t, &cert)) // on the replica ahead
	open := newBrowser(t, &cert)          // a connection to it, opened between the sign-outs
	if r := open.do("GET", "/", nil); r.code != http.StatusOK {
		t.Fatalf("the connection: %d", r.code)
	}
	slow := newBrowser(t, &cert)
	slow.base = "https://" + behind.PortalAddr()
	signInAndOut(t, slow) // the second sign-out, on the replica 30 s behind
	if r := open.do("GET", "/signin", nil); r.code != http.StatusTemporaryRedirect {
		t.Fatalf("sign-in on a connection from before the second sign-out: %d, want 307", r.code)
	}
}

// skewedReplica starts a replica of the test gateway on fresh local
// ports, on the shared store, whose clock is off by skew.
func skewedReplica(t *testing.T, skew time.Duration) *server.Server {
	t.Helper()
	c := *cfg
	c.Listen.GRPC, c.Listen.HTTP, c.Listen.Management, c.Portal.Listen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	s, err := server.New(context.Background(), &c, server.WithClock(func() time.Time { return now().Add(skew) }), server.WithStore(gwStore))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	return s
}

// signInAndOut signs in with the browser's card (once more on a new
// connection if the first is sent to one: a sign-out on another replica
// was first seen then) and signs out.
func signInAndOut(t *testing.T, b *browser) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		r := b.do("GET", "/signin", nil)
		if r.code == http.StatusSeeOther {
			break
		}
		if r.code != http.StatusTemporaryRedirect || attempt > 0 {
			t.Fatalf("sign-in: %d %s", r.code, r.body)
		}
		b.c.Transport.(*http.Transport).CloseIdleConnections() // a new connection, as a browser does
	}
	page := b.do("GET", "/actions", nil)
	m := regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`).FindStringSubmatch(page.body)
	if m == nil {
		t.Fatalf("no CSRF token: %d %s", page.code, page.body)
	}
	if r := b.do("POST", "/signout", url.Values{"csrf": {m[1]}}); r.code != http.StatusSeeOther {
		t.Fatalf("sign-out: %d %s", r.code, r.body)
	}
}

// pullableCard makes b present cert in its handshakes until pulled is set
// (the person leaves with the card), and no certificate after.
func pullableCard(b *browser, cert *tls.Certificate, pulled *atomic.Bool) *browser {
	b.c.Transport.(*http.Transport).TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if pulled.Load() {
			return &tls.Certificate{}, nil
		}
		return cert, nil
	}
	return b
}

// TestSignOutWithoutSessionNotRecorded: a POST /signout that ends no
// session (no cookie, no CSRF token: refused) is not a card's sign-out.
// It wrote a row to the store for any client certificate, a self-made one
// included, so anyone could add rows without limit; and another site's
// form posted on the person's card connection counted as their sign-out.
func TestSignOutWithoutSessionNotRecorded(t *testing.T) {
	ctx := context.Background()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := x509.Certificate{SerialNumber: big.NewInt(8), Subject: pkix.Name{CommonName: "Self Made"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	b := newBrowser(t, &cert)
	if r := b.do("POST", "/signout", url.Values{}); r.code != http.StatusSeeOther && r.code != http.StatusForbidden {
		t.Fatalf("a sign-out without a session: %d", r.code)
	}
	if _, ok, err := gwStore.CardSignOut(ctx, hex.EncodeToString(sum[:])); err != nil || ok {
		t.Fatalf("a sign-out that ended no session was recorded (%v, %v)", ok, err)
	}
}

// TestSignOutAfterSessionExpiredEndsCardConnections: a person whose
// portal session had expired clicks "Sign out": the form is refused (no
// session), and before, nothing was noted, so another keep-alive
// connection of their card could sign in again without the card until
// portal.max_connection_age. A sign-out posted from the portal's own page
// (Sec-Fetch-Site: same-origin) by a card that chains to the PIV trust
// anchors now counts as the card's sign-out; a self-made certificate, or a
// form posted from another site, still writes nothing.
func TestSignOutAfterSessionExpiredEndsCardConnections(t *testing.T) {
	ctx := context.Background()
	post := func(b *browser, site string) {
		req, err := http.NewRequest("POST", b.base+"/signout", strings.NewReader(""))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", site)
		resp, err := b.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	noted := func(der []byte) bool {
		sum := sha256.Sum256(der)
		_, ok, err := gwStore.CardSignOut(ctx, hex.EncodeToString(sum[:]))
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	card := newCard(t, hsmsim.CardSpec{Email: "expired.session@example.com"})
	cert := card.tlsCert()
	post(newBrowser(t, &cert), "cross-site")
	if noted(cert.Certificate[0]) {
		t.Fatal("a sign-out posted from another site was noted")
	}
	post(newBrowser(t, &cert), "same-origin")
	if !noted(cert.Certificate[0]) {
		t.Error("the card's sign-out from the portal's page, its session gone, was not noted")
	}

	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := x509.Certificate{SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: "Self Made"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	self := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	post(newBrowser(t, &self), "same-origin")
	if noted(der) {
		t.Error("a self-made certificate's sign-out was noted")
	}
}

// TestNoEmailAdviceLeadsSomewhere: a card whose email is only in its
// Digital Signature certificate is told to sign in once with credgw piv
// login "then sign in here again". The page had no way to: a live session
// sends the start page to the actions page, and the error page had no
// sign-out. The page now carries the sign-out button and says to use it;
// following it, the person enrolls.
func TestNoEmailAdviceLeadsSomewhere(t *testing.T) {
	ctx := context.Background()
	c := newCard(t, hsmsim.CardSpec{Email: "advice.followed@example.com", EmailOnlyInSignature: true})
	cert := c.tlsCert()
	b := newBrowser(t, &cert)
	if in := b.do("GET", "/signin", nil); in.code != http.StatusSeeOther {
		t.Fatalf("sign-in: %d", in.code)
	}
	enroll := func() pageResp {
		csrf := match(t, csrfRe, b.do("GET", "/enroll", nil).body)
		return b.do("POST", "/enroll", url.Values{"csrf": {csrf}, "name": {"Phone"}, "once": {rand.Text()}})
	}
	r := enroll()
	if r.code != http.StatusConflict || !strings.Contains(r.body, "credgw piv login") {
		t.Fatalf("first enroll: %d %s", r.code, r.body)
	}
	if !strings.Contains(r.body, `action="/signout"`) || !strings.Contains(r.body, "Sign out") {
		t.Fatalf("the no-email page offers no way to sign in again:\n%s", r.body)
	}
	// The person does what the page says: credgw piv login with the card.
	client := credgwv1.NewPIVAuthClient(portalConn(t))
	ds, err := c.tok.Certificate(ctx, pkcs11.PIVSignature.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	begin, err := client.BeginSession(ctx, &credgwv1.BeginSessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CompleteSession(ctx, &credgwv1.CompleteSessionRequest{SessionId: begin.GetSessionId(),
		PivAuthCertificate: c.auth.Raw, Signature: c.sign(t, begin), DigitalSignatureCertificate: ds.Raw}); err != nil {
		t.Fatal(err)
	}
	// Sign out with the page's button, sign in again, enroll.
	if out := b.do("POST", "/signout", url.Values{"csrf": {match(t, csrfRe, r.body)}}); out.code != http.StatusSeeOther {
		t.Fatalf("sign-out from the no-email page: %d %s", out.code, out.body)
	}
	b.c.Transport.(*http.Transport).CloseIdleConnections() // the sign-out closed it; a browser opens a new one
	if in := b.do("GET", "/signin", nil); in.code != http.StatusSeeOther {
		t.Fatalf("sign-in again: %d %s", in.code, in.body)
	}
	if r := enroll(); r.code != http.StatusOK {
		t.Errorf("enroll after following the page's advice: %d %s", r.code, r.body)
	}
}
