// Package sim is vllm-sim: an OpenAI-compatible stand-in for vLLM's HTTP
// server, faithful to vLLM's wire format, for tests, benchmarks and
// `make run`. A *Server is an http.Handler; mount it on httptest.NewServer or
// an http.Server.
//
// # Endpoints
//
//   - POST /v1/chat/completions: stream and not. Streams are
//     `data: <compact json>\n\n` events (Content-Type
//     "text/event-stream; charset=utf-8"), one event per token, each flushed at
//     once: a role chunk {"role":"assistant","content":""}, one content chunk
//     per token, a finish chunk, a final "choices":[] usage chunk only when
//     stream_options.include_usage is true (it defaults to true once
//     stream_options is present, as in vLLM), then `data: [DONE]\n\n`.
//     stream_options.continuous_usage_stats adds cumulative usage to every
//     chunk. When the request has tools and tool_choice is not "none", the
//     answer is one call to the first tool (or the named tool_choice
//     function): the first tool_calls delta carries id
//     ("chatcmpl-tool-<hex>"), type and function name, the following deltas
//     carry 7-byte fragments of the JSON arguments, finish_reason
//     "tool_calls".
//   - POST /v1/completions: prompt string, array of strings (one choice each),
//     token ids or arrays of token ids. max_tokens defaults to 16, as in vLLM.
//   - POST /v1/embeddings: input string/array/token ids; deterministic
//     unit vectors (Embedding), 16 dimensions unless "dimensions" is given;
//     encoding_format "float" or "base64" (little-endian float32, what the
//     openai npm client asks for by default).
//   - POST /v1/responses: Responses API object, or the stream of
//     `event: <type>\ndata: <json>\n\n` events without [DONE]:
//     response.created, response.in_progress, response.output_item.added,
//     response.content_part.added, response.output_text.delta per token,
//     response.output_text.done, response.content_part.done,
//     response.output_item.done, response.completed (usage input_tokens,
//     output_tokens, total_tokens). max_output_tokens truncation gives status
//     "incomplete".
//   - GET /v1/models, GET /health (200, empty), GET|POST /ping, GET /metrics
//     (Prometheus text with vllm:num_requests_running, vllm:prompt_tokens_total,
//     vllm:generation_tokens_total, vllm:request_success_total, TTFT and e2e
//     histograms), GET /version, POST /tokenize.
//
// Errors use vLLM's current nested body
// {"error":{"message","type","param","code"}} with HTTP status = code: bad
// JSON and invalid fields 400 BadRequestError, another model 404
// NotFoundError ("The model `x` does not exist."). With Config.APIKey set,
// paths starting with /v1 (except OPTIONS) need "Authorization: Bearer
// <key>", else 401 {"error":"Unauthorized"}; /health, /metrics etc. stay
// open. Unknown paths: 404 {"detail":"Not Found"}.
//
// Ids: chatcmpl-<hex>, cmpl-<hex>, embd-<hex>, resp_<hex>; when the request
// has a sane X-Request-Id header it replaces <hex> (as vLLM does).
//
// # Answers and token counts (deterministic)
//
// The answer text is AnswerTokens(seed, n) where seed is the last user
// message (chat, responses) or the prompt (completions); n is
// Config.Tokens or X-Sim-Tokens. A generation is n visible tokens followed by
// an end-of-sequence token whose chunk has empty content, like a real model:
// when it fits under max_tokens (chat: max_completion_tokens or max_tokens;
// responses: max_output_tokens) the finish_reason is "stop" and
// completion_tokens = n+1; when max_tokens <= n the answer is cut at
// max_tokens visible tokens, the last token's chunk carries finish_reason
// "length", and completion_tokens = max_tokens. Tool calls count the name
// delta and each argument fragment as one token each.
//
// prompt_tokens: chat = 3 + Σ over messages (4 + whitespace words of the
// content text) + 16 per tool; responses likewise over instructions and input
// items; completions and embeddings = words + 1 (BOS) per text prompt, or the
// number of token ids.
//
// # Per-request control headers (deterministic tests)
//
//   - X-Sim-Tokens: N — answer length in visible tokens.
//   - X-Sim-TTFT: 50ms — delay before the first token (Go duration).
//   - X-Sim-Token-Interval: 10ms — delay between tokens.
//   - X-Sim-Fault: error|midstream-error|close|none — force one fault (or
//     none, which also disables the random fault rates for this request):
//     "error" answers X-Sim-Status (default Config.ErrorStatus) with a vLLM
//     error body before generating; "midstream-error" sends 3 tokens (fewer
//     if the answer is shorter), then `data: {"error": {...}}` (json.dumps
//     spacing, as vLLM) and `data: [DONE]` (Responses API: an `error` event);
//     "close" cuts the connection at the same point (no finish chunk, no
//     [DONE]). On non-stream requests midstream-error answers like "error"
//     after generating, and close drops the connection without a response.
//   - X-Sim-Status: 503 — status of the injected error.
//
// A bad control header value is a 400 error.
//
// # Generations and cancellation
//
// Chat, completions and responses requests that pass validation are
// generations: Started counts them, InFlight is how many run now, and each
// ends as exactly one of Completed, Cancelled (the client or request context
// went away: generation stops at once, no further token is produced) or
// Faulted (injected mid-stream error or close). Injected "error" faults and
// invalid requests are not generations. Embeddings are not generations.
//
// Not simulated: n > 1 for chat (one choice is returned), stop sequences,
// echo, logprobs, reasoning output, parallel tool calls, Responses API tools.
//
// Response headers mimic uvicorn (Server: uvicorn). All Server methods are
// safe for concurrent use.
package sim
