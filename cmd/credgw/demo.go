package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/credgw/credgw/activation/code"
	"github.com/credgw/credgw/agent"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"

	hsmsim "github.com/credgw/credgw/hsm-sim"
	"github.com/credgw/credgw/pkcs11"
	"github.com/credgw/credgw/server"
	"github.com/spf13/cobra"
)

func newDemoCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "demo --dir DIR",
		Short: "Run the credgw flow on the embedded default, with a simulated card",
		Long: `Run the flow end to end on the embedded default, in one process:
  1. make a development environment in DIR (credgw dev init): a simulated PIV
     card issuer with one good card on SoftHSM, TLS material, credgw.yaml;
  2. the card proves itself locally: 9A certificate read over PKCS#11, PIN
     login, a challenge signed and verified;
  3. start the simulated issuer's OCSP/CRL server and the gateway (SQLite);
  4. sign in to the gateway with the card (credgw piv login: TLS client
     authentication and PKI-AUTH), print the verified identity;
  5. enroll (credgw enroll): the QR code (DIR/qr.png) and its password;
  6. redeem with the reference device agent into DIR/device (credgw redeem):
     scan, password, download, verify, install, confirm;
  7. stop everything, and print how to run the gateway by hand and open
     its self-service portal in a browser with the demo card.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			out := cmd.OutOrStdout()
			// A fixed port below the ephemeral range: the cards' OCSP and
			// CRL URLs name it, and 'credgw hsm-sim serve' reuses it later.
			hsmLn, err := hsmsim.ListenFree()
			if err != nil {
				return err
			}
			defer hsmLn.Close()
			// The gateway's listeners are bound first, each in one step
			// with its port (the ports go into the config and the
			// certificates), and handed to the gateway.
			var gwLns [3]net.Listener
			for i := range gwLns {
				if gwLns[i], err = hsmsim.ListenFree(); err != nil {
					return err
				}
				defer gwLns[i].Close()
			}
			d, err := hsmsim.DevInit(ctx, dir, hsmsim.DevOptions{
				HSMURL:     "http://" + hsmLn.Addr().String(),
				GRPCAddr:   gwLns[0].Addr().String(),
				HTTPAddr:   gwLns[1].Addr().String(),
				PortalAddr: gwLns[2].Addr().String(),
			})
			if err != nil {
				return err
			}
			if err := devCA(ctx, d); err != nil {
				return err
			}
			fmt.Fprintf(out, "1. Development environment in %s\n   card %q on SoftHSM (PIN in %s), gateway config %s\n",
				d.Dir, d.Card.Name, d.PINFile, d.Config)

			modPath, err := pkcs11.SoftHSMModule()
			if err != nil {
				return err
			}
			uri := d.Card.URI(modPath, d.PINFile)
			fmt.Fprintf(out, "2. The card proves itself locally (%s):\n", uri)
			u, err := pkcs11.ParseURI(uri)
			if err != nil {
				return err
			}
			if err := checkCard(ctx, indent(out), u, ""); err != nil {
				return err
			}

			hsm := &http.Server{Handler: d.Env.Handler(nil), ReadHeaderTimeout: 10 * time.Second}
			go hsm.Serve(hsmLn)
			defer hsm.Close()
			cfg, err := server.LoadConfig(d.Config)
			if err != nil {
				return err
			}
			srv, err := server.New(ctx, cfg, server.WithListeners(map[string]net.Listener{
				"listen.grpc": gwLns[0], "listen.http": gwLns[1], "portal.listen": gwLns[2]}))
			if err != nil {
				return err
			}
			if err := srv.Start(); err != nil {
				return err
			}
			fmt.Fprintf(out, "3. Simulated card issuer (OCSP, CRL) at %s; gateway at %s\n   its CA %q (key in SoftHSM) publishes its CRL at %s\n",
				d.Env.BaseURL, srv.GRPCAddr(), srv.CA().Chain()[0].Subject.CommonName, srv.CA().CRLURL())

			fmt.Fprintln(out, "4. PKI-AUTH against the gateway with the card (credgw piv login):")
			card := "pkcs11:token=" + uriEscape(d.Card.Name)
			stopErr := func() error {
				shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				return srv.Shutdown(shutdownCtx)
			}
			if err := pivLogin(ctx, indent(out), pivLoginOptions{
				gateway: srv.GRPCAddr(), caFile: d.CAFile, card: card, pinFile: d.PINFile, timeout: 30 * time.Second,
			}); err != nil {
				stopErr()
				return err
			}
			fmt.Fprintln(out, "5. Enrollment at the smart-card computer (credgw enroll): the QR code and its password")
			qrFile := filepath.Join(d.Dir, "qr.png")
			en, err := enroll(ctx, indent(out), enrollOptions{gateway: srv.GRPCAddr(), caFile: d.CAFile, card: card,
				pinFile: d.PINFile, name: "Entrust Derived Cred", qrOut: qrFile, timeout: 60 * time.Second})
			if err != nil {
				stopErr()
				return err
			}
			fmt.Fprintln(out, "6. The device agent scans the QR code, types the password, downloads and installs (credgw redeem):")
			deviceDir := filepath.Join(d.Dir, "device")
			if err := os.MkdirAll(deviceDir, 0o700); err != nil {
				stopErr()
				return err
			}
			pinFile := filepath.Join(deviceDir, "keystore-pin.txt")
			keystorePIN, err := demoPIN()
			if err != nil {
				stopErr()
				return err
			}
			if err := writeSecretFile(pinFile, append(keystorePIN, '\n')); err != nil {
				stopErr()
				return err
			}
			png, err := os.ReadFile(qrFile)
			if err != nil {
				stopErr()
				return err
			}
			payload, err := agent.DecodeQR(png)
			if err != nil {
				stopErr()
				return err
			}
			p, err := code.ParsePayload(payload)
			if err != nil {
				stopErr()
				return err
			}
			// The demo device's keystore attests its keys (the simulated
			// vendor of hsm/, at TEE level): its derived PIV
			// Authentication certificate is hardware-backed (…3.41).
			attestFn, err := (&attestFlags{dir: filepath.Join(d.Dir, "hsm", "attest-vendor"), level: "trusted_environment"}).fn()
			if err != nil {
				stopErr()
				return err
			}
			fmt.Fprintln(indent(out), "its keystore attests the keys it makes (simulated Android Key Attestation, TEE level)")
			// The device trusts the CA's root, given to it out of band (a
			// phone's management profile): not whatever the gateway sends.
			anchors, err := server.ReadCertificateFiles([]string{filepath.Join(d.Dir, "ca", "root.crt")})
			if err != nil {
				stopErr()
				return err
			}
			res, err := agent.Redeem(ctx, agent.Options{Payload: p, Password: en.GetPassword(), OutDir: deviceDir, TrustAnchors: anchors,
				KeystorePIN: string(keystorePIN), Device: &credgwv1.DeviceInfo{Model: "demo device", AgentVersion: version},
				Events: progressPrinter(indent(out)), Attest: attestFn})
			if err != nil {
				stopErr()
				return err
			}
			fmt.Fprintf(indent(out), "installed into %s (keystore PIN in %s, demo only) and confirmed:\n", deviceDir, pinFile)
			printCertificates(indent(out), res)
			if err := stopErr(); err != nil {
				return err
			}
			self, conf := selfCommand(), d.Env.SoftHSMConfig()
			fmt.Fprintf(out, `7. Gateway and issuer stopped.

What the gateway recorded:
  %s/notifications.jsonl   what the person was told (one JSON line each)
  %s audit verify --config %s   checks the hash-chained audit log
  %s audit export --config %s   prints it, one JSON line per event

Run the same by hand, each in its own terminal (the card and the CA key are
SoftHSM tokens: export SOFTHSM2_CONF in each terminal first):
  export SOFTHSM2_CONF=%s
  %s hsm-sim serve --dir %s/hsm
  %s serve --config %s
  %s piv login --gateway %s --ca-file %s --card 'pkcs11:token=%s' --pin-file %s
Look at the card with OpenSC (SOFTHSM2_CONF exported as above):
  pkcs11-tool --module %s --token-label %q -O

The self-service portal is https://%s/ while '%s serve' runs. To sign in
with the demo card, start Chromium with a throwaway profile that holds the
card (SoftHSM) and trusts the gateway's TLS CA, then pick the card's
certificate and type its PIN (in %s):
  export HOME=$(mktemp -d) SOFTHSM2_CONF=%s
  mkdir -p $HOME/.pki/nssdb && certutil -N --empty-password -d sql:$HOME/.pki/nssdb
  modutil -dbdir sql:$HOME/.pki/nssdb -add credgw-demo-card -libfile %s -force
  certutil -d sql:$HOME/.pki/nssdb -A -n credgw-demo-tls -t C,, -i %s
  chromium https://%s/
(docs/portal.md: Firefox too.)
`, d.Dir, self, d.Config, self, d.Config, conf, self, d.Dir, self, d.Config, self, d.GRPCAddr, d.CAFile, uriEscape(d.Card.Name), d.PINFile,
				modPath, d.Card.Name,
				d.PortalAddr, self, d.PINFile, conf, modPath, d.CAFile, d.PortalAddr)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", ".demo", "demo directory (new or empty)")
	return cmd
}

// selfCommand is this binary as the printed commands should run it: the
// path it was started by ("bin/credgw" after make demo), or "credgw" when
// it was found on the PATH.
func selfCommand() string {
	if a := os.Args[0]; strings.ContainsRune(a, '/') {
		return a
	}
	return "credgw"
}

// demoPIN is a random 8-digit keystore PIN for the demo device.
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
