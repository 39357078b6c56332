package main

import (
	"fmt"

	"github.com/credgw/credgw/server"
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

To restore: stop the gateway, put the copy at store.dsn (and delete any
credgw.db-wal and credgw.db-shm beside it), run 'credgw migrate' and
'credgw audit verify', and only then start the gateway (docs/key-ceremony.md,
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
