package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

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
	var anchorFlags []string
	verify := &cobra.Command{
		Use:   "verify --config credgw.yaml [--anchor SEQ:HASH ...]",
		Short: "Check the audit log's hash chain; name the first broken event",
		Long: `Walk the audit log in order and recompute every event's hash (SHA-256 over the
previous event's hash and the event's canonical form). An edited event, a
deleted, inserted or reordered one, or deleted trailing events make it fail
and say at which seq. Exit status 0: intact; 1: broken or unreadable.

Someone who can write the database can rewrite the whole chain consistently.
verify prints the last event's seq and hash: keep that line outside the
database (a ticket, a WORM store), and give it back with --anchor SEQ:HASH
(repeatable) at the next verify; a chain rewritten since has another hash
there, or ends before it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var anchors []store.AuditAnchor
			for _, a := range anchorFlags {
				k, err := parseAnchor(a)
				if err != nil {
					return err
				}
				anchors = append(anchors, k)
			}
			st, err := openConfiguredStore(cmd, cfgPath)
			if err != nil {
				return err
			}
			defer st.Close()
			v, err := store.VerifyAuditAnchored(cmd.Context(), st, anchors)
			var p *store.AuditProblem
			if errors.As(err, &p) {
				return fmt.Errorf("%w (%s before it intact)", err, plural(int(v.Events), "event", "events"))
			}
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "audit log intact: %s", plural(int(v.Events), "event", "events"))
			if len(anchors) > 0 {
				fmt.Fprintf(out, ", %s kept outside found", plural(len(anchors), "anchor", "anchors"))
			}
			fmt.Fprintln(out)
			if v.Events > 0 {
				fmt.Fprintf(out, "keep outside the database, for the next verify: --anchor %d:%s\n", v.LastSeq, v.LastHash)
			}
			return nil
		},
	}
	verify.Flags().StringVar(&cfgPath, "config", "credgw.yaml", "configuration file")
	verify.Flags().StringArrayVar(&anchorFlags, "anchor", nil, "SEQ:HASH an earlier verify printed (kept outside the database); repeatable")

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

// parseAnchor reads --anchor SEQ:HASH.
func parseAnchor(a string) (store.AuditAnchor, error) {
	seq, hash, ok := strings.Cut(a, ":")
	n, err := strconv.ParseInt(seq, 10, 64)
	if !ok || err != nil || n < 1 || len(hash) != 64 || strings.Trim(strings.ToLower(hash), "0123456789abcdef") != "" {
		return store.AuditAnchor{}, fmt.Errorf("--anchor %q: SEQ:HASH, the seq and the 64 hex digits a verify printed", a)
	}
	return store.AuditAnchor{Seq: n, Hash: strings.ToLower(hash)}, nil
}
