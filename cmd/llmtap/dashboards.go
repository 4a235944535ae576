package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/llmtap/llmtap/dashboards"
)

func newDashboardsCmd() *cobra.Command {
	var ds, out string
	cmd := &cobra.Command{
		Use:   "dashboards --datasource postgres|clickhouse|prometheus --out DIR",
		Short: "Write Grafana dashboard JSON (generated with grafana-foundation-sdk)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return fmt.Errorf("--out DIR is required")
			}
			paths, err := dashboards.Write(ds, out)
			if err != nil {
				return err
			}
			for _, p := range paths {
				fmt.Fprintln(cmd.OutOrStdout(), p)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&ds, "datasource", "postgres", "postgres | clickhouse | prometheus")
	cmd.Flags().StringVar(&out, "out", "", "output folder")
	return cmd
}
