package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/llmtap/llmtap/cmd/vllm-sim/sim"
	"github.com/llmtap/llmtap/proxy/keys"
	"github.com/llmtap/llmtap/schema"
)

const e2eDB = "llmtap_test_e2e"

// freeAddr returns a loopback address with a port that was free a moment
// ago, for a child process to listen on (and listen on again after a
// restart). The port is below Linux's ephemeral range (32768–60999), which
// port 0 would draw from: there the outgoing connections of the tests that
// run in parallel (database clients, HTTP) take ports too, and one of them
// can hold the port when the child binds or rebinds it.
func freeAddr(t *testing.T) string {
	t.Helper()
	for range 200 {
		addr := fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000))
		if ln, err := net.Listen("tcp", addr); err == nil {
			ln.Close()
			return addr
		}
	}
	t.Fatal("freeAddr: no free port in 20000-31999")
	return ""
}

// freshPostgres creates (or recreates) a migrated test database and returns its DSN.
func freshPostgres(t *testing.T, name string) string {
	t.Helper()
	dsn := emptyPostgres(t, name)
	if err := schema.Migrate(context.Background(), dsn, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	return dsn
}

// emptyPostgres creates (or recreates) an empty test database and returns its DSN.
func emptyPostgres(t *testing.T, name string) string {
	t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	if err != nil {
		t.Fatalf("PostgreSQL must run on 127.0.0.1:5432 (make services): %v", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	return "postgres://postgres@127.0.0.1:5432/" + name + "?sslmode=disable"
}

// startServe runs `llmtap serve` in-process against upstream and returns the
// proxy's base URL and a stop function that waits for a clean shutdown.
func startServe(t *testing.T, cfg Config) (proxyURL string, stop func()) {
	t.Helper()
	if err := cfg.Validate("serve"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() { done <- run(ctx, "serve", cfg, logger) }()
	base := "http://" + cfg.Proxy.Listen
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + cfg.Admin.Listen + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("llmtap serve did not become ready: %v", <-done)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return base, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}
}

func testConfig(t *testing.T, store, upstream string) Config {
	cfg := defaultConfig()
	dir := t.TempDir()
	cfg.Store = store
	cfg.Proxy.Listen = freeAddr(t)
	cfg.Proxy.Upstream = upstream
	cfg.Proxy.KeysFile = filepath.Join(dir, "keys.yaml")
	cfg.Proxy.SpoolDir = filepath.Join(dir, "spool")
	cfg.Proxy.ShutdownGrace = 5 * time.Second
	cfg.Ingest.Listen = freeAddr(t)
	cfg.Admin.Listen = freeAddr(t)
	return cfg
}

// clientCase is one line printed by testdata/e2e/client.mjs.
type clientCase struct {
	Case              string          `json:"case"`
	EventID           string          `json:"event_id"`
	Text              string          `json:"text"`
	Finish            string          `json:"finish"`
	Usage             *usage          `json:"usage"`
	UsageChunks       int             `json:"usage_chunks"`
	EmptyChoiceChunks int             `json:"empty_choice_chunks"`
	ToolCalls         json.RawMessage `json:"tool_calls"`
	Dims              int             `json:"dims"`
	Status            int             `json:"status"`
	Code              string          `json:"code"`
}

type usage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

type storedRow struct {
	consumer, endpoint, prompt, response, finish, toolCalls, usageSource string
	status                                                               int
	stream                                                               bool
	prompt_, completion, total                                           *int64
}

// TestOpenAIClientEndToEnd drives the official openai npm package through
// `llmtap serve` (stream_usage: inject) to vllm-sim, then checks that what
// the client assembled is what the audit record holds, and that the client
// never saw a usage chunk it did not ask for.
func TestOpenAIClientEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL and node")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is required for the end-to-end test (apt-get install nodejs npm)")
	}
	if _, err := os.Stat("../../testdata/e2e/node_modules/openai"); err != nil {
		t.Fatal("run `make services` (it installs testdata/e2e's openai package with npm ci)")
	}
	dsn := freshPostgres(t, e2eDB)
	up := httptest.NewServer(sim.New(sim.Config{Tokens: 12}))
	defer up.Close()
	cfg := testConfig(t, dsn, up.URL)
	_, plain, err := keys.Create(cfg.Proxy.KeysFile, keys.CreateOptions{Consumer: "e2e-team"})
	if err != nil {
		t.Fatal(err)
	}
	base, stop := startServe(t, cfg)

	cmd := exec.Command(node, "client.mjs")
	cmd.Dir = "../../testdata/e2e"
	cmd.Env = append(os.Environ(), "OPENAI_BASE_URL="+base+"/v1", "OPENAI_API_KEY="+plain)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("client.mjs: %v\n%s", err, stderr.String())
	}
	stop() // graceful shutdown: every event is committed before run returns

	cases := map[string]clientCase{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var c clientCase
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("client output %q: %v", sc.Text(), err)
		}
		cases[c.Case] = c
	}
	for _, name := range []string{"chat", "chat_stream", "chat_stream_usage", "chat_tools", "chat_tools_stream",
		"completion", "completion_stream", "embeddings", "bad_key"} {
		if _, ok := cases[name]; !ok {
			t.Fatalf("client did not report case %q; output:\n%s", name, out)
		}
	}

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	row := func(c clientCase) storedRow {
		t.Helper()
		if c.EventID == "" {
			t.Fatalf("%s: no X-Llmtap-Event-Id header reached the client", c.Case)
		}
		var r storedRow
		err := conn.QueryRow(ctx, `SELECT consumer, endpoint, prompt, response, finish_reason, tool_calls, usage_source,
			status, stream, prompt_tokens, completion_tokens, total_tokens FROM llm_requests WHERE event_id = $1`, c.EventID).
			Scan(&r.consumer, &r.endpoint, &r.prompt, &r.response, &r.finish, &r.toolCalls, &r.usageSource,
				&r.status, &r.stream, &r.prompt_, &r.completion, &r.total)
		if err != nil {
			t.Fatalf("%s: stored row for event %s: %v", c.Case, c.EventID, err)
		}
		return r
	}
	eq := func(name, what string, got, want any) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: stored %s = %v, client saw %v", name, what, got, want)
		}
	}
	tokens := func(p *int64) any {
		if p == nil {
			return "NULL"
		}
		return *p
	}

	// Non-streamed and streamed chat: same text, usage from the response.
	chat, chatStream, chatUsage := cases["chat"], cases["chat_stream"], cases["chat_stream_usage"]
	for _, c := range []clientCase{chat, chatStream, chatUsage} {
		r := row(c)
		eq(c.Case, "response", r.response, c.Text)
		eq(c.Case, "prompt", r.prompt, "Tell me about audit logs.")
		eq(c.Case, "consumer", r.consumer, "e2e-team")
		eq(c.Case, "finish_reason", r.finish, c.Finish)
		eq(c.Case, "usage_source", r.usageSource, "response")
		eq(c.Case, "stream", r.stream, c.Case != "chat")
		// The streamed answer without include_usage still gets usage (injected),
		// and it equals what the client that asked for usage was told.
		eq(c.Case, "prompt_tokens", tokens(r.prompt_), chatUsage.Usage.PromptTokens)
		eq(c.Case, "completion_tokens", tokens(r.completion), chatUsage.Usage.CompletionTokens)
		eq(c.Case, "total_tokens", tokens(r.total), chatUsage.Usage.TotalTokens)
	}
	if chat.Usage == nil || *chat.Usage != *chatUsage.Usage {
		t.Errorf("non-stream usage %+v differs from stream usage %+v", chat.Usage, chatUsage.Usage)
	}
	if chatStream.UsageChunks != 0 || chatStream.EmptyChoiceChunks != 0 {
		t.Errorf("client that did not ask for usage saw %d usage chunks and %d empty-choice chunks",
			chatStream.UsageChunks, chatStream.EmptyChoiceChunks)
	}
	if chatUsage.UsageChunks != 1 || chatUsage.EmptyChoiceChunks != 1 {
		t.Errorf("client that asked for usage saw %d usage chunks, want exactly 1", chatUsage.UsageChunks)
	}
	if chat.Text == "" || chat.Text != chatStream.Text {
		t.Errorf("stream and non-stream answers differ: %q vs %q", chatStream.Text, chat.Text)
	}

	// Tool calls: the stored tool_calls equal what the client assembled.
	for _, name := range []string{"chat_tools", "chat_tools_stream"} {
		c := cases[name]
		r := row(c)
		eq(name, "finish_reason", r.finish, "tool_calls")
		var got, want []struct {
			ID       string `json:"id"`
			Function struct{ Name, Arguments string }
		}
		if err := json.Unmarshal([]byte(r.toolCalls), &got); err != nil {
			t.Fatalf("%s: stored tool_calls %q: %v", name, r.toolCalls, err)
		}
		if err := json.Unmarshal(c.ToolCalls, &want); err != nil {
			t.Fatal(err)
		}
		if len(want) != 1 || len(got) != 1 || got[0].ID != want[0].ID || got[0].Function != want[0].Function {
			t.Errorf("%s: stored tool calls %+v, client assembled %+v", name, got, want)
		}
		if !json.Valid([]byte(want[0].Function.Arguments)) || want[0].Function.Name != "get_weather" {
			t.Errorf("%s: client assembled %+v", name, want)
		}
	}

	// Completions and embeddings.
	for _, name := range []string{"completion", "completion_stream"} {
		c := cases[name]
		r := row(c)
		eq(name, "endpoint", r.endpoint, "completions")
		eq(name, "prompt", r.prompt, "Once upon a time")
		eq(name, "response", r.response, c.Text)
		eq(name, "finish_reason", r.finish, c.Finish)
		if r.total == nil {
			t.Errorf("%s: no usage stored", name)
		}
	}
	if cases["completion_stream"].UsageChunks != 0 {
		t.Error("completion stream client saw an injected usage chunk")
	}
	emb := cases["embeddings"]
	r := row(emb)
	eq("embeddings", "endpoint", r.endpoint, "embeddings")
	eq("embeddings", "prompt", r.prompt, "embed me")
	eq("embeddings", "prompt_tokens", tokens(r.prompt_), emb.Usage.PromptTokens)
	if emb.Dims != 16 {
		t.Errorf("embedding dims %d", emb.Dims)
	}

	// A wrong key: 401 with the OpenAI error code, and the attempt is audited.
	bad := cases["bad_key"]
	if bad.Status != 401 || bad.Code != "invalid_api_key" {
		t.Errorf("bad key: status %d code %q", bad.Status, bad.Code)
	}
	if bad.EventID != "" {
		r := row(bad)
		eq("bad_key", "status", r.status, 401)
		eq("bad_key", "consumer", r.consumer, "")
	}
	var keyLeaks int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM llm_requests WHERE request_headers LIKE '%'||$1||'%' OR request_body LIKE '%'||$1||'%'`,
		strings.TrimPrefix(plain, "sk-")).Scan(&keyLeaks); err != nil {
		t.Fatal(err)
	}
	if keyLeaks != 0 {
		t.Errorf("the plain key appears in %d stored rows", keyLeaks)
	}
}
