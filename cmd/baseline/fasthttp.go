package main

import (
	"bufio"
	"bytes"
	"io"
	"net/url"

	"github.com/valyala/fasthttp"
)

// fastHTTPHandler forwards with a HostClient that streams response bodies:
// an event stream is copied to the client a read at a time, each flushed at
// once (nginx's proxy_buffering off); other bodies are read whole.
func fastHTTPHandler(u *url.URL, names map[string]string) fasthttp.RequestHandler {
	hc := &fasthttp.HostClient{Addr: u.Host, MaxConns: 1024, StreamResponseBody: true}
	return func(ctx *fasthttp.RequestCtx) {
		name := names[string(ctx.Request.Header.Peek("Authorization"))]
		if name == "" {
			ctx.Error("unauthorized", fasthttp.StatusUnauthorized)
			return
		}
		req := fasthttp.AcquireRequest()
		ctx.Request.CopyTo(req)
		req.Header.Del("Authorization")
		req.Header.Set("X-Consumer-Username", name)
		res := fasthttp.AcquireResponse()
		err := hc.Do(req, res)
		fasthttp.ReleaseRequest(req)
		if err != nil {
			fasthttp.ReleaseResponse(res)
			ctx.Error("bad gateway", fasthttp.StatusBadGateway)
			return
		}
		res.Header.CopyTo(&ctx.Response.Header)
		if !bytes.HasPrefix(res.Header.ContentType(), []byte("text/event-stream")) {
			body, _ := io.ReadAll(res.BodyStream())
			ctx.SetBody(body)
			res.CloseBodyStream()
			fasthttp.ReleaseResponse(res)
			return
		}
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			defer fasthttp.ReleaseResponse(res)
			defer res.CloseBodyStream()
			buf := make([]byte, 8<<10)
			src := res.BodyStream()
			for {
				n, err := src.Read(buf)
				if n > 0 {
					if _, werr := w.Write(buf[:n]); werr != nil || w.Flush() != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		})
	}
}
