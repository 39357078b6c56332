package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/credgw/credgw/piv/pivclient"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/spf13/cobra"
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
	f.StringVar(&o.gatewayID, "gateway-id", "", "the gateway id (its gateway_id) you mean to sign in to: the card signs no challenge of another gateway")
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
	gatewayID                                         string
	timeout                                           time.Duration
}

// signIn runs PKI-AUTH with the card a pkcs11: URI names (piv/pivclient);
// done closes the session, then the card.
func signIn(ctx context.Context, gateway, gatewayID, caFile, cardURI, pinFile, module string) (s *pivclient.Session, done func(), err error) {
	roots, err := pivclient.LoadRoots(caFile)
	if err != nil {
		return nil, nil, err
	}
	card, err := pivclient.OpenCard(ctx, cardURI, pinFile, module)
	if err != nil {
		return nil, nil, err
	}
	s, err = pivclient.SignIn(ctx, pivclient.Options{Gateway: gateway, GatewayID: gatewayID, Roots: roots, Card: card})
	if err != nil {
		card.Close()
		return nil, nil, caFileError(caFile, cardTLSError(rpcErr(err)))
	}
	return s, func() { s.Close(); card.Close() }, nil
}

func pivLogin(ctx context.Context, out io.Writer, o pivLoginOptions) error {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	s, done, err := signIn(ctx, o.gateway, o.gatewayID, o.caFile, o.card, o.pinFile, o.module)
	if err != nil {
		return err
	}
	defer done()
	resp := s.Result
	if o.tokenFile != "" {
		if err := writeSecretFile(o.tokenFile, []byte(resp.GetSessionToken()+"\n")); err != nil {
			return err
		}
	}
	printIdentity(out, o.gateway, s.Begin.GetGatewayId(), resp)
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
	switch {
	case id.GetEmail() != "":
		fmt.Fprintf(out, "  email:       %s (from the %s certificate)\n", id.GetEmail(), id.GetEmailSource())
	case id.GetEmailSource() == "digital-signature-unbound":
		fmt.Fprintln(out, "  email:       none: the card's Digital Signature certificate is not shown to be this card's (another CA, no card UUID), so its email is not taken; S/MIME credentials cannot be issued (ask the credgw operators)")
	}
	fmt.Fprintf(out, "  session token expires %s\n", fmtTS(resp.GetExpiresAt()))
}

// cardTLSError says what a TLS alert from the gateway means for a card
// that is the TLS client: decrypt_error answers a CertificateVerify the
// certificate's key did not make.
func cardTLSError(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "remote error: tls: error decrypting message"):
		return errors.New("the gateway refused the card's TLS handshake (alert decrypt_error): " +
			"the card's key is not the one its PIV Authentication certificate certifies")
	case strings.Contains(msg, "remote error: tls: "):
		alert := msg[strings.Index(msg, "remote error: tls: ")+len("remote error: tls: "):]
		return fmt.Errorf("the gateway refused the card's TLS handshake: %s", strings.TrimRight(alert, `"`))
	}
	return err
}

// caFileError says that --ca-file is the one to fix when the gateway's TLS
// certificate does not verify against it (gRPC reports it as an
// unavailable gateway).
func caFileError(caFile string, err error) error {
	if err != nil && (strings.Contains(err.Error(), "x509: certificate signed by unknown authority") ||
		strings.Contains(err.Error(), "x509: certificate is not valid for any names") || strings.Contains(err.Error(), "x509: certificate is valid for")) {
		return fmt.Errorf("--ca-file %s does not trust the gateway's TLS certificate (give the CA that issued it, e.g. the gateway directory's tls/ca.crt): %w", caFile, err)
	}
	return err
}

// uriEscape percent-encodes a token label for a pkcs11: URI.
func uriEscape(s string) string { return url.PathEscape(s) }
