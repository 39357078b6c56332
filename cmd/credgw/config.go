package main

import (
	"errors"
	"fmt"

	"github.com/credgw/credgw/server"
	"github.com/spf13/cobra"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Check a configuration file",
		Args:  cobra.NoArgs,
	}
	var cfgPath string
	check := &cobra.Command{
		Use:   "check --config credgw.yaml",
		Short: "Run every start-up check of serve without serving",
		Long: `Run what 'credgw serve' checks before it serves, without serving: every
field of the file (docs/config.md), every file it names (readable, certificates
parse, TLS keys match their certificates), the HSM (module loads, PIN works, the
CA key and the escrow KEK are found, the CA key matches the CA certificate) and
the store (reachable; read-only, no migration, so it runs beside a running
gateway). Every problem is listed, one per line; the exit status is 1 if there
is any. Run it before a restart or a reload.`,
		Example: "  credgw config check --config /etc/credgw/credgw.yaml",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			problems := server.CheckConfig(cmd.Context(), cfgPath)
			out := cmd.OutOrStdout()
			if len(problems) == 0 {
				fmt.Fprintf(out, "%s: ok\n", cfgPath)
				return nil
			}
			for _, p := range problems {
				fmt.Fprintf(out, "%s: %v\n", cfgPath, p)
			}
			if len(problems) == 1 {
				return errors.New("1 problem in " + cfgPath)
			}
			return fmt.Errorf("%d problems in %s", len(problems), cfgPath)
		},
	}
	check.Flags().StringVar(&cfgPath, "config", "credgw.yaml", "configuration file")
	cmd.AddCommand(check)
	return cmd
}
