package pipeline

import "github.com/llmtap/llmtap/ingest/decode"

// defaultDecode is the decoder used unless WithDecoder replaces it.
var defaultDecode DecodeFunc = decode.Decode
