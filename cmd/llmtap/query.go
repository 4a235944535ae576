package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/llmtap/llmtap/query"
	"github.com/llmtap/llmtap/schema"
)

// queryFlags are the filters shared by `query` and `export`.
type queryFlags struct {
	from, to, consumer, key, text, format string
	limit                                 int
}

func (f *queryFlags) add(cmd *cobra.Command, defFrom, defFormat, formats string) {
	cmd.Flags().StringVar(&f.from, "from", defFrom, "start of the window (RFC 3339 or now-24h style)")
	cmd.Flags().StringVar(&f.to, "to", "now", "end of the window, exclusive (RFC 3339 or now)")
	cmd.Flags().StringVar(&f.consumer, "consumer", "", "only this consumer")
	cmd.Flags().StringVar(&f.format, "format", defFormat, formats)
}

func (f *queryFlags) params(now time.Time) (query.Params, error) {
	from, err := query.ParseTime(f.from, now)
	if err != nil {
		return query.Params{}, fmt.Errorf("--from: %w", err)
	}
	to, err := query.ParseTime(f.to, now)
	if err != nil {
		return query.Params{}, fmt.Errorf("--to: %w", err)
	}
	return query.Params{From: from, To: to, Consumer: f.consumer, KeyID: f.key, Text: f.text, Limit: f.limit}, nil
}

func newQueryCmd() *cobra.Command {
	l := newLoader()
	var (
		f        queryFlags
		printSQL bool
	)
	cmd := &cobra.Command{
		Use:   "query NAME --store DSN [--from T] [--to T] [--consumer C] [--format table|json|csv]",
		Short: "Run a named audit query: " + strings.Join(query.Names(), ", "),
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := l.load(cmd)
			if err != nil {
				return err
			}
			p, err := f.params(time.Now())
			if err != nil {
				return err
			}
			if printSQL {
				dialect, err := schema.Dialect(cfg.Store)
				if err != nil {
					return err
				}
				sql, err := query.Render(dialect, args[0], p)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), sql)
				return nil
			}
			res, err := query.Run(cmd.Context(), cfg.Store, args[0], p)
			if err != nil {
				return err
			}
			return res.Write(cmd.OutOrStdout(), f.format)
		},
	}
	addConfigFlag(cmd.Flags())
	cmd.Flags().String("store", "", "store DSN")
	l.bind(cmd, "store", "store")
	f.add(cmd, "now-24h", "table", "table | json | csv")
	cmd.Flags().StringVar(&f.key, "key", "", "only this key id (activity)")
	cmd.Flags().StringVar(&f.text, "text", "", "text to find in prompts and responses (search)")
	cmd.Flags().IntVar(&f.limit, "limit", 0, "maximum rows (conversations, search, activity)")
	cmd.Flags().BoolVar(&printSQL, "print-sql", false, "print the SQL with the values filled in instead of running it")
	return cmd
}

func newExportCmd() *cobra.Command {
	l := newLoader()
	var (
		f   queryFlags
		out string
	)
	cmd := &cobra.Command{
		Use:   "export --store DSN --from T --to T [--consumer C] --format jsonl|csv --out FILE",
		Short: "Export every column of llm_requests with a verifiable manifest (FILE.manifest.json)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := l.load(cmd)
			if err != nil {
				return err
			}
			if out == "" {
				return fmt.Errorf("--out FILE is required")
			}
			if f.from == "" {
				return fmt.Errorf("--from is required (e.g. --from now-30d or an RFC 3339 time)")
			}
			p, err := f.params(time.Now())
			if err != nil {
				return err
			}
			m, err := query.Export(cmd.Context(), cfg.Store, p, f.format, out)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d rows, sha256 %s (manifest %s.manifest.json)\n", m.File, m.Rows, m.SHA256, out)
			return nil
		},
	}
	addConfigFlag(cmd.Flags())
	cmd.Flags().String("store", "", "store DSN")
	l.bind(cmd, "store", "store")
	f.add(cmd, "", "jsonl", "jsonl | csv")
	cmd.Flags().StringVar(&out, "out", "", "output file")
	return cmd
}
