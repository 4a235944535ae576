// End-to-end client for llmtap's tests: drives the official `openai` npm package
// through the proxy and prints, per case, one JSON line with what the client
// assembled, so the Go test can compare it with the stored audit record.
//
//   OPENAI_BASE_URL=http://127.0.0.1:8001/v1 OPENAI_API_KEY=sk-… node client.mjs
import OpenAI from "openai";

const client = new OpenAI({ maxRetries: 0 });
const model = process.env.MODEL || "meta-llama/Llama-3.1-8B-Instruct";
const tools = [{
  type: "function",
  function: {
    name: "get_weather",
    description: "Weather for a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
}];

function out(obj) { process.stdout.write(JSON.stringify(obj) + "\n"); }

async function chatStream(name, extra) {
  const { data: stream, response } = await client.chat.completions
    .create({ model, stream: true, ...extra })
    .withResponse();
  let text = "", usage = null, finish = null, usageChunks = 0, emptyChoiceChunks = 0;
  const calls = [];
  for await (const chunk of stream) {
    if (chunk.usage) { usage = chunk.usage; usageChunks++; }
    if (chunk.choices.length === 0) { emptyChoiceChunks++; continue; }
    const c = chunk.choices[0];
    if (c.delta?.content) text += c.delta.content;
    for (const tc of c.delta?.tool_calls || []) {
      calls[tc.index] ??= { id: "", type: "function", function: { name: "", arguments: "" } };
      if (tc.id) calls[tc.index].id = tc.id;
      if (tc.function?.name) calls[tc.index].function.name += tc.function.name;
      if (tc.function?.arguments) calls[tc.index].function.arguments += tc.function.arguments;
    }
    if (c.finish_reason) finish = c.finish_reason;
  }
  out({ case: name, event_id: response.headers.get("x-llmtap-event-id"), text, usage, finish,
        usage_chunks: usageChunks, empty_choice_chunks: emptyChoiceChunks, tool_calls: calls });
}

async function chat(name, extra) {
  const { data, response } = await client.chat.completions.create({ model, ...extra }).withResponse();
  const m = data.choices[0].message;
  out({ case: name, event_id: response.headers.get("x-llmtap-event-id"), text: m.content || "",
        usage: data.usage, finish: data.choices[0].finish_reason, tool_calls: m.tool_calls || [] });
}

async function completion(name, stream) {
  const req = { model, prompt: "Once upon a time", max_tokens: 12, stream };
  if (!stream) {
    const { data, response } = await client.completions.create(req).withResponse();
    out({ case: name, event_id: response.headers.get("x-llmtap-event-id"), text: data.choices[0].text,
          usage: data.usage, finish: data.choices[0].finish_reason });
    return;
  }
  const { data: s, response } = await client.completions.create(req).withResponse();
  let text = "", finish = null, usageChunks = 0;
  for await (const chunk of s) {
    if (chunk.usage) usageChunks++;
    if (chunk.choices?.length) {
      text += chunk.choices[0].text;
      if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
    }
  }
  out({ case: name, event_id: response.headers.get("x-llmtap-event-id"), text, finish, usage_chunks: usageChunks });
}

async function embeddings(name) {
  const { data, response } = await client.embeddings.create({ model, input: "embed me" }).withResponse();
  out({ case: name, event_id: response.headers.get("x-llmtap-event-id"), dims: data.data[0].embedding.length, usage: data.usage });
}

const messages = [
  { role: "system", content: "You are terse." },
  { role: "user", content: "first question" },
  { role: "assistant", content: "first answer" },
  { role: "user", content: "Tell me about audit logs." },
];
await chat("chat", { messages, max_tokens: 20 });
await chatStream("chat_stream", { messages, max_tokens: 20 });
await chatStream("chat_stream_usage", { messages, max_tokens: 20, stream_options: { include_usage: true } });
await chat("chat_tools", { messages: [{ role: "user", content: "Weather in Paris?" }], tools });
await chatStream("chat_tools_stream", { messages: [{ role: "user", content: "Weather in Paris?" }], tools });
await completion("completion", false);
await completion("completion_stream", true);
await embeddings("embeddings");
try {
  await client.chat.completions.create({ model, messages }, { headers: { Authorization: "Bearer sk-wrong" } });
  out({ case: "bad_key", status: 200 });
} catch (e) {
  out({ case: "bad_key", status: e.status, code: e.code, event_id: e.headers?.get?.("x-llmtap-event-id") ?? null });
}
