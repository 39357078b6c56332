package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/credgw/credgw/agent"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/server"
	"github.com/spf13/cobra"
)

func newRenewCmd() *cobra.Command {
	var dir, gateway, caFile, pinFile string
	var anchorFiles []string
	var att attestFlags
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "renew --dir DIR --gateway HOST:PORT --ca-file CA.pem [--keystore-pin-file F]",
		Short: "Re-key the credentials installed in DIR, without the card",
		Long: `What the device app does near the end of its credentials' life (Common Policy
§3.3.1): prove the current derived PIV Authentication key (DIR/auth.p12) in the
TLS handshake, make new device keys, download the new credentials (from 80 %
of the current certificate's lifetime, while the card is still good), verify
and install them over the old files in DIR, and confirm; the gateway then
revokes the old certificates (superseded).

The new credentials must chain to the root the installed ones were verified to
(the end of the chain in DIR/auth.p12) and be the same person's; --trust-anchor
names the root instead (after a root change, or for credentials installed with
--trust-gateway-ca).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			pem, err := os.ReadFile(caFile)
			if err != nil {
				return fmt.Errorf("--ca-file: %w", err)
			}
			roots := x509.NewCertPool()
			if !roots.AppendCertsFromPEM(pem) {
				return errors.New("--ca-file: no PEM certificate in it")
			}
			pin, err := secretInput("--keystore-pin-file", pinFile, "Keystore PIN: ")
			if err != nil {
				return err
			}
			attestFn, err := att.fn()
			if err != nil {
				return err
			}
			var anchors []*x509.Certificate
			if len(anchorFiles) > 0 {
				if anchors, err = server.ReadCertificateFiles(anchorFiles); err != nil {
					return fmt.Errorf("--trust-anchor: %w", err)
				}
			}
			res, err := agent.Renew(ctx, agent.RenewOptions{Dir: dir, KeystorePIN: pin, Gateway: gateway, RootCAs: roots, Attest: attestFn,
				TrustAnchors: anchors,
				Device:       &credgwv1.DeviceInfo{Model: "credgw reference agent", Os: runtime.GOOS, AgentVersion: version},
				Events:       progressPrinter(cmd.ErrOrStderr())})
			if err != nil {
				return err
			}
			o := cmd.OutOrStdout()
			fmt.Fprintf(o, "Renewed and confirmed (new credential set %s); the old certificates are revoked\n", terminalSafe(res.CredentialSetID))
			printCertificates(o, res)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "directory of the installed credentials (required)")
	f.StringVar(&gateway, "gateway", "", "gateway gRPC address (required)")
	f.StringVar(&caFile, "ca-file", "", "PEM trust anchor of the gateway's TLS certificate (required)")
	f.StringVar(&pinFile, "keystore-pin-file", "", "file with the keystore PIN (else asked without echo)")
	f.StringArrayVar(&anchorFiles, "trust-anchor", nil, "PEM file of the root CA(s) the new credentials must chain to (default: the root the installed ones were verified to)")
	f.DurationVar(&timeout, "timeout", agentTimeout, "overall time limit (beyond the agent's wait for a busy or restarting gateway, agent.DefaultMaxWait)")
	att.add(cmd)
	for _, n := range []string{"dir", "gateway", "ca-file"} {
		cmd.MarkFlagRequired(n)
	}
	return cmd
}
