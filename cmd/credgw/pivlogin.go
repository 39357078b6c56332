package main

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/url"
	"os"
	"time"

	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/pkcs11"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

func newPIVCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "piv", Short: "PKI-AUTH with a PIV card"}
	var o pivLoginOptions
	login := &cobra.Command{
		Use:   "login --gateway ADDR --ca-file F --card 'pkcs11:token=...' --pin-file F",
		Short: "Sign in to a gateway with a PIV card (PKI-AUTH)",
		Long: `Perform PKI-AUTH (FIPS 201-3 §6.2.3.1) against a running gateway: connect over
TLS with the card's PIV Authentication certificate as client certificate (the
card signs the handshake), ask for a challenge, have the card sign it with the
9A key after the PIN login, and print the identity the gateway verified and
when the PIV session token expires. --token-file writes the token (0600).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return pivLogin(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	f := login.Flags()
	f.StringVar(&o.gateway, "gateway", "", "gateway gRPC address host:port (required)")
	f.StringVar(&o.caFile, "ca-file", "", "PEM CA certificate that issued the gateway's TLS certificate (required)")
	f.StringVar(&o.card, "card", "", "pkcs11: URI of the card, e.g. 'pkcs11:token=NAME' (required)")
	f.StringVar(&o.pinFile, "pin-file", "", "file holding the card PIN (or pin-source= in the URI)")
	f.StringVar(&o.module, "module", "", "PKCS#11 module when the URI has no module-path (default: SoftHSM)")
	f.StringVar(&o.tokenFile, "token-file", "", "write the PIV session token to this file (0600)")
	f.DurationVar(&o.timeout, "timeout", 30*time.Second, "overall time limit")
	for _, r := range []string{"gateway", "ca-file", "card"} {
		login.MarkFlagRequired(r)
	}
	cmd.AddCommand(login)
	return cmd
}

type pivLoginOptions struct {
	gateway, caFile, card, pinFile, module, tokenFile string
	timeout                                           time.Duration
	dialOpts                                          []grpc.DialOption
	// openCard is a card the caller holds open (the bench: a PC with its
	// card inserted); card, pinFile and module are then unused.
	openCard pivCard
}

// pivCard is what PKI-AUTH needs of a card: *piv.Card, or the bench's
// caching wrapper around one.
type pivCard interface {
	AuthCertificate(context.Context) (*x509.Certificate, error)
	AuthSigner(context.Context) (crypto.Signer, error)
	Certificate(context.Context, pkcs11.PIVSlot) (*x509.Certificate, error)
	SignChallenge(ctx context.Context, gatewayID, sessionID string, challenge []byte) ([]byte, error)
	Close() error
}

// pkiAuthResult is a finished PKI-AUTH: the connection (TLS with the card)
// stays open for the calls the session token allows.
type pkiAuthResult struct {
	conn    *grpc.ClientConn
	card    pivCard
	ownCard bool // opened here: Close closes it
	begin   *credgwv1.BeginSessionResponse
	session *credgwv1.CompleteSessionResponse
}

func (r *pkiAuthResult) Close() {
	if r.conn != nil {
		r.conn.Close()
	}
	if r.ownCard {
		r.card.Close()
	}
}

// pkiAuth connects with the card as TLS client certificate and runs
// PKI-AUTH.
func pkiAuth(ctx context.Context, o pivLoginOptions) (*pkiAuthResult, error) {
	caPEM, err := os.ReadFile(o.caFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s holds no PEM certificate", o.caFile)
	}
	r := &pkiAuthResult{card: o.openCard}
	if r.card == nil {
		c, err := openCard(ctx, o)
		if err != nil {
			return nil, err
		}
		r.card, r.ownCard = c, true
	}
	card := r.card
	authCert, err := card.AuthCertificate(ctx)
	if err != nil {
		r.Close()
		return nil, err
	}
	signer, err := card.AuthSigner(ctx)
	if err != nil {
		r.Close()
		return nil, err
	}
	// The Digital Signature certificate is readable without the PIN; the
	// gateway takes the email of record from it if 9A has none.
	var dsDER []byte
	if ds, err := card.Certificate(ctx, pkcs11.PIVSignature); err == nil {
		dsDER = ds.Raw
	}
	r.conn, err = grpc.NewClient(o.gateway, append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs:      roots,
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{{Certificate: [][]byte{authCert.Raw}, PrivateKey: signer, Leaf: authCert}},
	}))}, o.dialOpts...)...)
	if err != nil {
		r.Close()
		return nil, err
	}
	client := credgwv1.NewPIVAuthClient(r.conn)
	if r.begin, err = client.BeginSession(ctx, &credgwv1.BeginSessionRequest{}); err != nil {
		r.Close()
		return nil, fmt.Errorf("BeginSession: %w", err)
	}
	sig, err := card.SignChallenge(ctx, r.begin.GetGatewayId(), r.begin.GetSessionId(), r.begin.GetChallenge())
	if err != nil {
		r.Close()
		return nil, err
	}
	r.session, err = client.CompleteSession(ctx, &credgwv1.CompleteSessionRequest{
		SessionId: r.begin.GetSessionId(), PivAuthCertificate: authCert.Raw, Signature: sig,
		DigitalSignatureCertificate: dsDER,
	})
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("CompleteSession: %w", err)
	}
	return r, nil
}

// openCard opens the card o names: its URI, with the PIN from --pin-file
// or the URI, through --module or the URI's module-path (SoftHSM when
// neither names one).
func openCard(ctx context.Context, o pivLoginOptions) (*piv.Card, error) {
	u, err := pkcs11.ParseURI(o.card)
	if err != nil {
		return nil, err
	}
	if o.pinFile != "" {
		if u.PINSource != "" || u.HasPINValue() {
			return nil, fmt.Errorf("give the PIN either with --pin-file or in the URI, not both")
		}
		u.PINSource = o.pinFile
	}
	if o.module == "" && u.ModulePath == "" {
		if o.module, err = pkcs11.SoftHSMModule(); err != nil {
			return nil, fmt.Errorf("the card URI has no module-path and %w", err)
		}
	}
	return piv.OpenCard(ctx, u, o.module)
}

func pivLogin(ctx context.Context, out io.Writer, o pivLoginOptions) error {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	r, err := pkiAuth(ctx, o)
	if err != nil {
		return err
	}
	defer r.Close()
	resp := r.session
	if o.tokenFile != "" {
		if err := os.WriteFile(o.tokenFile, []byte(resp.GetSessionToken()+"\n"), 0o600); err != nil {
			return err
		}
	}
	printIdentity(out, o.gateway, r.begin.GetGatewayId(), resp)
	return nil
}

func printIdentity(out io.Writer, gateway, gatewayID string, resp *credgwv1.CompleteSessionResponse) {
	id := resp.GetIdentity()
	fmt.Fprintf(out, "PKI-AUTH succeeded at %s (gateway %s)\n", gateway, gatewayID)
	fmt.Fprintf(out, "  subject:     %s\n", id.GetSubject())
	fmt.Fprintf(out, "  FASC-N:      %s (identifier %s)\n", id.GetFascnText(), id.GetFascnIdentifier())
	fmt.Fprintf(out, "  card UUID:   %s\n", id.GetCardUuid())
	fmt.Fprintf(out, "  person id:   %s\n", id.GetPersonId())
	if id.GetUpn() != "" {
		fmt.Fprintf(out, "  UPN:         %s\n", id.GetUpn())
	}
	if id.GetEmail() != "" {
		fmt.Fprintf(out, "  email:       %s (from the %s certificate)\n", id.GetEmail(), id.GetEmailSource())
	}
	fmt.Fprintf(out, "  session token expires %s\n", resp.GetExpiresAt().AsTime().Local().Format(time.RFC3339))
}

// uriEscape percent-encodes a token label for a pkcs11: URI.
func uriEscape(s string) string { return url.PathEscape(s) }
