package main

import (
	"bufio"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmtap/llmtap/cmd/vllm-sim/sim"
	"github.com/llmtap/llmtap/proxy/keys"
)

// shellBlocks returns the ```sh blocks of a markdown file.
func shellBlocks(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var blocks []string
	var cur *strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case cur == nil && strings.HasPrefix(line, "```sh"):
			cur = &strings.Builder{}
		case cur != nil && strings.HasPrefix(line, "```"):
			blocks = append(blocks, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(line + "\n")
		}
	}
	return blocks
}

// shellWords splits a command line like a POSIX shell for the simple
// quoting the README uses ('…' and "…"), dropping a trailing # comment.
func shellWords(line string) []string {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\'' || c == '"':
			j := strings.IndexByte(line[i+1:], c)
			if j < 0 {
				j = len(line) - i - 1
			}
			cur.WriteString(line[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '#' && !inWord:
			i = len(line)
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// TestReadmeSnippets runs the README's shell snippets as written against a
// real `llmtap serve` (PostgreSQL, vllm-sim): the quick-start curl, the
// NDJSON event example, and every `llmtap` command line (with DSN and the
// quick start's store replaced by the test database). `make …` lines are
// what CI itself runs.
func TestReadmeSnippets(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	dsn := freshPostgres(t, "llmtap_test_readme")
	up := httptest.NewServer(sim.New(sim.Config{Tokens: 4}))
	defer up.Close()
	cfg := testConfig(t, dsn, up.URL)
	_, plain, err := keys.Create(cfg.Proxy.KeysFile, keys.CreateOptions{Consumer: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	base, stop := startServe(t, cfg)
	defer stop()
	dir := t.TempDir()

	replacer := strings.NewReplacer(
		"'postgres://postgres@127.0.0.1:5432/llmtap?sslmode=disable'", dsn,
		"http://127.0.0.1:8002", "http://"+cfg.Ingest.Listen,
	)
	var ranCurl, ranEvent, ranCLI int
	for _, block := range shellBlocks(t, "../../README.md") {
		block = replacer.Replace(block)
		if strings.Contains(block, "curl") {
			// Placeholder exports (sk-…) are the reader's; the test sets the real ones.
			var script []string
			for _, l := range strings.Split(block, "\n") {
				if !strings.HasPrefix(strings.TrimSpace(l), "export OPENAI_") {
					script = append(script, l)
				}
			}
			cmd := exec.Command("bash", "-euo", "pipefail", "-c", strings.Join(script, "\n"))
			cmd.Env = append(os.Environ(), "OPENAI_API_KEY="+plain, "OPENAI_BASE_URL="+base+"/v1")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("README snippet failed: %v\n%s\n--- output:\n%s", err, block, out)
			}
			switch {
			case strings.Contains(block, "/v1/events"):
				ranEvent++
				if !strings.Contains(string(out), `"accepted":1`) {
					t.Errorf("event example not accepted:\n%s", out)
				}
			case strings.Contains(block, "/chat/completions"):
				ranCurl++
				if !strings.Contains(string(out), "data: [DONE]") {
					t.Errorf("quick-start curl did not stream an answer:\n%s", out)
				}
			}
			continue
		}
		for _, line := range strings.Split(block, "\n") {
			w := shellWords(strings.TrimSpace(line))
			if len(w) == 0 || (w[0] != "llmtap" && w[0] != "bin/llmtap") {
				continue
			}
			args := w[1:]
			for i, a := range args {
				switch a {
				case "DSN":
					args[i] = dsn
				case "nov.jsonl":
					args[i] = filepath.Join(dir, a)
				}
			}
			if _, stderr, err := runCLI(t, args...); err != nil {
				t.Errorf("README command %q: %v %s", line, err, stderr)
			}
			ranCLI++
		}
	}
	if ranCurl == 0 || ranEvent == 0 || ranCLI < 10 {
		t.Fatalf("ran %d curl, %d event and %d llmtap snippets; the README lost some", ranCurl, ranEvent, ranCLI)
	}
}
