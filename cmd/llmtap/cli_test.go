package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/llmtap/llmtap/cmd/vllm-sim/sim"
	"github.com/llmtap/llmtap/proxy/keys"
	"github.com/llmtap/llmtap/query"
)

// runCLI runs the root command with args and returns stdout, stderr and the error.
func runCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	root := newRoot(&out, &errb)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), errb.String(), err
}

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigPrecedenceAndStrictness(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.yaml", `
store: clickhouse://127.0.0.1:9000/default
proxy:
  upstream: http://10.0.0.1:8000
  keys_file: /etc/llmtap/keys.yaml
  shutdown_grace: 3s
  redact_headers: [X-Secret]
ingest:
  token: file-token
`)
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(t *testing.T, c Config)
		wantErr string
	}{
		{name: "defaults", args: nil, check: func(t *testing.T, c Config) {
			if c.Proxy.Listen != "127.0.0.1:8001" || c.Proxy.StreamUsage != "inject" || c.Proxy.CaptureLimit != 8<<20 {
				t.Errorf("defaults: %+v", c.Proxy)
			}
		}},
		{name: "file", args: []string{"--config", good}, check: func(t *testing.T, c Config) {
			if c.Store != "clickhouse://127.0.0.1:9000/default" || c.Proxy.Upstream != "http://10.0.0.1:8000" ||
				c.Proxy.ShutdownGrace.Seconds() != 3 || c.Ingest.Token != "file-token" ||
				len(c.Proxy.RedactHeaders) != 1 || c.Proxy.Listen != "127.0.0.1:8001" {
				t.Errorf("file values not applied: %+v", c)
			}
		}},
		{name: "env over file", args: []string{"--config", good},
			env: map[string]string{"LLMTAP_PROXY_UPSTREAM": "http://env:8000", "LLMTAP_INGEST_TOKEN": "env-token", "LLMTAP_STORE": "postgres://env/db"},
			check: func(t *testing.T, c Config) {
				if c.Proxy.Upstream != "http://env:8000" || c.Ingest.Token != "env-token" || c.Store != "postgres://env/db" {
					t.Errorf("env not applied: %+v", c)
				}
			}},
		{name: "flag over env", args: []string{"--config", good, "--upstream", "http://flag:8000"},
			env: map[string]string{"LLMTAP_PROXY_UPSTREAM": "http://env:8000"},
			check: func(t *testing.T, c Config) {
				if c.Proxy.Upstream != "http://flag:8000" {
					t.Errorf("flag not applied: %s", c.Proxy.Upstream)
				}
			}},
		{name: "unknown key", args: []string{"--config", writeFile(t, dir, "bad.yaml", "proxy:\n  upstrem: http://x\n")}, wantErr: "upstrem"},
		{name: "unknown section", args: []string{"--config", writeFile(t, dir, "bad2.yaml", "prxy:\n  listen: x\n")}, wantErr: "prxy"},
		{name: "missing file", args: []string{"--config", filepath.Join(dir, "nope.yaml")}, wantErr: "nope.yaml"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			cmd := newRunCmd("serve", "")
			if err := cmd.ParseFlags(tc.args); err != nil {
				t.Fatal(err)
			}
			// The loader is captured by RunE; rebuild one bound the same way.
			l := newLoader()
			l.bind(cmd, "store", "store")
			l.bind(cmd, "upstream", "proxy.upstream")
			l.bind(cmd, "listen", "proxy.listen")
			l.bind(cmd, "keys-file", "proxy.keys_file")
			c, err := l.load(cmd)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error containing %q, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestConfigValidateNamesEveryProblem(t *testing.T) {
	c := defaultConfig()
	c.Store = "mysql://x"
	c.Proxy.Upstream = "not a url"
	c.Proxy.Listen = "nohost"
	c.Log.Format = "xml"
	err := c.Validate("serve")
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{"store:", "proxy.upstream:", "proxy.listen:", "log.format:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	c = defaultConfig()
	if err := c.Validate("proxy"); err == nil || !strings.Contains(err.Error(), "proxy.ingest_url") {
		t.Errorf("proxy mode without ingest_url: %v", err)
	}
}

func TestKeysCommands(t *testing.T) {
	dir := t.TempDir()
	kf := filepath.Join(dir, "keys.yaml")
	out, _, err := runCLI(t, "keys", "create", "--keys-file", kf, "--consumer", "alice", "--rpm", "60", "--expires", "720h", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var created struct{ ID, Consumer, Key, Prefix string }
	if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatalf("keys create --json printed %q: %v", out, err)
	}
	if created.ID == "" || created.Consumer != "alice" || !strings.HasPrefix(created.Key, "sk-") || len(created.Key) != 51 {
		t.Fatalf("created %+v", created)
	}
	raw, _ := os.ReadFile(kf)
	if bytes.Contains(raw, []byte(created.Key)) || !bytes.Contains(raw, []byte(keys.Hash(created.Key))) {
		t.Fatal("keys file must hold the SHA-256 and never the plain key")
	}

	// The environment names the keys file too.
	t.Setenv("LLMTAP_PROXY_KEYS_FILE", kf)
	out, _, err = runCLI(t, "keys", "list", "--json")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, created.Key) || !strings.Contains(out, created.ID) || !strings.Contains(out, `"status":"active"`) {
		t.Fatalf("keys list: %s", out)
	}
	if _, _, err := runCLI(t, "keys", "revoke", created.ID); err != nil {
		t.Fatal(err)
	}
	out, _, _ = runCLI(t, "keys", "list")
	if !strings.Contains(out, "revoked") {
		t.Fatalf("after revoke: %s", out)
	}
	if _, _, err := runCLI(t, "keys", "revoke", "key_nope"); err == nil {
		t.Fatal("revoking an unknown id must fail")
	}
	if _, _, err := runCLI(t, "keys", "create", "--keys-file", kf); err == nil || !strings.Contains(err.Error(), "--consumer") {
		t.Fatalf("create without consumer: %v", err)
	}
}

func TestIngestRefusesUnmigratedStore(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	dsn := emptyPostgres(t, "llmtap_test_unmigrated")
	_, _, err := runCLI(t, "ingest", "--store", dsn)
	if err == nil || !strings.Contains(err.Error(), "llmtap migrate --store") {
		t.Fatalf("want a message naming `llmtap migrate --store`, got %v", err)
	}
	if _, _, err := runCLI(t, "migrate", "--store", dsn); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, "migrate", "--store", dsn); err != nil {
		t.Fatalf("migrate must be safe to run again: %v", err)
	}
}

// TestDeployConfigsLoad keeps deploy/*.yaml true: they load strictly and
// validate for the mode their systemd instance runs.
func TestDeployConfigsLoad(t *testing.T) {
	for mode, file := range map[string]string{"proxy": "../../deploy/proxy.yaml", "ingest": "../../deploy/ingest.yaml"} {
		cmd := newRunCmd(mode, "")
		if err := cmd.ParseFlags([]string{"--config", file}); err != nil {
			t.Fatal(err)
		}
		c, err := newLoader().load(cmd)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if err := c.Validate(mode); err != nil {
			t.Errorf("%s: %v", file, err)
		}
	}
}

// TestServeAppliesLimitsConfig checks that the limits section reaches the
// proxy: with default_rpm 2 the third request of a key is refused with 429.
func TestServeAppliesLimitsConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	up := httptest.NewServer(sim.New(sim.Config{Tokens: 2}))
	defer up.Close()
	cfg := testConfig(t, freshPostgres(t, "llmtap_test_limits_cfg"), up.URL)
	cfg.Limits.DefaultRPM = 2
	_, plain, err := keys.Create(cfg.Proxy.KeysFile, keys.CreateOptions{Consumer: "limited"})
	if err != nil {
		t.Fatal(err)
	}
	base, stop := startServe(t, cfg)
	defer stop()
	var codes []int
	for i := 0; i < 3; i++ {
		req, _ := http.NewRequest("GET", base+"/v1/models", nil)
		req.Header.Set("Authorization", "Bearer "+plain)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
		if i == 0 && resp.Header.Get("X-Ratelimit-Remaining-Requests") != "1" {
			t.Errorf("remaining after the first request: %q", resp.Header.Get("X-Ratelimit-Remaining-Requests"))
		}
	}
	if fmt.Sprint(codes) != "[200 200 429]" {
		t.Fatalf("statuses %v, want [200 200 429]", codes)
	}
}

func TestRedactionConfig(t *testing.T) {
	dir := t.TempDir()
	load := func(body string) (Config, error) {
		cmd := newRunCmd("ingest", "")
		if err := cmd.ParseFlags([]string{"--config", writeFile(t, dir, "c.yaml", body)}); err != nil {
			t.Fatal(err)
		}
		c, err := newLoader().load(cmd)
		if err != nil {
			return c, err
		}
		return c, c.Validate("ingest")
	}
	c, err := load(`
redaction:
  patterns: ['(?i)password=(?P<secret>\w+)']
consumers:
  - name: Alice
    store_bodies: false
  - name: bob
    store_bodies: true
`)
	if err != nil {
		t.Fatal(err)
	}
	rc := c.redactConfig()
	if fmt.Sprint(rc.NoBodies) != "[Alice]" || len(rc.Patterns) != 1 {
		t.Errorf("redact config %+v", rc)
	}
	if _, err := load("redaction:\n  patterns: ['(unclosed']\n"); err == nil || !strings.Contains(err.Error(), "redaction") {
		t.Errorf("bad pattern: %v", err)
	}
	if _, err := load("consumers:\n  - store_bodies: false\n"); err == nil || !strings.Contains(err.Error(), "consumers[0].name") {
		t.Errorf("consumer without name: %v", err)
	}
}

// TestVerifyEraseCommands drives verify, erase and erasures on records that
// went through serve, then tampers with a row and expects verify to fail.
func TestVerifyEraseCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	dsn := freshPostgres(t, "llmtap_test_verify_cli")
	up := httptest.NewServer(sim.New(sim.Config{Tokens: 3}))
	defer up.Close()
	cfg := testConfig(t, dsn, up.URL)
	_, plain, err := keys.Create(cfg.Proxy.KeysFile, keys.CreateOptions{Consumer: "erin"})
	if err != nil {
		t.Fatal(err)
	}
	base, stop := startServe(t, cfg)
	for i := 0; i < 3; i++ {
		req, _ := http.NewRequest("POST", base+"/v1/chat/completions",
			strings.NewReader(`{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"secret plans"}]}`))
		req.Header.Set("Authorization", "Bearer "+plain)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	stop()

	if out, _, err := runCLI(t, "verify", "--store", dsn); err != nil {
		t.Fatalf("verify of untouched data: %v\n%s", err, out)
	}
	out, _, err := runCLI(t, "erase", "--store", dsn, "--consumer", "erin")
	if err != nil || !strings.Contains(out, "erased 3 rows") {
		t.Fatalf("erase: %v %s", err, out)
	}
	if out, _, err := runCLI(t, "verify", "--store", dsn); err != nil {
		t.Fatalf("verify after a legitimate erasure: %v\n%s", err, out)
	}
	if out, _, _ := runCLI(t, "erasures", "--store", dsn); !strings.Contains(out, "erasure") {
		t.Errorf("erasures does not list the erasure:\n%s", out)
	}
	res, err := query.Run(context.Background(), dsn, "search", query.Params{Text: "secret plans", From: time.Now().Add(-time.Hour), To: time.Now().Add(time.Minute)})
	if err != nil || len(res.Rows) != 0 {
		t.Errorf("erased prompts still found: %v %v", err, res)
	}
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), "UPDATE llm_requests SET completion_tokens = 1 WHERE ctid IN (SELECT ctid FROM llm_requests LIMIT 1)"); err != nil {
		t.Fatal(err)
	}
	out, _, err = runCLI(t, "verify", "--store", dsn)
	if err == nil || !strings.Contains(out, "row changed") {
		t.Fatalf("verify after an UPDATE outside llmtap: err %v\n%s", err, out)
	}
}
