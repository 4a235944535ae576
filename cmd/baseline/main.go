// Command baseline is `make bench`'s floor for any proxy written in Go: the
// bench's nginx configuration (a map of Bearer keys to consumer names, 401
// when the key is unknown, X-Consumer-Username set and Authorization removed
// upstream, responses not buffered, a keep-alive pool of 256) written with
// the standard library's net/http server and httputil.ReverseProxy over the
// default Transport. It captures and stores nothing.
//
// llmtap's rows are read against it to separate llmtap's own cost (auth by
// hash, capture, usage parsing, shipping, the store) from the cost of Go's
// HTTP stack, which no net/http proxy avoids. It is a benchmark tool, not a
// product: it has no limits, timeouts or TLS. Run it on loopback only.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18007", "address to listen on")
	upstream := flag.String("upstream", "http://127.0.0.1:18000", "upstream base URL")
	keys := flag.String("keys", "", "comma-separated API keys, one per consumer")
	consumers := flag.String("consumers", "", "comma-separated consumer names matching --keys")
	flag.Parse()
	h, err := newHandler(*upstream, *keys, *consumers)
	if err != nil {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		os.Exit(2)
	}
	log.Fatal(http.ListenAndServe(*listen, h))
}

// newHandler returns the proxy: Bearer key lookup, then ReverseProxy.
func newHandler(upstream, keys, consumers string) (http.Handler, error) {
	u, err := url.Parse(upstream)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("bad --upstream %q", upstream)
	}
	ks, ns := strings.Split(keys, ","), strings.Split(consumers, ",")
	if keys == "" || len(ks) != len(ns) {
		return nil, errors.New("--keys and --consumers must be non-empty lists of the same length")
	}
	names := make(map[string]string, len(ks))
	for i, k := range ks {
		names["Bearer "+k] = ns[i]
	}
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
	}), nil
}
