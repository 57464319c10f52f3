// Points the real openai npm SDK at pinmeter and prints, as one JSON line,
// what a non-streaming and a streaming completion returned.
//   node openai_test.mjs   (env: PINMETER_URL e.g. http://127.0.0.1:8787/v0/llm,
//                           PINMETER_KEY = a team key, MODEL)
import OpenAI from "openai";

const baseURL = process.env.PINMETER_URL || "http://127.0.0.1:8787/v0/llm";
const apiKey = process.env.PINMETER_KEY;
const model = process.env.MODEL || "anthropic/claude-sonnet-4-6";
if (!apiKey) {
  console.error("PINMETER_KEY is not set");
  process.exit(2);
}
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 15000 });
const out = {};

// Non-streaming. "mock" is an extra body field the mock upstream reads.
const { data: completion, response } = await client.chat.completions
  .create({
    model,
    messages: [{ role: "user", content: "hello via the SDK" }],
    max_tokens: 64,
    mock: { content: "Plain answer from mock", usage: { prompt_tokens: 21, completion_tokens: 9, cached_tokens: 5 } },
  })
  .withResponse();
out.nonstream = {
  id: completion.id,
  content: completion.choices[0].message.content,
  finish_reason: completion.choices[0].finish_reason,
  usage: completion.usage,
  request_id: response.headers.get("x-pinmeter-request-id"),
};

// Streaming without include_usage: the SDK must never see an empty choices chunk.
const stream = await client.chat.completions.create({
  model,
  messages: [{ role: "user", content: "stream via the SDK" }],
  max_tokens: 64,
  stream: true,
  mock: { content: "Streamed answer from mock", chunks: 5, usage: { prompt_tokens: 33, completion_tokens: 11, cached_tokens: 0 } },
});
const s = { ids: [], content: "", chunks: 0, empty_choices: 0, finish_reason: null, usage: null };
for await (const chunk of stream) {
  s.chunks++;
  if (!s.ids.includes(chunk.id)) s.ids.push(chunk.id);
  if (!chunk.choices || chunk.choices.length === 0) s.empty_choices++;
  for (const c of chunk.choices || []) {
    s.content += c.delta?.content ?? "";
    if (c.finish_reason) s.finish_reason = c.finish_reason;
  }
  if (chunk.usage) s.usage = chunk.usage;
}
out.stream = s;

// Streaming with include_usage: the usage chunk comes through.
const stream2 = await client.chat.completions.create({
  model,
  messages: [{ role: "user", content: "stream with usage" }],
  max_tokens: 64,
  stream: true,
  stream_options: { include_usage: true },
  mock: { content: "Usage stream", chunks: 2, usage: { prompt_tokens: 8, completion_tokens: 4, cached_tokens: 0 } },
});
const s2 = { ids: [], content: "", usage: null };
for await (const chunk of stream2) {
  if (!s2.ids.includes(chunk.id)) s2.ids.push(chunk.id);
  for (const c of chunk.choices || []) s2.content += c.delta?.content ?? "";
  if (chunk.usage) s2.usage = chunk.usage;
}
out.stream_usage = s2;

// A 402 surfaces as the SDK's APIError with the status.
try {
  await client.chat.completions.create({
    model,
    messages: [{ role: "user", content: "too big" }],
    max_tokens: 100000000,
  });
  out.too_big = { status: 200 };
} catch (e) {
  out.too_big = { status: e.status ?? null, type: e.error?.type ?? null, scope: e.error?.scope ?? null };
}

console.log(JSON.stringify(out));
