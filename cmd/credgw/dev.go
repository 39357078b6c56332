package main

import (
	"context"
	"fmt"

	hsmsim "github.com/credgw/credgw/hsm-sim"
	"github.com/credgw/credgw/server"
	"github.com/spf13/cobra"
)

func newDevCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "dev", Short: "Development environments"}
	var dir string
	var hsmPort, grpcPort, httpPort, mgmtPort, portalPort int
	initCmd := &cobra.Command{
		Use:   "init --dir DIR",
		Short: "Make a ready-to-run development environment",
		Long: `Make DIR (new or empty) a development environment: an hsm-sim environment with
one good simulated PIV card, the gateway's TLS material (CA, server certificate,
portal and admin client certificates), and DIR/credgw.yaml using SQLite
DIR/credgw.db with the simulated PIV issuer as trust anchor. Ports default to
free ones on 127.0.0.1.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ports := []*int{&hsmPort, &grpcPort, &httpPort, &mgmtPort, &portalPort}
			for _, p := range ports {
				if *p == 0 {
					free, err := freePort()
					if err != nil {
						return err
					}
					*p = free
				}
			}
			d, err := hsmsim.DevInit(cmd.Context(), dir, hsmsim.DevOptions{
				HSMURL:         fmt.Sprintf("http://127.0.0.1:%d", hsmPort),
				GRPCAddr:       fmt.Sprintf("127.0.0.1:%d", grpcPort),
				HTTPAddr:       fmt.Sprintf("127.0.0.1:%d", httpPort),
				ManagementAddr: fmt.Sprintf("127.0.0.1:%d", mgmtPort),
				PortalAddr:     fmt.Sprintf("127.0.0.1:%d", portalPort),
			})
			if err != nil {
				return err
			}
			if err := devCA(cmd.Context(), d); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), `development environment in %s
  card:     %q (PIN in %s)
  config:   %s
Run, each in its own terminal (export SOFTHSM2_CONF in each first: the card
and the CA key are SoftHSM tokens):
  export SOFTHSM2_CONF=%s
  %s hsm-sim serve --dir %s/hsm
  %s serve --config %s
  %s piv login --gateway %s --ca-file %s \
      --card 'pkcs11:token=%s' --pin-file %s
Then open the self-service portal, https://%s/ , in a browser that holds the
card (docs/portal.md shows how to add the SoftHSM module to Chromium or Firefox).
`, d.Dir, d.Card.Name, d.PINFile, d.Config, d.Env.SoftHSMConfig(), selfCommand(), d.Dir, selfCommand(), d.Config,
				selfCommand(), d.GRPCAddr, d.CAFile, uriEscape(d.Card.Name), d.PINFile, d.PortalAddr)
			return nil
		},
	}
	initCmd.Flags().StringVar(&dir, "dir", "", "environment directory (required)")
	initCmd.Flags().IntVar(&hsmPort, "hsm-port", 0, "port of the simulated issuer's OCSP/CRL server (default: a free one)")
	initCmd.Flags().IntVar(&grpcPort, "grpc-port", 0, "gateway gRPC port (default: a free one)")
	initCmd.Flags().IntVar(&httpPort, "http-port", 0, "gateway public HTTP port: OCSP, CRLs, CA certificates (default: a free one)")
	initCmd.Flags().IntVar(&mgmtPort, "management-port", 0, "gateway management port: /healthz, /readyz, /metrics (default: a free one)")
	initCmd.Flags().IntVar(&portalPort, "portal-port", 0, "self-service portal HTTPS port (default: a free one)")
	initCmd.MarkFlagRequired("dir")
	cmd.AddCommand(initCmd)
	return cmd
}

func freePort() (int, error) { return hsmsim.FreePort() }

// devCA runs 'credgw ca init' on a fresh development environment.
func devCA(ctx context.Context, d *hsmsim.DevEnv) error {
	cfg, err := server.LoadConfig(d.Config)
	if err != nil {
		return err
	}
	if _, err = server.InitCA(ctx, cfg, server.InitCAOptions{Organization: "credgw development"}); err != nil {
		return err
	}
	// The database, as credgw migrate makes it: serve opens only one
	// that is there.
	st, _, err := server.CreateStore(ctx, cfg)
	if err != nil {
		return err
	}
	return st.Close()
}
