// Command llmtap is the one binary of llmtap: the tee proxy, the ingest
// service, and the tools around them (keys, migrate, dashboards, query,
// export). Run `llmtap --help`; README.md documents every command.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=…"; otherwise
// it comes from the module's build info.
var version = ""

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot(os.Stdout, os.Stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "llmtap:", err)
		os.Exit(1)
	}
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "llmtap",
		Short:         "Audit trail and usage analytics in front of self-hosted LLM inference",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(
		newRunCmd("serve", "Run the proxy and ingest in one process (events handed over in-process)"),
		newRunCmd("proxy", "Run the proxy alone; ships events to proxy.ingest_url with a disk spool"),
		newRunCmd("ingest", "Run ingest alone (POST /v1/events, POST /v1/kong)"),
		newMigrateCmd(),
		newKeysCmd(),
		newDashboardsCmd(),
		newQueryCmd(),
		newExportCmd(),
		newVerifyCmd(),
		newEraseCmd(),
		newErasuresCmd(),
		&cobra.Command{
			Use:   "version",
			Short: "Print the version",
			Args:  cobra.NoArgs,
			Run: func(cmd *cobra.Command, _ []string) {
				fmt.Fprintln(cmd.OutOrStdout(), "llmtap", buildVersion())
			},
		},
	)
	return root
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", ""
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "-dirty"
				}
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" {
			return "dev-" + rev + dirty
		}
		return bi.Main.Version
	}
	return "dev"
}

// newLogger builds the process logger: JSON (or text) on stderr.
func newLogger(cfg LogConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.Level)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if strings.EqualFold(cfg.Format, "text") {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
