package server_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/credgw/credgw/activation/code"
	"github.com/credgw/credgw/agent"
	hsmsim "github.com/credgw/credgw/hsm-sim"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/server"
	"golang.org/x/crypto/ocsp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// activeSet enrolls and redeems for a new card; it returns the card and the
// set id.
func activeSet(t *testing.T, email string) (*card, string) {
	t.Helper()
	ctx := context.Background()
	conn := portalConn(t)
	c := newCard(t, hsmsim.CardSpec{Email: email})
	sess, err := login(t, conn, c)
	if err != nil {
		t.Fatal(err)
	}
	rememberSecret([]byte(sess.GetSessionToken()))
	en, err := credgwv1.NewEnrollmentClient(conn).CreateEnrollment(ctx, &credgwv1.CreateEnrollmentRequest{SessionToken: sess.GetSessionToken(), IdentityName: "Phone"})
	if err != nil {
		t.Fatal(err)
	}
	rememberSecret([]byte(en.GetPassword()))
	p, err := code.ParsePayload(en.GetQrPayload())
	if err != nil {
		t.Fatal(err)
	}
	rememberSecret(p.Secret)
	if _, err := agent.Redeem(ctx, agent.Options{Payload: p, Password: en.GetPassword(), OutDir: t.TempDir(), KeystorePIN: "correct horse"}); err != nil {
		t.Fatal(err)
	}
	return c, en.GetCredentialSetId()
}

func setState(t *testing.T, id string) string {
	t.Helper()
	cs, err := gwStore.CredentialSet(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return cs.State
}

// TestLinkage: a card revoked at the issuer on day 3 has its derived
// credentials revoked at the day-7 check (credgw's OCSP says revoked, the
// holder is told), not before; a card revoked later whose check finds the
// issuer down is retried and not revoked until its status is known; a good
// card is untouched.
func TestLinkage(t *testing.T) {
	ctx := context.Background()
	_, goodSet := activeSet(t, "stays@example.com")
	leaver, leaverSet := activeSet(t, "leaves@example.com")
	late, lateSet := activeSet(t, "leaves.later@example.com")
	day := 24 * time.Hour
	at := func(d time.Duration) { clockOffset.Store(int64(d)) }
	t.Cleanup(func() { clockOffset.Store(0) })
	issuerDown := func(down bool) {
		outage.Lock()
		outage.ocsp, outage.crl = down, down
		outage.Unlock()
	}
	t.Cleanup(func() { issuerDown(false) })
	states := func(when string, want map[string]string) {
		t.Helper()
		for set, st := range want {
			if got := setState(t, set); got != st {
				t.Fatalf("%s: set %s is %s, want %s", when, set, got, st)
			}
		}
	}

	at(3 * day)
	if err := dev.Env.RevokeCard(leaver.name, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.Linkage(ctx); err != nil {
		t.Fatal(err)
	}
	states("day 3, before the first check", map[string]string{leaverSet: "active"})

	at(7*day + time.Minute)
	res, err := gw.Linkage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Revoked < 1 || len(res.Serials) < 3 {
		t.Fatalf("day 7: %+v", res)
	}
	states("day 7", map[string]string{leaverSet: "revoked", goodSet: "active", lateSet: "active"})
	recs, err := gwStore.CertificatesOfSet(ctx, leaverSet)
	if err != nil || len(recs) != 3 {
		t.Fatalf("%d records %v", len(recs), err)
	}
	for _, r := range recs {
		// credgw's OCSP responder says revoked.
		cert, _ := x509.ParseCertificate(r.DER)
		ca := gw.CA()
		req, _ := ocsp.CreateRequest(cert, ca.Chain()[0], &ocsp.RequestOptions{Hash: crypto.SHA256})
		resp, err := http.Post(cert.OCSPServer[0], "application/ocsp-request", bytes.NewReader(req))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if or, err := ocsp.ParseResponseForCert(body, cert, ca.Chain()[0]); err != nil || or.Status != ocsp.Revoked {
			t.Fatalf("%s: OCSP %v %v", r.Profile, or, err)
		}
	}
	// The holder is told (the notice is due on the shifted clock).
	if _, _, err := gw.DeliverNotifications(ctx); err != nil {
		t.Fatal(err)
	}
	mails.waitForText(t, "revocation", "leaves@example.com", "no longer valid")

	// The second card is revoked on day 7½; at its day-8 check the issuer
	// is down: retried, nothing revoked.
	at(7*day + 12*time.Hour)
	if err := dev.Env.RevokeCard(late.name, 1); err != nil {
		t.Fatal(err)
	}
	at(8*day + 2*time.Minute)
	issuerDown(true)
	res, err = gw.Linkage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Unknown < 2 || res.Revoked != 0 {
		t.Fatalf("issuer down: %+v", res)
	}
	states("day 8, issuer down", map[string]string{lateSet: "active", goodSet: "active"})

	// An hour later the issuer is back: the retry revokes.
	at(8*day + time.Hour + 4*time.Minute)
	issuerDown(false)
	if res, err = gw.Linkage(ctx); err != nil || res.Revoked < 1 {
		t.Fatalf("issuer back: %+v %v", res, err)
	}
	states("day 8, issuer back", map[string]string{lateSet: "revoked", goodSet: "active"})
	// Checked: not due again until the interval has passed.
	if res, err := gw.Linkage(ctx); err != nil || res.Checked != 0 {
		t.Fatalf("checked again at once: %+v %v", res, err)
	}
}

// TestLinkageOnUnknownRevoke: a replica configured with on_unknown: revoke
// revokes once the status has been unknown for max_unknown, not before.
func TestLinkageOnUnknownRevoke(t *testing.T) {
	ctx := context.Background()
	_, set := activeSet(t, "unreachable@example.com")
	strict := *cfg
	strict.Listen.GRPC, strict.Listen.HTTP, strict.Listen.Management, strict.Portal.Listen = "127.0.0.1:0", "", "", ""
	strict.Linkage.OnUnknown, strict.Linkage.MaxUnknown.Duration = "revoke", 2*time.Hour
	replica, err := server.New(ctx, &strict, server.WithClock(now), server.WithStore(gwStore))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { replica.Shutdown(context.Background()) })
	t.Cleanup(func() { clockOffset.Store(0) })
	outage.Lock()
	outage.ocsp, outage.crl = true, true
	outage.Unlock()
	t.Cleanup(func() {
		outage.Lock()
		outage.ocsp, outage.crl = false, false
		outage.Unlock()
	})
	day := 24 * time.Hour
	for _, step := range []struct {
		at   time.Duration
		want string
	}{
		{7*day + time.Minute, "active"},               // unknown since now
		{7*day + time.Hour + 2*time.Minute, "active"}, // unknown for 1h: retried
		{7*day + 3*time.Hour, "revoked"},              // unknown for ≥ 2h
	} {
		clockOffset.Store(int64(step.at))
		if _, err := replica.Linkage(ctx); err != nil {
			t.Fatal(err)
		}
		if st := setState(t, set); st != step.want {
			t.Fatalf("at +%s the set is %s, want %s", step.at, st, step.want)
		}
	}
}

// TestFreshStatusForIssuing: a card revoked at its issuer after it signed
// in cannot enroll or redeem once the status the gateway holds is older
// than piv.max_status_age (5 minutes): the cached OCSP answer (good for
// hours) is fetched again (issue 14, point 2).
func TestFreshStatusForIssuing(t *testing.T) {
	ctx := context.Background()
	t.Cleanup(func() { clockOffset.Store(0) })
	conn := portalConn(t)
	ec := credgwv1.NewEnrollmentClient(conn)

	// Enroll: signed in while good, revoked, six minutes later.
	c := newCard(t, hsmsim.CardSpec{Email: "revoked.after.signin@example.com"})
	sess, err := login(t, conn, c)
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.Env.RevokeCard(c.name, 1); err != nil {
		t.Fatal(err)
	}
	clockOffset.Store(int64(6 * time.Minute))
	_, err = ec.CreateEnrollment(ctx, &credgwv1.CreateEnrollmentRequest{SessionToken: sess.GetSessionToken(), IdentityName: "Phone"})
	wantCode(t, err, codes.PermissionDenied)
	clockOffset.Store(0)

	// Redeem: enrolled while good, revoked, six minutes later.
	d := newCard(t, hsmsim.CardSpec{Email: "revoked.after.enroll@example.com"})
	e := enrollWith(t, d)
	if err := dev.Env.RevokeCard(d.name, 1); err != nil {
		t.Fatal(err)
	}
	clockOffset.Store(int64(6 * time.Minute))
	_, err = agent.Redeem(ctx, agent.Options{Payload: e.payload, Password: e.resp.GetPassword(), OutDir: t.TempDir(),
		KeystorePIN: "correct horse", MaxResumes: 1})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("redeem with a card revoked since enrollment: %v, want PermissionDenied", err)
	}
	if st := setState(t, e.resp.GetCredentialSetId()); st != "pending" {
		t.Fatalf("the refused redemption left the set %s", st)
	}
}

// TestLinkageUnverifiableOnUnknownRevoke: a kept PIV Authentication
// certificate that no longer verifies at all (here piv.policies changed
// under it; a withdrawn bridge or intermediate does the same) leaves its
// card's status unknown like an unreachable responder does: retried, and
// with linkage.on_unknown revoke, its derived credentials are revoked
// past linkage.max_unknown, not kept for ever.
func TestLinkageUnverifiableOnUnknownRevoke(t *testing.T) {
	ctx := context.Background()
	_, set := activeSet(t, "unverifiable@example.com")
	strict := *cfg
	strict.Listen.GRPC, strict.Listen.HTTP, strict.Listen.Management, strict.Portal.Listen = "127.0.0.1:0", "", "", ""
	strict.Linkage.OnUnknown, strict.Linkage.MaxUnknown.Duration = "revoke", 2*time.Hour
	strict.PIV.Policies = []string{"2.16.840.1.101.3.2.1.3.7"} // id-fpki-common-hardware: not what the card asserts
	replica, err := server.New(ctx, &strict, server.WithClock(now), server.WithStore(gwStore))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { replica.Shutdown(context.Background()) })
	t.Cleanup(func() { clockOffset.Store(0) })
	day := 24 * time.Hour
	for _, step := range []struct {
		at   time.Duration
		want string
	}{
		{7*day + time.Minute, "active"},               // unverifiable since now
		{7*day + time.Hour + 2*time.Minute, "active"}, // for 1h: retried
		{7*day + 3*time.Hour, "revoked"},              // for ≥ 2h
	} {
		clockOffset.Store(int64(step.at))
		if _, err := replica.Linkage(ctx); err != nil {
			t.Fatal(err)
		}
		if st := setState(t, set); st != step.want {
			t.Fatalf("at +%s the set is %s, want %s", step.at, st, step.want)
		}
	}
}

// TestLinkageCardExpiry: a card's certificate that expires (the card is
// replaced at the end of its life) leaves its derived credentials valid, as
// SP 800-157r1 §2.3 says ("unaffected when the PIV card is replaced");
// they are no longer checked against it, and a termination reaches them by
// the webhook or the admin API. linkage.on_card_expiry: revoke keeps the
// older rule. A revoked card still revokes.
func TestLinkageCardExpiry(t *testing.T) {
	ctx := context.Background()
	day := 24 * time.Hour
	t.Cleanup(func() { clockOffset.Store(0) })
	enrollShortCard := func(email string) string {
		t.Helper()
		c := newCard(t, hsmsim.CardSpec{Email: email, ValidFor: 30 * day})
		e := enrollWith(t, c)
		if _, err := agent.Redeem(ctx, agent.Options{Payload: e.payload, Password: e.resp.GetPassword(), OutDir: t.TempDir(), KeystorePIN: "correct horse"}); err != nil {
			t.Fatal(err)
		}
		return e.resp.GetCredentialSetId()
	}
	kept := enrollShortCard("card.expires@example.com")
	// A card revoked (reported lost, say) shortly before it expired: its
	// status at expiry is asked, and its credentials revoked.
	lost := newCard(t, hsmsim.CardSpec{Email: "card.lost.then.expired@example.com", ValidFor: 30 * day})
	e := enrollWith(t, lost)
	if _, err := agent.Redeem(ctx, agent.Options{Payload: e.payload, Password: e.resp.GetPassword(), OutDir: t.TempDir(), KeystorePIN: "correct horse"}); err != nil {
		t.Fatal(err)
	}
	clockOffset.Store(int64(29 * day))
	if err := dev.Env.RevokeCard(lost.name, 1); err != nil {
		t.Fatal(err)
	}
	clockOffset.Store(int64(31 * day))
	if _, err := gw.Linkage(ctx); err != nil {
		t.Fatal(err)
	}
	if st := setState(t, kept); st != "active" {
		t.Fatalf("the card expired: the set is %s, want active", st)
	}
	if st := setState(t, e.resp.GetCredentialSetId()); st != "revoked" {
		t.Fatalf("the card was revoked, then expired: the set is %s, want revoked", st)
	}
	clockOffset.Store(0)

	revoked := enrollShortCard("card.expires.strict@example.com")
	strict := *cfg
	strict.Listen.GRPC, strict.Listen.HTTP, strict.Listen.Management, strict.Portal.Listen = "127.0.0.1:0", "", "", ""
	strict.Linkage.OnCardExpiry = "revoke"
	replica, err := server.New(ctx, &strict, server.WithClock(now), server.WithStore(gwStore))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { replica.Shutdown(context.Background()) })
	clockOffset.Store(int64(32 * day))
	if _, err := replica.Linkage(ctx); err != nil {
		t.Fatal(err)
	}
	if st := setState(t, revoked); st != "revoked" {
		t.Fatalf("on_card_expiry revoke: the set is %s, want revoked", st)
	}
}
