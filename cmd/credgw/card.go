package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/pkcs11"
	"github.com/spf13/cobra"
)

func newCardCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "card", Short: "Work with a PIV card over PKCS#11"}
	cmd.AddCommand(newCardCheckCmd())
	return cmd
}

func newCardCheckCmd() *cobra.Command {
	var uri, module string
	cmd := &cobra.Command{
		Use:   "check --uri 'pkcs11:token=NAME?module-path=...&pin-source=FILE'",
		Short: "Prove a PIV card works: read 9A, sign a challenge after PIN login, verify",
		Long: `Read the card's PIV Authentication certificate over PKCS#11, log in with the
PIN from the URI's pin-source, sign a random challenge with the 9A key, verify
the signature with the certificate, and print the card's identity.

Works with a real card through OpenSC (module-path=/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so)
and with an hsm-sim card (module-path=SoftHSM, SOFTHSM2_CONF=DIR/softhsm2.conf).
This checks the card, not the certificate's path or revocation status.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			u, err := pkcs11.ParseURI(uri)
			if err != nil {
				return err
			}
			return checkCard(cmd.Context(), cmd.OutOrStdout(), u, module)
		},
	}
	cmd.Flags().StringVar(&uri, "uri", "", "RFC 7512 pkcs11: URI of the card, with pin-source=FILE (required)")
	cmd.Flags().StringVar(&module, "module", "", "PKCS#11 module when the URI has no module-path (default: SoftHSM)")
	cmd.MarkFlagRequired("uri")
	return cmd
}

// checkCard reads the card's PIV Authentication certificate, signs a random
// challenge with 9A after the PIN login, verifies it and prints the identity.
func checkCard(ctx context.Context, out io.Writer, u *pkcs11.URI, module string) error {
	if u.PINSource == "" && !u.HasPINValue() {
		return errors.New("no PIN given: the card signs only after the PIN login; add pin-source=FILE to --uri")
	}
	if module == "" && u.ModulePath == "" {
		var err error
		if module, err = pkcs11.SoftHSMModule(); err != nil {
			return fmt.Errorf("the URI has no module-path and %w", err)
		}
	}
	card, err := piv.OpenCard(ctx, u, module)
	if err != nil {
		return err
	}
	defer card.Close()
	cert, err := card.AuthCertificate(ctx)
	if err != nil {
		return err
	}
	challenge := make([]byte, 32)
	if _, err := rand.Read(challenge); err != nil {
		return err
	}
	const gateway, session = "credgw-card-check", "local"
	sig, err := card.SignChallenge(ctx, gateway, session, challenge)
	if err != nil {
		return err
	}
	if err := piv.VerifyChallengeSignature(cert.PublicKey, piv.SigAuto, piv.ChallengeDigest(gateway, session, challenge), sig); err != nil {
		return err
	}
	id, err := piv.IdentityFromCertificate(cert)
	if err != nil {
		return err
	}
	fp := sha256.Sum256(cert.Raw)
	fmt.Fprintln(out, "PIV Authentication certificate read, challenge signed by the card (9A, after PIN login) and verified.")
	fmt.Fprintf(out, "  subject:      %s\n", id.Subject)
	fmt.Fprintf(out, "  issuer:       %s\n", cert.Issuer)
	fmt.Fprintf(out, "  serial:       %s\n", fmtSerial(cert.SerialNumber.Text(16)))
	fmt.Fprintf(out, "  valid:        %s .. %s\n", fmtTime(cert.NotBefore), fmtTime(cert.NotAfter))
	fmt.Fprintf(out, "  sha256:       %s\n", hex.EncodeToString(fp[:]))
	fmt.Fprintf(out, "  FASC-N:       %s (identifier %s)\n", id.FASCN, id.FASCN.Identifier())
	fmt.Fprintf(out, "  card UUID:    %s\n", id.CardUUID)
	if id.UPN != "" {
		fmt.Fprintf(out, "  UPN:          %s\n", id.UPN)
	}
	if id.Email != "" {
		fmt.Fprintf(out, "  email:        %s\n", id.Email)
	}
	fmt.Fprintf(out, "  signature:    %d bytes, %s key\n", len(sig), keyName(cert.PublicKey))
	return nil
}

func keyName(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA-%d", k.N.BitLen())
	}
	return fmt.Sprintf("%T", pub)
}

// indent prefixes every line written to w with three spaces.
func indent(w io.Writer) io.Writer { return &indentWriter{w: w, start: true} }

type indentWriter struct {
	w     io.Writer
	start bool
}

func (i *indentWriter) Write(p []byte) (int, error) {
	for _, b := range p {
		if i.start {
			if _, err := i.w.Write([]byte("   ")); err != nil {
				return 0, err
			}
		}
		if _, err := i.w.Write([]byte{b}); err != nil {
			return 0, err
		}
		i.start = b == '\n'
	}
	return len(p), nil
}
