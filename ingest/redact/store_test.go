package redact

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/llmtap/llmtap/ingest/decode"
	"github.com/llmtap/llmtap/ingest/pipeline"
	"github.com/llmtap/llmtap/ingest/store"
	"github.com/llmtap/llmtap/schema"
)

const (
	testDB     = "llmtap_test_redact"
	pgAdminDSN = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	pgTestDSN  = "postgres://postgres@127.0.0.1:5432/" + testDB + "?sslmode=disable"
	chTestDSN  = "clickhouse://127.0.0.1:9000/" + testDB + "?dial_timeout=3s"
	chHTTP     = "http://127.0.0.1:8123/"
)

// storedRow is one stored row: every column as JSON, and the text searched.
type storedRow struct {
	cols map[string]any
	text string
}

func (r storedRow) str(col string) string { s, _ := r.cols[col].(string); return s }

// TestStoredRowsHaveNoSecrets is the storage-boundary test: proxy events and
// Kong entries carrying canary secrets go through a pipeline whose decoder
// redacts, into a real PostgreSQL and a real ClickHouse; then every column
// of every stored row is read back and searched for the canaries. Kong
// rejects are redacted with ApplyReject before they are handed to the
// pipeline, the way the receiver should do it.
func TestStoredRowsHaveNoSecrets(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL and ClickHouse (make services)")
	}
	backends := []struct {
		name  string
		dsn   string
		reset func(ctx context.Context) error
		rows  func(ctx context.Context, table string) ([]storedRow, error)
	}{
		{"postgres", pgTestDSN, resetPostgres, pgRows},
		{"clickhouse", chTestDSN, resetClickHouse, chRows},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := b.reset(ctx); err != nil {
				t.Fatalf("%s (make services): %v", b.name, err)
			}
			if err := schema.Migrate(ctx, b.dsn, nil); err != nil {
				t.Fatal(err)
			}
			st, err := store.Open(ctx, b.dsn, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			nProxy, nRejects := ingestCanaries(t, ctx, st)

			rows, err := b.rows(ctx, "llm_requests")
			if err != nil {
				t.Fatal(err)
			}
			sources := map[string]int{}
			for _, row := range rows {
				source, consumer := row.str("source"), row.str("consumer")
				sources[source]++
				for _, c := range canaries {
					if strings.Contains(row.text, c) {
						t.Errorf("canary %q stored: %s", c, row.text)
					}
				}
				if !strings.Contains(row.str("prompt"), "[REDACTED:api_key]") {
					t.Errorf("prompt not kept redacted: %q", row.str("prompt"))
				}
				reqBody, respBody := row.str("request_body"), row.str("response_body")
				if consumer == "alice" && (reqBody != "" || respBody != "") {
					t.Errorf("alice's bodies stored (%s): %q %q", source, reqBody, respBody)
				}
				if consumer == "bob" && reqBody == "" {
					t.Errorf("bob's request body not stored (%s)", source)
				}
			}
			if len(rows) != nProxy+3 || sources["proxy"] != nProxy || sources["kong"] != 3 {
				t.Errorf("stored %d rows by source %v, want %d proxy + 3 kong", len(rows), sources, nProxy)
			}

			rejects, err := b.rows(ctx, "llm_rejects")
			if err != nil {
				t.Fatal(err)
			}
			for _, row := range rejects {
				for _, c := range canaries {
					if strings.Contains(row.text, c) {
						t.Errorf("canary %q stored in a reject: %s", c, row.text)
					}
				}
				if !strings.Contains(row.text, "[REDACTED:") {
					t.Errorf("reject lost its (redacted) content: %s", row.text)
				}
			}
			if len(rejects) != nRejects || nRejects == 0 {
				t.Errorf("%d reject rows, want %d (> 0)", len(rejects), nRejects)
			}
		})
	}
}

// ingestCanaries runs the proxy events and a Kong batch (three entries and
// one reject) through a redacting pipeline into st.
func ingestCanaries(t *testing.T, ctx context.Context, st store.Store) (nProxy, nRejects int) {
	t.Helper()
	r := mustNew(t, Config{NoBodies: []string{"alice"}})
	pcfg := pipeline.DefaultConfig()
	pcfg.BatchAge = 0
	p := pipeline.New(pcfg, st, nil, pipeline.WithDecoder(r.Decoder(decode.Decode)))
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	proxy := proxyEvents(t)
	res, err := p.Ingest(ctx, proxy, nil)
	if err != nil || res.Accepted != len(proxy) {
		t.Fatalf("proxy ingest: %+v, %v", res, err)
	}
	// A Kong batch with three good entries and one the decoder rejects,
	// all carrying secrets.
	kong := kongBody(t)
	broken := `,{"request":{"uri":"/v1/chat/completions","headers":{"x-debug":"Bearer ` + canaryBearer +
		`"},"body":"my key ` + canaryKey + `"},"response":{"status":200},"started_at":"not a time"}`
	kong = append(kong[:len(kong)-1], []byte(broken+"]")...)
	evs, rejects := decode.Kong(kong)
	if len(evs) != 3 || len(rejects) == 0 {
		t.Fatalf("kong: %d events, %d rejects", len(evs), len(rejects))
	}
	for i := range rejects {
		r.ApplyReject(&rejects[i])
	}
	res, err = p.Ingest(ctx, evs, rejects)
	if err != nil || res.Accepted != 3 {
		t.Fatalf("kong ingest: %+v, %v", res, err)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	return len(proxy), len(rejects)
}

func resetPostgres(ctx context.Context) error {
	admin, err := pgx.Connect(ctx, pgAdminDSN)
	if err != nil {
		return err
	}
	defer admin.Close(ctx)
	_, err = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+testDB+" WITH (FORCE)")
	return err
}

// pgRows reads every column of every row of table as JSON.
func pgRows(ctx context.Context, table string) ([]storedRow, error) {
	conn, err := pgx.Connect(ctx, pgTestDSN)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	q := "SELECT row_to_json(t)::text FROM " + table + " t"
	if table == "llm_rejects" { // bytea: show it as text
		q = "SELECT json_build_object('reason', reason, 'payload', convert_from(payload, 'UTF8'))::text FROM llm_rejects"
	}
	rows, err := conn.Query(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []storedRow
	for rows.Next() {
		var text string
		if err := rows.Scan(&text); err != nil {
			return nil, err
		}
		row := storedRow{text: text}
		if err := json.Unmarshal([]byte(text), &row.cols); err != nil {
			return nil, err
		}
		out = append(out, row)
	}
	return out, rows.Err()
}

func chQuery(ctx context.Context, q string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, chHTTP, strings.NewReader(q))
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("clickhouse %q: %s: %s", q, resp.Status, b)
	}
	return string(b), nil
}

func resetClickHouse(ctx context.Context) error {
	_, err := chQuery(ctx, "DROP DATABASE IF EXISTS "+testDB)
	return err
}

// chRows reads every column of every row of table as JSONEachRow.
func chRows(ctx context.Context, table string) ([]storedRow, error) {
	text, err := chQuery(ctx, "SELECT * FROM "+url.PathEscape(testDB)+"."+table+" FORMAT JSONEachRow")
	if err != nil {
		return nil, err
	}
	var out []storedRow
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		row := storedRow{text: line}
		if err := json.Unmarshal([]byte(line), &row.cols); err != nil {
			return nil, fmt.Errorf("%s: %w", line, err)
		}
		out = append(out, row)
	}
	return out, sc.Err()
}
