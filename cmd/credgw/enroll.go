package main

import (
	"context"
	"fmt"
	"io"
	"time"

	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/spf13/cobra"
)

func newEnrollCmd() *cobra.Command {
	var o enrollOptions
	cmd := &cobra.Command{
		Use:   "enroll --gateway ADDR --ca-file F --card 'pkcs11:...' --pin-file F --name NAME --qr-out FILE.png",
		Short: "Enroll for a derived credential with a PIV card: QR code and password",
		Long: `What the portal does for a person at the smart-card computer: PKI-AUTH with the
card, then CreateEnrollment. Prints the QR code in the terminal with the numeric
password under it and the expiry, and writes the QR code as a PNG. Scan it with
the device agent (credgw redeem) and type the password there.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := enroll(cmd.Context(), cmd.OutOrStdout(), o)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.gateway, "gateway", "", "gateway gRPC address host:port (required)")
	f.StringVar(&o.caFile, "ca-file", "", "PEM CA certificate of the gateway's TLS certificate (required)")
	f.StringVar(&o.card, "card", "", "pkcs11: URI of the card (required)")
	f.StringVar(&o.pinFile, "pin-file", "", "file holding the card PIN")
	f.StringVar(&o.module, "module", "", "PKCS#11 module when the URI has no module-path (default: SoftHSM)")
	f.StringVar(&o.gatewayID, "gateway-id", "", "the gateway id (its gateway_id) you mean to sign in to: the card signs no challenge of another gateway")
	f.StringVar(&o.name, "name", "", "identity name, 1-64 printable characters, e.g. \"Entrust Derived Cred\" (required)")
	f.StringVar(&o.credType, "type", "", "credential type (default: the gateway's mobile-smart-credential)")
	f.StringVar(&o.qrOut, "qr-out", "", "write the QR code PNG here (required)")
	f.StringVar(&o.passwordOut, "password-out", "", "also write the numeric password to this file, 0600 (demos and tests)")
	f.DurationVar(&o.timeout, "timeout", 60*time.Second, "overall time limit")
	for _, r := range []string{"gateway", "ca-file", "card", "name", "qr-out"} {
		cmd.MarkFlagRequired(r)
	}
	return cmd
}

type enrollOptions struct {
	gateway, caFile, card, pinFile, module string
	gatewayID                              string
	name, credType, qrOut, passwordOut     string
	timeout                                time.Duration
}

func enroll(ctx context.Context, out io.Writer, o enrollOptions) (*credgwv1.CreateEnrollmentResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	s, done, err := signIn(ctx, o.gateway, o.gatewayID, o.caFile, o.card, o.pinFile, o.module)
	if err != nil {
		return nil, err
	}
	defer done()
	resp, err := credgwv1.NewEnrollmentClient(s.Conn).CreateEnrollment(ctx, &credgwv1.CreateEnrollmentRequest{
		SessionToken: s.Result.GetSessionToken(), IdentityName: o.name, CredentialType: o.credType,
	})
	if err != nil {
		return nil, rpcErr(fmt.Errorf("CreateEnrollment: %w", err))
	}
	if err := writeEnrollmentFiles(o, resp); err != nil {
		return nil, err
	}
	id := s.Result.GetIdentity()
	fmt.Fprintf(out, "Derived credential %q for %s\n\n", o.name, id.GetSubject())
	fmt.Fprint(out, resp.GetQrText())
	fmt.Fprintf(out, "\n  Password: %s\n", groupDigits(resp.GetPassword()))
	fmt.Fprintf(out, "  Valid until %s (single use; 5 wrong passwords lock it)\n", fmtTS(resp.GetExpiresAt()))
	fmt.Fprintf(out, "  QR code image: %s\n\n", o.qrOut)
	fmt.Fprintln(out, "On the device: open the app, scan the code, type the password. The download")
	fmt.Fprintln(out, "could take some time; do not close the app.")
	return resp, nil
}

// writeEnrollmentFiles writes the QR code image (it carries the
// activation secret) and, when asked, the password: both 0600.
func writeEnrollmentFiles(o enrollOptions, resp *credgwv1.CreateEnrollmentResponse) error {
	if err := writeSecretFile(o.qrOut, resp.GetQrPng()); err != nil {
		return err
	}
	if o.passwordOut != "" {
		if err := writeSecretFile(o.passwordOut, []byte(resp.GetPassword()+"\n")); err != nil {
			return err
		}
	}
	return nil
}

// groupDigits shows 12345678 as 1234 5678, as people read it.
func groupDigits(p string) string {
	if len(p) <= 4 {
		return p
	}
	out := ""
	for i, r := range p {
		if i > 0 && i%4 == 0 {
			out += " "
		}
		out += string(r)
	}
	return out
}
