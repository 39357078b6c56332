package agent

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/credgw/credgw/activation/code"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	pkcs12 "software.sslmate.com/src/go-pkcs12"
)

// RenewOptions is one re-key of the credentials installed in Dir.
type RenewOptions struct {
	// Dir holds the installed credentials (auth.p12 is the current
	// derived PIV Authentication key and certificate); the new ones are
	// written there.
	Dir         string
	KeystorePIN string
	// Gateway is the gateway's gRPC address; RootCAs trust its TLS
	// certificate.
	Gateway     string
	RootCAs     *x509.CertPool
	Device      *credgwv1.DeviceInfo
	Events      func(Event)
	DialOptions []grpc.DialOption
	// Now is the device's clock (default: time.Now).
	Now func() time.Time
	// Attest attests the new device keys (Options.Attest).
	Attest AttestFunc
	// TrustAnchors are the roots the new credentials must chain to
	// (Options.TrustAnchors). Empty: the root the installed credentials
	// chain to, the end of auth.p12's chain: the anchor they were verified
	// to when installed with one (an install with --trust-gateway-ca, or
	// by a credgw before 2026-12, kept the chain the gateway sent; give
	// the anchor then).
	TrustAnchors []*x509.Certificate
}

// Renew re-keys without the card (Common Policy §3.3.1): it proves the
// current derived PIV Authentication key in the TLS handshake, makes new
// device keys, downloads the new package (under a secret and password it
// makes for this renewal), verifies and installs it in a staging directory,
// confirms — the gateway then revokes the old certificates (superseded) —
// and moves the new files over the old ones.
//
// Its errors read without gRPC's "rpc error: code = … desc =" (Readable).
func Renew(ctx context.Context, r RenewOptions) (*Result, error) {
	res, err := renew(ctx, r)
	return res, Readable(err)
}

func renew(ctx context.Context, r RenewOptions) (*Result, error) {
	if err := CheckKeystorePIN(r.KeystorePIN); err != nil {
		return nil, err
	}
	if r.RootCAs == nil {
		return nil, errors.New("agent: renew: the gateway's TLS trust anchor is required")
	}
	data, err := os.ReadFile(filepath.Join(r.Dir, "auth.p12"))
	if err != nil {
		return nil, fmt.Errorf("agent: renew: the current credentials: %w", err)
	}
	key, cert, chain, err := pkcs12.DecodeChain(data, r.KeystorePIN)
	if err != nil {
		return nil, fmt.Errorf("agent: renew: auth.p12 does not open with this keystore PIN: %w", err)
	}
	tc := tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	conn, err := grpc.NewClient(r.Gateway, append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: r.RootCAs, Certificates: []tls.Certificate{tc}, MinVersion: tls.VersionTLS12}))}, r.DialOptions...)...)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	client := credgwv1.NewRenewalClient(conn)

	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	password, err := code.NewPassword(8)
	if err != nil {
		return nil, err
	}
	// The new credentials must chain to the trust anchor (by default the
	// root the installed ones were verified to), and be the same person's:
	// a gateway that is not the agency's gets nothing installed.
	anchors := r.TrustAnchors
	if len(anchors) == 0 {
		if len(chain) == 0 {
			return nil, errors.New("agent: renew: auth.p12 holds no CA chain to check the new credentials against: give the trust anchor")
		}
		anchors = []*x509.Certificate{chain[len(chain)-1]}
	}
	o := Options{Payload: code.Payload{Gateway: r.Gateway, Secret: secret}, Password: password,
		TrustAnchors: anchors, renews: cert,
		KeystorePIN: r.KeystorePIN, Device: r.Device, Events: r.Events, MaxResumes: 5, Now: r.Now,
		// A gateway that is busy or restarting is waited for, and a
		// confirmation whose answer was lost asked again (the gateway
		// answers a repeat like the first), as Redeem does.
		MaxWait: DefaultMaxWait,
		Attest:  r.Attest, attestContext: code.RekeyAttestationContext(strings.ToLower(cert.SerialNumber.Text(16)))}
	if o.Events == nil {
		o.Events = func(Event) {}
	}
	open := func(ctx context.Context, csrs []*credgwv1.CertificateRequest, offset int64, rid string) (grpc.ServerStreamingClient[credgwv1.RedeemResponse], error) {
		return client.Rekey(ctx, &credgwv1.RekeyRequest{Csrs: csrs, Device: r.Device, RedemptionId: rid, ResumeOffset: offset,
			Secret: secret, Password: password})
	}
	confirm := func(ctx context.Context, rid string, sum []byte) (string, error) {
		cr, err := client.Confirm(ctx, &credgwv1.ConfirmRequest{RedemptionId: rid, Secret: secret, Sha256: sum})
		return cr.GetCredentialSetId(), err
	}
	// The new credentials go to a staging directory first: until the
	// gateway has confirmed them (it then revokes the old certificates,
	// superseded), the old ones stay in place and in force.
	return installStaged(ctx, r.Dir, ".renew-", o, open, confirm)
}
