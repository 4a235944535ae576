package main

import (
	"net/http"
	"net/http/httputil"
	"net/url"
)

// netHTTPHandler is the baseline on the standard library: key lookup, then
// httputil.ReverseProxy flushing every write.
func netHTTPHandler(u *url.URL, names map[string]string) http.Handler {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 256, 256
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host
			pr.Out.Header.Set("X-Consumer-Username", names[pr.In.Header.Get("Authorization")])
			pr.Out.Header.Del("Authorization")
		},
		Transport:     tr,
		FlushInterval: -1,
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if names[r.Header.Get("Authorization")] == "" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		rp.ServeHTTP(w, r)
	})
}
