// Command baseline is `make bench`'s floor for a proxy written in Go: the
// bench's nginx configuration (a map of Bearer keys to consumer names, 401
// when the key is unknown, X-Consumer-Username set and Authorization removed
// upstream, responses not buffered, a keep-alive pool) on one of two HTTP
// stacks, capturing and storing nothing:
//
//   - --stack nethttp: the standard library's server and
//     httputil.ReverseProxy over the default Transport (llmtap's proxy
//     serves with net/http too; its upstream client is its own);
//   - --stack fasthttp: github.com/valyala/fasthttp's server and HostClient.
//
// llmtap's rows are read against the nethttp floor to separate llmtap's own
// cost (auth by hash, capture, usage parsing, shipping, the store) from Go's
// HTTP stack's, and against the fasthttp one to see what a change of stack
// would buy. It is a benchmark tool, not a product: it has no limits,
// timeouts, TLS or disconnect handling. Run it on loopback only.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/valyala/fasthttp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18007", "address to listen on")
	upstream := flag.String("upstream", "http://127.0.0.1:18000", "upstream base URL (http only)")
	keys := flag.String("keys", "", "comma-separated API keys, one per consumer")
	consumers := flag.String("consumers", "", "comma-separated consumer names matching --keys")
	stack := flag.String("stack", "nethttp", "HTTP stack: nethttp or fasthttp")
	flag.Parse()
	err := run(*stack, *listen, *upstream, *keys, *consumers)
	fmt.Fprintln(os.Stderr, "baseline:", err)
	os.Exit(2)
}

func run(stack, listen, upstream, keys, consumers string) error {
	u, err := url.Parse(upstream)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return fmt.Errorf("bad --upstream %q", upstream)
	}
	names, err := keyNames(keys, consumers)
	if err != nil {
		return err
	}
	switch stack {
	case "nethttp":
		return http.ListenAndServe(listen, netHTTPHandler(u, names))
	case "fasthttp":
		return fasthttp.ListenAndServe(listen, fastHTTPHandler(u, names))
	}
	return fmt.Errorf("unknown --stack %q", stack)
}

// keyNames maps each "Bearer KEY" header value to its consumer name.
func keyNames(keys, consumers string) (map[string]string, error) {
	ks, ns := strings.Split(keys, ","), strings.Split(consumers, ",")
	if keys == "" || len(ks) != len(ns) {
		return nil, errors.New("--keys and --consumers must be non-empty lists of the same length")
	}
	names := make(map[string]string, len(ks))
	for i, k := range ks {
		names["Bearer "+k] = ns[i]
	}
	return names, nil
}
