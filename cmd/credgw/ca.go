package main

import (
	"fmt"

	"github.com/credgw/credgw/server"
	"github.com/spf13/cobra"
)

func newCACmd() *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "The issuing CA"}
	var cfgPath, org string
	initCmd := &cobra.Command{
		Use:   "init --config credgw.yaml",
		Short: "Create the root and issuing CA the config names",
		Long: `Create a root CA and an issuing CA for derived credentials. The issuing key is
generated in the HSM token of ca.key_uri (sensitive, non-extractable; key type
ca.key_type: p256, p384 or rsa3072), or written to ca.key_file; the root key is
written beside the root certificate (0600) so that it can be moved offline.
The certificates go to ca.certificate_file and ca.chain_files[0]. The escrow
key-encryption key is created in the HSM (escrow.kek_uri) or as escrow.kek_file.
An existing CA is never replaced.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := server.LoadConfig(cfgPath)
			if err != nil {
				return err
			}
			res, err := server.InitCA(cmd.Context(), cfg, org)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "root CA:    %s\n", res.Root.Subject)
			fmt.Fprintf(out, "issuing CA: %s (key %s)\n", res.Issuing.Subject, keyPlace(cfg))
			if res.RootKeyFile != "" {
				fmt.Fprintf(out, "root key:   %s — move it offline\n", res.RootKeyFile)
			}
			return nil
		},
	}
	initCmd.Flags().StringVar(&cfgPath, "config", "credgw.yaml", "configuration file")
	initCmd.Flags().StringVar(&org, "organization", "credgw", "organization name in the CA subjects")
	cmd.AddCommand(initCmd)
	return cmd
}

func keyPlace(cfg *server.Config) string {
	if cfg.CA.KeyURI != "" {
		return "in the HSM: " + cfg.CA.KeyURI
	}
	return cfg.Path(cfg.CA.KeyFile)
}
