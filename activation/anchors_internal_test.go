package activation

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"
)

// TestChainsToDevice: the device's trust anchors are checked before
// anything is issued: its root, or a CA of the chain, passes; a root of
// another PKI is refused as a precondition saying nothing was issued.
func TestChainsToDevice(t *testing.T) {
	h := newHarness(t, nil)
	chain := h.svc.cfg.Issuer.Chain()
	foreign := foreignRoot(t, "another PKI's root")
	for _, tc := range []struct {
		name    string
		anchors []*x509.Certificate
		refused bool
	}{
		{"none given", nil, false},
		{"the chain's root", chain[len(chain)-1:], false},
		{"the issuing CA itself", chain[:1], false},
		{"another PKI's root and ours", []*x509.Certificate{foreign, chain[len(chain)-1]}, false},
		{"another PKI's root", []*x509.Certificate{foreign}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := h.svc.chainsToDevice(tc.anchors)
			if (err != nil) != tc.refused {
				t.Fatalf("err = %v, refused want %v", err, tc.refused)
			}
			if tc.refused && (!errors.Is(err, ErrPrecondition) || !strings.Contains(err.Error(), "nothing was issued")) {
				t.Fatalf("err = %v, want a precondition saying nothing was issued", err)
			}
		})
	}
}

// TestAnchorRefusalNeedsTheSecret: the trust anchors were checked before
// the secret, so anyone with an activation id (an old screenshot) could
// have the gateway build paths to roots of their choosing without end
// (FailedPrecondition spends no limit) and write a refusal naming their
// roots into the person's audit trail each time. The check now needs the
// secret; it still comes before the password, so no attempt is counted.
func TestAnchorRefusalNeedsTheSecret(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	e := h.enroll(t, h.signIn(t, "anchors@example.gov"))
	before, err := h.st.AuditEvents(ctx, 0, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		foreign := foreignRoot(t, fmt.Sprintf("root %d of someone's making", i))
		req := e.request(t)
		req.Secret = bytes.Repeat([]byte{7}, len(req.Secret))
		req.TrustAnchors = []*x509.Certificate{foreign}
		if _, err := h.svc.Redeem(ctx, req, nil); !errors.Is(err, ErrNotAccepted) {
			t.Fatalf("a wrong secret with foreign anchors: %v, want ErrNotAccepted", err)
		}
	}
	after, err := h.st.AuditEvents(ctx, 0, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(after) - len(before); n != 0 {
		t.Fatalf("%d audit events written for calls without the secret", n)
	}
	// With the secret, foreign anchors are refused before the password:
	// no attempt counted, the code still good.
	req := e.request(t)
	req.TrustAnchors = []*x509.Certificate{h.svc.cfg.Issuer.Chain()[0]}
	req.Password = wrongPassword(req.Password)
	foreign := foreignRoot(t, "another PKI")
	req.TrustAnchors = []*x509.Certificate{foreign}
	for range DefaultMaxAttempts + 1 {
		if _, err := h.svc.Redeem(ctx, req, nil); !errors.Is(err, ErrPrecondition) {
			t.Fatalf("the secret with foreign anchors: %v, want ErrPrecondition", err)
		}
	}
	if _, err := h.svc.Redeem(ctx, e.request(t), nil); err != nil {
		t.Fatalf("the right request after the refusals: %v", err)
	}
}

// TestAnchorRefusalsAuditedOnce: with the secret, each refusal for
// foreign anchors was audited under its own message, which names the
// caller's roots, so a photo of the QR code and roots of new names wrote
// a new event each call. It is audited once per activation, without the
// names.
func TestAnchorRefusalsAuditedOnce(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	e := h.enroll(t, h.signIn(t, "anchor-names@example.gov"))
	before, _ := h.st.AuditEvents(ctx, 0, 0, "")
	for i := range 10 {
		name := fmt.Sprintf("root %d, a name of the caller's choosing", i)
		foreign := foreignRoot(t, name)
		req := e.request(t)
		req.TrustAnchors = []*x509.Certificate{foreign}
		if _, err := h.svc.Redeem(ctx, req, nil); !errors.Is(err, ErrPrecondition) {
			t.Fatalf("foreign anchors: %v", err)
		}
	}
	after, _ := h.st.AuditEvents(ctx, 0, 0, "")
	added := after[len(before):]
	if len(added) != 1 {
		t.Fatalf("%d audit events for 10 refusals of foreign anchors, want 1", len(added))
	}
	if strings.Contains(added[0].Detail, "caller's choosing") {
		t.Fatalf("the audit event carries the caller's text: %q", added[0].Detail)
	}
}

// foreignRoot is a self-signed root of another PKI, named name.
func foreignRoot(t *testing.T, name string) *x509.Certificate {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
