package decode

import (
	"bytes"
	"io"
	"strings"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"
)

// decodeBody undoes the Content-Encoding enc ("gzip", "br", "zstd",
// "deflate", a comma-separated list applied in order, or empty) of b. The
// output is capped at MaxDecodedBody (cut reports the cap was hit). A body
// that does not decode is returned as it is; a stream that breaks off (a
// truncated capture) gives what was decoded up to the break. Without a
// declared encoding, a gzip magic number is still recognised.
func decodeBody(b []byte, enc string) (out []byte, cut bool) {
	enc = strings.ToLower(strings.TrimSpace(enc))
	if enc == "" && len(b) > 2 && b[0] == 0x1f && b[1] == 0x8b && b[2] == 8 {
		enc = "gzip"
	}
	if enc == "" || enc == "identity" || len(b) == 0 {
		return b, false
	}
	codings := strings.Split(enc, ",")
	out = b
	for i := len(codings) - 1; i >= 0; i-- {
		c := strings.TrimSpace(codings[i])
		dec, c2 := decompress(out, c)
		if c2 {
			cut = true
		}
		if dec == nil {
			return out, cut
		}
		out = dec
	}
	return out, cut
}

// decompress decodes one coding; nil when it is unknown or nothing decoded.
func decompress(b []byte, coding string) (out []byte, cut bool) {
	var r io.Reader
	var closer func()
	switch coding {
	case "", "identity":
		return b, false
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, false
		}
		r = zr
	case "deflate":
		// HTTP "deflate" is zlib-wrapped; some servers send raw deflate.
		if zr, err := zlib.NewReader(bytes.NewReader(b)); err == nil {
			r = zr
		} else {
			r = flate.NewReader(bytes.NewReader(b))
		}
	case "br":
		r = brotli.NewReader(bytes.NewReader(b))
	case "zstd":
		zr, err := zstd.NewReader(bytes.NewReader(b), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxDecodedBody*2))
		if err != nil {
			return nil, false
		}
		r = zr
		closer = zr.Close
	default:
		return nil, false
	}
	if closer != nil {
		defer closer()
	}
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(r, MaxDecodedBody+1))
	if n > MaxDecodedBody {
		return buf.Bytes()[:MaxDecodedBody], true
	}
	if err != nil && n == 0 {
		return nil, false
	}
	return buf.Bytes(), false
}
