package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// The baseline must do the work the bench's nginx does, or the comparison
// is unfair one way or the other.
func TestBaselineDoesNginxsWork(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("X-Consumer-Username")+"|"+r.Header.Get("Authorization"))
	}))
	defer up.Close()
	h, err := newHandler(up.URL, "sk-a,sk-b", "alice,bob")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()

	for _, tc := range []struct {
		auth       string
		wantStatus int
		wantBody   string
	}{
		{"Bearer sk-b", 200, "bob|"},
		{"Bearer sk-a", 200, "alice|"},
		{"Bearer sk-c", 401, ""},
		{"", 401, ""},
	} {
		req, _ := http.NewRequest("POST", srv.URL+"/v1/chat/completions", nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		req.Header.Set("X-Consumer-Username", "mallory")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tc.wantStatus || (tc.wantStatus == 200 && string(body) != tc.wantBody) {
			t.Errorf("%q: %d %q, want %d %q", tc.auth, res.StatusCode, body, tc.wantStatus, tc.wantBody)
		}
	}
	if _, err := newHandler(up.URL, "sk-a", "alice,bob"); err == nil {
		t.Error("mismatched --keys/--consumers accepted")
	}
}
