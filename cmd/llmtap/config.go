package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"reflect"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/llmtap/llmtap/ingest/redact"
	"github.com/llmtap/llmtap/ingest/store/chain"
)

// Config is the whole configuration file. Only this package reads it; each
// component gets its own plain config struct built from it (see build*).
//
// Every key can also be set through the environment as LLMTAP_<KEY> with dots
// replaced by underscores (LLMTAP_STORE, LLMTAP_PROXY_UPSTREAM, …) and, where
// a command has a flag for it, on the command line. Precedence: flag > env >
// file > default. Unknown keys in the file are an error.
type Config struct {
	// Store is the DSN of the store: postgres://… or clickhouse://….
	Store     string           `mapstructure:"store"`
	Proxy     ProxyConfig      `mapstructure:"proxy"`
	Ingest    IngestConfig     `mapstructure:"ingest"`
	Admin     AdminConfig      `mapstructure:"admin"`
	Limits    LimitsConfig     `mapstructure:"limits"`
	Redaction RedactionConfig  `mapstructure:"redaction"`
	Consumers []ConsumerConfig `mapstructure:"consumers"`
	Retention RetentionConfig  `mapstructure:"retention"`
	Metrics   MetricsConfig    `mapstructure:"metrics"`
	Log       LogConfig        `mapstructure:"log"`
}

// LimitsConfig is the `limits:` section: per-key limits come from the keys
// file (rpm, tpm); these are the defaults and the shared backend.
type LimitsConfig struct {
	RedisURL          string        `mapstructure:"redis_url"` // "" = counters in this process only
	DefaultRPM        int64         `mapstructure:"default_rpm"`
	DefaultTPM        int64         `mapstructure:"default_tpm"`
	DefaultConcurrent int64         `mapstructure:"default_concurrent"`
	FailurePolicy     string        `mapstructure:"failure_policy"` // open | closed, when Redis is down
	Timeout           time.Duration `mapstructure:"timeout"`
}

// RedactionConfig is the `redaction:` section: what ingest replaces in
// prompts, responses, bodies and headers before anything is stored.
type RedactionConfig struct {
	Builtins    []string `mapstructure:"builtins"`    // api_keys, bearer_tokens, emails, card_numbers | none
	Patterns    []string `mapstructure:"patterns"`    // extra RE2 patterns
	Replacement string   `mapstructure:"replacement"` // {kind} is replaced by the rule's kind
}

// RetentionConfig is the `retention:` section, enforced by a periodic job in
// serve and ingest. 0 keeps forever. Bodies may expire sooner than metadata.
type RetentionConfig struct {
	Bodies   time.Duration `mapstructure:"bodies"`   // clear request/response bodies older than this
	Metadata time.Duration `mapstructure:"metadata"` // delete rows older than this (whole chain batches)
	Interval time.Duration `mapstructure:"interval"` // how often the job runs
}

// ConsumerConfig is one entry of `consumers:`, per-consumer storage choices.
type ConsumerConfig struct {
	Name        string `mapstructure:"name"`
	StoreBodies *bool  `mapstructure:"store_bodies"` // false: request and response bodies are not stored
}

// MetricsConfig is the `metrics:` section.
type MetricsConfig struct {
	MaxConsumers int `mapstructure:"max_consumers"` // distinct consumer label values; the rest are "other"
	MaxModels    int `mapstructure:"max_models"`
}

// ProxyConfig is the `proxy:` section.
type ProxyConfig struct {
	Listen         string        `mapstructure:"listen"`
	Upstream       string        `mapstructure:"upstream"`
	UpstreamAPIKey string        `mapstructure:"upstream_api_key"`
	KeysFile       string        `mapstructure:"keys_file"`
	StreamUsage    string        `mapstructure:"stream_usage"`     // inject | off
	MaxRequestBody int64         `mapstructure:"max_request_body"` // bytes
	CaptureLimit   int64         `mapstructure:"capture_limit"`    // bytes per direction
	RedactHeaders  []string      `mapstructure:"redact_headers"`
	ShutdownGrace  time.Duration `mapstructure:"shutdown_grace"`
	// TrustedProxies are CIDRs whose X-Forwarded-For is believed for client_ip.
	TrustedProxies        []string      `mapstructure:"trusted_proxies"`
	ResponseHeaderTimeout time.Duration `mapstructure:"response_header_timeout"` // upstream prefill + queueing; 504 past it
	ClientWriteTimeout    time.Duration `mapstructure:"client_write_timeout"`    // a client that stops reading is cut
	RequestBodyTimeout    time.Duration `mapstructure:"request_body_timeout"`    // a client trickling its body gets 408

	// Shipping (events to ingest). IngestURL is used by `llmtap proxy` only;
	// `serve` hands events over in-process, with the same spool.
	IngestURL      string `mapstructure:"ingest_url"`
	IngestToken    string `mapstructure:"ingest_token"`
	SpoolDir       string `mapstructure:"spool_dir"`
	SpoolMaxBytes  int64  `mapstructure:"spool_max_bytes"`
	OnAuditFailure string `mapstructure:"on_audit_failure"` // pass | reject
}

// IngestConfig is the `ingest:` section.
type IngestConfig struct {
	Listen       string `mapstructure:"listen"`
	Token        string `mapstructure:"token"`
	MaxBodyBytes int64  `mapstructure:"max_body_bytes"`
}

// AdminConfig is the `admin:` section.
type AdminConfig struct {
	Listen string `mapstructure:"listen"`
	// Pprof serves net/http/pprof under /debug/pprof/ on the admin
	// listener. Off by default: profiles reveal request data in memory.
	Pprof bool `mapstructure:"pprof"`
}

// LogConfig is the `log:` section.
type LogConfig struct {
	Level  string `mapstructure:"level"`  // debug | info | warn | error
	Format string `mapstructure:"format"` // json | text
}

// defaultConfig holds every key with its default, so that every key is known
// to viper (environment variables only apply to known keys).
func defaultConfig() Config {
	return Config{
		Store: "postgres://postgres@127.0.0.1:5432/llmtap?sslmode=disable",
		Proxy: ProxyConfig{
			Listen:                "127.0.0.1:8001",
			Upstream:              "http://127.0.0.1:8000",
			KeysFile:              "keys.yaml",
			StreamUsage:           "inject",
			MaxRequestBody:        32 << 20,
			CaptureLimit:          8 << 20,
			RedactHeaders:         []string{},
			ShutdownGrace:         30 * time.Second,
			TrustedProxies:        []string{},
			ResponseHeaderTimeout: 5 * time.Minute,
			ClientWriteTimeout:    20 * time.Second,
			RequestBodyTimeout:    30 * time.Second,
			SpoolDir:              "data/spool",
			SpoolMaxBytes:         1 << 30,
			OnAuditFailure:        "pass",
		},
		Ingest:  IngestConfig{Listen: "127.0.0.1:8002", MaxBodyBytes: 64 << 20},
		Admin:   AdminConfig{Listen: "127.0.0.1:9464"},
		Limits:  LimitsConfig{FailurePolicy: "open", Timeout: 500 * time.Millisecond},
		Metrics: MetricsConfig{MaxConsumers: 200, MaxModels: 50},
		Redaction: RedactionConfig{
			Builtins:    redact.DefaultConfig().Builtins,
			Patterns:    []string{},
			Replacement: redact.DefaultConfig().Replacement,
		},
		Consumers: []ConsumerConfig{},
		Retention: RetentionConfig{Interval: time.Hour},
		Log:       LogConfig{Level: "info", Format: "json"},
	}
}

// Validate reports every problem at once.
func (c *Config) Validate(mode string) error {
	var errs []error
	need := func(cond bool, format string, a ...any) {
		if !cond {
			errs = append(errs, fmt.Errorf(format, a...))
		}
	}
	checkAddr := func(key, v string) {
		if _, _, err := net.SplitHostPort(v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not host:port", key, v))
		}
	}
	usesStore := mode == "serve" || mode == "ingest"
	usesProxy := mode == "serve" || mode == "proxy"
	if usesStore {
		need(strings.HasPrefix(c.Store, "postgres://") || strings.HasPrefix(c.Store, "postgresql://") || strings.HasPrefix(c.Store, "clickhouse://"),
			"store: %q must start with postgres:// or clickhouse://", redactDSN(c.Store))
		checkAddr("ingest.listen", c.Ingest.Listen)
	}
	if usesProxy {
		checkAddr("proxy.listen", c.Proxy.Listen)
		u, err := url.Parse(c.Proxy.Upstream)
		need(err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "", "proxy.upstream: %q must be an http(s) URL", c.Proxy.Upstream)
		need(c.Proxy.KeysFile != "", "proxy.keys_file: required")
		need(c.Proxy.SpoolDir != "", "proxy.spool_dir: required")
		if _, err := parsePrefixes(c.Proxy.TrustedProxies); err != nil {
			errs = append(errs, fmt.Errorf("proxy.trusted_proxies: %w", err))
		}
	}
	if mode == "proxy" {
		u, err := url.Parse(c.Proxy.IngestURL)
		need(err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "", "proxy.ingest_url: %q must be the http(s) URL of `llmtap ingest`", c.Proxy.IngestURL)
	}
	if usesStore {
		if err := c.redactConfig().Validate(); err != nil {
			errs = append(errs, fmt.Errorf("redaction: %w", err))
		}
		if err := (chain.Policy{Bodies: c.Retention.Bodies, Metadata: c.Retention.Metadata}).Validate(); err != nil {
			errs = append(errs, fmt.Errorf("retention: %w", err))
		}
		need(c.Retention.Interval > 0, "retention.interval: must be positive")
		for i, cc := range c.Consumers {
			need(cc.Name != "", "consumers[%d].name: required", i)
		}
	}
	checkAddr("admin.listen", c.Admin.Listen)
	need(c.Log.Format == "json" || c.Log.Format == "text", "log.format: %q must be json or text", c.Log.Format)
	return errors.Join(errs...)
}

// loader builds a viper instance for one command: defaults for every key,
// LLMTAP_* environment, the --config file, and the command's flags bound to
// their keys.
type loader struct {
	v     *viper.Viper
	flags map[string]string // flag name -> config key
}

func newLoader() *loader {
	v := viper.New()
	v.SetEnvPrefix("LLMTAP")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	setDefaults(v, "", reflect.ValueOf(defaultConfig()))
	return &loader{v: v, flags: map[string]string{}}
}

// setDefaults walks the config struct so that every key is known to viper.
func setDefaults(v *viper.Viper, prefix string, rv reflect.Value) {
	rt := rv.Type()
	for i := 0; i < rt.NumField(); i++ {
		key := rt.Field(i).Tag.Get("mapstructure")
		if prefix != "" {
			key = prefix + "." + key
		}
		if f := rv.Field(i); f.Kind() == reflect.Struct {
			setDefaults(v, key, f)
		} else {
			v.SetDefault(key, f.Interface())
		}
	}
}

// bind ties a command's flag to a config key.
func (l *loader) bind(cmd *cobra.Command, flag, key string) {
	l.flags[flag] = key
	_ = l.v.BindPFlag(key, cmd.Flags().Lookup(flag))
}

// load reads the config file (if any) and decodes everything strictly.
func (l *loader) load(cmd *cobra.Command) (Config, error) {
	var cfg Config
	if f := cmd.Flags().Lookup("config"); f != nil && f.Value.String() != "" {
		l.v.SetConfigFile(f.Value.String())
		l.v.SetConfigType("yaml")
		if err := l.v.ReadInConfig(); err != nil {
			return cfg, fmt.Errorf("config %s: %w", f.Value.String(), err)
		}
	}
	err := l.v.UnmarshalExact(&cfg, viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		mapstructure.StringToTimeDurationHookFunc(),
		mapstructure.StringToSliceHookFunc(","),
	)))
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	return cfg, nil
}

// addConfigFlag adds --config to a command.
func addConfigFlag(fs *pflag.FlagSet) {
	fs.String("config", "", "YAML config file (keys: see README \"Configuration\")")
}

// redactConfig builds ingest's redaction from the redaction and consumers sections.
func (c *Config) redactConfig() redact.Config {
	rc := redact.Config{Builtins: c.Redaction.Builtins, Patterns: c.Redaction.Patterns, Replacement: c.Redaction.Replacement}
	for _, cc := range c.Consumers {
		if cc.StoreBodies != nil && !*cc.StoreBodies {
			rc.NoBodies = append(rc.NoBodies, cc.Name)
		}
	}
	return rc
}

// parsePrefixes parses CIDRs (a bare address means that one host).
func parsePrefixes(ss []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range ss {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("%q is neither a CIDR nor an address", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p)
	}
	return out, nil
}

// redactDSN removes the password from a DSN for messages and manifests.
func redactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return dsn
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}
