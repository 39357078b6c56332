package server_test

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	hsmsim "github.com/credgw/credgw/hsm-sim"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// removeCAToken takes the CA's SoftHSM token away, as pulling an HSM's
// token or losing its slot does, and returns a function that puts it back.
// SoftHSM keeps a token in a directory of its own; renaming that directory
// away makes the token absent, renaming it back makes it present again.
func removeCAToken(t *testing.T) (restore func()) {
	t.Helper()
	tokens := filepath.Join(dev.Env.Dir, "tokens")
	entries, err := os.ReadDir(tokens)
	if err != nil {
		t.Fatal(err)
	}
	dir := ""
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(tokens, e.Name(), "token.object"))
		if err == nil && bytes.Contains(b, []byte(dev.CAToken)) {
			if dir != "" {
				t.Fatalf("two token directories hold a label like %q", dev.CAToken)
			}
			dir = filepath.Join(tokens, e.Name())
		}
	}
	if dir == "" {
		t.Fatalf("no token directory in %s holds the CA token %q", tokens, dev.CAToken)
	}
	away := filepath.Join(dev.Env.Dir, "ca-token-away")
	if err := os.Rename(dir, away); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore = func() {
		if restored {
			return
		}
		restored = true
		if err := os.Rename(away, dir); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(restore)
	return restore
}

// TestCATokenOutage: with the CA's token gone, CreateEnrollment (which
// escrows a key under the HSM's KEK) and Redeem (which signs with the CA
// key) answer Unavailable with a message saying what to check, and the
// portal's enrollment a 503 page that says the same; once the token is
// back they succeed, without a restart.
func TestCATokenOutage(t *testing.T) {
	c := newCard(t, hsmsim.CardSpec{Email: "holder@example.com"})
	before := enrollWith(t, c) // to redeem during the outage
	conn := portalConn(t)
	sess, err := login(t, conn, c)
	if err != nil {
		t.Fatal(err)
	}
	ec := credgwv1.NewEnrollmentClient(conn)
	rc := credgwv1.NewRedemptionClient(dial(t))
	ctx := context.Background()
	cert := c.tlsCert()
	b := newBrowser(t, &cert)
	if in := b.do("GET", "/signin", nil); in.code != http.StatusSeeOther {
		t.Fatalf("portal sign-in: %d %s", in.code, in.body)
	}
	portalEnroll := func() pageResp {
		t.Helper()
		csrf := match(t, csrfRe, b.do("GET", "/enroll", nil).body)
		return b.do("POST", "/enroll", url.Values{"csrf": {csrf}, "name": {"Portal outage"}})
	}

	restore := removeCAToken(t)
	wantHSMUnavailable := func(what string, err error) {
		t.Helper()
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("%s with the CA token gone: %v, want Unavailable", what, err)
		}
		msg := status.Convert(err).Message()
		for _, want := range []string{"HSM is unavailable", "check the HSM", "retries on its own"} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s: message %q does not say %q", what, msg, want)
			}
		}
	}
	for i := 0; i < 2; i++ { // every call while it is gone, not just the first
		_, err := ec.CreateEnrollment(ctx, &credgwv1.CreateEnrollmentRequest{SessionToken: sess.GetSessionToken(), IdentityName: "Outage"})
		wantHSMUnavailable("CreateEnrollment", err)
		_, err = readStream(ctx, rc, redeemRequest(t, before, before.resp.GetPassword()), 0)
		wantHSMUnavailable("Redeem", err)
		page := portalEnroll()
		if page.code != http.StatusServiceUnavailable || !strings.Contains(page.body, "HSM") ||
			strings.Contains(page.body, `id="password"`) {
			t.Fatalf("portal enrollment with the CA token gone: %d, want 503 naming the HSM\n%s", page.code, page.body)
		}
	}

	restore()
	en, err := ec.CreateEnrollment(ctx, &credgwv1.CreateEnrollmentRequest{SessionToken: sess.GetSessionToken(), IdentityName: "After outage"})
	if err != nil {
		t.Fatalf("CreateEnrollment after the token came back: %v", err)
	}
	rememberSecret([]byte(en.GetPassword()))
	if page := portalEnroll(); page.code != http.StatusOK || !strings.Contains(page.body, `id="password"`) {
		t.Fatalf("portal enrollment after the token came back: %d\n%s", page.code, page.body)
	} else {
		rememberSecret([]byte(match(t, passwordRe, page.body)))
	}
	d, err := readStream(ctx, rc, redeemRequest(t, before, before.resp.GetPassword()), 0)
	if err != nil {
		t.Fatalf("Redeem after the token came back: %v", err)
	}
	// The calls during the outage left intents (nothing signed, but the
	// HSM could have: they stay for the sweep); three were issued.
	recs, err := gwStore.CertificatesOfSet(ctx, before.resp.GetCredentialSetId())
	if err != nil {
		t.Fatal(err)
	}
	issued := 0
	for _, r := range recs {
		if len(r.DER) > 0 {
			issued++
		}
	}
	if len(d.sum) == 0 || issued != 3 {
		t.Fatalf("Redeem after the outage: %d bytes, %d certificates issued", len(d.pkg), issued)
	}
}
