package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/llmtap/llmtap/ingest/client"
	"github.com/llmtap/llmtap/ingest/decode"
	"github.com/llmtap/llmtap/ingest/event"
	"github.com/llmtap/llmtap/ingest/pipeline"
	"github.com/llmtap/llmtap/ingest/receiver"
	"github.com/llmtap/llmtap/ingest/redact"
	"github.com/llmtap/llmtap/ingest/store"
	"github.com/llmtap/llmtap/ingest/store/chain"
	"github.com/llmtap/llmtap/proxy"
	"github.com/llmtap/llmtap/proxy/keys"
	"github.com/llmtap/llmtap/proxy/limit"
	"github.com/llmtap/llmtap/proxy/ship"
	"github.com/llmtap/llmtap/schema"
)

// newRunCmd builds `serve`, `proxy` and `ingest`: the long-running modes.
func newRunCmd(mode, short string) *cobra.Command {
	l := newLoader()
	cmd := &cobra.Command{
		Use:   mode + " --config FILE",
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := l.load(cmd)
			if err != nil {
				return err
			}
			if err := cfg.Validate(mode); err != nil {
				return err
			}
			logger := newLogger(cfg.Log, cmd.ErrOrStderr())
			return run(cmd.Context(), mode, cfg, logger)
		},
	}
	addConfigFlag(cmd.Flags())
	if mode != "proxy" {
		cmd.Flags().String("store", "", "store DSN (postgres://… or clickhouse://…)")
		l.bind(cmd, "store", "store")
	}
	if mode != "ingest" {
		cmd.Flags().String("upstream", "", "upstream base URL (vLLM)")
		l.bind(cmd, "upstream", "proxy.upstream")
		cmd.Flags().String("listen", "", "proxy listen address")
		l.bind(cmd, "listen", "proxy.listen")
		cmd.Flags().String("keys-file", "", "keys file")
		l.bind(cmd, "keys-file", "proxy.keys_file")
	}
	return cmd
}

// server is one HTTP listener of the process.
type server struct {
	name string
	srv  *http.Server
	ln   net.Listener
}

// listen opens addr for srv (built by httpServer, or by a component that
// knows its own timeouts).
func listen(name, addr string, srv *http.Server) (*server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s listen %s: %w", name, addr, err)
	}
	return &server{name: name, ln: ln, srv: srv}, nil
}

// httpServer is the default server for h: bounded headers, idle
// connections cut, no WriteTimeout (streams may run for minutes).
func httpServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
}

// run starts the components of a mode, waits for ctx (SIGINT/SIGTERM), and
// shuts down in dependency order: stop taking requests, let in-flight ones
// finish within the grace period, hand pending events on (or spool them),
// then close ingest and the store.
func run(ctx context.Context, mode string, cfg Config, logger *slog.Logger) error {
	var (
		servers []*server
		closers []func(context.Context) error // run in reverse order
		ready   []func(context.Context) error
	)
	closeAll := func() {
		cctx, cancel := context.WithTimeout(context.Background(), cfg.Proxy.ShutdownGrace+10*time.Second)
		defer cancel()
		for i := len(closers) - 1; i >= 0; i-- {
			if err := closers[i](cctx); err != nil {
				logger.Error("shutdown", "err", err)
			}
		}
	}
	defer closeAll()

	// The admin listener comes first and goes last: /metrics and /readyz
	// stay up while the rest shuts down.
	admin, err := listen("admin", cfg.Admin.Listen, httpServer(adminHandler(func(ctx context.Context) error {
		for _, f := range ready {
			if err := f(ctx); err != nil {
				return err
			}
		}
		return nil
	}, cfg.Admin.Pprof)))
	if err != nil {
		return err
	}
	servers = append(servers, admin)
	closers = append(closers, func(context.Context) error { return admin.srv.Close() })

	// Ingest side: store → pipeline → receiver.
	var pipe *pipeline.Pipeline
	if mode == "serve" || mode == "ingest" {
		if err = schema.Check(ctx, cfg.Store); err != nil {
			return err
		}
		st, err := store.Open(ctx, cfg.Store, logger)
		if err != nil {
			return err
		}
		closers = append(closers, func(context.Context) error { return st.Close() })
		red, err := redact.New(cfg.redactConfig())
		if err != nil {
			return fmt.Errorf("redaction: %w", err)
		}
		pipe = pipeline.New(pipeline.DefaultConfig(), st, logger,
			pipeline.WithDecoder(red.Decoder(decode.Decode)), pipeline.WithRejectFunc(red.ApplyReject))
		if err := pipe.Start(ctx); err != nil {
			return err
		}
		closers = append(closers, pipe.Close)
		ready = append(ready, pipe.Ready)

		if pol := (chain.Policy{Bodies: cfg.Retention.Bodies, Metadata: cfg.Retention.Metadata}); pol.Bodies > 0 || pol.Metadata > 0 {
			rctx, rcancel := context.WithCancel(context.Background())
			rdone := make(chan struct{})
			go func() {
				defer close(rdone)
				_ = chain.RunRetention(rctx, cfg.Store, pol, cfg.Retention.Interval, logger)
			}()
			closers = append(closers, func(context.Context) error { rcancel(); <-rdone; return nil })
		}

		rcfg := receiver.DefaultConfig()
		rcfg.Token = cfg.Ingest.Token
		rcfg.MaxBodyBytes = cfg.Ingest.MaxBodyBytes
		rcv := receiver.New(rcfg, pipe, logger)
		s, err := listen("ingest", cfg.Ingest.Listen, rcv.Server(cfg.Ingest.Listen, rcv.Handler())) // timeouts sized for ingest bodies
		if err != nil {
			return err
		}
		servers = append(servers, s)
	}

	// Proxy side: keys → shipper → proxy.
	if mode == "serve" || mode == "proxy" {
		kw, err := keys.NewWatcher(cfg.Proxy.KeysFile, logger)
		if err != nil {
			return fmt.Errorf("keys file: %w (create one with `llmtap keys create --keys-file %s --consumer NAME`)", err, cfg.Proxy.KeysFile)
		}
		kctx, kcancel := context.WithCancel(context.Background())
		go kw.Run(kctx)
		closers = append(closers, func(context.Context) error { kcancel(); return nil })

		var next event.Consumer = pipe
		if mode == "proxy" {
			c, err := client.New(client.Config{URL: cfg.Proxy.IngestURL, Token: cfg.Proxy.IngestToken, Timeout: 30 * time.Second, Logger: logger})
			if err != nil {
				return err
			}
			next = c
		}
		scfg := ship.DefaultConfig()
		scfg.SpoolDir = cfg.Proxy.SpoolDir
		scfg.SpoolMaxBytes = cfg.Proxy.SpoolMaxBytes
		scfg.OnAuditFailure = cfg.Proxy.OnAuditFailure
		shipper, err := ship.New(scfg, next, logger)
		if err != nil {
			return err
		}
		if err := shipper.Start(ctx); err != nil {
			return err
		}
		closers = append(closers, shipper.Close)

		pcfg := proxy.DefaultConfig()
		pcfg.Upstream = cfg.Proxy.Upstream
		pcfg.UpstreamAPIKey = cfg.Proxy.UpstreamAPIKey
		pcfg.StreamUsage = cfg.Proxy.StreamUsage
		pcfg.MaxRequestBody = cfg.Proxy.MaxRequestBody
		pcfg.CaptureLimit = cfg.Proxy.CaptureLimit
		pcfg.RedactHeaders = cfg.Proxy.RedactHeaders
		pcfg.TrustedProxies, _ = parsePrefixes(cfg.Proxy.TrustedProxies) // validated
		pcfg.ResponseHeaderTimeout = cfg.Proxy.ResponseHeaderTimeout
		pcfg.ClientWriteTimeout = cfg.Proxy.ClientWriteTimeout
		pcfg.RequestBodyTimeout = cfg.Proxy.RequestBodyTimeout
		pcfg.MetricsMaxConsumers = cfg.Metrics.MaxConsumers
		pcfg.MetricsMaxModels = cfg.Metrics.MaxModels
		lc := limit.DefaultConfig()
		lc.RedisURL = cfg.Limits.RedisURL
		lc.DefaultRPM, lc.DefaultTPM, lc.DefaultConcurrent = cfg.Limits.DefaultRPM, cfg.Limits.DefaultTPM, cfg.Limits.DefaultConcurrent
		lc.FailurePolicy = cfg.Limits.FailurePolicy
		lc.Timeout = cfg.Limits.Timeout
		lim, err := limit.New(lc, logger)
		if err != nil {
			return fmt.Errorf("limits: %w", err)
		}
		closers = append(closers, func(context.Context) error { return lim.Close() })
		pcfg.Limiter, pcfg.Limits = lim, lc
		p, err := proxy.New(pcfg, kw, shipper, logger)
		if err != nil {
			return err
		}
		closers = append(closers, func(context.Context) error { p.Close(); return nil })
		s, err := listen("proxy", cfg.Proxy.Listen, httpServer(p))
		if err != nil {
			return err
		}
		servers = append(servers, s)
	}

	errc := make(chan error, len(servers))
	for _, s := range servers {
		s := s
		go func() {
			if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("%s server: %w", s.name, err)
			}
		}()
		logger.Info("listening", "server", s.name, "addr", s.ln.Addr().String())
	}
	logger.Info("llmtap started", "mode", mode, "version", buildVersion())

	var runErr error
	select {
	case <-ctx.Done():
		logger.Info("shutting down", "grace", cfg.Proxy.ShutdownGrace.String())
	case runErr = <-errc:
	}
	// Stop taking requests first; in-flight requests finish within the grace
	// period. Closers (shipper, pipeline, store) run afterwards via defer.
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Proxy.ShutdownGrace)
	defer cancel()
	for _, s := range servers {
		if s.name == "admin" {
			continue
		}
		if err := s.srv.Shutdown(sctx); err != nil {
			logger.Warn("grace period over, closing connections", "server", s.name, "err", err)
			_ = s.srv.Close()
		}
	}
	return runErr
}

// adminHandler serves /metrics, /healthz and /readyz on the admin listener,
// which never shadows an upstream path, and /debug/pprof/ when pprof is set.
func adminHandler(ready func(context.Context) error, pprofOn bool) http.Handler {
	mux := http.NewServeMux()
	if pprofOn {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	mux.Handle("GET /metrics", promhttp.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	return mux
}
