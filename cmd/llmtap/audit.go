package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/llmtap/llmtap/ingest/store/chain"
	"github.com/llmtap/llmtap/query"
)

// window parses optional --from/--to; empty means unbounded.
func window(from, to string, now time.Time) (time.Time, time.Time, error) {
	var f, t time.Time
	var err error
	if from != "" {
		if f, err = query.ParseTime(from, now); err != nil {
			return f, t, fmt.Errorf("--from: %w", err)
		}
	}
	if to != "" {
		if t, err = query.ParseTime(to, now); err != nil {
			return f, t, fmt.Errorf("--to: %w", err)
		}
	}
	if !f.IsZero() && !t.IsZero() && !f.Before(t) {
		return f, t, fmt.Errorf("--from %s is not before --to %s", f.Format(time.RFC3339), t.Format(time.RFC3339))
	}
	return f, t, nil
}

// storeCmd is a command that needs --store (flag, config or LLMTAP_STORE).
func storeCmd(use, short string, run func(cmd *cobra.Command, cfg Config, args []string) error) *cobra.Command {
	l := newLoader()
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := l.load(cmd)
			if err != nil {
				return err
			}
			return run(cmd, cfg, args)
		},
	}
	addConfigFlag(cmd.Flags())
	cmd.Flags().String("store", "", "store DSN")
	l.bind(cmd, "store", "store")
	return cmd
}

func newVerifyCmd() *cobra.Command {
	var from, to, anchor string
	var asJSON bool
	cmd := storeCmd("verify --store DSN [--from T] [--to T] [--anchor SEQ:HASH]",
		"Recompute the tamper-evidence hash chain; name the first batch changed outside llmtap",
		func(cmd *cobra.Command, cfg Config, _ []string) error {
			f, t, err := window(from, to, time.Now())
			if err != nil {
				return err
			}
			var anchors []chain.Anchor
			if anchor != "" {
				var a chain.Anchor
				if _, err := fmt.Sscanf(anchor, "%d:%s", &a.Seq, &a.Hash); err != nil {
					return fmt.Errorf("--anchor %q: want SEQ:HASH as printed by a previous verify", anchor)
				}
				anchors = append(anchors, a)
			}
			rep, err := chain.Verify(cmd.Context(), cfg.Store, f, t, anchors...)
			if err != nil {
				return err
			}
			if asJSON {
				if err := json.NewEncoder(cmd.OutOrStdout()).Encode(rep); err != nil {
					return err
				}
			} else {
				fmt.Fprintln(cmd.OutOrStdout(), rep.Summary())
			}
			if !rep.OK {
				return fmt.Errorf("verification failed: %d problem(s)", rep.Total)
			}
			return nil
		})
	cmd.Args = cobra.NoArgs
	cmd.Flags().StringVar(&from, "from", "", "start of the window (default: the beginning)")
	cmd.Flags().StringVar(&to, "to", "", "end of the window (default: now)")
	cmd.Flags().StringVar(&anchor, "anchor", "", "a head recorded earlier (SEQ:HASH) that must still be in the chain")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

func newEraseCmd() *cobra.Command {
	var consumer, from, to string
	cmd := storeCmd("erase --store DSN --consumer NAME [--from T] [--to T]",
		"Erase a consumer's prompts, responses and bodies (metadata and counts stay); recorded in the chain",
		func(cmd *cobra.Command, cfg Config, _ []string) error {
			if consumer == "" {
				return fmt.Errorf("--consumer is required")
			}
			f, t, err := window(from, to, time.Now())
			if err != nil {
				return err
			}
			link, err := chain.Erase(cmd.Context(), cfg.Store, consumer, f, t)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "erased %d rows of %s; audit record: chain link %d (%s)\n", link.Rows, consumer, link.Seq, link.Hash)
			return nil
		})
	cmd.Args = cobra.NoArgs
	cmd.Flags().StringVar(&consumer, "consumer", "", "consumer whose content is erased")
	cmd.Flags().StringVar(&from, "from", "", "start of the window (default: the beginning)")
	cmd.Flags().StringVar(&to, "to", "", "end of the window (default: now)")
	return cmd
}

func newErasuresCmd() *cobra.Command {
	var from, to string
	cmd := storeCmd("erasures --store DSN [--from T] [--to T]",
		"List erasures and retention runs recorded in the chain",
		func(cmd *cobra.Command, cfg Config, _ []string) error {
			f, t, err := window(from, to, time.Now())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SEQ\tKIND\tCREATED\tROWS\tDETAILS")
			for _, kind := range []string{chain.KindErasure, chain.KindRetention} {
				links, err := chain.Links(cmd.Context(), cfg.Store, kind, f, t)
				if err != nil {
					return err
				}
				for _, l := range links {
					d := l.Details
					if len(d) > 200 {
						d = d[:200] + "…"
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\n", l.Seq, l.Kind, l.CreatedAt.UTC().Format(time.RFC3339), l.Rows, d)
				}
			}
			return tw.Flush()
		})
	cmd.Args = cobra.NoArgs
	cmd.Flags().StringVar(&from, "from", "", "start of the window")
	cmd.Flags().StringVar(&to, "to", "", "end of the window")
	return cmd
}
