package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/credgw/credgw/activation"
	"github.com/credgw/credgw/agent"
	hsmsim "github.com/credgw/credgw/hsm-sim"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/server"
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
	p, err := activation.ParsePayload(en.GetQrPayload())
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
// credentials revoked at the day-7 check, not before; while the issuer is
// down, checks are retried and nothing is revoked; a good card is untouched.
func TestLinkage(t *testing.T) {
	ctx := context.Background()
	_, goodSet := activeSet(t, "stays@example.com")
	leaver, leaverSet := activeSet(t, "leaves@example.com")
	day := 24 * time.Hour
	at := func(d time.Duration) {
		clockOffset.Store(int64(d))
	}
	t.Cleanup(func() { clockOffset.Store(0) })

	at(3 * day)
	if err := dev.Env.RevokeCard(leaver.name, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.Linkage(ctx); err != nil {
		t.Fatal(err)
	}
	if st := setState(t, leaverSet); st != "active" {
		t.Fatalf("day 3: the set is %s before its first check is due", st)
	}

	// Day 7, the issuer's OCSP and CRL are down: retried later, nothing
	// revoked.
	at(7*day + time.Minute)
	func() {
		outage.Lock()
		outage.ocsp, outage.crl = true, true
		outage.Unlock()
		defer func() {
			outage.Lock()
			outage.ocsp, outage.crl = false, false
			outage.Unlock()
		}()
		res, err := gw.Linkage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if res.Unknown < 2 || res.Revoked != 0 {
			t.Fatalf("issuer down: %+v", res)
		}
	}()
	if st := setState(t, leaverSet); st != "active" {
		t.Fatalf("revoked while the status was unknown: %s", st)
	}

	// An hour later the issuer is back: the retry revokes the leaver's
	// credentials and leaves the good card's alone.
	at(7*day + time.Hour + 2*time.Minute)
	res, err := gw.Linkage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Revoked < 1 || len(res.Serials) < 3 {
		t.Fatalf("issuer back: %+v", res)
	}
	if st := setState(t, leaverSet); st != "revoked" {
		t.Fatalf("the revoked card's set is %s", st)
	}
	recs, err := gwStore.CertificatesOfSet(ctx, leaverSet)
	if err != nil || len(recs) != 3 {
		t.Fatalf("%d records %v", len(recs), err)
	}
	for _, r := range recs {
		if !r.Revoked() {
			t.Errorf("%s (%s) not revoked", r.Serial, r.Profile)
		}
	}
	if st := setState(t, goodSet); st != "active" {
		t.Fatalf("the good card's set is %s", st)
	}
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
	strict.Listen.GRPC, strict.Listen.HTTP, strict.Portal.Listen = "127.0.0.1:0", "", ""
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
