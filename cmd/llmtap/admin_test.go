package main

import (
	"context"
	"net/http"
	"net/http/httptest"
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
