package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime/debug"
	"testing"
)

func TestAdminPprofOnlyWhenEnabled(t *testing.T) {
	ready := func(context.Context) error { return nil }
	for _, tc := range []struct {
		pprof bool
		want  int
	}{{false, http.StatusNotFound}, {true, http.StatusOK}} {
		srv := httptest.NewServer(adminHandler(ready, tc.pprof))
		res, err := http.Get(srv.URL + "/debug/pprof/goroutine?debug=1")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		srv.Close()
		if res.StatusCode != tc.want {
			t.Errorf("pprof=%v: /debug/pprof/goroutine = %d, want %d", tc.pprof, res.StatusCode, tc.want)
		}
	}
}

func TestTuneGCKeepsAnExplicitGOGC(t *testing.T) {
	orig := debug.SetGCPercent(100)
	defer debug.SetGCPercent(orig)

	t.Setenv("GOGC", "")
	tuneGC()
	if got := debug.SetGCPercent(77); got != defaultGCPercent {
		t.Errorf("GOGC unset: GC percent %d, want %d", got, defaultGCPercent)
	}
	t.Setenv("GOGC", "77") // the runtime read it at start; tuneGC must leave it
	tuneGC()
	if got := debug.SetGCPercent(100); got != 77 {
		t.Errorf("GOGC=77: GC percent %d, want 77", got)
	}
}
