package main

import (
	"fmt"

	"github.com/credgw/credgw/server"
	"github.com/credgw/credgw/store"
	"github.com/spf13/cobra"
)

func newBackupCmd() *cobra.Command {
	var cfgPath, out string
	cmd := &cobra.Command{
		Use:   "backup --config FILE --out FILE",
		Short: "Copy the SQLite store, online, to a new file",
		Long: `Write a consistent copy of the configured SQLite database to --out (a new
file, mode 0600), while the gateway goes on serving: one snapshot of the
database (SQLite's VACUUM INTO), then opened and checked (integrity, schema),
under a name of its own beside --out; it gets the name --out only once it
is whole, so a backup that fails or is stopped leaves no file there (a
stopped one may leave a hidden .NAME.partial-* file: delete it). Any
schema version is copied: take one before an upgrade migrates the
database (credgw does not migrate down; that backup is the way back).
Keep it with the HSM backups: the escrowed keys in it are sealed under the
escrow KEK in the HSM, and without that key they are gone.

To restore: stop the gateway, run 'credgw restore --config FILE --from
BACKUP', and only then start the gateway (docs/key-ceremony.md,
"Restoring", says what a restore to an earlier moment loses).

A PostgreSQL store is backed up with PostgreSQL's tools (pg_dump, or base
backups and WAL archiving for point-in-time recovery): docs/key-ceremony.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return fmt.Errorf("--out: name the backup file to write")
			}
			cfg, err := server.LoadConfig(cfgPath)
			if err != nil {
				return err
			}
			version, err := server.BackupStore(cmd.Context(), cfg, out) // beside a running gateway
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "backup written to %s (checked: integrity ok; schema version %d)\n", out, version)
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "credgw.yaml", "configuration file")
	cmd.Flags().StringVar(&out, "out", "", "the backup file to write (must not exist)")
	return cmd
}

func newRestoreCmd() *cobra.Command {
	var cfgPath, from string
	var anchors []string
	cmd := &cobra.Command{
		Use:   "restore --config FILE --from BACKUP [--anchor SEQ:HASH]",
		Short: "Put a backup in place of the SQLite store (the gateway stopped)",
		Long: `Restore the configured SQLite database from a backup made by 'credgw backup',
with the gateway stopped: refused while a gateway holds the database, and
refused for a file that is not a whole database or that has a -wal of its
own (a copy of a live database: use one from credgw backup), before anything
changes. The database replaced is kept beside it (NAME.replaced-TIME[-N],
with its -wal), and none of its -wal or -shm is left beside the restored one
(SQLite would replay them onto it). The restored copy's stored CRLs are
marked stale before it is put in place (the next CRL is numbered above every
one published since the backup); then the schema is brought up to date and
the audit log is verified; give
the last anchor you kept from before the restore (--anchor, repeatable) to
see which events the restore lost. Run it as the gateway's user (runuser -u
credgw -- credgw restore ...). docs/key-ceremony.md, "Restoring", says what
a restore to an earlier moment loses.

A PostgreSQL store is restored with PostgreSQL's tools: docs/key-ceremony.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" {
				return fmt.Errorf("--from: name the backup file to restore")
			}
			var kept []store.AuditAnchor
			for _, a := range anchors {
				k, err := parseAnchor(a)
				if err != nil {
					return err
				}
				kept = append(kept, k)
			}
			cfg, err := server.LoadConfig(cfgPath)
			if err != nil {
				return err
			}
			aside, err := server.RestoreStore(cmd.Context(), cfg, from)
			if err != nil {
				return err
			}
			o := cmd.OutOrStdout()
			fmt.Fprintf(o, "restored %s from %s\n", cfg.Path(cfg.Store.DSN), from)
			if aside != "" {
				fmt.Fprintf(o, "what it replaced is kept as %s\n", aside)
			}
			st, _, err := server.CreateStore(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			defer st.Close()
			if err := st.MarkAllCRLsStale(cmd.Context()); err != nil {
				return err
			}
			cur, _, err := st.SchemaVersion(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(o, "schema at version %d; the stored CRLs are marked stale\n", cur)
			head, _, err := st.AuditHead(cmd.Context())
			if err != nil {
				return err
			}
			// An anchor past the restored log's end marks what the
			// restore lost: said, not a failure. One within it must
			// still match.
			var within []store.AuditAnchor
			for _, k := range kept {
				if k.Seq > head {
					fmt.Fprintf(o, "audit events %d to %d (after the backup's moment) are not in the restored log: keep your exports of them, and note the restore\n", head+1, k.Seq)
					continue
				}
				within = append(within, k)
			}
			v, err := store.VerifyAuditAnchored(cmd.Context(), st, within)
			if err != nil {
				return fmt.Errorf("the restored audit log (%d events checked): %w", v.Events, err)
			}
			fmt.Fprintf(o, "audit log intact: %d events; anchor for the next check: --anchor %d:%s\n", v.Events, v.LastSeq, v.LastHash)
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "credgw.yaml", "configuration file")
	cmd.Flags().StringVar(&from, "from", "", "the backup file (from credgw backup)")
	cmd.Flags().StringArrayVar(&anchors, "anchor", nil, "SEQ:HASH of an audit event kept from before the restore (repeatable)")
	return cmd
}
