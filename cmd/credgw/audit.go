package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/credgw/credgw/server"
	"github.com/credgw/credgw/store"
	"github.com/spf13/cobra"
)

func newAuditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Verify or export the hash-chained audit log",
	}
	var cfgPath string
	verify := &cobra.Command{
		Use:   "verify --config credgw.yaml",
		Short: "Check the audit log's hash chain; name the first broken event",
		Long: `Walk the audit log in order and recompute every event's hash (SHA-256 over the
previous event's hash and the event's canonical form). An edited event, a
deleted, inserted or reordered one, or deleted trailing events make it fail
and say at which seq. Exit status 0: intact; 1: broken or unreadable.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := openConfiguredStore(cmd, cfgPath)
			if err != nil {
				return err
			}
			defer st.Close()
			n, err := store.VerifyAudit(cmd.Context(), st)
			var p *store.AuditProblem
			if errors.As(err, &p) {
				return fmt.Errorf("%w (%s before it intact)", err, plural(int(n), "event", "events"))
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "audit log intact: %s\n", plural(int(n), "event", "events"))
			return nil
		},
	}
	verify.Flags().StringVar(&cfgPath, "config", "credgw.yaml", "configuration file")

	var out, person string
	var after int64
	export := &cobra.Command{
		Use:   "export --config credgw.yaml [--out FILE] [--person ID] [--after SEQ]",
		Short: "Write the audit log as JSON lines",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := openConfiguredStore(cmd, cfgPath)
			if err != nil {
				return err
			}
			defer st.Close()
			var w io.Writer = cmd.OutOrStdout()
			if out != "" && out != "-" {
				f, err := createSecretFile(out)
				if err != nil {
					return err
				}
				defer f.Close()
				w = f
			}
			enc := json.NewEncoder(w)
			for {
				evs, err := st.AuditEvents(cmd.Context(), after, 1000, person)
				if err != nil {
					return err
				}
				for _, e := range evs {
					if err := enc.Encode(e); err != nil {
						return err
					}
					after = e.Seq
				}
				if len(evs) < 1000 {
					return nil
				}
			}
		},
	}
	export.Flags().StringVar(&cfgPath, "config", "credgw.yaml", "configuration file")
	export.Flags().StringVar(&out, "out", "-", "output file (0600), - for standard output")
	export.Flags().StringVar(&person, "person", "", "only this person's events")
	export.Flags().Int64Var(&after, "after", 0, "only events after this seq")
	cmd.AddCommand(verify, export)
	return cmd
}

func openConfiguredStore(cmd *cobra.Command, cfgPath string) (store.Store, error) {
	cfg, err := server.LoadConfig(cfgPath)
	if err != nil {
		return nil, err
	}
	return server.OpenStoreReadOnly(cmd.Context(), cfg) // beside a running gateway
}
