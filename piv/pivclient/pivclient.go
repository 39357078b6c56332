// Package pivclient is the card side of PKI-AUTH (FIPS 201-3 §6.2.3.1)
// over gRPC, what the smart-card computer does to sign in to a credgw
// gateway: connect over TLS with the card's PIV Authentication certificate
// as client certificate (the card signs the handshake), call BeginSession
// for a challenge, have the card sign it with the 9A key, and call
// CompleteSession for the identity the gateway verified and a PIV session
// token. The connection stays open for the calls the token allows
// (CreateEnrollment).
//
// A program that holds a card open passes it as Options.Card; OpenCard
// opens one from a pkcs11: URI.
package pivclient

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"unicode/utf8"

	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/pkcs11"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// Card is what PKI-AUTH needs of a card. *piv.Card is one; a program may
// wrap one (a load generator caches its certificates).
type Card interface {
	// AuthCertificate is the PIV Authentication certificate (9A).
	AuthCertificate(context.Context) (*x509.Certificate, error)
	// AuthSigner is the 9A key, for the TLS handshake.
	AuthSigner(context.Context) (crypto.Signer, error)
	// Certificate reads a slot's certificate (the Digital Signature one,
	// 9C, whose email the gateway takes if 9A has none).
	Certificate(context.Context, pkcs11.PIVSlot) (*x509.Certificate, error)
	// SignChallenge signs piv.ChallengeDigest with the 9A key.
	SignChallenge(ctx context.Context, gatewayID, sessionID string, challenge []byte) ([]byte, error)
}

var _ Card = (*piv.Card)(nil)

// Options is one sign-in.
type Options struct {
	// Gateway is the gateway's gRPC address, host:port.
	Gateway string
	// Roots trust the gateway's TLS certificate (LoadRoots reads them
	// from a PEM file). Required.
	Roots *x509.CertPool
	// Card signs the TLS handshake and the challenge. It stays the
	// caller's: SignIn never closes it, and it must stay open until the
	// Session is closed (a new connection is a new handshake).
	Card Card
	// DialOptions are added to the gRPC connection (instrumentation).
	DialOptions []grpc.DialOption
	// GatewayID, if set, is the gateway id (its gateway_id) the person
	// means to sign in to: the card signs no challenge of another (a
	// server relaying another gateway's challenge).
	GatewayID string
}

// Session is a finished PKI-AUTH.
type Session struct {
	// Conn is the TLS connection with the card as client certificate,
	// open for the calls the session token allows.
	Conn *grpc.ClientConn
	// Begin is the gateway's challenge (and its gateway id).
	Begin *credgwv1.BeginSessionResponse
	// Result is the verified identity, the PIV session token and its
	// expiry.
	Result *credgwv1.CompleteSessionResponse
}

// Close closes the connection.
func (s *Session) Close() error { return s.Conn.Close() }

// LoadRoots reads the PEM CA certificates that trust the gateway's TLS
// certificate.
func LoadRoots(caFile string) (*x509.CertPool, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	return roots, nil
}

// ErrKeyMismatch: the card's 9A key does not match its PIV Authentication
// certificate (a card personalised wrong, or the wrong token).
var ErrKeyMismatch = errors.New("the card's key is not the one its PIV Authentication certificate certifies: the gateway would refuse its TLS handshake (alert decrypt_error)")

// SignIn connects to o.Gateway with the card as TLS client certificate and
// runs PKI-AUTH. On success the caller closes the Session (and then the
// card).
func SignIn(ctx context.Context, o Options) (*Session, error) {
	switch {
	case o.Gateway == "":
		return nil, errors.New("pivclient: the gateway address is required")
	case o.Roots == nil:
		return nil, errors.New("pivclient: the gateway's TLS trust anchor (Roots) is required")
	case o.Card == nil:
		return nil, errors.New("pivclient: a card is required")
	}
	card := o.Card
	authCert, err := card.AuthCertificate(ctx)
	if err != nil {
		return nil, err
	}
	signer, err := card.AuthSigner(ctx)
	if err != nil {
		return nil, err
	}
	// A card whose 9A key is not its certificate's would fail the TLS
	// handshake with an alert whose arrival races the client's next write
	// (a broken pipe instead): say it before connecting.
	if pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool }); ok && !pub.Equal(authCert.PublicKey) {
		return nil, ErrKeyMismatch
	}
	// The Digital Signature certificate is readable without the PIN; the
	// gateway takes the email of record from it if 9A has none.
	var dsDER []byte
	if ds, err := card.Certificate(ctx, pkcs11.PIVSignature); err == nil {
		dsDER = ds.Raw
	}
	s := &Session{}
	s.Conn, err = grpc.NewClient(o.Gateway, append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs:      o.Roots,
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{{Certificate: [][]byte{authCert.Raw}, PrivateKey: signer, Leaf: authCert}},
	}))}, o.DialOptions...)...)
	if err != nil {
		return nil, err
	}
	client := credgwv1.NewPIVAuthClient(s.Conn)
	if s.Begin, err = client.BeginSession(ctx, &credgwv1.BeginSessionRequest{}); err != nil {
		s.Close()
		return nil, fmt.Errorf("BeginSession: %w", err)
	}
	if err := checkBegin(s.Begin, o); err != nil {
		s.Close()
		return nil, err
	}
	sig, err := card.SignChallenge(ctx, s.Begin.GetGatewayId(), s.Begin.GetSessionId(), s.Begin.GetChallenge())
	if err != nil {
		s.Close()
		return nil, err
	}
	s.Result, err = client.CompleteSession(ctx, &credgwv1.CompleteSessionRequest{
		SessionId: s.Begin.GetSessionId(), PivAuthCertificate: authCert.Raw, Signature: sig,
		DigitalSignatureCertificate: dsDER,
	})
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("CompleteSession: %w", err)
	}
	return s, nil
}

// checkBegin refuses a challenge the card should not sign: of another
// gateway than o.GatewayID, or not shaped as a credgw gateway makes it
// (the digest separates its fields with NULs and ends with the fixed-size
// challenge, so a NUL in an id, or a challenge of another length, would
// make one signature read as another message).
func checkBegin(b *credgwv1.BeginSessionResponse, o Options) error {
	id, sid := b.GetGatewayId(), b.GetSessionId()
	switch {
	case id == "" || len(id) > 128 || !printable(id):
		return fmt.Errorf("pivclient: the gateway at %s sent a gateway id %q that no credgw gateway has: nothing was signed", o.Gateway, id)
	case o.GatewayID != "" && id != o.GatewayID:
		return fmt.Errorf("pivclient: the gateway at %s calls itself %q, not %q (the gateway id expected): nothing was signed; "+
			"check the address, or the gateway id you were given", o.Gateway, id, o.GatewayID)
	case len(b.GetChallenge()) != piv.ChallengeSize:
		return fmt.Errorf("pivclient: the gateway at %s sent a %d-byte challenge, not %d: nothing was signed", o.Gateway, len(b.GetChallenge()), piv.ChallengeSize)
	case sid == "" || len(sid) > 128 || !printable(sid):
		return fmt.Errorf("pivclient: the gateway at %s sent a session id %q that no credgw gateway makes: nothing was signed", o.Gateway, sid)
	}
	return nil
}

// printable is text without control characters.
func printable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return false
		}
	}
	return true
}

// OpenCard opens the card a pkcs11: URI names, with the PIN from pinFile
// (the CLI's --pin-file) or the URI's pin-source or pin-value, never both,
// through module or the URI's module-path (SoftHSM when neither names
// one). The caller closes it.
func OpenCard(ctx context.Context, uri, pinFile, module string) (*piv.Card, error) {
	u, err := pkcs11.ParseURI(uri)
	if err != nil {
		return nil, err
	}
	if pinFile != "" {
		if u.PINSource != "" || u.HasPINValue() {
			return nil, fmt.Errorf("give the PIN either with --pin-file or in the URI, not both")
		}
		u.PINSource = pinFile
	}
	if u.PINSource == "" && !u.HasPINValue() {
		// The card signs with 9A only after the PIN login; without one
		// the token would merely say the key is not there.
		return nil, errors.New("no PIN given: the card signs only after the PIN login; give --pin-file FILE (or pin-source=FILE in the card URI)")
	}
	if module == "" && u.ModulePath == "" {
		if module, err = pkcs11.SoftHSMModule(); err != nil {
			return nil, fmt.Errorf("the card URI has no module-path and %w", err)
		}
	}
	return piv.OpenCard(ctx, u, module)
}
