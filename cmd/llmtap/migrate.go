package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/llmtap/llmtap/schema"
)

func newMigrateCmd() *cobra.Command {
	l := newLoader()
	cmd := &cobra.Command{
		Use:   "migrate --store DSN",
		Short: "Create or upgrade the tables; safe to run again",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := l.load(cmd)
			if err != nil {
				return err
			}
			logger := newLogger(cfg.Log, cmd.ErrOrStderr())
			if err := schema.Migrate(cmd.Context(), cfg.Store, logger); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "store %s is migrated\n", redactDSN(cfg.Store))
			return nil
		},
	}
	addConfigFlag(cmd.Flags())
	cmd.Flags().String("store", "", "store DSN (postgres://… or clickhouse://…)")
	l.bind(cmd, "store", "store")
	return cmd
}
