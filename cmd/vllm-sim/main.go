// Command vllm-sim serves an OpenAI-compatible simulator of vLLM (see package
// sim for the endpoints, headers and fault injection).
//
//	vllm-sim --listen 127.0.0.1:8000 --ttft 200ms --token-interval 20ms --tokens 64
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/llmtap/llmtap/cmd/vllm-sim/sim"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "vllm-sim:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	cfg := sim.DefaultConfig()
	fs := flag.NewFlagSet("vllm-sim", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8000", "address to listen on")
	grace := fs.Duration("shutdown-grace", 10*time.Second, "how long in-flight requests may finish on SIGINT/SIGTERM")
	fs.StringVar(&cfg.Model, "model", cfg.Model, "served model name")
	fs.DurationVar(&cfg.TTFT, "ttft", cfg.TTFT, "time to first token")
	fs.DurationVar(&cfg.TokenInterval, "token-interval", cfg.TokenInterval, "time between tokens")
	fs.IntVar(&cfg.Tokens, "tokens", cfg.Tokens, "answer length in tokens")
	fs.StringVar(&cfg.APIKey, "api-key", os.Getenv("VLLM_API_KEY"), "require Authorization: Bearer <key> on /v1 paths (default $VLLM_API_KEY)")
	fs.Float64Var(&cfg.ErrorRate, "error-rate", 0, "fraction of requests answered with --error-status")
	fs.IntVar(&cfg.ErrorStatus, "error-status", cfg.ErrorStatus, "HTTP status of injected errors")
	fs.Float64Var(&cfg.MidStreamErrorRate, "midstream-error-rate", 0, "fraction of streams that send an error event after a few tokens")
	fs.Float64Var(&cfg.AbruptCloseRate, "abrupt-close-rate", 0, "fraction of streams whose connection is cut after a few tokens")
	fs.Int64Var(&cfg.Seed, "seed", 0, "seed of the fault dice")
	fs.IntVar(&cfg.MaxModelLen, "max-model-len", 0, "enforce this context length (0: not enforced)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{
		Handler:           sim.New(cfg),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("vllm-sim listening", "addr", ln.Addr().String(), "model", cfg.Model,
		"ttft", cfg.TTFT, "token_interval", cfg.TokenInterval, "tokens", cfg.Tokens, "auth", cfg.APIKey != "")
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("vllm-sim shutting down", "grace", *grace)
	sctx, cancel := context.WithTimeout(context.Background(), *grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		if !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("shutdown: %w", err)
		}
	}
	return nil
}
