package main

// Security scenarios of issue 7: forged identity headers and hop-by-hop
// tricks, canary secrets, forged/replayed ingest batches, malformed Kong
// payloads and colliding client request ids.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/llmtap/llmtap/cmd/vllm-sim/sim"
)

// recordingUpstream is the simulator plus a record of the headers of every
// request that reached it. Path /v1/echo answers 500 with the credential
// headers it received in the error body (an upstream that echoes secrets).
type recordingUpstream struct {
	sim  *sim.Server
	mu   sync.Mutex
	seen []http.Header
}

func (u *recordingUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.seen = append(u.seen, r.Header.Clone())
	u.mu.Unlock()
	if strings.HasPrefix(r.URL.Path, "/v1/echo") {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(500)
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, `{"error":{"message":"bad credentials: authorization=%q x-api-key=%q proxy-authorization=%q in request %q","type":"InternalServerError","param":null,"code":500}}`,
			r.Header.Get("Authorization"), r.Header.Get("X-Api-Key"), r.Header.Get("Proxy-Authorization"), body)
		return
	}
	u.sim.ServeHTTP(w, r)
}

func (u *recordingUpstream) last() http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.seen) == 0 {
		return nil
	}
	return u.seen[len(u.seen)-1]
}

func (r *rig) count(t *testing.T, q string) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, r.direct)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// storeDump is every stored row of both tables as text.
func (r *rig) storeDump(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, r.direct)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var b strings.Builder
	for _, q := range []string{`SELECT t::text FROM llm_requests t`, `SELECT t::text || convert_from(payload, 'SQL_ASCII') FROM llm_rejects t`} {
		rows, err := conn.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			b.WriteString(s)
			b.WriteByte('\n')
		}
		rows.Close()
	}
	return b.String()
}

// Scenario 19: forged identity headers and hop-by-hop tricks never reach
// upstream; the record holds the authenticated consumer.
func TestReliabilityForgedIdentity(t *testing.T) {
	relSkipShort(t)
	t.Parallel()
	u := &recordingUpstream{sim: sim.New(sim.Config{})}
	up := httptest.NewServer(u)
	t.Cleanup(up.Close)
	r := newRig(t, up.URL, rigOpts{db: "forged"})
	cases := []struct {
		name string
		hdr  [][2]string
	}{
		{"consumer headers", [][2]string{{"X-Consumer-Username", "admin"}, {"X-Consumer-Id", "admin"}, {"X-Consumer-Custom-Id", "admin"}, {"X-Credential-Identifier", "admin"}, {"X-Anonymous-Consumer", "true"}}},
		{"underscore variant", [][2]string{{"X_Consumer_Username", "admin"}}},
		{"connection strips ours", [][2]string{{"Connection", "X-Consumer-Username"}, {"X-Consumer-Username", "admin"}}},
		{"duplicate connection", [][2]string{{"Connection", "keep-alive, X-Consumer-Username"}, {"Connection", "Authorization, X-Forwarded-For"}}},
		{"forwarded for", [][2]string{{"X-Forwarded-For", "6.6.6.6"}, {"Forwarded", "for=6.6.6.6"}, {"X-Real-Ip", "6.6.6.6"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := r.post(t, chatBody("who am i", false), nil)
			for _, h := range c.hdr {
				req.Header.Add(h[0], h[1])
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			h := u.last()
			if got := h.Values("X-Consumer-Username"); len(got) != 1 || got[0] != r.keys[0].consumer {
				t.Errorf("upstream saw X-Consumer-Username %q, want exactly [%s]", got, r.keys[0].consumer)
			}
			for name, vals := range h {
				for _, v := range vals {
					if strings.Contains(v, "admin") || strings.Contains(v, "6.6.6.6") {
						t.Errorf("forged value reached upstream: %s: %s", name, v)
					}
				}
			}
			if a := h.Get("Authorization"); strings.Contains(a, r.keys[0].plain) {
				t.Errorf("client key reached upstream")
			}
			id := resp.Header.Get("X-Llmtap-Event-Id")
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, r.direct)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			var consumer, ip string
			ok := waitFor(15*time.Second, func() bool {
				return conn.QueryRow(ctx, `SELECT consumer, client_ip FROM llm_requests WHERE event_id=$1`, id).Scan(&consumer, &ip) == nil
			})
			if !ok {
				t.Fatalf("event %s not stored", id)
			}
			if consumer != r.keys[0].consumer || ip == "6.6.6.6" {
				t.Errorf("stored consumer %q client_ip %q", consumer, ip)
			}
		})
	}
	report(t, verdict{Scenario: "forged identity headers", Store: "postgres", Sent: len(cases), Acked: len(cases), Note: "forged values reaching upstream: 0 (checked on every upstream header)"})
}

// Scenario 21: canary secrets in Authorization, X-API-Key, cookies, query
// strings, prompts and upstream error bodies. Credentials are never stored,
// logged, exported as metrics or echoed to clients. Secret-shaped text in
// bodies (an sk- key, an email in the prompt, the same echoed by upstream in
// an error body) is removed by ingest's redaction, which is on by default;
// with redaction off by choice (redaction.builtins: [none]) it is stored as
// sent. Plain prompt text is always stored as sent.
func TestReliabilityCanarySecrets(t *testing.T) {
	relSkipShort(t)
	t.Parallel()
	for _, redactionOff := range []bool{false, true} {
		name := "redaction default"
		if redactionOff {
			name = "redaction off"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			canaryScenario(t, redactionOff)
		})
	}
}

func canaryScenario(t *testing.T, redactionOff bool) {
	u := &recordingUpstream{sim: sim.New(sim.Config{})}
	up := httptest.NewServer(u)
	t.Cleanup(up.Close)
	o := rigOpts{db: "canary_on"}
	if redactionOff {
		o = rigOpts{db: "canary_off", redactionBuiltins: []string{"none"}}
	}
	r := newRig(t, up.URL, o)
	valid := r.keys[0].plain
	canary := map[string]string{
		"valid key (Authorization)": valid,
		"X-API-Key":                 "CANARYxapi7f3a91",
		"Cookie":                    "CANARYcookie52be0",
		"query string":              "CANARYquery0c9d1",
		"bad key (Authorization)":   "sk-CANARYbadauth6e21d0",
		"bad key (X-API-Key)":       "sk-CANARYbadxapi98b1a3",
		"Proxy-Authorization":       "CANARYproxyauth11aa",
		"ingest token":              r.token,
	}
	// Secret-shaped text in bodies: redacted by default, stored when off.
	bodySecrets := map[string]string{
		"sk- key in the prompt":         "sk-CANARYpromptkey0123456789abcdef",
		"email in the prompt":           "canary.person@example.com",
		"key echoed by upstream (body)": "sk-CANARYechoedkey9876543210zyxwvu",
	}
	const promptCanary = "CANARYprompt4d2e8" // plain text: always stored
	var clientSaw bytes.Buffer
	do := func(path string, hdr map[string]string, body string) {
		req, _ := http.NewRequest("POST", r.proxyURL()+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for k, v := range resp.Header {
			fmt.Fprintf(&clientSaw, "%s: %s\n", k, v)
		}
		if !strings.HasPrefix(path, "/v1/echo") { // the echo answer carries the body secret by design
			clientSaw.Write(b)
		}
	}
	full := map[string]string{
		"Authorization":       "Bearer " + valid,
		"X-Api-Key":           canary["X-API-Key"],
		"Cookie":              "sid=" + canary["Cookie"],
		"Proxy-Authorization": "Basic " + canary["Proxy-Authorization"],
	}
	prompt := fmt.Sprintf("remember %s, my key %s, mail me at %s", promptCanary, bodySecrets["sk- key in the prompt"], bodySecrets["email in the prompt"])
	do("/v1/chat/completions?api_key="+canary["query string"], full, chatBody(prompt, false))
	do("/v1/chat/completions?key="+canary["query string"], full, chatBody(prompt, true))
	// Upstream answers 500 echoing the credential headers it got and the
	// request's text (as validation errors of real servers do).
	do("/v1/echo?key="+canary["query string"], full, chatBody("echo "+bodySecrets["key echoed by upstream (body)"], false))
	do("/v1/chat/completions", map[string]string{"Authorization": "Bearer " + canary["bad key (Authorization)"]}, chatBody("x", false))
	do("/v1/chat/completions", map[string]string{"X-Api-Key": canary["bad key (X-API-Key)"]}, chatBody("x", false))
	do("/v1/chat/completions?key="+canary["query string"], map[string]string{"X-Api-Key": valid}, chatBody("x", false))
	// A Kong http-log entry carrying credentials in its captured headers
	// and URI (Kong logs them as they came).
	canary["Kong Authorization header"] = "CANARYkongauth5c3e1a"
	canary["Kong apikey header"] = "CANARYkongapikey77d0"
	canary["Kong URI query"] = "CANARYkonguri2b9f"
	kong := fmt.Sprintf(`{"request":{"method":"POST","uri":"/v1/chat/completions?api_key=%s","url":"http://kong:8000/v1/chat/completions?api_key=%s","headers":{"authorization":"Bearer %s","apikey":"%s","content-type":"application/json"},"body":{"model":"m","messages":[{"role":"user","content":"hi"}]}},"response":{"status":200,"headers":{}},"consumer":{"username":"kong-user"},"client_ip":"10.0.0.1","started_at":1718000000000}`,
		canary["Kong URI query"], canary["Kong URI query"], canary["Kong Authorization header"], canary["Kong apikey header"])
	kreq, _ := http.NewRequest("POST", r.ingestURL()+"/v1/kong", strings.NewReader(kong))
	kreq.Header.Set("Authorization", "Bearer "+r.token)
	kresp, err := http.DefaultClient.Do(kreq)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := io.ReadAll(kresp.Body)
	kresp.Body.Close()
	if kresp.StatusCode != 200 || !strings.Contains(string(kb), `"accepted":1`) {
		t.Errorf("Kong entry: %d %s", kresp.StatusCode, kb)
	}
	if !waitFor(15*time.Second, func() bool { return r.count(t, `SELECT count(*) FROM llm_requests`) >= 7 }) {
		t.Fatalf("only %d of 7 requests stored", r.count(t, `SELECT count(*) FROM llm_requests`))
	}

	// Upstream never sees the client's credentials.
	u.mu.Lock()
	for _, h := range u.seen {
		for name, vals := range h {
			for _, v := range vals {
				for what, c := range canary {
					// The query string and cookies are forwarded as the
					// client sent them (transparent proxy); credentials never.
					if strings.Contains(v, c) && what != "query string" && what != "Cookie" && !strings.HasPrefix(what, "Kong") {
						t.Errorf("upstream received %s in header %s", what, name)
					}
				}
			}
		}
	}
	u.mu.Unlock()

	store := r.storeDump(t)
	places := map[string]string{
		"store":          store,
		"proxy log":      tail(r.proxy.logPath, 1<<30),
		"ingest log":     tail(r.ingest.logPath, 1<<30),
		"proxy metrics":  metricsText("http://" + r.proxy.cfg.Admin.Listen + "/metrics"),
		"ingest metrics": metricsText("http://" + r.ingest.cfg.Admin.Listen + "/metrics"),
		"client answers": clientSaw.String(),
	}
	hits := 0
	for where, text := range places {
		for what, c := range canary {
			if strings.Contains(text, c) {
				hits++
				t.Errorf("canary %s appears in the %s", what, where)
			}
		}
		for what, c := range bodySecrets {
			if where == "store" {
				continue // checked below, depends on the redaction choice
			}
			if strings.Contains(text, c) {
				hits++
				t.Errorf("canary %s appears in the %s", what, where)
			}
		}
	}
	if strings.Contains(store, strings.TrimPrefix(valid, "sk-")) {
		t.Errorf("the valid key's body appears in the store")
	}
	if !strings.Contains(store, promptCanary) {
		t.Errorf("plain prompt text was not stored as sent")
	}
	stored := 0
	for what, c := range bodySecrets {
		in := strings.Contains(store, c)
		if in {
			stored++
		}
		if in != redactionOff {
			t.Errorf("redaction off=%v: %s stored=%v", redactionOff, what, in)
		}
	}
	if !redactionOff && !strings.Contains(store, "[REDACTED") {
		t.Errorf("no redaction marker in the store")
	}
	report(t, verdict{Scenario: "canary secrets (" + map[bool]string{false: "redaction default", true: "redaction off"}[redactionOff] + ")", Store: "postgres", Sent: 7, Acked: 7,
		Note: fmt.Sprintf("credential canary hits: %d (store, both logs, both /metrics, client answers); secret-shaped body canaries stored: %d of %d", hits, stored, len(bodySecrets))})
}

// Scenarios 10–11: unauthenticated, wrong-token and replayed batches to
// ingest store nothing new.
func TestReliabilityIngestAuth(t *testing.T) {
	relSkipShort(t)
	t.Parallel()
	_, up := newSim(t)
	r := newRig(t, up.URL, rigOpts{db: "ingest_auth"})
	batch := func(ids ...string) []byte {
		var b bytes.Buffer
		for _, id := range ids {
			fmt.Fprintf(&b, `{"event_id":%q,"ts":"2026-11-01T10:00:00Z","source":"forger","consumer":"mallory","method":"POST","path":"/v1/chat/completions","status":200}`+"\n", id)
		}
		return b.Bytes()
	}
	post := func(path, token string, body []byte) int {
		req, _ := http.NewRequest("POST", r.ingestURL()+path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/x-ndjson")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	rows := func() int {
		return r.count(t, `SELECT count(*) FROM llm_requests`) + r.count(t, `SELECT count(*) FROM llm_rejects`)
	}
	forged := batch("0196f000-0000-7000-8000-000000000001", "0196f000-0000-7000-8000-000000000002")
	kong := []byte(`{"request":{"method":"GET","uri":"/v1/models"},"response":{"status":200},"started_at":1718000005000}`)
	for _, c := range []struct {
		name, path, token string
		body              []byte
	}{
		{"no token", "/v1/events", "", forged},
		{"wrong token", "/v1/events", r.token + "x", forged},
		{"token prefix", "/v1/events", r.token[:len(r.token)-1], forged},
		{"kong no token", "/v1/kong", "", kong},
		{"kong wrong token", "/v1/kong", "nope", kong},
	} {
		before := rows()
		if st := post(c.path, c.token, c.body); st != 401 {
			t.Errorf("%s: status %d, want 401", c.name, st)
		}
		if after := rows(); after != before {
			t.Errorf("%s: rows %d → %d", c.name, before, after)
		}
	}
	// A valid batch, then the same batch replayed: stored once.
	good := batch("0196f000-0000-7000-8000-0000000000a1", "0196f000-0000-7000-8000-0000000000a2")
	if st := post("/v1/events", r.token, good); st != 200 {
		t.Fatalf("valid batch: status %d", st)
	}
	n1 := rows()
	for i := 0; i < 3; i++ {
		if st := post("/v1/events", r.token, good); st != 200 {
			t.Errorf("replay: status %d", st)
		}
	}
	if n2 := rows(); n2 != n1 {
		t.Errorf("replayed batch changed rows %d → %d", n1, n2)
	}
	report(t, verdict{Scenario: "unauthenticated / wrong-token / replayed ingest batches", Store: "postgres", Sent: 8,
		Note: "401 for every forged batch, rows unchanged; replay x3 idempotent"})
}

// Scenario 22: malformed Kong payloads: accepted + rejected = sent, and
// the store holds exactly that many new rows.
func TestReliabilityMalformedKong(t *testing.T) {
	relSkipShort(t)
	t.Parallel()
	_, up := newSim(t)
	r := newRig(t, up.URL, rigOpts{db: "kong_bad"})
	valid := func(i int) string {
		return fmt.Sprintf(`{"request":{"id":"k%04d","method":"POST","uri":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"hi %d"}]}},"response":{"status":200},"consumer":{"username":"kong-user"},"client_ip":"10.0.0.1","started_at":%d}`, i, i, 1718000000000+int64(i))
	}
	deep := strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000)
	huge := strings.Repeat("x", 10<<20)
	cases := []struct {
		name    string
		body    string
		entries int // entries sent (a payload that is not JSON at all counts as one)
	}{
		{"single object", valid(1), 1},
		{"array", "[" + valid(2) + "," + valid(3) + "]", 2},
		{"truncated", valid(4)[:60], 1},
		{"truncated array", "[" + valid(5) + "," + valid(6)[:50], 2},
		{"wrong types", `[{"request":"nope","response":{"status":"abc"},"started_at":"yesterday"},` + valid(7) + `]`, 2},
		{"invalid utf-8", strings.Replace(valid(8), "hi 8", "hi \xff\xfe", 1), 1},
		{"deep nesting", `[{"request":{"method":"POST","uri":"/v1/chat/completions","body":` + deep + `},"response":{"status":200},"started_at":1718000000000}]`, 1},
		{"huge string", `{"request":{"method":"POST","uri":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"` + huge + `"}]}},"response":{"status":200},"started_at":1718000000009}`, 1},
		{"not json", "hello", 1},
		{"array of scalars", `[1,"two",null]`, 3},
	}
	total := struct{ sent, acc, rej int }{}
	for _, c := range cases {
		before := r.count(t, `SELECT count(*) FROM llm_requests`) + r.count(t, `SELECT count(*) FROM llm_rejects`)
		req, _ := http.NewRequest("POST", r.ingestURL()+"/v1/kong", strings.NewReader(c.body))
		req.Header.Set("Authorization", "Bearer "+r.token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var res struct{ Accepted, Rejected int }
		if resp.StatusCode != 200 || json.Unmarshal(b, &res) != nil {
			t.Errorf("%s: status %d body %.200s", c.name, resp.StatusCode, b)
			continue
		}
		after := r.count(t, `SELECT count(*) FROM llm_requests`) + r.count(t, `SELECT count(*) FROM llm_rejects`)
		if res.Accepted+res.Rejected != c.entries {
			t.Errorf("%s: accepted %d + rejected %d != %d sent", c.name, res.Accepted, res.Rejected, c.entries)
		}
		if after-before != res.Accepted+res.Rejected {
			t.Errorf("%s: answer says %d+%d, store grew by %d", c.name, res.Accepted, res.Rejected, after-before)
		}
		total.sent += c.entries
		total.acc += res.Accepted
		total.rej += res.Rejected
	}
	if r.ingest.pid() == 0 {
		t.Fatal("ingest died")
	}
	report(t, verdict{Scenario: "malformed Kong payloads", Store: "postgres", Sent: total.sent, Acked: total.acc,
		Note: fmt.Sprintf("accepted %d + rejected %d = %d of %d sent; ingest peak RSS %.0f MiB", total.acc, total.rej, total.acc+total.rej, total.sent, float64(r.ingest.peakRSS())/(1<<20))})
}

// Scenario 23: every request carries the same X-Request-Id (and the sim
// echoes it into the response id): records never merge.
func TestReliabilityCollidingRequestIDs(t *testing.T) {
	relSkipShort(t)
	t.Parallel()
	_, up := newSim(t)
	r := newRig(t, up.URL, rigOpts{db: "reqid"})
	n := pick(50, 500)
	var mu sync.Mutex
	var all []sent
	var wg sync.WaitGroup
	for w := 0; w < 5; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += 5 {
				req := r.post(t, chatBody(fmt.Sprintf("same id %d", i), i%10 < 7), map[string]string{"X-Request-Id": "collide-1"})
				resp, err := http.DefaultClient.Do(req)
				s := sent{Seq: i, Consumer: r.keys[0].consumer, Stream: i%10 < 7}
				if err == nil {
					s.Status, s.EventID = resp.StatusCode, resp.Header.Get("X-Llmtap-Event-Id")
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err != nil {
					s.Err = err.Error()
				}
				s.Injected = true // body sha not compared here
				mu.Lock()
				all = append(all, s)
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	v := r.reconcile("colliding X-Request-Id", all, 30*time.Second)
	got := r.count(t, `SELECT count(DISTINCT event_id) FROM llm_requests WHERE prompt LIKE 'same id %'`)
	v.Note = fmt.Sprintf("%d requests with X-Request-Id collide-1 → %d distinct stored events", n, got)
	report(t, v)
	if v.Lost != 0 || v.Duplicates != 0 || got != n {
		t.Errorf("lost %d duplicates %d; %d distinct events stored for %d requests", v.Lost, v.Duplicates, got, n)
	}
}
