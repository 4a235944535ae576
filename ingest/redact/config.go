package redact

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"
)

// Builtin rule sets (Config.Builtins).
const (
	BuiltinAPIKeys      = "api_keys"      // sk-…, AKIA…, AIza…, ghp_…, xox?-…, api_key=…, ?key=…
	BuiltinBearerTokens = "bearer_tokens" // "Bearer <token>", JWTs (eyJ….eyJ….…)
	BuiltinEmails       = "emails"        // local@domain.tld
	BuiltinCardNumbers  = "card_numbers"  // 13–19 digits (groups of ≥3 with single spaces or dashes), Luhn-valid, first digit 2–6
	BuiltinNone         = "none"          // no builtin rules (only Patterns)
)

// Kinds label what was redacted: the {kind} of Config.Replacement and the
// kind label of llmtap_redactions_total.
const (
	KindAPIKey      = "api_key"
	KindBearerToken = "bearer_token"
	KindEmail       = "email"
	KindCardNumber  = "card_number"
	KindCustom      = "custom" // Config.Patterns
)

// DefaultReplacement is the default Config.Replacement.
const DefaultReplacement = "[REDACTED:{kind}]"

// DefaultBuiltins are the builtin rule sets used when Config.Builtins is empty.
var DefaultBuiltins = []string{BuiltinAPIKeys, BuiltinBearerTokens, BuiltinEmails, BuiltinCardNumbers}

// Config selects what is redacted before records are stored.
//
// YAML (the `redaction:` section of llmtap's config):
//
//	redaction:
//	  builtins: [api_keys, bearer_tokens, emails, card_numbers]   # or [none]
//	  patterns: ['(?i)password=(?P<secret>[^&\s"]+)']
//	  replacement: "[REDACTED:{kind}]"
//	  no_bodies: [alice]   # filled from consumers.<name>.store_bodies: false
type Config struct {
	// Builtins names the builtin rule sets to apply: api_keys,
	// bearer_tokens, emails, card_numbers. Empty (nil or []) means all four
	// (secure by default); ["none"] means none, and "none" cannot be combined
	// with other names.
	Builtins []string `yaml:"builtins" json:"builtins" mapstructure:"builtins"`
	// Patterns are extra Go regular expressions (RE2 syntax), redacted with
	// kind "custom". When a pattern has a group named "secret", only that
	// group is replaced (e.g. `token=(?P<secret>\w+)` keeps "token=");
	// otherwise the whole match is. A pattern that matches the empty string
	// is refused. In JSON fields (bodies, headers, tool calls) a pattern
	// should not match `"`: a match that swallows a JSON quote breaks the
	// stored JSON.
	Patterns []string `yaml:"patterns" json:"patterns" mapstructure:"patterns"`
	// Replacement replaces each match; "{kind}" in it becomes the kind
	// (api_key, bearer_token, email, card_number, custom). Empty means
	// DefaultReplacement ("[REDACTED:{kind}]"). It must be valid UTF-8
	// without quotes, backslashes or control characters (so JSON bodies stay
	// valid) and must not itself be redacted by the builtin rules (so
	// redacting twice changes nothing).
	Replacement string `yaml:"replacement" json:"replacement" mapstructure:"replacement"`
	// NoBodies lists consumers (Record.Consumer, exact match) whose request
	// and response bodies are not stored (store_bodies: false): the record
	// keeps its metadata and the redacted prompt, response, reasoning and
	// tool calls, with RequestBody and ResponseBody empty.
	NoBodies []string `yaml:"no_bodies" json:"no_bodies" mapstructure:"no_bodies"`
}

// DefaultConfig returns all four builtin rule sets, no custom patterns, the
// "[REDACTED:{kind}]" replacement and bodies stored for every consumer.
func DefaultConfig() Config {
	return Config{
		Builtins:    append([]string(nil), DefaultBuiltins...),
		Replacement: DefaultReplacement,
	}
}

// Validate reports every invalid setting; an invalid pattern's error names
// the pattern and its position in Patterns.
func (c Config) Validate() error {
	_, err := c.compile()
	return err
}

// compiled is a validated Config.
type compiled struct {
	builtins map[string]bool
	custom   []*regexp.Regexp
	repl     string
	noBodies map[string]bool
}

func (c Config) compile() (*compiled, error) {
	var errs []error
	out := &compiled{builtins: map[string]bool{}, noBodies: map[string]bool{}}

	names := c.Builtins
	if len(names) == 0 {
		names = DefaultBuiltins
	}
	none := false
	for _, n := range names {
		switch n := strings.ToLower(strings.TrimSpace(n)); n {
		case BuiltinAPIKeys, BuiltinBearerTokens, BuiltinEmails, BuiltinCardNumbers:
			out.builtins[n] = true
		case BuiltinNone:
			none = true
		default:
			errs = append(errs, fmt.Errorf("builtin %q: unknown (want %s, or %s)",
				n, strings.Join(DefaultBuiltins, ", "), BuiltinNone))
		}
	}
	if none && len(out.builtins) > 0 {
		errs = append(errs, fmt.Errorf("builtins: %q cannot be combined with other builtins", BuiltinNone))
	}

	for i, p := range c.Patterns {
		re, err := regexp.Compile(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("pattern %d %q: %w", i, p, err))
			continue
		}
		if re.MatchString("") {
			errs = append(errs, fmt.Errorf("pattern %d %q: matches the empty string", i, p))
			continue
		}
		out.custom = append(out.custom, re)
	}

	out.repl = c.Replacement
	if out.repl == "" {
		out.repl = DefaultReplacement
	}
	if err := checkReplacement(out.repl); err != nil {
		errs = append(errs, err)
	}

	for _, n := range c.NoBodies {
		if n == "" {
			errs = append(errs, errors.New("no_bodies: empty consumer name"))
			continue
		}
		out.noBodies[n] = true
	}

	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("redact config: %w", err)
	}
	return out, nil
}

func checkReplacement(r string) error {
	if !utf8.ValidString(r) {
		return fmt.Errorf("replacement %q: not valid UTF-8", r)
	}
	for _, c := range r {
		if c == '"' || c == '\\' || c < 0x20 || c == 0x7f {
			return fmt.Errorf("replacement %q: must not contain quotes, backslashes or control characters", r)
		}
	}
	return nil
}
