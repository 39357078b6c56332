package loadgen

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/credgw/credgw/activation/code"
	"github.com/credgw/credgw/agent"
	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/piv/pivclient"
	"github.com/credgw/credgw/pkcs11"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
)

// oneEnrollment is one full enrollment with a card: the serials of the
// certificates delivered and how many escrowed keys came with them.
func oneEnrollment(ctx context.Context, roots *x509.CertPool, gateway string, card *heldCard, lat *latencies, work string, onlyProtocol bool) ([]string, int, error) {
	resp, err := enrollOnce(ctx, roots, gateway, card, lat)
	if err != nil {
		return nil, 0, err
	}
	p, err := code.ParsePayload(resp.GetQrPayload())
	if err != nil {
		return nil, 0, err
	}
	// The replica this worker uses (a load balancer's job); a stalled
	// gateway does not hang the bench.
	p.Gateway = gateway
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	o := agent.Options{Payload: p, Password: resp.GetPassword(), OutDir: work, KeystorePIN: "bench-pin-2026",
		Device: &credgwv1.DeviceInfo{Model: "bench"}, DialOptions: lat.dialOptions(), MaxResumes: 1,
		// A load generator counts an unavailable gateway as a failure
		// and goes on; a device would wait and ask again.
		MaxWait: -1}
	if onlyProtocol {
		o.Install = protocolOnly
	}
	res, err := agent.Redeem(ctx, o)
	if err != nil {
		return nil, 0, err
	}
	return res.Serials, res.KeyHistory, nil
}

// protocolOnly is the install of --device protocol: the device has done
// its part of the protocol (keys, CSRs, download, SHA-256) and checks the
// manifest before Confirm, and skips what a phone does on its own CPU
// after that (verifying chains, opening the PKCS#12 files, writing
// keystores). It notes the serials and the key count as the reference
// agent does. Never for a real device: it confirms credentials it did not
// install.
func protocolOnly(_ context.Context, p *agent.Package) error {
	if err := p.CheckManifest(); err != nil {
		return err
	}
	res := p.Result
	for _, m := range p.Manifest().GetItems() {
		if m.GetKind() == credgwv1.ItemKind_ITEM_KIND_PKCS12 {
			res.KeyHistory += int(m.GetKeyCount())
		}
		if m.GetKind() == credgwv1.ItemKind_ITEM_KIND_CERTIFICATE || m.GetName() == "encryption.p12" {
			res.Serials = append(res.Serials, m.GetSerial()) // the current ones
		}
	}
	return nil
}

// enrollOnce is what credgw enroll does at the smart-card computer:
// PKI-AUTH with the card, then CreateEnrollment.
func enrollOnce(ctx context.Context, roots *x509.CertPool, gateway string, card *heldCard, lat *latencies) (*credgwv1.CreateEnrollmentResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	s, err := pivclient.SignIn(ctx, pivclient.Options{Gateway: gateway, Roots: roots, Card: card, DialOptions: lat.dialOptions()})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	resp, err := credgwv1.NewEnrollmentClient(s.Conn).CreateEnrollment(ctx, &credgwv1.CreateEnrollmentRequest{
		SessionToken: s.Result.GetSessionToken(), IdentityName: "bench",
	})
	if err != nil {
		return nil, fmt.Errorf("CreateEnrollment: %w", err)
	}
	return resp, nil
}

// heldCard is a simulated card held in its reader, as a PC keeps one: its
// certificates are read and its 9A key found once. (Each lookup makes
// SoftHSM open and lock every object file of the token: load on the bench
// client, not on the gateway.) The card still signs every TLS handshake
// and every challenge.
type heldCard struct {
	*piv.Card
	auth, ds *x509.Certificate
	key      *pkcs11.Signer
}

func newHeldCard(ctx context.Context, c *piv.Card) (*heldCard, error) {
	auth, err := c.AuthCertificate(ctx)
	if err != nil {
		return nil, err
	}
	s, err := c.AuthSigner(ctx)
	if err != nil {
		return nil, err
	}
	key, ok := s.(*pkcs11.Signer)
	if !ok {
		return nil, fmt.Errorf("bench: the card's 9A key is a %T", s)
	}
	ds, err := c.Certificate(ctx, pkcs11.PIVSignature)
	if err != nil {
		return nil, err
	}
	return &heldCard{Card: c, auth: auth, ds: ds, key: key}, nil
}

func (c *heldCard) AuthCertificate(context.Context) (*x509.Certificate, error) { return c.auth, nil }

func (c *heldCard) AuthSigner(context.Context) (crypto.Signer, error) { return c.key, nil }

func (c *heldCard) Certificate(ctx context.Context, slot pkcs11.PIVSlot) (*x509.Certificate, error) {
	if slot.KeyRef == pkcs11.PIVSignature.KeyRef {
		return c.ds, nil
	}
	return c.Card.Certificate(ctx, slot)
}

func (c *heldCard) SignChallenge(ctx context.Context, gatewayID, sessionID string, challenge []byte) ([]byte, error) {
	return c.key.SignContext(ctx, piv.ChallengeDigest(gatewayID, sessionID, challenge), crypto.SHA256)
}
