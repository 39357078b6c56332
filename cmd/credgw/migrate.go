package main

import (
	"fmt"

	"github.com/credgw/credgw/server"
	"github.com/spf13/cobra"
)

func newMigrateCmd() *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "migrate --config credgw.yaml",
		Short: "Bring the database schema up to date",
		Long: `Apply the pending migrations to the configured database. On PostgreSQL this
takes an advisory lock, so replicas starting together are safe, and
'credgw serve' refuses to start on an older schema until this has run. The
embedded SQLite store migrates itself at start; this command works on it too,
and makes a new installation's SQLite database ('credgw serve' refuses to
start without one, rather than make an empty one in place of a database
that is missing).
A schema a newer credgw migrated is refused (exit 1): credgw does not
migrate down. The stored CRLs are marked stale, so that after a restore
from a backup the next CRL is rebuilt, numbered above any published since.

Upgrading a package: back up first (credgw backup; on PostgreSQL its own
tools): credgw does not migrate down, and that backup is the way back. Then
stop the gateway, install, run this as the gateway's user (runuser -u
credgw -- credgw migrate --config ...), start it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := server.LoadConfig(cfgPath)
			if err != nil {
				return err
			}
			st, created, err := server.CreateStore(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if created {
				fmt.Fprintf(cmd.OutOrStdout(), "created a new, empty database: %s\n"+
					"(If credgw ran before with this configuration, this is not its database: stop, delete it, and restore the database.)\n",
					cfg.Path(cfg.Store.DSN))
			}
			defer st.Close()
			cur, want, err := st.SchemaVersion(cmd.Context())
			if err != nil {
				return err
			}
			if cur > want {
				return fmt.Errorf("the %s schema is at version %d, newer than this credgw (%d): a newer credgw migrated it, and credgw does not migrate down. "+
					"Run the newer credgw, or restore the backup taken before the upgrade to go back", cfg.Store.Driver, cur, want)
			}
			// After a restore (key-ceremony.md runs migrate) the stored
			// CRL may be one published before others the backup does not
			// hold: rebuilt at the next fetch, numbered above them.
			if err := st.MarkAllCRLsStale(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s schema at version %d\n", cfg.Store.Driver, cur)
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "credgw.yaml", "configuration file")
	return cmd
}
