package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/llmtap/llmtap/proxy/keys"
)

func newKeysCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Create, list and revoke consumer API keys (the keys file stores only SHA-256)"}
	cmd.AddCommand(newKeysCreateCmd(), newKeysListCmd(), newKeysRevokeCmd())
	return cmd
}

// keysFileFlag adds --keys-file (also proxy.keys_file / LLMTAP_PROXY_KEYS_FILE).
func keysFileFlag(cmd *cobra.Command, l *loader) {
	addConfigFlag(cmd.Flags())
	cmd.Flags().String("keys-file", "", "keys file (default from proxy.keys_file)")
	l.bind(cmd, "keys-file", "proxy.keys_file")
}

type keyView struct {
	ID        string     `json:"id"`
	Consumer  string     `json:"consumer"`
	Key       string     `json:"key,omitempty"`
	Prefix    string     `json:"prefix"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	Revoked   bool       `json:"revoked"`
	RPM       int64      `json:"rpm,omitempty"`
	TPM       int64      `json:"tpm,omitempty"`
	Status    string     `json:"status"`
}

func viewOf(k keys.Key, now time.Time) keyView {
	st := "active"
	switch {
	case k.Revoked:
		st = "revoked"
	case k.ExpiresAt != nil && !now.Before(*k.ExpiresAt):
		st = "expired"
	}
	return keyView{ID: k.ID, Consumer: k.Consumer, Prefix: k.Prefix, CreatedAt: k.CreatedAt, ExpiresAt: k.ExpiresAt,
		Revoked: k.Revoked, RPM: k.RPM, TPM: k.TPM, Status: st}
}

func newKeysCreateCmd() *cobra.Command {
	l := newLoader()
	var (
		consumer string
		rpm, tpm int64
		expires  time.Duration
		asJSON   bool
	)
	cmd := &cobra.Command{
		Use:   "create --keys-file F --consumer NAME [--rpm N] [--tpm N] [--expires 720h] [--json]",
		Short: "Create a key; the plain key is printed once and never stored",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := l.load(cmd)
			if err != nil {
				return err
			}
			if consumer == "" {
				return fmt.Errorf("--consumer is required")
			}
			if rpm < 0 || tpm < 0 || expires < 0 {
				return fmt.Errorf("--rpm, --tpm and --expires must not be negative")
			}
			k, plain, err := keys.Create(cfg.Proxy.KeysFile, keys.CreateOptions{Consumer: consumer, RPM: rpm, TPM: tpm, Expires: expires})
			if err != nil {
				return err
			}
			v := viewOf(k, time.Now())
			v.Key = plain
			out := cmd.OutOrStdout()
			if asJSON {
				return json.NewEncoder(out).Encode(v)
			}
			fmt.Fprintf(out, "id:       %s\nconsumer: %s\nkey:      %s\n(the key is shown only now; %s stores its SHA-256)\n", v.ID, v.Consumer, plain, cfg.Proxy.KeysFile)
			return nil
		},
	}
	keysFileFlag(cmd, l)
	cmd.Flags().StringVar(&consumer, "consumer", "", "consumer name (sent upstream as X-Consumer-Username)")
	cmd.Flags().Int64Var(&rpm, "rpm", 0, "requests per minute (0: default limit)")
	cmd.Flags().Int64Var(&tpm, "tpm", 0, "tokens per minute (0: default limit)")
	cmd.Flags().DurationVar(&expires, "expires", 0, "lifetime, e.g. 720h (0: never expires)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func newKeysListCmd() *cobra.Command {
	l := newLoader()
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list --keys-file F [--json]",
		Short: "List keys (never the plain keys)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := l.load(cmd)
			if err != nil {
				return err
			}
			ks, err := keys.List(cfg.Proxy.KeysFile)
			if err != nil {
				return err
			}
			now := time.Now()
			views := make([]keyView, 0, len(ks))
			for _, k := range ks {
				views = append(views, viewOf(k, now))
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return json.NewEncoder(out).Encode(views)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tCONSUMER\tPREFIX\tSTATUS\tCREATED\tEXPIRES\tRPM\tTPM")
			for _, v := range views {
				exp := "-"
				if v.ExpiresAt != nil {
					exp = v.ExpiresAt.UTC().Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n", v.ID, v.Consumer, v.Prefix, v.Status,
					v.CreatedAt.UTC().Format(time.RFC3339), exp, v.RPM, v.TPM)
			}
			return tw.Flush()
		},
	}
	keysFileFlag(cmd, l)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	return cmd
}

func newKeysRevokeCmd() *cobra.Command {
	l := newLoader()
	cmd := &cobra.Command{
		Use:   "revoke --keys-file F KEY_ID",
		Short: "Revoke a key (running proxies pick it up within 2 seconds)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := l.load(cmd)
			if err != nil {
				return err
			}
			if err := keys.Revoke(cfg.Proxy.KeysFile, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked %s\n", args[0])
			return nil
		},
	}
	keysFileFlag(cmd, l)
	return cmd
}
