package main

import (
	"crypto/rand"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"

	hsmsim "github.com/credgw/credgw/hsm-sim"
	"github.com/credgw/credgw/pkcs11"
	"github.com/spf13/cobra"
)

func newDemoCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "demo --dir DIR",
		Short: "Run the credgw flow on the embedded default, with a simulated card",
		Long: `Make an hsm-sim environment in DIR (new or empty) with one simulated PIV card,
serve its issuer's OCSP and CRL on a free 127.0.0.1 port while the demo runs,
and prove the card works: read its PIV Authentication certificate over
PKCS#11, log in with its PIN, sign a random challenge with the 9A key, verify
the signature with the certificate, and print the card's identity.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			defer ln.Close()
			baseURL := "http://" + ln.Addr().String()
			hsmDir := filepath.Join(dir, "hsm")
			fmt.Fprintf(out, "1. Simulated PIV card issuer in %s (OCSP and CRL at %s)\n", hsmDir, baseURL)
			env, err := hsmsim.Init(hsmDir, baseURL)
			if err != nil {
				return err
			}
			srv := &http.Server{Handler: env.Handler(nil)}
			go srv.Serve(ln)
			defer srv.Close()

			pin, err := demoPIN()
			if err != nil {
				return err
			}
			pinFile := filepath.Join(dir, "card.pin")
			if err := os.WriteFile(pinFile, append(pin, '\n'), 0o600); err != nil {
				return err
			}
			mod, err := env.OpenModule()
			if err != nil {
				return err
			}
			const name = "Demo Cardholder"
			info, err := env.NewCard(cmd.Context(), mod, hsmsim.CardSpec{
				Name: name, PIN: pin, Key: pkcs11.ECP256,
				Email: "demo.cardholder@example.com", UPN: "demo.cardholder@agency.example",
			})
			mod.Close()
			if err != nil {
				return err
			}
			absPIN, err := filepath.Abs(pinFile)
			if err != nil {
				return err
			}
			modPath, err := pkcs11.SoftHSMModule()
			if err != nil {
				return err
			}
			uri := info.URI(modPath, absPIN)
			fmt.Fprintf(out, "2. Simulated PIV card %q on SoftHSM (PIN in %s)\n   %s\n", name, pinFile, uri)
			fmt.Fprintln(out, "3. The card proves itself:")
			u, err := pkcs11.ParseURI(uri)
			if err != nil {
				return err
			}
			if err := checkCard(cmd.Context(), out, u, ""); err != nil {
				return err
			}
			fmt.Fprintf(out, `
Look at the card with OpenSC and OpenSSL:
  SOFTHSM2_CONF=%s pkcs11-tool --module %s --token-label %q -O
  openssl x509 -noout -text -in %q
Serve its issuer again (OCSP, CRL) with:
  credgw hsm-sim serve --dir %s
`, env.SoftHSMConfig(), modPath, name, filepath.Join(hsmDir, "cards", name, "9a.crt"), hsmDir)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", ".demo", "demo directory (new or empty)")
	return cmd
}

// demoPIN is a random 8-digit PIN (the demo never prints it).
func demoPIN() ([]byte, error) {
	pin := make([]byte, 8)
	for i := range pin {
		d, err := rand.Int(rand.Reader, big.NewInt(10))
		if err != nil {
			return nil, err
		}
		pin[i] = byte('0' + d.Int64())
	}
	return pin, nil
}
