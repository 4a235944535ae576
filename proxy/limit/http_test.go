package limit

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestStatusAllowed(t *testing.T) {
	if s := (Decision{Allowed: true}).Status(); s != 200 {
		t.Fatalf("allowed: %d", s)
	}
}

func TestFormatReset(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{-time.Second, "0s"},
		{time.Nanosecond, "1ms"},
		{17 * time.Millisecond, "17ms"},
		{17*time.Millisecond + 1, "18ms"},
		{time.Second, "1s"},
		{8640 * time.Millisecond, "8.64s"},
		{6 * time.Minute, "6m0s"},
		{59*time.Second + 999*time.Millisecond + 1, "1m0s"},
	}
	for _, tt := range tests {
		if got := FormatReset(tt.d); got != tt.want {
			t.Errorf("FormatReset(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestHeaders(t *testing.T) {
	tests := []struct {
		name string
		d    Decision
		want map[string]string // "" = must be absent
	}{
		{"unlimited", Decision{Allowed: true}, map[string]string{
			HeaderLimitRequests: "", HeaderLimitTokens: "", "Retry-After": "",
		}},
		{"requests only", Decision{Allowed: true, LimitRequests: 10, RemainingRequests: 3, ResetRequests: 1500 * time.Millisecond},
			map[string]string{
				HeaderLimitRequests: "10", HeaderRemainingRequests: "3", HeaderResetRequests: "1.5s",
				HeaderLimitTokens: "", HeaderRemainingTokens: "", "Retry-After": "",
			}},
		{"refused for tokens", Decision{Reason: ReasonTokens, LimitRequests: 10, RemainingRequests: 9,
			LimitTokens: 1000, RemainingTokens: 0, ResetTokens: 2100 * time.Millisecond, RetryAfter: 2100 * time.Millisecond},
			map[string]string{
				HeaderLimitTokens: "1000", HeaderRemainingTokens: "0", HeaderResetTokens: "2.1s",
				HeaderResetRequests: "0s", "Retry-After": "3", "Retry-After-Ms": "2100",
			}},
		{"refused, sub-second retry", Decision{Reason: ReasonRequests, LimitRequests: 1, RetryAfter: time.Millisecond},
			map[string]string{"Retry-After": "1", "Retry-After-Ms": "1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			Headers(h, tt.d)
			for k, want := range tt.want {
				if got := h.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

// TestWriteRefusal serves the integration pattern over real loopback HTTP:
// Admit, then Headers on success or WriteRefusal on refusal.
func TestWriteRefusal(t *testing.T) {
	tests := []struct {
		d          Decision
		status     int
		typ, code  string
		retryAfter string
	}{
		{Decision{Reason: ReasonRequests, LimitRequests: 5, RetryAfter: 12300 * time.Millisecond}, 429, "requests", "rate_limit_exceeded", "13"},
		{Decision{Reason: ReasonTokens, LimitTokens: 100, RetryAfter: 40 * time.Second}, 429, "tokens", "rate_limit_exceeded", "40"},
		{Decision{Reason: ReasonConcurrency, LimitConcurrent: 2, RetryAfter: time.Second}, 429, "concurrency", "rate_limit_exceeded", "1"},
		{Decision{Reason: ReasonUnavailable, RetryAfter: time.Second}, 503, "unavailable", "rate_limit_unavailable", "1"},
		{Decision{}, 503, "unavailable", "rate_limit_unavailable", "1"},
	}
	for _, tt := range tests {
		t.Run(tt.typ, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				WriteRefusal(w, tt.d)
			}))
			defer srv.Close()
			res, err := http.Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if tt.d.Status() != tt.status {
				t.Fatalf("Status() = %d, want %d", tt.d.Status(), tt.status)
			}
			if res.StatusCode != tt.status || res.Header.Get("Retry-After") != tt.retryAfter ||
				res.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("status %d, Retry-After %q, type %q", res.StatusCode, res.Header.Get("Retry-After"), res.Header.Get("Content-Type"))
			}
			var e struct {
				Error struct {
					Message string  `json:"message"`
					Type    string  `json:"type"`
					Param   *string `json:"param"`
					Code    string  `json:"code"`
				} `json:"error"`
			}
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("body %q: %v", body, err)
			}
			if e.Error.Type != tt.typ || e.Error.Code != tt.code || e.Error.Param != nil || e.Error.Message == "" {
				t.Fatalf("body %s", body)
			}
			var raw map[string]map[string]any
			_ = json.Unmarshal(body, &raw)
			if v, ok := raw["error"]["param"]; !ok || v != nil {
				t.Fatalf("param must be present and null: %s", body)
			}
		})
	}
}

// TestLoopbackLimiter: a handler that follows the integration contract
// answers N requests with the remaining counts and the N+1st with 429.
func TestLoopbackLimiter(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			l := b.open(t, DefaultConfig())
			lim := Limits{RPM: 3, TPM: 1000}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				d, release, _ := l.Admit(r.Context(), "key_1", lim)
				if !d.Allowed {
					WriteRefusal(w, d)
					return
				}
				defer func() { release(42) }()
				Headers(w.Header(), d)
				io.WriteString(w, `{"ok":true}`)
			}))
			defer srv.Close()
			for i := 1; i <= 4; i++ {
				res, err := http.Get(srv.URL)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				wantStatus, wantRem := 200, []string{"", "2", "1", "0", "0"}[i]
				if i == 4 {
					wantStatus = 429
				}
				if res.StatusCode != wantStatus || res.Header.Get(HeaderRemainingRequests) != wantRem ||
					res.Header.Get(HeaderLimitRequests) != "3" || res.Header.Get(HeaderLimitTokens) != "1000" {
					t.Fatalf("request %d: status %d headers %v", i, res.StatusCode, res.Header)
				}
				// Each finished request released 42 tokens before the next began.
				if got, want := res.Header.Get(HeaderRemainingTokens), []string{"", "1000", "958", "916", "874"}[i]; got != want {
					t.Fatalf("request %d: remaining tokens %q, want %q", i, got, want)
				}
			}
		})
	}
}
