package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

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
  5. stop everything.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			out := cmd.OutOrStdout()
			hsmLn, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			defer hsmLn.Close()
			grpcPort, err := freePort()
			if err != nil {
				return err
			}
			httpPort, err := freePort()
			if err != nil {
				return err
			}
			d, err := hsmsim.DevInit(ctx, dir, hsmsim.DevOptions{
				HSMURL:   "http://" + hsmLn.Addr().String(),
				GRPCAddr: fmt.Sprintf("127.0.0.1:%d", grpcPort),
				HTTPAddr: fmt.Sprintf("127.0.0.1:%d", httpPort),
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
			srv, err := server.New(ctx, cfg)
			if err != nil {
				return err
			}
			if err := srv.Start(); err != nil {
				return err
			}
			fmt.Fprintf(out, "3. Simulated card issuer (OCSP, CRL) at %s; gateway at %s\n   its CA %q (key in SoftHSM) publishes its CRL at %s\n",
				d.Env.BaseURL, srv.GRPCAddr(), srv.CA().Chain()[0].Subject.CommonName, srv.CA().CRLURL())

			fmt.Fprintln(out, "4. PKI-AUTH against the gateway with the card (credgw piv login):")
			loginErr := pivLogin(ctx, indent(out), pivLoginOptions{
				gateway: srv.GRPCAddr(), caFile: d.CAFile, card: "pkcs11:token=" + uriEscape(d.Card.Name),
				pinFile: d.PINFile, timeout: 30 * time.Second,
			})
			shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			stopErr := srv.Shutdown(shutdownCtx)
			if loginErr != nil {
				return loginErr
			}
			if stopErr != nil {
				return stopErr
			}
			fmt.Fprintf(out, `5. Gateway and issuer stopped.

Run the same by hand, each in its own terminal:
  credgw hsm-sim serve --dir %s/hsm
  credgw serve --config %s
  SOFTHSM2_CONF=%s credgw piv login --gateway %s --ca-file %s --card 'pkcs11:token=%s' --pin-file %s
Look at the card with OpenSC:
  SOFTHSM2_CONF=%s pkcs11-tool --module %s --token-label %q -O
`, d.Dir, d.Config, d.Env.SoftHSMConfig(), d.GRPCAddr, d.CAFile, uriEscape(d.Card.Name), d.PINFile,
				d.Env.SoftHSMConfig(), modPath, d.Card.Name)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", ".demo", "demo directory (new or empty)")
	return cmd
}
